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

    /// The same encoder computing in `dtype` (see [`Backbone::with_compute_dtype`]); the head
    /// runs in it too, and embeddings and features are returned in f32 (the loss, the queue and
    /// the kNN monitor stay f32).
    pub fn with_compute_dtype(self, dtype: DType) -> candle_core::Result<Self> {
        Ok(Self {
            backbone: self.backbone.with_compute_dtype(dtype)?,
            head: self.head,
        })
    }
}

fn f32_out(x: Tensor) -> candle_core::Result<Tensor> {
    if x.dtype() == DType::F32 {
        Ok(x)
    } else {
        x.to_dtype(DType::F32)
    }
}

impl Encoder for MocoEncoder {
    fn embed(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        f32_out(
            self.head
                .forward(&self.backbone.forward(x, train)?, train)?,
        )
    }

    fn features(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        f32_out(self.backbone.forward(x, train)?)
    }
}

/// A [`VarBuilder`] backend over an existing [`VarMap`] that hands out its variables' weights as
/// plain (non-variable) tensors sharing their storage, and BN running statistics as the
/// variables themselves (BN updates them in place with `Var::set`). An encoder built from it
/// records no autograd graph in its forward pass, yet sees every in-place update of the map
/// (momentum update, checkpoint restore) because the storage is shared.
struct DetachedVars(VarMap);

impl candle_nn::var_builder::SimpleBackend for DetachedVars {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            candle_core::bail!(
                "key encoder: {name} has shape {:?}, expected {s:?}",
                t.shape()
            );
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let data = self
            .0
            .data()
            .lock()
            .map_err(|_| candle_core::Error::msg("var map poisoned"))?;
        let v = data
            .get(name)
            .ok_or_else(|| candle_core::Error::msg(format!("key encoder: no variable {name}")))?;
        if v.dtype() != dtype || !v.device().same_device(dev) {
            candle_core::bail!(
                "key encoder: {name} has dtype/device {:?}/{:?}",
                v.dtype(),
                v.device()
            );
        }
        Ok(if is_buffer(name) {
            v.as_tensor().clone()
        } else {
            v.as_detached_tensor()
        })
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.data().lock().is_ok_and(|d| d.contains_key(name))
    }
}

/// The two encoders of NeuroMoCo and their variables. The key encoder starts as an exact copy
/// of the master and is only ever changed by [`crate::momentum::momentum_update`]; its layers
/// hold storage-sharing plain tensors (see `DetachedVars`), so its forward pass builds no graph.
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
        Self::with_conv_init(device, seed, nmoco_models::ConvInit::UniformFanIn, build)
    }

    /// [`EncoderPair::new`] with the backbone's convolution initialisation (see
    /// [`nmoco_models::seeded_init_with`]).
    pub fn with_conv_init(
        device: &Device,
        seed: u64,
        conv_init: nmoco_models::ConvInit,
        build: impl Fn(VarBuilder<'_>) -> candle_core::Result<E>,
    ) -> Result<Self> {
        let master_vars = VarMap::new();
        let key_vars = VarMap::new();
        let master = build(VarBuilder::from_varmap(&master_vars, DType::F32, device))?;
        // Create the key variables, then build the key encoder that is used over them.
        drop(build(VarBuilder::from_varmap(
            &key_vars,
            DType::F32,
            device,
        ))?);
        let key = build(VarBuilder::from_backend(
            Box::new(DetachedVars(key_vars.clone())),
            DType::F32,
            device.clone(),
        ))?;
        nmoco_models::seeded_init_with(&master_vars, seed, conv_init)?;
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
