//! The key maps: which backbones have a PyTorch twin, and the PyTorch name of every nmoco
//! module and variable (the tables of the parent module's docs).

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use super::{InteropError, MOCO_HEAD_PREFIX, SPIKFORMER_UNUSED};
use crate::config::{BackboneConfig, Downsample, SewConfig, SpikformerConfig};

/// A short name of a backbone for messages.
pub(super) fn arch(cfg: &BackboneConfig) -> String {
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

    pub(super) fn ignorable(&self, key: &str) -> bool {
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
