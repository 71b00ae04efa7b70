//! Multi-step wrappers: fold the time dimension into the batch so stateless layers (conv,
//! batch norm, linear) run once over all `T*B` samples. Batch norm applied to the folded tensor
//! computes its statistics over `T*B`, as SpikingJelly's `SeqToANNContainer` does.

use candle_core::{Module, Result, Tensor};

use crate::error::SnnError;

/// `[T, B, ...] -> [T*B, ...]` (a view when `x` is contiguous).
pub fn seq_fold(x: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(SnnError::Rank {
            op: "seq_fold",
            rank: dims.len(),
            min_rank: 2,
        }
        .into());
    }
    let mut out = Vec::with_capacity(dims.len() - 1);
    out.push(dims[0] * dims[1]);
    out.extend_from_slice(&dims[2..]);
    x.reshape(out)
}

/// `[T*B, ...] -> [T, B, ...]`.
pub fn seq_unfold(x: &Tensor, t: usize) -> Result<Tensor> {
    let dims = x.dims();
    let len = dims.first().copied().unwrap_or(0);
    if dims.is_empty() {
        return Err(SnnError::Rank {
            op: "seq_unfold",
            rank: 0,
            min_rank: 1,
        }
        .into());
    }
    if t == 0 || len % t != 0 {
        return Err(SnnError::Unfold { len, t }.into());
    }
    let mut out = Vec::with_capacity(dims.len() + 1);
    out.push(t);
    out.push(len / t);
    out.extend_from_slice(&dims[1..]);
    x.reshape(out)
}

/// Apply a per-sample function to every time step at once: fold, `f`, unfold.
pub fn seq_apply<F>(x: &Tensor, f: F) -> Result<Tensor>
where
    F: FnOnce(&Tensor) -> Result<Tensor>,
{
    let t = x.dim(0)?;
    seq_unfold(&f(&seq_fold(x)?)?, t)
}

/// A [`Module`] wrapper that runs `inner` on `[T, B, ...]` input by folding `T` into the batch.
#[derive(Clone, Debug)]
pub struct SeqToAnn<M> {
    pub inner: M,
}

impl<M> SeqToAnn<M> {
    pub fn new(inner: M) -> Self {
        Self { inner }
    }
}

impl<M: Module> Module for SeqToAnn<M> {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        seq_apply(xs, |x| self.inner.forward(x))
    }
}
