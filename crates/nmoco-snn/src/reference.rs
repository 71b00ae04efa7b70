//! Reference twins: the same neurons built from ordinary candle ops, differentiated by candle's
//! autograd one time step at a time. They define the semantics the fused ops must match:
//! the forward values are bit-identical (same f32 operations in the same order), gradients agree
//! to rounding.

use candle_core::{DType, Result, Tensor};

use crate::config::{Charge, NeuronConfig, NeuronKind, Params};
use crate::error::SnnError;
use crate::surrogate::Surrogate;

/// Heaviside forward, surrogate backward, from plain ops: `H(d) + (d*g - detach(d*g))` with
/// `g = surrogate'(d)` held constant. The second term is exactly 0 in the forward pass and
/// carries the gradient `g` in the backward pass.
pub fn spike_ref(d: &Tensor, sg: &Surrogate) -> Result<Tensor> {
    let dd = d.detach();
    let g = sg.grad_tensor(&dd)?;
    let heaviside = dd.ge(0.0)?.to_dtype(d.dtype())?;
    let y = (d * g)?;
    heaviside + (&y - y.detach())?
}

/// `k` of PLIF from `w`: `1 / (1 + exp(-w))`, as a scalar tensor.
pub(crate) fn k_tensor(w: &Tensor, dtype: DType) -> Result<Tensor> {
    (w.to_dtype(dtype)?.reshape(())?.neg()?.exp()? + 1.0)?.recip()
}

/// One step of the charge / fire / reset equations; returns `(spikes, new membrane)`.
pub(crate) fn step_ref(
    v: &Tensor,
    x: &Tensor,
    p: &Params,
    k: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let vr = p.vr as f64;
    let times_k = |t: Tensor| -> Result<Tensor> {
        match k {
            Some(k) => t.broadcast_mul(k),
            None => t * p.k as f64,
        }
    };
    let h = match p.charge {
        Charge::If => (v + x)?,
        Charge::Decay => (v + times_k((x - (v - vr)?)?)?)?,
        Charge::NoDecay => ((v - times_k((v - vr)?)?)? + x)?,
    };
    let s = spike_ref(&(&h - p.vth as f64)?, &p.surrogate)?;
    let sr = if p.detach { s.detach() } else { s.clone() };
    let v_new = if p.hard {
        ((&h * sr.affine(-1.0, 1.0)?)? + (sr * vr)?)?
    } else {
        (&h - (sr * p.vth as f64)?)?
    };
    Ok((s, v_new))
}

fn run_ref(x: &Tensor, p: &Params, k: Option<&Tensor>) -> Result<Tensor> {
    let t = x.dim(0)?;
    if t == 0 {
        return x.zeros_like();
    }
    let step_shape = x.get(0)?.shape().clone();
    let mut v = Tensor::full(p.vr, step_shape, x.device())?.to_dtype(x.dtype())?;
    let mut out = Vec::with_capacity(t);
    for ti in 0..t {
        let (s, v_new) = step_ref(&v, &x.get(ti)?, p, k)?;
        out.push(s);
        v = v_new;
    }
    Tensor::stack(&out, 0)
}

/// Reference twin of [`crate::lif_multistep`] (IF and LIF).
pub fn lif_multistep_ref(x: &Tensor, cfg: &NeuronConfig) -> Result<Tensor> {
    if x.rank() < 1 {
        return Err(SnnError::Rank {
            op: "lif_multistep_ref",
            rank: 0,
            min_rank: 1,
        }
        .into());
    }
    if cfg.kind == NeuronKind::Plif {
        return Err(SnnError::Kind {
            op: "lif_multistep_ref",
            kind: cfg.kind,
            hint: "use plif_multistep_ref with a w tensor",
        }
        .into());
    }
    run_ref(x, &cfg.params()?, None)
}

/// Reference twin of [`crate::plif_multistep`].
pub fn plif_multistep_ref(x: &Tensor, w: &Tensor, cfg: &NeuronConfig) -> Result<Tensor> {
    if x.rank() < 1 {
        return Err(SnnError::Rank {
            op: "plif_multistep_ref",
            rank: 0,
            min_rank: 1,
        }
        .into());
    }
    if w.elem_count() != 1 {
        return Err(SnnError::WShape {
            op: "plif_multistep_ref",
            shape: w.dims().to_vec(),
        }
        .into());
    }
    let p = plif_params(cfg)?;
    let k = k_tensor(w, x.dtype())?;
    run_ref(x, &p, Some(&k))
}

/// PLIF always uses a LIF charge form (chosen by `decay_input`), whatever `cfg.kind` says.
pub(crate) fn plif_params(cfg: &NeuronConfig) -> Result<Params> {
    let mut p = cfg.params()?;
    p.charge = if cfg.decay_input {
        Charge::Decay
    } else {
        Charge::NoDecay
    };
    Ok(p)
}
