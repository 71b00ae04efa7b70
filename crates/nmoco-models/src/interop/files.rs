//! State-dict files: reading `.safetensors` and `torch.save` pickles, writing safetensors,
//! guessing the backbone of a file, and loading imported tensors into a `VarMap`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use super::{Imported, InteropError, describe, import_state_dict};
use crate::config::BackboneConfig;

/// Reads a PyTorch state dict: `.safetensors`, or a `torch.save` pickle (`.pth`, `.pt`, `.tar`,
/// `.bin`), either the state dict itself or a dict holding it under `state_dict`, `model` or
/// `net`. A common `module.` prefix (DataParallel) is removed.
pub fn read_state_dict(path: &Path) -> Result<HashMap<String, Tensor>, InteropError> {
    let file_err = |reason: String| InteropError::File {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(file_err("no such file".into()));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut map: HashMap<String, Tensor> = if ext == "safetensors" {
        candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| file_err(format!("not a readable safetensors file: {e}")))?
    } else {
        let mut found = None;
        let mut last_err = String::new();
        for key in [None, Some("state_dict"), Some("model"), Some("net")] {
            match candle_core::pickle::read_all_with_key(path, key) {
                Ok(v) if !v.is_empty() => {
                    found = Some(v);
                    break;
                }
                Ok(_) => {}
                Err(e) => last_err = e.to_string(),
            }
        }
        let v = found.ok_or_else(|| {
            file_err(format!(
                "no tensors found as a PyTorch pickle (state dict, or under state_dict/model/net){}",
                if last_err.is_empty() {
                    String::new()
                } else {
                    format!(": {last_err}")
                }
            ))
        })?;
        v.into_iter().collect()
    };
    if !map.is_empty() && map.keys().all(|k| k.starts_with("module.")) {
        map = map
            .into_iter()
            .map(|(k, v)| (k["module.".len()..].to_string(), v))
            .collect();
    }
    Ok(map)
}

/// Guesses the backbone of a PyTorch state dict: `patch_embed.*` → Spikformer-2-256 with the
/// embedding size and depth of the file; `layer1.*` → SEW-ResNet-18 with the number of blocks
/// per stage of the file (`sew_resnet34` and others with basic blocks). PLIF neurons when the
/// file has neuron parameters `*.w`.
pub fn infer_backbone(state: &HashMap<String, Tensor>) -> Option<BackboneConfig> {
    let plif = state.keys().any(|k| k.ends_with(".w"));
    let mut cfg = if let Some(w) = state.get("patch_embed.proj_conv3.weight") {
        let mut c = match BackboneConfig::spikformer_2_256() {
            BackboneConfig::Spikformer(c) => c,
            BackboneConfig::SewResnet(_) => return None,
        };
        c.embed_dim = *w.dims().first()?;
        if let Some(w0) = state.get("patch_embed.proj_conv.weight") {
            c.in_channels = *w0.dims().get(1)?;
        }
        let depth = (0..)
            .take_while(|j| state.contains_key(&format!("block.{j}.attn.q_conv.weight")))
            .count();
        c.depth = depth;
        if let Some(w) = state.get("block.0.mlp.fc1_conv.weight") {
            c.mlp_ratio = w.dims().first()? / c.embed_dim.max(1);
        }
        BackboneConfig::Spikformer(c)
    } else if state.contains_key("layer1.0.conv1.weight") {
        let mut c = match BackboneConfig::sew_resnet18() {
            BackboneConfig::SewResnet(c) => c,
            BackboneConfig::Spikformer(_) => return None,
        };
        for (i, s) in c.stages.iter_mut().enumerate() {
            s.blocks = (0..)
                .take_while(|j| state.contains_key(&format!("layer{}.{j}.conv1.weight", i + 1)))
                .count();
        }
        if let Some(w0) = state.get("conv1.weight") {
            c.in_channels = *w0.dims().get(1)?;
        }
        BackboneConfig::SewResnet(c)
    } else {
        return None;
    };
    if plif {
        let n = match &mut cfg {
            BackboneConfig::SewResnet(c) => &mut c.neuron,
            BackboneConfig::Spikformer(c) => &mut c.neuron,
        };
        n.kind = nmoco_snn::NeuronKind::Plif;
    }
    Some(cfg)
}

/// Writes a state dict as safetensors (what `safetensors.torch.load_file` reads).
pub fn write_safetensors(
    tensors: &BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<(), InteropError> {
    let map: HashMap<&str, Tensor> = tensors
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    candle_core::safetensors::save(&map, path).map_err(|e| InteropError::File {
        path: path.to_path_buf(),
        reason: format!("cannot write: {e}"),
    })
}

/// Sets the variables `{prefix}{name}` of `varmap` from imported backbone tensors (every one
/// must exist with the same shape; checked before anything is changed).
pub fn load_into_varmap(
    varmap: &VarMap,
    prefix: &str,
    imported: &Imported,
    source: &Path,
) -> Result<(), InteropError> {
    let vars = crate::params::sorted_vars(varmap);
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    for (name, t) in &imported.tensors {
        match vars.get(&format!("{prefix}{name}")) {
            None => missing.push(format!("{prefix}{name}")),
            Some(v) if v.dims() != t.dims() => misshaped.push((
                format!("{prefix}{name}"),
                v.dims().to_vec(),
                t.dims().to_vec(),
            )),
            Some(_) => {}
        }
    }
    if !missing.is_empty() || !misshaped.is_empty() {
        missing.sort();
        misshaped.sort();
        return Err(InteropError::File {
            path: source.to_path_buf(),
            reason: format!(
                "the model built here does not have the imported backbone's variables:{}",
                describe(&missing, &[], &misshaped)
            ),
        });
    }
    for (name, t) in &imported.tensors {
        let v = &vars[&format!("{prefix}{name}")];
        v.set(&t.to_device(v.device())?.to_dtype(v.dtype())?)?;
    }
    Ok(())
}

/// Reads a PyTorch state dict and imports it for `cfg` ([`read_state_dict`] +
/// [`import_state_dict`]); skipped keys are logged.
pub fn import_file(cfg: &BackboneConfig, path: &Path) -> Result<Imported, InteropError> {
    let state = read_state_dict(path)?;
    let imported = import_state_dict(cfg, &state, path)?;
    if !imported.skipped.is_empty() {
        tracing::info!(
            path = %path.display(),
            skipped = ?imported.skipped,
            "imported a PyTorch state dict; keys the backbone does not use were skipped"
        );
    }
    Ok(imported)
}
