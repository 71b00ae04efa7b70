//! The encoder pair: master (query) and subordinate (key) encoders with their variable maps.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use nmoco_models::{Backbone, BackboneConfig, ProjectionHead, is_buffer};

use crate::error::Result;
use crate::momentum::{copy_vars, sorted_vars};

/// What the trainer needs from an encoder: per-step projections and per-step features.
pub trait Encoder {
    /// `[T, B, 2, H, W]` → projection-head outputs `[T, B, C]` (not normalised).
    fn embed(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor>;
    /// `[T, B, 2, H, W]` → backbone features `[T, B, D]` (for the kNN monitor).
    fn features(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor>;
}

/// Backbone + MoCo v2 projection head, with variables under `backbone.` and `head.`.
#[derive(Debug)]
pub struct MocoEncoder {
    pub backbone: Backbone,
    pub head: ProjectionHead,
}

impl MocoEncoder {
    pub fn new(
        cfg: &BackboneConfig,
        head_hidden: usize,
        head_out: usize,
        vb: VarBuilder<'_>,
    ) -> candle_core::Result<Self> {
        let backbone = Backbone::new(cfg, vb.pp("backbone"))?;
        let head =
            ProjectionHead::new(backbone.feature_dim(), head_hidden, head_out, vb.pp("head"))?;
        Ok(Self { backbone, head })
    }
}

impl Encoder for MocoEncoder {
    fn embed(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.head.forward(&self.backbone.forward(x, train)?, train)
    }

    fn features(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.backbone.forward(x, train)
    }
}

/// The two encoders of NeuroMoCo and their variables. The key encoder starts as an exact copy
/// of the master and is only ever changed by [`crate::momentum::momentum_update`].
pub struct EncoderPair<E> {
    pub master: E,
    pub key: E,
    pub master_vars: VarMap,
    pub key_vars: VarMap,
}

impl<E> std::fmt::Debug for EncoderPair<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncoderPair")
            .field("vars", &self.master_vars.all_vars().len())
            .finish_non_exhaustive()
    }
}

impl<E: Encoder> EncoderPair<E> {
    /// Build both encoders with `build`, give the master a seeded initialisation (see
    /// [`seeded_init`]) and copy it into the key encoder.
    pub fn new(
        device: &Device,
        seed: u64,
        build: impl Fn(VarBuilder<'_>) -> candle_core::Result<E>,
    ) -> Result<Self> {
        let master_vars = VarMap::new();
        let key_vars = VarMap::new();
        let master = build(VarBuilder::from_varmap(&master_vars, DType::F32, device))?;
        let key = build(VarBuilder::from_varmap(&key_vars, DType::F32, device))?;
        seeded_init(&master_vars, seed)?;
        copy_vars(&key_vars, &master_vars)?;
        Ok(Self {
            master,
            key,
            master_vars,
            key_vars,
        })
    }

    /// The master's trainable parameters (BN running statistics excluded), sorted by name.
    pub fn trainable(&self) -> Vec<(String, candle_core::Var)> {
        sorted_vars(&self.master_vars)
            .into_iter()
            .filter(|(n, _)| !is_buffer(n))
            .collect()
    }
}

/// A map's tensors: detached copies of the current values (a `Var` is updated in place, so
/// sharing its storage would not be a snapshot).
pub fn snapshot(map: &VarMap) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (n, v) in sorted_vars(map) {
        out.insert(n, v.as_detached_tensor().copy()?);
    }
    Ok(out)
}

/// Overwrite every variable of `map` from `tensors`; names and shapes must match exactly.
pub fn restore(map: &VarMap, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let vars = sorted_vars(map);
    for (name, var) in &vars {
        let t = tensors.get(name).ok_or_else(|| crate::Error::VarMismatch {
            name: name.clone(),
            reason: "missing from the checkpoint".into(),
        })?;
        if t.dims() != var.dims() {
            return Err(crate::Error::VarMismatch {
                name: name.clone(),
                reason: format!("checkpoint shape {:?} vs model {:?}", t.dims(), var.dims()),
            });
        }
        var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?)?;
    }
    if let Some(extra) = tensors.keys().find(|n| !vars.contains_key(*n)) {
        return Err(crate::Error::VarMismatch {
            name: extra.clone(),
            reason: "in the checkpoint but not in the model".into(),
        });
    }
    Ok(())
}

pub use nmoco_models::seeded_init;
