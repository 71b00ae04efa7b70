//! The fused ops (candle custom ops) and their public wrappers, one file per op family:
//! `lif.rs` (IF/LIF), `plif.rs` (PLIF), `bn_lif.rs` (training batch norm fused with IF/LIF),
//! `pool.rs` (max-pool 3×3/2 with a saved argmax), `connect.rs` (the SEW IAND connect); here the
//! helpers they share.
//!
//! - [`lif_multistep`] (IF and LIF): `LifFwd` (CustomOp1 on `x`) returns the spikes; its `bwd`
//!   applies `LifBwd` (CustomOp2 on `x`, `dL/ds`) which returns `dL/dx`.
//! - [`plif_multistep`]: `PlifFwd` (CustomOp2 on `x`, `w`); its `bwd` applies `PlifBwd`
//!   (CustomOp3 on `x`, `w`, `dL/ds`) which returns one buffer of `T*N + 1` values: `dL/dx`
//!   followed by `dL/dw`, split with zero-copy narrows.
//!
//! **Membrane trace in the backward pass: recomputed, not saved.** candle's `bwd` only receives
//! the input, the output and the output's gradient. The forward op returns only the spikes; the
//! backward kernel recomputes `h` from `x` (on CPU per block of neurons into an L2-resident
//! scratch, on CUDA into the gradient buffer itself, which is then overwritten in place). Saving
//! `h` would cost one more `[T, N]` tensor of memory per neuron layer kept alive until the
//! backward pass plus one more write in the forward and one more read in the backward
//! (6 x 4 B per element for forward+backward instead of 5 x 4 B); the recompute costs only
//! arithmetic, which is free in this memory-bound op.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};

use crate::error::SnnError;

mod bn_lif;
mod connect;
mod lif;
mod plif;
mod pool;

pub use bn_lif::{bn_batch_stats, bn_lif_multistep, bn_lif_multistep_stats};
pub use connect::{sew_iand, sew_iand_fused, sew_iand_ref};
pub use lif::{lif_multistep, lif_multistep_bwd};
pub use plif::plif_multistep;
pub use pool::{max_pool_3x3_s2, max_pool_3x3_s2_ref};

/// Time steps and neurons per step of a `[T, ...]` shape.
pub(crate) fn t_n(shape: &Shape) -> (usize, usize) {
    let t = shape.dims().first().copied().unwrap_or(0);
    let n = shape.elem_count().checked_div(t).unwrap_or(0);
    (t, n)
}

pub(crate) fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        other => {
            return Err(SnnError::Dtype {
                op,
                dtype: other.dtype(),
                device: "cpu",
            }
            .into());
        }
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// `k = sigmoid(w) = 1 / (1 + exp(-w))`, in the same f32 operations as the reference twin.
pub(crate) fn k_from_w(w: f32) -> f32 {
    1.0 / (1.0 + (-w).exp())
}

pub(crate) fn cpu_w(s: &CpuStorage, l: &Layout, op: &'static str) -> Result<f32> {
    let w = cpu_f32(s, l, op)?;
    match w {
        [w] => Ok(*w),
        _ => Err(SnnError::WShape {
            op,
            shape: l.dims().to_vec(),
        }
        .into()),
    }
}

pub(crate) fn check_x(x: &Tensor, op: &'static str) -> Result<()> {
    if x.rank() < 1 {
        return Err(SnnError::Rank {
            op,
            rank: x.rank(),
            min_rank: 1,
        }
        .into());
    }
    Ok(())
}
