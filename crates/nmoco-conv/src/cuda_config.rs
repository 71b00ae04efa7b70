//! CUDA convolution settings and the device-independent half of the cuDNN path: which backend
//! runs convolutions on a CUDA device, the TF32 policy, the cuDNN plan key with its descriptor
//! dimensions, the algorithm choice from cuDNN's ranked candidates and the workspace growth.
//! Everything here is plain Rust (unit-tested without a GPU); `src/cudnn/` (feature `cuda`)
//! turns it into cuDNN calls.

// Without the `cuda` feature only the unit tests use the cuDNN-side helpers.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use candle_core::DType;

use crate::error::ConvError;
use crate::geom::ConvGeom;

/// Which implementation runs [`crate::conv2d`] and its gradients on a CUDA device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CudaConvBackend {
    /// cuDNN forward, backward-data and backward-filter custom ops (the default).
    Cudnn,
    /// candle's own `conv2d` and autograd (im2col + cuBLAS, naive transposed convolution),
    /// kept for diagnosis.
    Candle,
}

/// How cuDNN picks an algorithm for a new shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgoSearch {
    /// cuDNN's v7 heuristics (`cudnnGet*Algorithm_v7`): no kernels run, the default.
    Heuristic,
    /// Time every algorithm once (`cudnnFind*Algorithm`), as PyTorch's `cudnn.benchmark`.
    Exhaustive,
}

/// Settings of the CUDA convolution path (process-wide). The defaults follow PyTorch:
/// cuDNN convolutions may use TF32 for f32 tensors, cuBLAS matmuls may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaConvConfig {
    /// cuDNN or candle's convolution on CUDA devices.
    pub backend: CudaConvBackend,
    /// Allow TF32 tensor-core maths in cuDNN convolutions of f32 tensors.
    pub conv_tf32: bool,
    /// Allow TF32 in candle's f32 cuBLAS matmuls (`candle_core::cuda::set_gemm_reduced_precision_f32`).
    /// bf16 matmuls always accumulate in f32 on tensor cores.
    pub matmul_tf32: bool,
    /// Algorithm search for each new shape.
    pub search: AlgoSearch,
    /// Largest cuDNN workspace an algorithm may ask for, in bytes.
    pub workspace_limit: usize,
}

impl Default for CudaConvConfig {
    fn default() -> Self {
        Self {
            backend: CudaConvBackend::Cudnn,
            conv_tf32: true,
            matmul_tf32: false,
            search: AlgoSearch::Heuristic,
            workspace_limit: 4 << 30,
        }
    }
}

impl CudaConvConfig {
    /// The defaults overridden by environment variables (read through `get`):
    /// `NMOCO_CUDA_CONV=cudnn|candle`, `NMOCO_CONV_TF32=0|1`, `NMOCO_MATMUL_TF32=0|1`,
    /// `NMOCO_CUDNN_SEARCH=heuristic|exhaustive`, `NMOCO_CUDNN_WORKSPACE_MB=<MiB>`.
    pub fn from_env_with(
        get: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<Self, ConvError> {
        let mut c = Self::default();
        let bad = |key: &'static str, value: String| ConvError::Setting { key, value };
        if let Some(v) = get("NMOCO_CUDA_CONV") {
            c.backend = match v.trim().to_ascii_lowercase().as_str() {
                "cudnn" | "" => CudaConvBackend::Cudnn,
                "candle" => CudaConvBackend::Candle,
                _ => return Err(bad("NMOCO_CUDA_CONV", v)),
            };
        }
        let flag = |key: &'static str, v: String| match v.trim() {
            "1" | "true" | "on" => Ok(true),
            "0" | "false" | "off" => Ok(false),
            _ => Err(bad(key, v)),
        };
        if let Some(v) = get("NMOCO_CONV_TF32") {
            c.conv_tf32 = flag("NMOCO_CONV_TF32", v)?;
        }
        if let Some(v) = get("NMOCO_MATMUL_TF32") {
            c.matmul_tf32 = flag("NMOCO_MATMUL_TF32", v)?;
        }
        if let Some(v) = get("NMOCO_CUDNN_SEARCH") {
            c.search = match v.trim().to_ascii_lowercase().as_str() {
                "heuristic" | "" => AlgoSearch::Heuristic,
                "exhaustive" | "find" => AlgoSearch::Exhaustive,
                _ => return Err(bad("NMOCO_CUDNN_SEARCH", v)),
            };
        }
        if let Some(v) = get("NMOCO_CUDNN_WORKSPACE_MB") {
            let mb: usize = v
                .trim()
                .parse()
                .map_err(|_| bad("NMOCO_CUDNN_WORKSPACE_MB", v.clone()))?;
            c.workspace_limit = mb
                .checked_mul(1 << 20)
                .ok_or_else(|| bad("NMOCO_CUDNN_WORKSPACE_MB", v))?;
        }
        Ok(c)
    }
}

fn config_cell() -> &'static Mutex<Option<CudaConvConfig>> {
    static C: OnceLock<Mutex<Option<CudaConvConfig>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(None))
}

/// The current CUDA convolution settings: those last set with [`set_cuda_conv_config`], else the
/// defaults overridden by the environment (see [`CudaConvConfig::from_env_with`]; an unreadable
/// variable is an error). Without `NMOCO_MATMUL_TF32`, `matmul_tf32` reports candle's cuBLAS
/// flag as it stands and leaves it alone.
pub fn cuda_conv_config() -> std::result::Result<CudaConvConfig, ConvError> {
    let mut g = config_cell().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = *g {
        return Ok(c);
    }
    let mut c = CudaConvConfig::from_env_with(|k| std::env::var(k).ok())?;
    // The matmul flag is candle's own: set it only when asked to, else report it as it is (a
    // trainer may have set it already).
    if std::env::var_os("NMOCO_MATMUL_TF32").is_some() {
        apply_matmul(c.matmul_tf32);
    } else {
        c.matmul_tf32 = current_matmul();
    }
    *g = Some(c);
    Ok(c)
}

/// Sets the CUDA convolution settings for the process (and candle's cuBLAS TF32 flag from
/// `matmul_tf32`). Plans are cached per setting, so switching back and forth is cheap.
pub fn set_cuda_conv_config(c: CudaConvConfig) {
    let mut g = config_cell().lock().unwrap_or_else(|e| e.into_inner());
    apply_matmul(c.matmul_tf32);
    *g = Some(c);
}

#[cfg(feature = "cuda")]
fn apply_matmul(tf32: bool) {
    candle_core::cuda_backend::set_gemm_reduced_precision_f32(tf32);
}

#[cfg(not(feature = "cuda"))]
fn apply_matmul(_tf32: bool) {}

#[cfg(feature = "cuda")]
fn current_matmul() -> bool {
    candle_core::cuda_backend::gemm_reduced_precision_f32()
}

#[cfg(not(feature = "cuda"))]
fn current_matmul() -> bool {
    false
}

/// Counters of the cuDNN path (process-wide, all threads and devices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CudnnStats {
    /// Plans (descriptor sets) created: one per distinct shape, dtype and TF32 setting.
    pub plans: usize,
    /// Algorithm searches run: at most one per plan and direction.
    pub searches: usize,
    /// Size of the most recently (re)allocated workspace, in bytes.
    pub workspace_bytes: usize,
}

pub(crate) struct Stats {
    pub plans: AtomicUsize,
    pub searches: AtomicUsize,
    pub workspace_bytes: AtomicUsize,
}

pub(crate) static STATS: Stats = Stats {
    plans: AtomicUsize::new(0),
    searches: AtomicUsize::new(0),
    workspace_bytes: AtomicUsize::new(0),
};

/// The cuDNN path's counters (all zero without the `cuda` feature or before a CUDA convolution):
/// a repeated shape must not add plans or searches.
pub fn cudnn_stats() -> CudnnStats {
    CudnnStats {
        plans: STATS.plans.load(Ordering::Relaxed),
        searches: STATS.searches.load(Ordering::Relaxed),
        workspace_bytes: STATS.workspace_bytes.load(Ordering::Relaxed),
    }
}

/// Element type of a cuDNN convolution (inputs and outputs; maths always in f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ConvDType {
    F32,
    Bf16,
    F16,
}

impl ConvDType {
    /// The cuDNN element type for a candle dtype, `None` where cuDNN is not used.
    pub(crate) fn of(d: DType) -> Option<Self> {
        match d {
            DType::F32 => Some(Self::F32),
            DType::BF16 => Some(Self::Bf16),
            DType::F16 => Some(Self::F16),
            _ => None,
        }
    }
}

/// cuDNN's math modes (`cudnnMathType_t`), mirrored so that the policy is testable without cuDNN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MathKind {
    Default,
    TensorOp,
    TensorOpAllowConversion,
    Fma,
}

/// The math mode set on a convolution descriptor before the algorithm query: tensor cores for
/// bf16/f16, `DEFAULT` (TF32 allowed on Ampere and later) or `FMA` (no TF32) for f32.
pub(crate) fn descriptor_math(dt: ConvDType, tf32: bool) -> MathKind {
    match (dt, tf32) {
        (ConvDType::F32, true) => MathKind::Default,
        (ConvDType::F32, false) => MathKind::Fma,
        _ => MathKind::TensorOp,
    }
}

/// Whether a candidate algorithm's math mode may run: f32 without TF32 rejects tensor-op maths
/// (which would round the inputs to TF32); half types reject down-conversions of f32 data.
pub(crate) fn math_allowed(dt: ConvDType, tf32: bool, m: MathKind) -> bool {
    match dt {
        ConvDType::F32 => tf32 || matches!(m, MathKind::Fma | MathKind::Default),
        _ => m != MathKind::TensorOpAllowConversion,
    }
}

/// One ranked candidate returned by cuDNN (`cudnnConvolution*AlgoPerf_t`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate {
    pub ok: bool,
    pub memory: usize,
    pub math: MathKind,
}

/// Index of the first (best ranked) usable candidate: status success, math allowed, workspace
/// within `limit`.
pub(crate) fn choose(
    cands: &[Candidate],
    dt: ConvDType,
    tf32: bool,
    limit: usize,
) -> Option<usize> {
    cands
        .iter()
        .position(|c| c.ok && c.memory <= limit && math_allowed(dt, tf32, c.math))
}

/// New workspace size when `need` bytes exceed the current `cur`: at least 1.5 × the current size
/// (fewer re-allocations while shapes are first seen), rounded up to 1 MiB.
pub(crate) fn grown_workspace(cur: usize, need: usize) -> usize {
    if need <= cur {
        return cur;
    }
    let want = need.max(cur.saturating_add(cur / 2));
    want.div_ceil(1 << 20).saturating_mul(1 << 20)
}

/// Which gradients a convolution's backward computes: only those of arguments that are tracked
/// (a network input is not a variable and gets none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GradNeeds {
    pub input: bool,
    pub weight: bool,
}

impl GradNeeds {
    pub(crate) fn of(x_tracked: bool, w_tracked: bool) -> Self {
        Self {
            input: x_tracked,
            weight: w_tracked,
        }
    }
}

/// Everything a cuDNN plan (descriptors + chosen algorithms) depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PlanKey {
    pub dtype: ConvDType,
    /// `[N, C_in, H, W]`.
    pub x: [i32; 4],
    /// `[C_out, C_in/groups, KH, KW]`.
    pub w: [i32; 4],
    /// `[N, C_out, OH, OW]`.
    pub y: [i32; 4],
    pub stride: i32,
    pub pad: i32,
    pub groups: i32,
    pub tf32: bool,
}

fn to_i32(op: &'static str, v: usize) -> std::result::Result<i32, ConvError> {
    i32::try_from(v).map_err(|_| ConvError::TooLarge { op, value: v })
}

impl PlanKey {
    /// The key of a convolution geometry; cuDNN's legacy API takes `int` dimensions and
    /// element counts, so larger tensors are an error.
    pub(crate) fn new(
        op: &'static str,
        g: &ConvGeom,
        dtype: ConvDType,
        tf32: bool,
    ) -> std::result::Result<Self, ConvError> {
        for len in [
            g.x_len(),
            g.y_len(),
            g.c_out * (g.c_in / g.groups) * g.kh * g.kw,
        ] {
            to_i32(op, len)?;
        }
        let i = |v| to_i32(op, v);
        Ok(Self {
            dtype,
            x: [i(g.n)?, i(g.c_in)?, i(g.h)?, i(g.w)?],
            w: [i(g.c_out)?, i(g.c_in / g.groups)?, i(g.kh)?, i(g.kw)?],
            y: [i(g.n)?, i(g.c_out)?, i(g.oh)?, i(g.ow)?],
            stride: i(g.stride)?,
            pad: i(g.pad)?,
            groups: i(g.groups)?,
            // TF32 only matters for f32; one plan per half-type shape.
            tf32: tf32 && dtype == ConvDType::F32,
        })
    }
}

/// Dense NCHW strides of a 4-d tensor.
pub(crate) fn nchw_strides([_, c, h, w]: [i32; 4]) -> [i32; 4] {
    [c * h * w, h * w, w, 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(
        n: usize,
        c_in: usize,
        hw: usize,
        c_out: usize,
        k: usize,
        s: usize,
        p: usize,
        g: usize,
    ) -> ConvGeom {
        ConvGeom {
            n,
            c_in,
            h: hw,
            w: hw,
            c_out,
            kh: k,
            kw: k,
            stride: s,
            pad: p,
            groups: g,
            oh: (hw + 2 * p - k) / s + 1,
            ow: (hw + 2 * p - k) / s + 1,
        }
    }

    #[test]
    fn plan_key_dims_and_strides() {
        // SEW-ResNet-18 stem at T·B = 512: 2 → 64, 7×7 / 2, padding 3, 128 → 64.
        let k = PlanKey::new(
            "t",
            &geom(512, 2, 128, 64, 7, 2, 3, 1),
            ConvDType::F32,
            true,
        )
        .unwrap();
        assert_eq!(k.x, [512, 2, 128, 128]);
        assert_eq!(k.w, [64, 2, 7, 7]);
        assert_eq!(k.y, [512, 64, 64, 64]);
        assert_eq!((k.stride, k.pad, k.groups, k.tf32), (2, 3, 1, true));
        assert_eq!(nchw_strides(k.x), [2 * 128 * 128, 128 * 128, 128, 1]);
        assert_eq!(nchw_strides(k.y), [64 * 64 * 64, 64 * 64, 64, 1]);
        // Grouped: the filter holds C_in / groups input channels.
        let k = PlanKey::new("t", &geom(2, 8, 9, 6, 3, 1, 1, 2), ConvDType::Bf16, true).unwrap();
        assert_eq!(k.w, [6, 4, 3, 3]);
        assert_eq!(k.y, [2, 6, 9, 9]);
        // TF32 is not part of a bf16 key.
        assert!(!k.tf32);
    }

    #[test]
    fn plan_key_distinguishes_what_changes_the_plan() {
        let g = geom(4, 16, 16, 32, 3, 1, 1, 1);
        let a = PlanKey::new("t", &g, ConvDType::F32, true).unwrap();
        let b = PlanKey::new("t", &g, ConvDType::F32, false).unwrap();
        let c = PlanKey::new("t", &g, ConvDType::Bf16, true).unwrap();
        let d = PlanKey::new("t", &geom(4, 16, 16, 32, 3, 2, 1, 1), ConvDType::F32, true).unwrap();
        let e = PlanKey::new("t", &geom(5, 16, 16, 32, 3, 1, 1, 1), ConvDType::F32, true).unwrap();
        let all = [a, b, c, d, e];
        for i in 0..all.len() {
            for j in 0..all.len() {
                assert_eq!(i == j, all[i] == all[j], "{i} {j}");
            }
        }
        assert_eq!(a, PlanKey::new("t", &g, ConvDType::F32, true).unwrap());
    }

    #[test]
    fn plan_key_rejects_int_overflow() {
        let e = PlanKey::new(
            "t",
            &geom(1 << 16, 64, 128, 64, 3, 1, 1, 1),
            ConvDType::F32,
            true,
        );
        assert!(matches!(e, Err(ConvError::TooLarge { .. })), "{e:?}");
    }

    #[test]
    fn math_policy() {
        assert_eq!(descriptor_math(ConvDType::F32, true), MathKind::Default);
        assert_eq!(descriptor_math(ConvDType::F32, false), MathKind::Fma);
        assert_eq!(descriptor_math(ConvDType::Bf16, false), MathKind::TensorOp);
        assert_eq!(descriptor_math(ConvDType::F16, true), MathKind::TensorOp);
        assert!(!math_allowed(ConvDType::F32, false, MathKind::TensorOp));
        assert!(math_allowed(ConvDType::F32, false, MathKind::Fma));
        assert!(math_allowed(ConvDType::F32, true, MathKind::TensorOp));
        assert!(math_allowed(ConvDType::Bf16, false, MathKind::TensorOp));
        assert!(!math_allowed(
            ConvDType::Bf16,
            true,
            MathKind::TensorOpAllowConversion
        ));
    }

    #[test]
    fn choose_skips_failed_too_large_and_disallowed() {
        let c = |ok, memory, math| Candidate { ok, memory, math };
        let cands = [
            c(false, 0, MathKind::Default),
            c(true, 10 << 20, MathKind::TensorOp),
            c(true, 1 << 30, MathKind::Fma),
            c(true, 5 << 20, MathKind::Fma),
        ];
        assert_eq!(choose(&cands, ConvDType::F32, true, 64 << 20), Some(1));
        assert_eq!(choose(&cands, ConvDType::F32, false, 64 << 20), Some(3));
        assert_eq!(choose(&cands, ConvDType::F32, false, 2 << 30), Some(2));
        assert_eq!(choose(&cands, ConvDType::F32, false, 1 << 20), None);
        assert_eq!(choose(&[], ConvDType::Bf16, true, usize::MAX), None);
    }

    #[test]
    fn workspace_grows_geometrically_in_mib() {
        assert_eq!(grown_workspace(0, 0), 0);
        assert_eq!(grown_workspace(8 << 20, 3 << 20), 8 << 20);
        assert_eq!(grown_workspace(0, 1), 1 << 20);
        assert_eq!(grown_workspace(10 << 20, 11 << 20), 15 << 20);
        assert_eq!(grown_workspace(10 << 20, 40 << 20), 40 << 20);
        assert_eq!(grown_workspace(0, (3 << 20) + 5), 4 << 20);
    }

    #[test]
    fn grad_needs_follow_tracking() {
        assert_eq!(
            GradNeeds::of(false, true),
            GradNeeds {
                input: false,
                weight: true
            }
        );
        assert_eq!(
            GradNeeds::of(true, false),
            GradNeeds {
                input: true,
                weight: false
            }
        );
    }

    #[test]
    fn config_from_env() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(a, _)| *a == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            CudaConvConfig::from_env_with(env(&[])).unwrap(),
            CudaConvConfig::default()
        );
        let c = CudaConvConfig::from_env_with(env(&[
            ("NMOCO_CUDA_CONV", "candle"),
            ("NMOCO_CONV_TF32", "0"),
            ("NMOCO_MATMUL_TF32", "1"),
            ("NMOCO_CUDNN_SEARCH", "exhaustive"),
            ("NMOCO_CUDNN_WORKSPACE_MB", "256"),
        ]))
        .unwrap();
        assert_eq!(
            c,
            CudaConvConfig {
                backend: CudaConvBackend::Candle,
                conv_tf32: false,
                matmul_tf32: true,
                search: AlgoSearch::Exhaustive,
                workspace_limit: 256 << 20,
            }
        );
        for (k, v) in [
            ("NMOCO_CUDA_CONV", "cublas"),
            ("NMOCO_CONV_TF32", "yes please"),
            ("NMOCO_CUDNN_WORKSPACE_MB", "-3"),
        ] {
            let e = CudaConvConfig::from_env_with(|key: &str| (key == k).then(|| v.to_string()));
            assert!(
                matches!(e, Err(ConvError::Setting { .. })),
                "{k}={v}: {e:?}"
            );
        }
    }

    #[test]
    fn conv_dtypes() {
        assert_eq!(ConvDType::of(DType::F32), Some(ConvDType::F32));
        assert_eq!(ConvDType::of(DType::BF16), Some(ConvDType::Bf16));
        assert_eq!(ConvDType::of(DType::F64), None);
        assert_eq!(ConvDType::of(DType::U8), None);
    }
}
