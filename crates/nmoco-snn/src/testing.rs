//! Parity-test helpers (feature `testing`, which only this crate's own tests and examples and
//! other crates' dev-dependencies turn on): the workspace's shared helpers
//! ([`nmoco_testkit`], re-exported) plus one forward and backward pass of a neuron through the
//! fused op or its reference twin.

use candle_core::{DType, Device, Result, Tensor, Var};
pub use nmoco_testkit::*;

use crate::{
    NeuronConfig, NeuronKind, lif_multistep, lif_multistep_ref, plif_multistep, plif_multistep_ref,
};

/// Spikes, `dL/dx` and (PLIF) `dL/dw` of one run, all as f32.
#[derive(Clone, Debug)]
pub struct NeuronRun {
    pub spikes: Vec<f32>,
    pub gx: Vec<f32>,
    pub gw: Option<f32>,
}

/// Forward and backward of `loss = sum(s * g)` through the fused op (`fused`) or the reference
/// twin, with `x` and `g` moved to `dev` and cast to `dtype`; PLIF's `w` (its initial value) is
/// rounded through `w_dtype` first, so that an f32 run sees the same `w` as an f16/bf16 one.
pub fn run_neuron(
    cfg: &NeuronConfig,
    x: &Tensor,
    g: &Tensor,
    dev: &Device,
    dtype: DType,
    fused: bool,
    w_dtype: DType,
) -> Result<NeuronRun> {
    let xv = Var::from_tensor(&x.to_device(dev)?.to_dtype(dtype)?)?;
    let g = g.to_device(dev)?.to_dtype(dtype)?;
    let (s, wv) = if cfg.kind == NeuronKind::Plif {
        let w = Tensor::new(cfg.plif_init_w(), dev)?
            .to_dtype(w_dtype)?
            .to_dtype(dtype)?;
        let wv = Var::from_tensor(&w)?;
        let s = if fused {
            plif_multistep(xv.as_tensor(), wv.as_tensor(), cfg)?
        } else {
            plif_multistep_ref(xv.as_tensor(), wv.as_tensor(), cfg)?
        };
        (s, Some(wv))
    } else if fused {
        (lif_multistep(xv.as_tensor(), cfg)?, None)
    } else {
        (lif_multistep_ref(xv.as_tensor(), cfg)?, None)
    };
    let grads = (&s * &g)?.sum_all()?.backward()?;
    let gx = grads
        .get(xv.as_tensor())
        .ok_or_else(|| candle_core::Error::msg("no gradient for x"))?;
    let gw = match &wv {
        Some(w) => Some(
            grads
                .get(w.as_tensor())
                .ok_or_else(|| candle_core::Error::msg("no gradient for w"))?
                .to_dtype(DType::F32)?
                .to_scalar::<f32>()?,
        ),
        None => None,
    };
    Ok(NeuronRun {
        spikes: flat(&s)?,
        gx: flat(gx)?,
        gw,
    })
}
