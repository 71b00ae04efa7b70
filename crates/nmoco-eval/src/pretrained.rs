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
use crate::run_dir::{
    self, CHECKPOINTS, CONFIG, FINAL, FINAL_ENCODER, FINAL_FILES, FileDigests, LATEST, MASTER,
    RunPaths, STATE,
};

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
    let run = RunPaths::new(path);
    let weights = if path.is_file() {
        path.to_path_buf()
    } else if run.final_encoder().is_file() {
        run.final_encoder()
    } else if path.join(MASTER).is_file() {
        path.join(MASTER)
    } else if run.latest().is_file() {
        let latest = run.latest();
        let name = std::fs::read_to_string(&latest).map_err(io(&latest))?;
        let w = run.checkpoints().join(name.trim()).join(MASTER);
        if !w.is_file() {
            return Err(Error::Checkpoint {
                path: latest,
                reason: format!("names {}, which has no {MASTER}", name.trim()),
            });
        }
        w
    } else {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!(
                "is neither a safetensors file nor a run folder with {FINAL}/{FINAL_ENCODER} \
                 or {CHECKPOINTS}/{LATEST}"
            ),
        });
    };
    let dir = weights
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    verify_weights(&weights)?;
    let config_path = dir
        .ancestors()
        .take(4)
        .map(|d| d.join(CONFIG))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Checkpoint {
            path: weights.clone(),
            reason: format!("no {CONFIG} next to it or in the three folders above it"),
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

/// Check `weights` against the size and SHA-256 that the trainer recorded next to it
/// (`final/files.json` for `final/encoder.safetensors`, the checkpoint's `state.json` for
/// `master.safetensors`). Files without a record (older runs, exported files) pass with a
/// warning; a mismatch is an error naming the file, what differs, and an intact alternative.
pub fn verify_weights(weights: &Path) -> Result<(), Error> {
    let (Some(dir), Some(name)) = (
        weights.parent(),
        weights.file_name().and_then(|n| n.to_str()),
    ) else {
        return Ok(());
    };
    let record = [FINAL_FILES, STATE]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file());
    let Some(record) = record else {
        tracing::warn!(file = %weights.display(), "no recorded size and SHA-256 to check the weights against");
        return Ok(());
    };
    let text = std::fs::read_to_string(&record).map_err(io(&record))?;
    let view: FileDigests = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
        path: record.clone(),
        reason: format!("cannot read its file digests: {e}"),
    })?;
    let Some(want) = view.files.get(name) else {
        tracing::warn!(file = %weights.display(), record = %record.display(), "no recorded size and SHA-256 for this file");
        return Ok(());
    };
    let what = run_dir::check_digest(weights, want).map_err(io(weights))?;
    let Some(what) = what else { return Ok(()) };
    Err(Error::Damaged {
        file: weights.to_path_buf(),
        what,
        alternative: intact_alternative(weights),
    })
}

/// For a damaged `final/encoder.safetensors` or checkpoint: the newest checkpoint whose
/// `master.safetensors` matches its record.
fn intact_alternative(weights: &Path) -> Option<PathBuf> {
    let dir = weights.parent()?;
    let run = if dir.file_name()? == FINAL {
        dir.parent()?.to_path_buf()
    } else {
        dir.parent()?.parent()?.to_path_buf()
    };
    let ck = run.join(CHECKPOINTS);
    let mut names: Vec<String> = std::fs::read_dir(&ck)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| run_dir::parse_checkpoint_dir_name(n).is_some())
        .collect();
    names.sort();
    names
        .into_iter()
        .rev()
        .map(|n| ck.join(n).join(MASTER))
        .filter(|m| m.as_path() != weights && m.is_file())
        .find(|m| m.parent().is_some_and(|d| d.join(STATE).is_file()) && verify_weights(m).is_ok())
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
    nmoco_models::seeded_init_with(&varmap, init_seed, cfg.conv_init())?;
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
