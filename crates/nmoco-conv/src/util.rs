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
