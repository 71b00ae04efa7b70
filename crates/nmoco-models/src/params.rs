//! Parameter bookkeeping and safetensors checkpoints over a [`VarMap`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::ConvInit;
use crate::error::ModelError;

/// True for batch-norm running statistics (`*.running_mean`, `*.running_var`): variables that
/// the optimizer must skip but that EMA updates and checkpoints cover.
pub fn is_buffer(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    last == "running_mean" || last == "running_var"
}

/// Number of trainable scalars in the map (buffers excluded).
pub fn count_params(varmap: &VarMap) -> usize {
    let data = varmap.data().lock();
    match data {
        Ok(map) => map
            .iter()
            .filter(|(name, _)| !is_buffer(name))
            .map(|(_, v)| v.elem_count())
            .sum(),
        Err(poisoned) => poisoned
            .into_inner()
            .iter()
            .filter(|(name, _)| !is_buffer(name))
            .map(|(_, v)| v.elem_count())
            .sum(),
    }
}

/// Sorted `(name, dims)` of every variable in the map (parameters and buffers).
pub fn var_shapes(varmap: &VarMap) -> Vec<(String, Vec<usize>)> {
    let guard = varmap.data().lock();
    let map = match guard {
        Ok(m) => m,
        Err(p) => p.into_inner(),
    };
    let mut out: Vec<_> = map
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    out.sort();
    out
}

/// Writes every variable of the map (parameters and BN running statistics) to a safetensors
/// file under its VarMap name.
pub fn save_weights(varmap: &VarMap, path: &Path) -> Result<(), ModelError> {
    varmap.save(path).map_err(|source| ModelError::Checkpoint {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads a safetensors checkpoint into the map's existing variables, in place (so models built
/// from the map see the new values). Every variable must be present with the same shape;
/// with `strict`, tensors the map does not know are an error too.
pub fn load_weights(varmap: &VarMap, path: &Path, strict: bool) -> Result<(), ModelError> {
    let ck = |source| ModelError::Checkpoint {
        path: path.to_path_buf(),
        source,
    };
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(path, &Device::Cpu).map_err(ck)?;
    let guard = varmap.data().lock();
    let map = match guard {
        Ok(m) => m,
        Err(p) => p.into_inner(),
    };
    if strict {
        let mut extra: Vec<&String> = tensors.keys().filter(|k| !map.contains_key(*k)).collect();
        extra.sort();
        if let Some(first) = extra.first() {
            return Err(ModelError::UnexpectedTensors {
                path: path.to_path_buf(),
                count: extra.len(),
                example: (*first).clone(),
            });
        }
    }
    // Check everything before mutating anything.
    for (name, var) in map.iter() {
        let t = tensors.get(name).ok_or_else(|| ModelError::MissingTensor {
            path: path.to_path_buf(),
            name: name.clone(),
        })?;
        if t.dims() != var.dims() {
            return Err(ModelError::ShapeMismatch {
                path: path.to_path_buf(),
                name: name.clone(),
                expected: var.dims().to_vec(),
                found: t.dims().to_vec(),
            });
        }
    }
    for (name, var) in map.iter() {
        if let Some(t) = tensors.get(name) {
            let t = t
                .to_device(var.device())
                .and_then(|t| t.to_dtype(var.dtype()))
                .map_err(ck)?;
            var.set(&t).map_err(ck)?;
        }
    }
    tracing::debug!(path = %path.display(), vars = map.len(), "loaded checkpoint");
    Ok(())
}

/// Every variable of the map (parameters and buffers), sorted by name.
pub fn sorted_vars(varmap: &VarMap) -> BTreeMap<String, Var> {
    let guard = varmap.data().lock();
    let map = match guard {
        Ok(m) => m,
        Err(p) => p.into_inner(),
    };
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Re-draws the randomly initialised variables of `varmap` from a ChaCha8 RNG seeded with
/// `seed`, with the distribution the layers use (PyTorch's default `U(−1/√fan_in, 1/√fan_in)`
/// for conv and linear weights, `fan_in` = elements / output channels, and for a linear bias
/// the fan-in of its sibling `weight`). Constant-initialised variables (BN affine and running
/// statistics, PLIF `w`) are left alone. Variables are visited in name order, so the same seed
/// and the same set of names give identical weights (candle's CPU RNG cannot be seeded).
pub fn seeded_init(varmap: &VarMap, seed: u64) -> candle_core::Result<()> {
    seeded_init_with(varmap, seed, ConvInit::UniformFanIn)
}

/// [`seeded_init`] with a choice for the convolution weights (every rank-4 variable): with
/// [`ConvInit::KaimingNormalFanOut`] they are drawn from `N(0, 2 / fan_out)`,
/// `fan_out = C_out·k·k` (SpikingJelly's `SEWResNet`), by Box–Muller from the same ChaCha8
/// stream; everything else is drawn exactly as by [`seeded_init`]. Use
/// [`crate::BackboneConfig::conv_init`] to pick the backbone's own scheme.
pub fn seeded_init_with(
    varmap: &VarMap,
    seed: u64,
    conv_init: ConvInit,
) -> candle_core::Result<()> {
    let vars = sorted_vars(varmap);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e6d_6f63_6f5f_696e);
    for (name, var) in &vars {
        if is_buffer(name) {
            continue;
        }
        let dims = var.dims().to_vec();
        if dims.len() == 4 && conv_init == ConvInit::KaimingNormalFanOut {
            let fan_out = dims[0] * dims[2] * dims[3];
            let std = (2.0 / fan_out.max(1) as f64).sqrt();
            let n: usize = dims.iter().product();
            let vals: Vec<f32> = (0..n)
                .map(|_| {
                    // Box–Muller: u1 in (0, 1] so that ln(u1) is finite.
                    let u1: f64 = 1.0 - rng.random::<f64>();
                    let u2: f64 = rng.random::<f64>();
                    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                    (z * std) as f32
                })
                .collect();
            let t = Tensor::from_vec(vals, dims, &Device::Cpu)?
                .to_device(var.device())?
                .to_dtype(var.dtype())?;
            var.set(&t)?;
            continue;
        }
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
        let t = Tensor::from_vec(vals, dims, &Device::Cpu)?
            .to_device(var.device())?
            .to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}
