//! CUDA kernel sources and their variants. Kept outside the `cuda` feature so that the NVRTC
//! compile test (which needs no GPU and no `cuda` build) checks exactly what the GPU path loads.
//!
//! One NVRTC module per [`Variant`]: `neuron_common.cuh` followed by `lif.cu`, specialised by
//! `-D` defines, holding the kernels [`KERNEL_FWD`], [`KERNEL_BWD`] (one neuron per thread),
//! [`KERNEL_FWD_V2`], [`KERNEL_BWD_V2`] (two adjacent neurons per thread, 2-element loads and
//! stores; chosen by [`neuron_launch`]) and [`KERNEL_PLIF_FINISH`]. The fused training batch
//! norm + IF/LIF kernels have their own table in [`bn`].

pub mod bn;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use crate::config::{Charge, Params};

/// Longest sequence for which the backward kernel is compiled with `T` fixed, keeping the
/// membrane trace in registers (12 B per f32 element instead of 20 B through a scratch trace).
pub const MAX_STATIC_T: u32 = 16;

static STATIC_T: AtomicBool = AtomicBool::new(true);

/// Whether CUDA kernels are specialised on `T` when `T <= MAX_STATIC_T` (default: yes).
/// Turning it off selects the any-`T` kernels (the benchmark compares the two).
pub fn set_static_t(enabled: bool) {
    STATIC_T.store(enabled, Ordering::Relaxed);
}

/// See [`set_static_t`].
pub fn static_t_enabled() -> bool {
    STATIC_T.load(Ordering::Relaxed)
}

/// The element type and its f32 loads/stores, prepended to every kernel source.
pub const DTYPE_SRC: &str = include_str!("../kernels/dtype.cuh");
/// Shared neuron device code: charge, reset, surrogates.
pub const COMMON_SRC: &str = include_str!("../kernels/neuron_common.cuh");
/// The IF/LIF/PLIF kernels.
pub const LIF_SRC: &str = include_str!("../kernels/lif.cu");

pub const KERNEL_FWD: &str = "nmoco_neuron_fwd";
pub const KERNEL_BWD: &str = "nmoco_neuron_bwd";
pub const KERNEL_PLIF_FINISH: &str = "nmoco_plif_finish";
/// [`KERNEL_FWD`] with two adjacent neurons per thread (one 2-element load/store per step).
pub const KERNEL_FWD_V2: &str = "nmoco_neuron_fwd_v2";
/// [`KERNEL_BWD`] with two adjacent neurons per thread.
pub const KERNEL_BWD_V2: &str = "nmoco_neuron_bwd_v2";
/// Every `extern "C" __global__` entry point of [`LIF_SRC`].
pub const KERNELS: [&str; 5] = [
    KERNEL_FWD,
    KERNEL_BWD,
    KERNEL_PLIF_FINISH,
    KERNEL_FWD_V2,
    KERNEL_BWD_V2,
];

/// Threads per block of the neuron kernels (a power of two: PLIF's block reduction needs it).
pub const NEURON_BLOCK: u32 = 256;

/// When the neuron kernels use the two-neurons-per-thread instantiation (`_v2`), given that
/// `N` is even and every `[T, N]` pointer is aligned to two elements ([`neuron_launch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VecPolicy {
    /// Always one neuron per thread.
    Never,
    /// f16/bf16 storage only (2-byte elements, where one-element accesses waste most of each
    /// memory transaction's issue slots); f32 stays one neuron per thread. The default.
    Half,
    /// Every storage dtype (f32 with 8-byte accesses).
    Always,
}

/// `VecPolicy` as a byte; `UNSET` until the first read, which takes `NMOCO_NEURON_VEC`.
static VEC_POLICY: AtomicU8 = AtomicU8::new(UNSET);
const UNSET: u8 = u8::MAX;

impl VecPolicy {
    fn code(self) -> u8 {
        match self {
            VecPolicy::Never => 0,
            VecPolicy::Half => 1,
            VecPolicy::Always => 2,
        }
    }

    /// `never`, `half` or `always` (as `NMOCO_NEURON_VEC` takes them, any case).
    pub fn parse(s: &str) -> Option<VecPolicy> {
        match s.trim().to_ascii_lowercase().as_str() {
            "never" => Some(VecPolicy::Never),
            "half" => Some(VecPolicy::Half),
            "always" => Some(VecPolicy::Always),
            _ => None,
        }
    }
}

/// Sets the [`VecPolicy`] for later launches (process-wide; the GPU check and benchmark compare
/// the instantiations with it).
pub fn set_vec_policy(p: VecPolicy) {
    VEC_POLICY.store(p.code(), Ordering::Relaxed);
}

/// See [`set_vec_policy`]. Until it is called, the policy is `NMOCO_NEURON_VEC` (`never`,
/// `half`, `always`; read once) or [`VecPolicy::Half`]; an unknown value is logged and ignored.
pub fn vec_policy() -> VecPolicy {
    let mut v = VEC_POLICY.load(Ordering::Relaxed);
    if v == UNSET {
        let from_env = std::env::var("NMOCO_NEURON_VEC").ok();
        let p = match from_env.as_deref().map(|s| (s, VecPolicy::parse(s))) {
            Some((_, Some(p))) => p,
            Some((s, None)) => {
                tracing::warn!(
                    value = s,
                    "NMOCO_NEURON_VEC: expected never, half or always; using half"
                );
                VecPolicy::Half
            }
            None => VecPolicy::Half,
        };
        // A concurrent `set_vec_policy` wins over the environment.
        let _ = VEC_POLICY.compare_exchange(UNSET, p.code(), Ordering::Relaxed, Ordering::Relaxed);
        v = VEC_POLICY.load(Ordering::Relaxed);
    }
    match v {
        0 => VecPolicy::Never,
        2 => VecPolicy::Always,
        _ => VecPolicy::Half,
    }
}

static LAUNCHES: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Counts one neuron-kernel launch (forward or backward) with `lanes` neurons per thread.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn count_neuron_launch(lanes: u32) {
    LAUNCHES[usize::from(lanes == 2)].fetch_add(1, Ordering::Relaxed);
}

/// Neuron-kernel launches (forward and backward) in this process so far: `[one neuron per
/// thread, two neurons per thread]`. The GPU check uses it to confirm which instantiation ran.
pub fn neuron_launch_counts() -> [u64; 2] {
    [
        LAUNCHES[0].load(Ordering::Relaxed),
        LAUNCHES[1].load(Ordering::Relaxed),
    ]
}

/// One launch of the neuron kernels over `[T, N]`: which instantiation and the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeuronLaunch {
    /// Neurons per thread: 1 or 2.
    pub lanes: u32,
    /// The forward kernel's name ([`KERNEL_FWD`] or [`KERNEL_FWD_V2`]).
    pub fwd: &'static str,
    /// The backward kernel's name ([`KERNEL_BWD`] or [`KERNEL_BWD_V2`]).
    pub bwd: &'static str,
    /// Blocks of [`NEURON_BLOCK`] threads: enough threads for `N / lanes` (at least one block).
    pub grid: u32,
    pub block: u32,
}

/// The launch for `n` neurons per step of `dtype` storage whose `[T, N]` device pointers
/// (inputs and outputs the kernel reads or writes as `[T, N]`) are `ptrs`, under `policy`:
/// two neurons per thread when the policy allows it for `dtype`, `n` is even (so that every row
/// `t·N` keeps the alignment) and every pointer is a multiple of two elements; otherwise one.
/// `None` when the grid would exceed CUDA's 2³¹ − 1 blocks.
pub fn neuron_launch(
    n: usize,
    dtype: KernelDtype,
    ptrs: &[u64],
    policy: VecPolicy,
) -> Option<NeuronLaunch> {
    let wanted = match policy {
        VecPolicy::Never => false,
        VecPolicy::Half => dtype != KernelDtype::F32,
        VecPolicy::Always => true,
    };
    let pair = 2 * dtype.bytes() as u64;
    let vec =
        wanted && n >= 2 && n.is_multiple_of(2) && ptrs.iter().all(|p| p.is_multiple_of(pair));
    let lanes: u32 = if vec { 2 } else { 1 };
    let threads = n.div_ceil(lanes as usize);
    let grid = threads.div_ceil(NEURON_BLOCK as usize).max(1);
    let grid = u32::try_from(grid).ok().filter(|g| *g <= i32::MAX as u32)?;
    Some(NeuronLaunch {
        lanes,
        fwd: if vec { KERNEL_FWD_V2 } else { KERNEL_FWD },
        bwd: if vec { KERNEL_BWD_V2 } else { KERNEL_BWD },
        grid,
        block: NEURON_BLOCK,
    })
}

/// The max-pool 3×3/2 kernels with a saved argmax (compiled after [`DTYPE_SRC`]: [`pool_source`]).
pub const POOL_SRC: &str = include_str!("../kernels/pool.cu");

/// The full max-pool source handed to NVRTC.
pub fn pool_source() -> String {
    format!("{DTYPE_SRC}\n{POOL_SRC}")
}
pub const KERNEL_POOL_FWD: &str = "nmoco_maxpool_fwd";
pub const KERNEL_POOL_BWD: &str = "nmoco_maxpool_bwd";
/// Every `extern "C" __global__` entry point of [`POOL_SRC`].
pub const POOL_KERNELS: [&str; 2] = [KERNEL_POOL_FWD, KERNEL_POOL_BWD];

/// The SEW IAND connect kernels (compiled after [`DTYPE_SRC`]: [`connect_source`]).
pub const CONNECT_SRC: &str = include_str!("../kernels/connect.cu");
pub const KERNEL_IAND_FWD: &str = "nmoco_iand_fwd";
pub const KERNEL_IAND_BWD: &str = "nmoco_iand_bwd";
/// Every `extern "C" __global__` entry point of [`CONNECT_SRC`].
pub const CONNECT_KERNELS: [&str; 2] = [KERNEL_IAND_FWD, KERNEL_IAND_BWD];

/// The full connect source handed to NVRTC.
pub fn connect_source() -> String {
    format!("{DTYPE_SRC}\n{CONNECT_SRC}")
}

/// Module name of the connect kernels for `dtype`, e.g. `nmoco_connect_bf16`.
pub fn connect_module_name(dtype: KernelDtype) -> String {
    format!("nmoco_connect_{}", dtype.name())
}

/// Module name of the max-pool kernels for `dtype`, e.g. `nmoco_pool_bf16`.
pub fn pool_module_name(dtype: KernelDtype) -> String {
    format!("nmoco_pool_{}", dtype.name())
}

/// NVRTC options of the max-pool and connect kernels for `dtype` on `compute_<arch>`.
pub fn pool_options(dtype: KernelDtype, arch: u32) -> Vec<String> {
    vec![
        format!("--gpu-architecture=compute_{arch}"),
        format!("-DNMOCO_DTYPE={}", dtype.code()),
    ]
}

/// Storage dtype of a kernel variant (arithmetic is f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelDtype {
    F32,
    F16,
    Bf16,
}

impl KernelDtype {
    pub const ALL: [KernelDtype; 3] = [KernelDtype::F32, KernelDtype::F16, KernelDtype::Bf16];

    fn code(self) -> u8 {
        match self {
            KernelDtype::F32 => 0,
            KernelDtype::F16 => 1,
            KernelDtype::Bf16 => 2,
        }
    }

    /// Bytes per stored element.
    pub fn bytes(self) -> usize {
        match self {
            KernelDtype::F32 => 4,
            KernelDtype::F16 | KernelDtype::Bf16 => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            KernelDtype::F32 => "f32",
            KernelDtype::F16 => "f16",
            KernelDtype::Bf16 => "bf16",
        }
    }
}

/// One specialisation of the neuron kernels; the cache key of the compiled module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    pub dtype: KernelDtype,
    /// 0 = IF, 1 = LIF with `decay_input`, 2 = LIF without.
    pub charge: u8,
    pub hard: bool,
    pub detach: bool,
    /// `k = sigmoid(w)` from device memory, `dL/dw` accumulated (needs `charge` 1 or 2).
    pub plif: bool,
    /// [`crate::Surrogate::id`].
    pub surrogate: u8,
    /// 0: `T` is a kernel argument; `1..=MAX_STATIC_T`: `T` is compiled in (must equal the
    /// launch's `T`).
    pub t_static: u32,
}

const SG_NAMES: [&str; 4] = ["atan", "sigmoid", "pwquad", "rect"];

impl Variant {
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn new(p: &Params, dtype: KernelDtype, plif: bool, t: usize) -> Self {
        let t_static = match u32::try_from(t) {
            Ok(t) if static_t_enabled() && (1..=MAX_STATIC_T).contains(&t) => t,
            _ => 0,
        };
        Self {
            dtype,
            charge: p.charge.as_u8(),
            hard: p.hard,
            detach: p.detach,
            plif,
            surrogate: p.surrogate.id(),
            t_static,
        }
    }

    /// The same variant with `T` compiled in (0: any `T`).
    pub fn with_t_static(self, t_static: u32) -> Self {
        Self { t_static, ..self }
    }

    /// Every valid variant (PLIF only with a LIF charge form), with `T` as a kernel argument
    /// (`t_static = 0`); [`Variant::with_t_static`] gives the fixed-`T` ones.
    pub fn all() -> Vec<Variant> {
        let mut out = Vec::new();
        for dtype in KernelDtype::ALL {
            for charge in [Charge::If, Charge::Decay, Charge::NoDecay] {
                for hard in [true, false] {
                    for detach in [true, false] {
                        for plif in [false, true] {
                            if plif && charge == Charge::If {
                                continue;
                            }
                            for surrogate in 0..SG_NAMES.len() as u8 {
                                out.push(Variant {
                                    dtype,
                                    charge: charge.as_u8(),
                                    hard,
                                    detach,
                                    plif,
                                    surrogate,
                                    t_static: 0,
                                });
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Module name, e.g. `nmoco_lif_f32_decay_hard_detach_atan` (`_t16` appended when `T` is
    /// compiled in).
    pub fn module_name(&self) -> String {
        let charge = match self.charge {
            0 => "if",
            1 => "decay",
            _ => "nodecay",
        };
        let sg = SG_NAMES
            .get(self.surrogate as usize)
            .copied()
            .unwrap_or("unknown");
        let t = if self.t_static > 0 {
            format!("_t{}", self.t_static)
        } else {
            String::new()
        };
        format!(
            "nmoco_{}_{}_{}_{}_{}_{}{t}",
            if self.plif { "plif" } else { "lif" },
            self.dtype.name(),
            charge,
            if self.hard { "hard" } else { "soft" },
            if self.detach { "detach" } else { "attach" },
            sg
        )
    }

    /// NVRTC options: `--gpu-architecture=compute_<arch>` and the `-D` defines.
    pub fn options(&self, arch: u32) -> Vec<String> {
        vec![
            format!("--gpu-architecture=compute_{arch}"),
            format!("-DNMOCO_DTYPE={}", self.dtype.code()),
            format!("-DNMOCO_CHARGE={}", self.charge),
            format!("-DNMOCO_HARD={}", u8::from(self.hard)),
            format!("-DNMOCO_DETACH={}", u8::from(self.detach)),
            format!("-DNMOCO_PLIF={}", u8::from(self.plif)),
            format!("-DNMOCO_SG={}", self.surrogate),
            format!("-DNMOCO_TSTATIC={}", self.t_static),
        ]
    }

    /// The full source handed to NVRTC (NVRTC sees no file system, so the header is prepended).
    pub fn source(&self) -> String {
        format!("{DTYPE_SRC}\n{COMMON_SRC}\n{LIF_SRC}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALIGNED: u64 = 0x7f00_0000_0200;

    #[test]
    fn half_policy_pairs_bf16_and_f16_but_not_f32() {
        for (dt, lanes) in [
            (KernelDtype::Bf16, 2),
            (KernelDtype::F16, 2),
            (KernelDtype::F32, 1),
        ] {
            let l = neuron_launch(1000, dt, &[ALIGNED, ALIGNED + 64], VecPolicy::Half).unwrap();
            assert_eq!(l.lanes, lanes, "{dt:?}");
            assert_eq!(l.block, NEURON_BLOCK);
            // 1000 neurons: 500 threads (2 blocks) or 1000 threads (4 blocks).
            assert_eq!(l.grid, if lanes == 2 { 2 } else { 4 }, "{dt:?}");
            let (f, b) = if lanes == 2 {
                (KERNEL_FWD_V2, KERNEL_BWD_V2)
            } else {
                (KERNEL_FWD, KERNEL_BWD)
            };
            assert_eq!((l.fwd, l.bwd), (f, b));
        }
    }

    #[test]
    fn policies_never_and_always() {
        let p = [ALIGNED];
        let never = neuron_launch(512, KernelDtype::Bf16, &p, VecPolicy::Never).unwrap();
        assert_eq!((never.lanes, never.fwd, never.grid), (1, KERNEL_FWD, 2));
        let always = neuron_launch(512, KernelDtype::F32, &p, VecPolicy::Always).unwrap();
        assert_eq!(
            (always.lanes, always.bwd, always.grid),
            (2, KERNEL_BWD_V2, 1)
        );
    }

    #[test]
    fn odd_n_or_misaligned_pointers_fall_back_to_one_neuron_per_thread() {
        let pol = VecPolicy::Always;
        let bf = KernelDtype::Bf16;
        assert_eq!(neuron_launch(513, bf, &[ALIGNED], pol).unwrap().lanes, 1);
        assert_eq!(neuron_launch(1, bf, &[ALIGNED], pol).unwrap().lanes, 1);
        // bf16 pairs need 4-byte alignment: an offset of one element (2 B) breaks it, two do not.
        assert_eq!(
            neuron_launch(512, bf, &[ALIGNED, ALIGNED + 2], pol)
                .unwrap()
                .lanes,
            1
        );
        assert_eq!(
            neuron_launch(512, bf, &[ALIGNED, ALIGNED + 4], pol)
                .unwrap()
                .lanes,
            2
        );
        // f32 pairs need 8 bytes: one f32 element (4 B) off breaks it.
        let f = KernelDtype::F32;
        assert_eq!(neuron_launch(512, f, &[ALIGNED + 4], pol).unwrap().lanes, 1);
        assert_eq!(neuron_launch(512, f, &[ALIGNED + 8], pol).unwrap().lanes, 2);
        // No pointer to check (nothing to misalign): N decides.
        assert_eq!(neuron_launch(2, f, &[], pol).unwrap().lanes, 2);
    }

    #[test]
    fn grid_covers_every_neuron_exactly_once() {
        for pol in [VecPolicy::Never, VecPolicy::Always] {
            for n in [
                0usize, 1, 2, 255, 256, 257, 511, 512, 513, 1024, 70_002, 70_001,
            ] {
                let l = neuron_launch(n, KernelDtype::Bf16, &[ALIGNED], pol).unwrap();
                let threads = l.grid as usize * l.block as usize;
                let lanes = l.lanes as usize;
                // Enough threads for every neuron, and less than one block of idle ones.
                assert!(threads * lanes >= n, "{pol:?} n={n}: {l:?}");
                assert!(
                    n == 0 || threads - n.div_ceil(lanes) < l.block as usize,
                    "{pol:?} n={n}: {l:?}"
                );
                assert!(l.grid >= 1);
                if lanes == 2 {
                    assert_eq!(n % 2, 0);
                }
            }
        }
    }

    #[test]
    fn too_many_neurons_is_refused_not_truncated() {
        let n = (i32::MAX as usize + 1) * NEURON_BLOCK as usize;
        assert!(neuron_launch(n, KernelDtype::F32, &[ALIGNED], VecPolicy::Never).is_none());
        // The same N fits with two neurons per thread.
        assert!(neuron_launch(n, KernelDtype::F32, &[ALIGNED], VecPolicy::Always).is_some());
    }

    #[test]
    fn launch_counts_count_by_lanes() {
        let [a, b] = neuron_launch_counts();
        count_neuron_launch(2);
        count_neuron_launch(1);
        count_neuron_launch(2);
        let [c, d] = neuron_launch_counts();
        assert!(c > a && d >= b + 2, "{a} {b} {c} {d}");
    }

    #[test]
    fn policy_names_parse() {
        assert_eq!(VecPolicy::parse("never"), Some(VecPolicy::Never));
        assert_eq!(VecPolicy::parse(" Half "), Some(VecPolicy::Half));
        assert_eq!(VecPolicy::parse("ALWAYS"), Some(VecPolicy::Always));
        assert_eq!(VecPolicy::parse("sometimes"), None);
        assert_eq!(VecPolicy::parse(""), None);
        for p in [VecPolicy::Never, VecPolicy::Half, VecPolicy::Always] {
            let name = format!("{p:?}");
            assert_eq!(VecPolicy::parse(&name), Some(p));
        }
    }

    #[test]
    fn policy_round_trips() {
        let before = vec_policy();
        for p in [VecPolicy::Never, VecPolicy::Always, VecPolicy::Half] {
            set_vec_policy(p);
            assert_eq!(vec_policy(), p);
        }
        set_vec_policy(before);
    }

    #[test]
    fn every_named_kernel_is_defined_once_in_lif_cu() {
        for k in KERNELS {
            let defs = LIF_SRC
                .lines()
                .filter(|l| l.contains("__global__ void") && l.contains(&format!(" {k}(")))
                .count();
            assert_eq!(defs, 1, "{k}");
        }
    }
}
