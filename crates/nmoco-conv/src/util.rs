//! Storage helpers shared by the ops.

use candle_core::{CpuStorage, DType, Layout, Result, Tensor};

use crate::error::ConvError;

/// The contiguous f32 slice behind a CPU storage and layout.
pub(crate) fn cpu_f32<'a>(
    op: &'static str,
    what: &'static str,
    s: &'a CpuStorage,
    l: &Layout,
) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) if b <= v.len() => Ok(&v[a..b]),
        _ => Err(ConvError::Storage { op, what }.into()),
    }
}

/// Whether all tensors live on the CPU as f32 (the fast path).
pub(crate) fn is_cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// Where a convolution runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// The CPU kernels of `cpu_conv` (CPU, f32).
    Cpu,
    /// cuDNN (`cuda` feature, CUDA device, f32/bf16/f16, backend not switched to candle).
    Cudnn,
    /// The reference twin (candle's own ops): everything else.
    Reference,
}

/// The route for the op's tensors (all on one device; the caller checks shapes).
pub(crate) fn route(ts: &[&Tensor]) -> Result<Route> {
    if is_cpu_f32(ts) {
        return Ok(Route::Cpu);
    }
    let dt = ts.first().map(|t| t.dtype());
    let cuda = ts
        .iter()
        .all(|t| t.device().is_cuda() && Some(t.dtype()) == dt);
    if cfg!(feature = "cuda")
        && cuda
        && dt.and_then(crate::cuda_config::ConvDType::of).is_some()
        && crate::cuda_config::cuda_conv_config()?.backend
            == crate::cuda_config::CudaConvBackend::Cudnn
    {
        return Ok(Route::Cudnn);
    }
    Ok(Route::Reference)
}
