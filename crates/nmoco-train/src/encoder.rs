//! The encoder pair: master (query) and subordinate (key) encoders with their variable maps.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use nmoco_models::{Backbone, BackboneConfig, ProjectionHead, is_buffer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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

/// Re-draw the randomly initialised variables of `map` from a ChaCha RNG seeded with `seed`,
/// with the same distribution nmoco-models uses (PyTorch's default: `U(−1/√fan_in, 1/√fan_in)`
/// for conv and linear weights, `fan_in` = elements / output channels, and for a linear bias the
/// fan-in of its `weight`). Constant-initialised variables (BN affine and running statistics,
/// PLIF `w`) are left alone. candle's CPU RNG cannot be seeded, so this is what makes two runs
/// with the same seed start from identical weights.
pub fn seeded_init(map: &VarMap, seed: u64) -> Result<()> {
    let vars: BTreeMap<String, candle_core::Var> = sorted_vars(map);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e6d_6f63_6f5f_696e);
    for (name, var) in &vars {
        if is_buffer(name) {
            continue;
        }
        let dims = var.dims().to_vec();
        let fan_in = if dims.len() >= 2 {
            dims[1..].iter().product::<usize>()
        } else if let Some(prefix) = name.strip_suffix(".bias") {
            match vars.get(&format!("{prefix}.weight")) {
                Some(w) if w.rank() == 2 => w.dims()[1],
                _ => continue,
            }
        } else {
            continue;
        };
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        let n: usize = dims.iter().product();
        let vals: Vec<f32> = (0..n)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        let t = Tensor::from_vec(vals, dims, &Device::Cpu)?.to_device(var.device())?;
        var.set(&t)?;
    }
    Ok(())
}
