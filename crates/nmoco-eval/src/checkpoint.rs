//! Finding and loading a pre-trained encoder from what `nmoco pretrain` wrote.
//!
//! Accepted paths: a run folder (`runs/<name>`: uses `final/encoder.safetensors` when the run
//! finished, else the master encoder of the checkpoint that `checkpoints/latest` names), a
//! checkpoint folder (`.../checkpoints/epoch-0003`: its `master.safetensors`), or a safetensors
//! file. The run's resolved `config.toml` is found next to the weights or in a parent folder;
//! its `[model]` and `[data]` tables say which backbone and which frames the encoder expects.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use nmoco_data::DataConfig;
use nmoco_models::{Backbone, BackboneConfig};
use serde::Deserialize;

use crate::Error;

/// A located encoder checkpoint and the configuration it was trained with.
#[derive(Debug, Clone)]
pub struct EncoderCheckpoint {
    /// The safetensors file with `backbone.*` (and usually `head.*`) tensors.
    pub weights: PathBuf,
    /// The run's resolved `config.toml`.
    pub config_path: PathBuf,
    pub backbone: BackboneConfig,
    pub data: DataConfig,
    /// The folder reports are written to (next to the weights).
    pub dir: PathBuf,
}

#[derive(Deserialize)]
struct RunConfigView {
    model: ModelView,
    data: DataConfig,
}

#[derive(Deserialize)]
struct ModelView {
    backbone: Option<BackboneConfig>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Resolve `path` (run folder, checkpoint folder or safetensors file) to its weights and config.
pub fn locate(path: &Path) -> Result<EncoderCheckpoint, Error> {
    if !path.exists() {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: "does not exist (run `cargo xtask pretrain` first, or pass --checkpoint)"
                .into(),
        });
    }
    let weights = if path.is_file() {
        path.to_path_buf()
    } else if path.join("final/encoder.safetensors").is_file() {
        path.join("final/encoder.safetensors")
    } else if path.join("master.safetensors").is_file() {
        path.join("master.safetensors")
    } else if path.join("checkpoints/latest").is_file() {
        let latest = path.join("checkpoints/latest");
        let name = std::fs::read_to_string(&latest).map_err(io(&latest))?;
        let w = path
            .join("checkpoints")
            .join(name.trim())
            .join("master.safetensors");
        if !w.is_file() {
            return Err(Error::Checkpoint {
                path: latest,
                reason: format!("names {}, which has no master.safetensors", name.trim()),
            });
        }
        w
    } else {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            reason:
                "is neither a safetensors file nor a run folder with final/encoder.safetensors \
                     or checkpoints/latest"
                    .into(),
        });
    };
    let dir = weights
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let config_path = dir
        .ancestors()
        .take(4)
        .map(|d| d.join("config.toml"))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Checkpoint {
            path: weights.clone(),
            reason: "no config.toml next to it or in the three folders above it".into(),
        })?;
    let text = std::fs::read_to_string(&config_path).map_err(io(&config_path))?;
    let view: RunConfigView = toml::from_str(&text).map_err(|e| Error::Checkpoint {
        path: config_path.clone(),
        reason: format!("cannot read its [model] and [data] tables: {e}"),
    })?;
    let backbone = view.model.backbone.ok_or_else(|| Error::Checkpoint {
        path: config_path.clone(),
        reason: "has no resolved [model.backbone] table".into(),
    })?;
    Ok(EncoderCheckpoint {
        weights,
        config_path,
        backbone,
        data: view.data,
        dir,
    })
}

/// Check that a dataset config produces the input the checkpoint's encoder was trained on.
pub fn check_compatible(ckpt: &EncoderCheckpoint, data: &DataConfig) -> Result<(), Error> {
    let (a, b) = (&ckpt.data.frames, &data.frames);
    if (a.height, a.width) != (b.height, b.width) {
        return Err(Error::Incompatible {
            path: ckpt.weights.clone(),
            reason: format!(
                "it was trained on {}x{} frames but the dataset config gives {}x{}",
                a.height, a.width, b.height, b.width
            ),
        });
    }
    Ok(())
}

/// Build the backbone of `cfg` and, if `weights` is given, load its `backbone.*` tensors
/// (every backbone variable must be present with the same shape).
pub fn load_backbone(
    cfg: &BackboneConfig,
    weights: Option<&Path>,
    init_seed: u64,
    device: &Device,
) -> Result<(Backbone, VarMap), Error> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let backbone = Backbone::new(cfg, vb.pp("backbone"))?;
    nmoco_models::seeded_init(&varmap, init_seed)?;
    if let Some(w) = weights {
        load_into(&varmap, w).map_err(|e| match e {
            Error::Incompatible { path, reason } => Error::Incompatible {
                path,
                reason: format!("{reason} (expected a checkpoint of {})", arch_name(cfg)),
            },
            e => e,
        })?;
    }
    Ok((backbone, varmap))
}

/// Load the `backbone.*` tensors of `weights` into the matching variables of `varmap`; other
/// tensors of the file (the projection head) are ignored, variables outside `backbone.` (a new
/// classifier) keep their values. A missing tensor or a shape mismatch is an error naming it.
pub fn load_into(varmap: &VarMap, weights: &Path) -> Result<(), Error> {
    let tensors =
        candle_core::safetensors::load(weights, &Device::Cpu).map_err(|e| Error::Checkpoint {
            path: weights.to_path_buf(),
            reason: format!("is not a readable safetensors file: {e}"),
        })?;
    let map = varmap.data().lock().map_err(|_| Error::Checkpoint {
        path: weights.to_path_buf(),
        reason: "variable map lock poisoned".into(),
    })?;
    let mut names: Vec<&String> = map.keys().filter(|n| n.starts_with("backbone.")).collect();
    names.sort();
    for name in &names {
        let var = &map[*name];
        let t = tensors.get(*name).ok_or_else(|| Error::Incompatible {
            path: weights.to_path_buf(),
            reason: format!("it has no tensor `{name}`: another backbone architecture"),
        })?;
        if t.dims() != var.dims() {
            return Err(Error::Incompatible {
                path: weights.to_path_buf(),
                reason: format!(
                    "tensor `{name}` has shape {:?} but the model expects {:?}: another backbone \
                     width or depth",
                    t.dims(),
                    var.dims()
                ),
            });
        }
    }
    for name in names {
        let var = &map[name];
        var.set(
            &tensors[name]
                .to_dtype(var.dtype())?
                .to_device(var.device())?,
        )?;
    }
    Ok(())
}

/// A short name of the backbone for messages and reports.
pub fn arch_name(cfg: &BackboneConfig) -> String {
    match cfg {
        BackboneConfig::SewResnet(c) => {
            let ch: Vec<String> = c.stages.iter().map(|s| s.channels.to_string()).collect();
            format!("sew_resnet[{}]", ch.join("-"))
        }
        BackboneConfig::Spikformer(c) => format!("spikformer[{}x{}]", c.depth, c.embed_dim),
    }
}
