//! `nmoco embed (--checkpoint CK | --init-from FILE [--preset NAME]) --input FRAMES.npy --out
//! OUT.npy [--mode eval|train] [--per-step] [--head]`: features of any frames, `.npy` in and
//! out, so a recording can be compared across implementations (docs/interop.md).
//!
//! For the oracle tests it can also write what one pass produced: `--spikes-out` (every neuron
//! layer's spikes, `[T, rest]`, under the PyTorch module names), `--loss-weights W.npy
//! --grads-out` (gradients of `sum(output · W)` for every backbone parameter, PyTorch names and
//! shapes) and `--state-out` (the backbone after the pass, as `nmoco export` writes it: BN
//! running statistics updated in train mode).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use nmoco_models::interop::{
    Layout, export_state_dict, import_file, infer_backbone, load_into_varmap, read_state_dict,
    torch_module, write_safetensors,
};
use nmoco_models::{Backbone, BackboneConfig, ProjectionHead, is_buffer, record_spikes};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// BN with running statistics
    Eval,
    /// BN with batch statistics (running statistics updated, see --state-out)
    Train,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run folder (runs/<name>), a checkpoint folder, or an encoder safetensors file
    #[arg(
        long,
        required_unless_present = "init_from",
        conflicts_with = "init_from"
    )]
    pub checkpoint: Option<PathBuf>,
    /// A PyTorch state dict instead (SpikingJelly sew_resnet18 / official Spikformer names,
    /// .pth or .safetensors)
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// With --init-from: the backbone preset (sew_resnet18, spikformer_2_256); default: guessed
    /// from the file's keys
    #[arg(long, requires = "init_from")]
    pub preset: Option<String>,
    /// Frames [T, B, C, H, W] (f32 or f64 .npy)
    #[arg(long)]
    pub input: PathBuf,
    /// Output .npy: [B, D] time-mean features, [T, B, D] with --per-step
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "eval")]
    pub mode: Mode,
    /// Write the per-time-step features [T, B, D] instead of their time mean
    #[arg(long)]
    pub per_step: bool,
    /// Through the projection head (needs a checkpoint with one)
    #[arg(long)]
    pub head: bool,
    /// Write every neuron layer's spikes, [T, rest], under PyTorch module names
    #[arg(long)]
    pub spikes_out: Option<PathBuf>,
    /// Weights W (.npy, the shape of the per-step output [T, B, D]) of the scalar loss
    /// sum(output * W) for --grads-out
    #[arg(long, requires = "grads_out")]
    pub loss_weights: Option<PathBuf>,
    /// Write the gradient of every backbone parameter (PyTorch names and shapes)
    #[arg(long, requires = "loss_weights")]
    pub grads_out: Option<PathBuf>,
    /// Write the backbone after the pass (PyTorch names; BN statistics updated in train mode)
    #[arg(long)]
    pub state_out: Option<PathBuf>,
}

/// The backbone of a PyTorch state dict: the named preset, or the one its keys describe.
pub fn import_backbone(path: &Path, preset: Option<&str>) -> anyhow::Result<BackboneConfig> {
    match preset {
        Some(p) => {
            let preset: nmoco_train::config::Preset = toml::Value::String(p.to_string())
                .try_into()
                .with_context(|| {
                    format!("unknown preset {p:?} (sew_resnet18, spikformer_2_256, ...)")
                })?;
            Ok(preset.build())
        }
        None => {
            let state = read_state_dict(path).map_err(anyhow::Error::from)?;
            infer_backbone(&state).with_context(|| {
                format!(
                    "{}: neither a SpikingJelly SEW-ResNet (layer1.*) nor a Spikformer \
                     (patch_embed.*) state dict; pass --preset",
                    path.display()
                )
            })
        }
    }
}

fn head_sizes(config_path: &Path) -> anyhow::Result<(usize, usize)> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let table: toml::Table = text.parse()?;
    let get = |k: &str| -> Option<usize> {
        usize::try_from(table.get("model")?.get(k)?.as_integer()?).ok()
    };
    match (get("head_hidden"), get("head_out")) {
        (Some(h), Some(o)) => Ok((h, o)),
        _ => bail!(
            "{} has no [model] head_hidden / head_out",
            config_path.display()
        ),
    }
}

/// Loads every variable of `varmap` from the safetensors file (all must be present).
fn load_all(varmap: &VarMap, weights: &Path) -> anyhow::Result<()> {
    let tensors = candle_core::safetensors::load(weights, &Device::Cpu)
        .with_context(|| format!("cannot read {}", weights.display()))?;
    let vars = nmoco_models::sorted_vars(varmap);
    let mut bad = Vec::new();
    for (name, v) in &vars {
        match tensors.get(name) {
            None => bad.push(format!("{name} (missing)")),
            Some(t) if t.dims() != v.dims() => {
                bad.push(format!("{name} ({:?}, expected {:?})", t.dims(), v.dims()))
            }
            Some(_) => {}
        }
    }
    if !bad.is_empty() {
        bail!("{} does not fit: {}", weights.display(), bad.join(", "));
    }
    for (name, v) in &vars {
        v.set(&tensors[name].to_dtype(DType::F32)?)?;
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let (cfg, backbone, head) = match (&args.checkpoint, &args.init_from) {
        (Some(ck), _) => {
            let ckpt = nmoco_eval::pretrained::locate(ck).map_err(anyhow::Error::from)?;
            let backbone = Backbone::new(&ckpt.backbone, vb.pp("backbone"))?;
            let head = if args.head {
                let (hh, ho) = head_sizes(&ckpt.config_path)?;
                Some(ProjectionHead::new(
                    backbone.feature_dim(),
                    hh,
                    ho,
                    vb.pp("head"),
                )?)
            } else {
                None
            };
            load_all(&varmap, &ckpt.weights)?;
            (ckpt.backbone, backbone, head)
        }
        (None, Some(path)) => {
            if args.head {
                bail!("--head needs --checkpoint (a PyTorch state dict has no MoCo head)");
            }
            let cfg = import_backbone(path, args.preset.as_deref())?;
            let backbone = Backbone::new(&cfg, vb.pp("backbone"))?;
            let imported = import_file(&cfg, path).map_err(anyhow::Error::from)?;
            load_into_varmap(&varmap, "backbone.", &imported, path).map_err(anyhow::Error::from)?;
            (cfg, backbone, None)
        }
        (None, None) => bail!("pass --checkpoint or --init-from"),
    };
    let x = Tensor::read_npy(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?
        .to_dtype(DType::F32)?;
    let dims = x.dims().to_vec();
    if dims.len() != 5 {
        bail!(
            "{}: expected frames [T, B, C, H, W], got shape {dims:?}",
            args.input.display()
        );
    }
    if x.flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .any(|v| !v.is_finite())
    {
        bail!(
            "{}: frames hold NaN or infinite values",
            args.input.display()
        );
    }
    let train = args.mode == Mode::Train;
    let (feats, spikes) = record_spikes(|| backbone.forward(&x, train));
    let mut y = feats?;
    if let Some(h) = &head {
        y = h.forward(&y, train)?;
    }
    let out = if args.per_step { y.clone() } else { y.mean(0)? };
    out.write_npy(&args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "wrote {:?} features ({} mode) to {}",
        out.dims(),
        if train { "train" } else { "eval" },
        args.out.display()
    );
    if let Some(path) = &args.spikes_out {
        let mut map = BTreeMap::new();
        for (name, s) in spikes {
            let rel = name.strip_prefix("backbone.").unwrap_or(&name);
            let key = torch_module(&cfg, rel)
                .with_context(|| format!("no PyTorch name for neuron layer {name}"))?;
            if map.insert(key.clone(), s).is_some() {
                bail!("neuron layer {key} ran twice in one pass");
            }
        }
        write_safetensors(&map, path).map_err(anyhow::Error::from)?;
        println!("wrote {} spike tensors to {}", map.len(), path.display());
    }
    if let (Some(wp), Some(gp)) = (&args.loss_weights, &args.grads_out) {
        let w = Tensor::read_npy(wp)
            .with_context(|| format!("cannot read {}", wp.display()))?
            .to_dtype(DType::F32)?;
        if w.dims() != y.dims() {
            bail!(
                "{}: loss weights have shape {:?}, the per-step output has {:?}",
                wp.display(),
                w.dims(),
                y.dims()
            );
        }
        let grads = (&y * &w)?.sum_all()?.backward()?;
        let vars = nmoco_models::sorted_vars(&varmap);
        let layout = Layout::new(&cfg).map_err(anyhow::Error::from)?;
        let mut map = BTreeMap::new();
        for k in layout.keys.iter().filter(|k| !is_buffer(&k.nmoco)) {
            let var = &vars[&format!("backbone.{}", k.nmoco)];
            let g = match grads.get(var.as_tensor()) {
                Some(g) => g.clone(),
                None => var.as_tensor().zeros_like()?,
            };
            map.insert(k.torch.clone(), g.reshape(k.torch_dims.as_slice())?);
        }
        write_safetensors(&map, gp).map_err(anyhow::Error::from)?;
        println!("wrote {} gradients to {}", map.len(), gp.display());
    }
    if let Some(path) = &args.state_out {
        let tensors: HashMap<String, Tensor> = nmoco_models::sorted_vars(&varmap)
            .into_iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("backbone.")
                    .map(|n| (n.to_string(), v.as_tensor().clone()))
            })
            .collect();
        let map = export_state_dict(&cfg, &tensors, path).map_err(anyhow::Error::from)?;
        write_safetensors(&map, path).map_err(anyhow::Error::from)?;
        println!("wrote the backbone state to {}", path.display());
    }
    Ok(())
}
