//! User-facing neuron modules: [`MultiStepNeuron`] over `[T, ...]` and the streaming
//! [`SingleStepNeuron`].

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::config::{NeuronConfig, NeuronImpl, NeuronKind, Params};
use crate::ops::{lif_multistep, plif_multistep};
use crate::reference::{k_tensor, lif_multistep_ref, plif_multistep_ref, plif_params, step_ref};

fn plif_w(cfg: &NeuronConfig, vb: &VarBuilder<'_>) -> Result<Option<Tensor>> {
    if cfg.kind == NeuronKind::Plif {
        let init = Init::Const(cfg.plif_init_w() as f64);
        Ok(Some(vb.get_with_hints((), "w", init)?))
    } else {
        Ok(None)
    }
}

/// A multi-step spiking neuron layer: `forward(x: [T, ...]) -> spikes` with the membrane reset
/// to rest at the start of every call. PLIF owns one learnable scalar `w` (variable `"w"`).
#[derive(Clone, Debug)]
pub struct MultiStepNeuron {
    cfg: NeuronConfig,
    w: Option<Tensor>,
}

impl MultiStepNeuron {
    /// Validates the config; PLIF creates the variable `"w"` initialised to `-ln(tau - 1)`.
    pub fn new(cfg: &NeuronConfig, vb: VarBuilder<'_>) -> Result<Self> {
        cfg.params()?;
        Ok(Self {
            cfg: cfg.clone(),
            w: plif_w(cfg, &vb)?,
        })
    }

    /// Spikes for `x: [T, ...]` (same shape and dtype).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match (&self.w, self.cfg.implementation) {
            (Some(w), NeuronImpl::Fused) => plif_multistep(x, w, &self.cfg),
            (Some(w), NeuronImpl::Reference) => plif_multistep_ref(x, w, &self.cfg),
            (None, NeuronImpl::Fused) => lif_multistep(x, &self.cfg),
            (None, NeuronImpl::Reference) => lif_multistep_ref(x, &self.cfg),
        }
    }

    pub fn config(&self) -> &NeuronConfig {
        &self.cfg
    }

    /// PLIF's learnable `w` (`None` for IF and LIF).
    pub fn w(&self) -> Option<&Tensor> {
        self.w.as_ref()
    }
}

impl Module for MultiStepNeuron {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        MultiStepNeuron::forward(self, xs)
    }
}

/// A single-step neuron for streaming inference: holds the membrane between calls to
/// [`SingleStepNeuron::step`]; [`SingleStepNeuron::reset`] returns it to rest. Built from plain
/// candle ops (the reference step), it gives bit-identical spikes to the multi-step ops.
#[derive(Clone, Debug)]
pub struct SingleStepNeuron {
    p: Params,
    k: Option<Tensor>,
    w: Option<Tensor>,
    v: Option<Tensor>,
}

impl SingleStepNeuron {
    /// Same variables as [`MultiStepNeuron::new`] (so it can load the same weights).
    pub fn new(cfg: &NeuronConfig, vb: VarBuilder<'_>) -> Result<Self> {
        let w = plif_w(cfg, &vb)?;
        Self::build(cfg, w)
    }

    /// A single-step twin of a multi-step layer, sharing its `w`.
    pub fn from_multistep(m: &MultiStepNeuron) -> Result<Self> {
        Self::build(&m.cfg, m.w.clone())
    }

    fn build(cfg: &NeuronConfig, w: Option<Tensor>) -> Result<Self> {
        let p = if w.is_some() {
            plif_params(cfg)?
        } else {
            cfg.params()?
        };
        Ok(Self {
            p,
            k: None,
            w,
            v: None,
        })
    }

    /// One time step: `x` is one step's input (e.g. `[B, C, H, W]`); returns its spikes.
    pub fn step(&mut self, x: &Tensor) -> Result<Tensor> {
        if let (Some(w), None) = (&self.w, &self.k) {
            self.k = Some(k_tensor(w, x.dtype())?);
        }
        let v = match self.v.take() {
            Some(v) if v.shape() == x.shape() => v,
            _ => Tensor::full(self.p.vr, x.shape(), x.device())?.to_dtype(x.dtype())?,
        };
        let (s, v_new) = step_ref(&v, x, &self.p, self.k.as_ref())?;
        self.v = Some(v_new);
        Ok(s)
    }

    /// Back to rest (call between independent sequences).
    pub fn reset(&mut self) {
        self.v = None;
        self.k = None;
    }

    /// The membrane after the last step (`None` at rest).
    pub fn membrane(&self) -> Option<&Tensor> {
        self.v.as_ref()
    }
}
