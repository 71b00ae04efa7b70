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
use candle_nn::{VarBuilder, VarMap};

use crate::config::{BackboneConfig, Downsample, SewConfig, SpikformerConfig};
use crate::params::is_buffer;

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

/// A short name of a backbone for messages.
fn arch(cfg: &BackboneConfig) -> String {
    match cfg {
        BackboneConfig::SewResnet(c) => {
            let b: Vec<String> = c.stages.iter().map(|s| s.blocks.to_string()).collect();
            format!("sew_resnet (blocks {})", b.join("-"))
        }
        BackboneConfig::Spikformer(c) => format!("spikformer-{}-{}", c.depth, c.embed_dim),
    }
}

fn check_sew(c: &SewConfig) -> Result<(), String> {
    if c.downsample != Downsample::Shortcut {
        return Err(
            "SpikingJelly's SEWResNet changes shape in the first block of a stage \
                    (downsample = \"shortcut\"); this config uses standalone transition layers"
                .into(),
        );
    }
    let channels: Vec<usize> = c.stages.iter().map(|s| s.channels).collect();
    let strides: Vec<usize> = c.stages.iter().map(|s| s.stride).collect();
    if c.stem_channels != 64
        || channels != [64, 128, 256, 512]
        || strides != [1, 2, 2, 2]
        || c.stem_kernel != 7
        || c.stem_stride != 2
        || !c.stem_maxpool
    {
        return Err(format!(
            "SpikingJelly's SEWResNet (BasicBlock) has a 7x7/2 stem with 64 channels and a \
             max-pool, and 4 stages of 64-128-256-512 channels with strides 1-2-2-2; this \
             config has a {k}x{k}/{s} stem with {c} channels (max-pool {m}), stages {channels:?} \
             with strides {strides:?}",
            k = c.stem_kernel,
            s = c.stem_stride,
            c = c.stem_channels,
            m = c.stem_maxpool,
        ));
    }
    if c.stages.iter().any(|s| s.blocks == 0) {
        return Err("every stage needs at least one block".into());
    }
    Ok(())
}

fn check_spikformer(c: &SpikformerConfig) -> Result<(), String> {
    if c.sps_pool.iter().any(|p| !p) {
        return Err(format!(
            "the official SPS max-pools after all 4 stages; this config has sps_pool {:?}",
            c.sps_pool
        ));
    }
    Ok(())
}

/// Checks that the backbone has a PyTorch twin (SpikingJelly `SEWResNet` with basic blocks, or
/// the official Spikformer DVS model); the error says what differs.
pub fn check_supported(cfg: &BackboneConfig) -> Result<(), InteropError> {
    let r = match cfg {
        BackboneConfig::SewResnet(c) => check_sew(c),
        BackboneConfig::Spikformer(c) => check_spikformer(c),
    };
    r.map_err(|reason| InteropError::NoTwin {
        arch: arch(cfg),
        reason,
    })
}

/// The PyTorch name of an nmoco module prefix (relative to the backbone, e.g. `stem.bn` →
/// `bn1`), or `None` if the prefix is not a module of a supported backbone.
pub fn torch_module(cfg: &BackboneConfig, module: &str) -> Option<String> {
    let parts: Vec<&str> = module.split('.').collect();
    match cfg {
        BackboneConfig::SewResnet(_) => match parts.as_slice() {
            ["stem", m] => match *m {
                "conv" => Some("conv1".into()),
                "bn" => Some("bn1".into()),
                "sn" => Some("sn1".into()),
                _ => None,
            },
            ["stages", i, "blocks", j, m] => {
                let i: usize = i.parse().ok()?;
                matches!(*m, "conv1" | "bn1" | "sn1" | "conv2" | "bn2" | "sn2")
                    .then(|| format!("layer{}.{j}.{m}", i + 1))
            }
            ["stages", i, "blocks", j, "downsample", m] => {
                let i: usize = i.parse().ok()?;
                let l = format!("layer{}.{j}", i + 1);
                match *m {
                    "conv" => Some(format!("{l}.downsample.0")),
                    "bn" => Some(format!("{l}.downsample.1")),
                    "sn" => Some(format!("{l}.downsample_sn")),
                    _ => None,
                }
            }
            _ => None,
        },
        BackboneConfig::Spikformer(_) => match parts.as_slice() {
            ["sps", m] => {
                let (kind, idx) = if let Some(r) = m.strip_prefix("rpe_") {
                    return match r {
                        "conv" => Some("patch_embed.rpe_conv".into()),
                        "bn" => Some("patch_embed.rpe_bn".into()),
                        "sn" => Some("patch_embed.rpe_lif".into()),
                        _ => None,
                    };
                } else if let Some(i) = m.strip_prefix("conv") {
                    ("conv", i)
                } else if let Some(i) = m.strip_prefix("bn") {
                    ("bn", i)
                } else if let Some(i) = m.strip_prefix("sn") {
                    ("lif", i)
                } else {
                    return None;
                };
                let i: usize = idx.parse().ok()?;
                let suffix = if i == 0 { String::new() } else { i.to_string() };
                (i < 4).then(|| format!("patch_embed.proj_{kind}{suffix}"))
            }
            ["blocks", j, "attn", m] => {
                let j: usize = j.parse().ok()?;
                let name = match *m {
                    "q" | "k" | "v" | "proj" => format!("{m}_conv"),
                    "attn_sn" => "attn_lif".into(),
                    _ => {
                        let (x, kind) = m.split_once('_')?;
                        if !matches!(x, "q" | "k" | "v" | "proj") {
                            return None;
                        }
                        match kind {
                            "bn" => format!("{x}_bn"),
                            "sn" => format!("{x}_lif"),
                            _ => return None,
                        }
                    }
                };
                Some(format!("block.{j}.attn.{name}"))
            }
            ["blocks", j, "mlp", m] => {
                let j: usize = j.parse().ok()?;
                let name = match *m {
                    "fc1" | "fc2" => format!("{m}_conv"),
                    _ => {
                        let (x, kind) = m.split_once('_')?;
                        if !matches!(x, "fc1" | "fc2") {
                            return None;
                        }
                        match kind {
                            "bn" => format!("{x}_bn"),
                            "sn" => format!("{x}_lif"),
                            _ => return None,
                        }
                    }
                };
                Some(format!("block.{j}.mlp.{name}"))
            }
            _ => None,
        },
    }
}

/// One backbone variable and its PyTorch twin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMap {
    /// nmoco name, relative to the backbone (`stem.conv.weight`).
    pub nmoco: String,
    /// PyTorch state-dict key (`conv1.weight`).
    pub torch: String,
    /// nmoco shape.
    pub nmoco_dims: Vec<usize>,
    /// PyTorch shape (Spikformer's Conv1d weights have a trailing 1).
    pub torch_dims: Vec<usize>,
}

/// The key map of a backbone, in nmoco name order, and the PyTorch BN prefixes (for
/// `num_batches_tracked`).
#[derive(Debug, Clone)]
pub struct Layout {
    /// Every variable (parameters and BN running statistics).
    pub keys: Vec<KeyMap>,
    /// PyTorch module names of the batch norms.
    pub batch_norms: Vec<String>,
    /// Keys a PyTorch checkpoint may carry that the backbone does not use (skipped on import).
    pub ignorable_prefixes: Vec<String>,
}

impl Layout {
    /// The key map of `cfg` (which must have a twin, see [`check_supported`]).
    pub fn new(cfg: &BackboneConfig) -> Result<Self, InteropError> {
        check_supported(cfg)?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        crate::Backbone::new(cfg, vb)?;
        let spikformer = matches!(cfg, BackboneConfig::Spikformer(_));
        let mut keys = Vec::new();
        let mut batch_norms = Vec::new();
        for (name, dims) in crate::params::var_shapes(&varmap) {
            let (module, leaf) = name.rsplit_once('.').ok_or_else(|| InteropError::NoTwin {
                arch: arch(cfg),
                reason: format!("variable `{name}` has no module prefix"),
            })?;
            let tm = torch_module(cfg, module).ok_or_else(|| InteropError::NoTwin {
                arch: arch(cfg),
                reason: format!("no PyTorch name for variable `{name}`"),
            })?;
            let mut torch_dims = dims.clone();
            if spikformer && leaf == "weight" && dims.len() == 2 {
                torch_dims.push(1);
            }
            if leaf == "running_mean" {
                batch_norms.push(tm.clone());
            }
            keys.push(KeyMap {
                nmoco: name.clone(),
                torch: format!("{tm}.{leaf}"),
                nmoco_dims: dims,
                torch_dims,
            });
        }
        let ignorable_prefixes = match cfg {
            BackboneConfig::SewResnet(_) => vec!["fc.".into()],
            BackboneConfig::Spikformer(_) => {
                let mut v: Vec<String> = SPIKFORMER_UNUSED.iter().map(|s| s.to_string()).collect();
                v.push("head.".into());
                v
            }
        };
        let mut ignorable_prefixes = ignorable_prefixes;
        ignorable_prefixes.push(MOCO_HEAD_PREFIX.into());
        Ok(Self {
            keys,
            batch_norms,
            ignorable_prefixes,
        })
    }

    fn ignorable(&self, key: &str) -> bool {
        key.ends_with(".num_batches_tracked")
            && self
                .batch_norms
                .iter()
                .any(|b| key.strip_suffix(".num_batches_tracked") == Some(b.as_str()))
            || self
                .ignorable_prefixes
                .iter()
                .any(|p| key == p || (p.ends_with('.') && key.starts_with(p.as_str())))
    }
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
