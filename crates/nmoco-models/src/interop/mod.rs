//! Backbones to and from PyTorch state dicts: SpikingJelly 2.0's `sew_resnet18` family and the
//! official Spikformer DVS model (`ZK-Zhou/spikformer`, `cifar10dvs/model.py`).
//!
//! Module names (nmoco → PyTorch; a variable is `{module}.{leaf}` on both sides with the same
//! leaf: `weight`, `bias`, `running_mean`, `running_var`, PLIF `w`):
//!
//! | nmoco | SpikingJelly `SEWResNet` |
//! |---|---|
//! | `stem.{conv,bn,sn}` | `conv1`, `bn1`, `sn1` |
//! | `stages.{i}.blocks.{j}.{conv1,bn1,sn1,conv2,bn2,sn2}` | `layer{i+1}.{j}.{same}` |
//! | `stages.{i}.blocks.{j}.downsample.{conv,bn,sn}` | `layer{i+1}.{j}.downsample.0`, `.downsample.1`, `.downsample_sn` |
//!
//! | nmoco | official Spikformer |
//! |---|---|
//! | `sps.{conv,bn,sn}{0,1,2,3}` | `patch_embed.proj_{conv,bn,lif}{"",1,2,3}` |
//! | `sps.rpe_{conv,bn,sn}` | `patch_embed.rpe_{conv,bn,lif}` |
//! | `blocks.{j}.attn.{q,k,v,proj}` (linear) | `block.{j}.attn.{q,k,v,proj}_conv` (Conv1d, weight `[out, in, 1]`) |
//! | `blocks.{j}.attn.{x}_bn`, `{x}_sn`, `attn_sn` | `block.{j}.attn.{x}_bn`, `{x}_lif`, `attn_lif` |
//! | `blocks.{j}.mlp.fc{n}`, `fc{n}_bn`, `fc{n}_sn` | `block.{j}.mlp.fc{n}_conv`, `fc{n}_bn`, `fc{n}_lif` |
//!
//! Every PyTorch BN also has a `num_batches_tracked` (int64 scalar) that nmoco does not keep:
//! it is exported as 0 (PyTorch reads it only when a BN's momentum is `None`; both models use
//! 0.1) and ignored on import. Tensors a PyTorch checkpoint may hold that the backbone does not
//! use (the classifier `fc.*` / `head.*`, the official Spikformer's unused `pos_embed` and
//! LayerNorms, an exported `moco_head.*`) are skipped on import and listed; anything else
//! unknown, and anything missing or of another shape, is an error naming every such tensor.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::config::BackboneConfig;
use crate::params::is_buffer;

mod files;
mod names;

pub use files::{
    import_file, infer_backbone, load_into_varmap, read_state_dict, write_safetensors,
};
use names::arch;
pub use names::{KeyMap, Layout, check_supported, torch_module};

/// Prefix under which `nmoco export --with-head` writes the MoCo projection head (its nmoco
/// names kept: `moco_head.fc1.weight`, ...).
pub const MOCO_HEAD_PREFIX: &str = "moco_head.";

/// The official Spikformer's tensors that its forward never reads (skipped on import).
pub const SPIKFORMER_UNUSED: [&str; 11] = [
    "pos_embed",
    "block.0.norm1.weight",
    "block.0.norm1.bias",
    "block.0.norm2.weight",
    "block.0.norm2.bias",
    "block.1.norm1.weight",
    "block.1.norm1.bias",
    "block.1.norm2.weight",
    "block.1.norm2.bias",
    "norm.weight",
    "norm.bias",
];

/// Errors of the PyTorch interop.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    /// The backbone has no PyTorch twin with these key names.
    #[error("{arch} has no PyTorch twin: {reason}")]
    NoTwin {
        /// Short description of the backbone.
        arch: String,
        /// Why it cannot be mapped.
        reason: String,
    },
    /// A state dict does not fit the backbone.
    #[error("{path:?} does not fit {arch}:{}", describe(missing, extra, misshaped))]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The backbone it was checked against.
        arch: String,
        /// Tensors the backbone needs that the file lacks (PyTorch names).
        missing: Vec<String>,
        /// Tensors of the file the backbone does not know (PyTorch names).
        extra: Vec<String>,
        /// `(name, expected, found)` for tensors of another shape.
        misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    },
    /// Reading or writing a state dict failed.
    #[error("{path:?}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A candle operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn describe(
    missing: &[String],
    extra: &[String],
    misshaped: &[(String, Vec<usize>, Vec<usize>)],
) -> String {
    let mut out = String::new();
    if !missing.is_empty() {
        out.push_str(&format!(
            "\n  {} missing: {}",
            missing.len(),
            missing.join(", ")
        ));
    }
    if !extra.is_empty() {
        out.push_str(&format!(
            "\n  {} unexpected: {}",
            extra.len(),
            extra.join(", ")
        ));
    }
    if !misshaped.is_empty() {
        let items: Vec<String> = misshaped
            .iter()
            .map(|(n, e, f)| format!("{n} (expected {e:?}, found {f:?})"))
            .collect();
        out.push_str(&format!(
            "\n  {} of another shape: {}",
            misshaped.len(),
            items.join(", ")
        ));
    }
    out
}

/// nmoco backbone tensors (names relative to the backbone, every variable of `cfg` required)
/// → a PyTorch state dict: renamed, Conv1d weights reshaped, `num_batches_tracked` = 0 added.
pub fn export_state_dict(
    cfg: &BackboneConfig,
    tensors: &HashMap<String, Tensor>,
    source: &Path,
) -> Result<BTreeMap<String, Tensor>, InteropError> {
    let layout = Layout::new(cfg)?;
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    for k in &layout.keys {
        match tensors.get(&k.nmoco) {
            None => missing.push(k.nmoco.clone()),
            Some(t) if t.dims() != k.nmoco_dims.as_slice() => {
                misshaped.push((k.nmoco.clone(), k.nmoco_dims.clone(), t.dims().to_vec()))
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() || !misshaped.is_empty() {
        return Err(InteropError::Mismatch {
            path: source.to_path_buf(),
            arch: arch(cfg),
            missing,
            extra: Vec::new(),
            misshaped,
        });
    }
    let mut out = BTreeMap::new();
    for k in &layout.keys {
        let t = tensors[&k.nmoco]
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .reshape(k.torch_dims.as_slice())?
            .contiguous()?;
        out.insert(k.torch.clone(), t);
    }
    for bn in &layout.batch_norms {
        out.insert(
            format!("{bn}.num_batches_tracked"),
            Tensor::zeros((), DType::I64, &Device::Cpu)?,
        );
    }
    Ok(out)
}

/// What [`import_state_dict`] returns.
#[derive(Debug)]
pub struct Imported {
    /// Backbone tensors under nmoco names (relative to the backbone), f32, nmoco shapes.
    pub tensors: HashMap<String, Tensor>,
    /// Keys of the file that were skipped (classifier, unused official tensors,
    /// `num_batches_tracked`), sorted.
    pub skipped: Vec<String>,
}

/// A PyTorch state dict → nmoco backbone tensors. Every missing, unknown or mis-shaped tensor
/// is collected and reported at once ([`InteropError::Mismatch`]).
pub fn import_state_dict(
    cfg: &BackboneConfig,
    state: &HashMap<String, Tensor>,
    source: &Path,
) -> Result<Imported, InteropError> {
    let layout = Layout::new(cfg)?;
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    for k in &layout.keys {
        match state.get(&k.torch) {
            None => missing.push(k.torch.clone()),
            Some(t) if t.dims() != k.torch_dims.as_slice() => {
                misshaped.push((k.torch.clone(), k.torch_dims.clone(), t.dims().to_vec()))
            }
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<&str> =
        layout.keys.iter().map(|k| k.torch.as_str()).collect();
    let mut extra = Vec::new();
    let mut skipped = Vec::new();
    for key in state.keys() {
        if known.contains(key.as_str()) {
            continue;
        }
        if layout.ignorable(key) {
            skipped.push(key.clone());
        } else {
            extra.push(key.clone());
        }
    }
    missing.sort();
    extra.sort();
    misshaped.sort();
    skipped.sort();
    if !missing.is_empty() || !extra.is_empty() || !misshaped.is_empty() {
        return Err(InteropError::Mismatch {
            path: source.to_path_buf(),
            arch: arch(cfg),
            missing,
            extra,
            misshaped,
        });
    }
    let mut tensors = HashMap::new();
    for k in &layout.keys {
        let t = state[&k.torch]
            .to_dtype(DType::F32)?
            .reshape(k.nmoco_dims.as_slice())?;
        let finite = t
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|v| v.is_finite());
        if !finite {
            return Err(InteropError::File {
                path: source.to_path_buf(),
                reason: format!("tensor `{}` holds NaN or infinite values", k.torch),
            });
        }
        if is_buffer(&k.nmoco) && k.nmoco.ends_with("running_var") {
            let min = t.min_all()?.to_scalar::<f32>()?;
            if min < 0.0 {
                return Err(InteropError::File {
                    path: source.to_path_buf(),
                    reason: format!("tensor `{}` has a negative variance {min}", k.torch),
                });
            }
        }
        tensors.insert(k.nmoco.clone(), t);
    }
    Ok(Imported { tensors, skipped })
}
