//! CUDA kernel sources and their variants. Kept outside the `cuda` feature so that the NVRTC
//! compile test (which needs no GPU and no `cuda` build) checks exactly what the GPU path loads.
//!
//! One NVRTC module per [`Variant`]: `neuron_common.cuh` followed by `lif.cu`, specialised by
//! `-D` defines, holding the kernels [`KERNEL_FWD`], [`KERNEL_BWD`] and [`KERNEL_PLIF_FINISH`].

use std::sync::atomic::{AtomicBool, Ordering};

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
/// Every `extern "C" __global__` entry point of [`LIF_SRC`].
pub const KERNELS: [&str; 3] = [KERNEL_FWD, KERNEL_BWD, KERNEL_PLIF_FINISH];

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

/// Module name of the max-pool kernels for `dtype`, e.g. `nmoco_pool_bf16`.
pub fn pool_module_name(dtype: KernelDtype) -> String {
    format!("nmoco_pool_{}", dtype.name())
}

/// NVRTC options of the max-pool kernels for `dtype` on `compute_<arch>`.
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
