//! `nmoco export CHECKPOINT --to spikingjelly --out FILE.safetensors [--with-head]`: the encoder's
//! backbone as a PyTorch state dict with SpikingJelly's `sew_resnet18` key names (SEW-ResNet)
//! or the official Spikformer DVS model's (Spikformer), see docs/interop.md.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use nmoco_models::interop::{MOCO_HEAD_PREFIX, export_state_dict, torch_module, write_safetensors};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Target {
    /// SpikingJelly 2.0 `sew_resnet18` names (SEW-ResNet-18), official Spikformer DVS names
    /// (Spikformer-2-256; its neurons are SpikingJelly's)
    Spikingjelly,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run folder (runs/<name>), a checkpoint folder, or an encoder safetensors file
    #[arg(required_unless_present = "random_init")]
    pub checkpoint: Option<PathBuf>,
    /// Export a seeded random initialisation of --preset instead of a checkpoint (the
    /// initialisation a run with `run.seed = SEED` starts from)
    #[arg(
        long,
        value_name = "SEED",
        conflicts_with = "checkpoint",
        requires = "preset"
    )]
    pub random_init: Option<u64>,
    /// With --random-init: the backbone preset (sew_resnet18, spikformer_2_256)
    #[arg(long)]
    pub preset: Option<String>,
    /// Key names to write
    #[arg(long, value_enum, default_value = "spikingjelly")]
    pub to: Target,
    /// Output file (.safetensors)
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the MoCo projection head, under `moco_head.` with its nmoco names
    #[arg(long)]
    pub with_head: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Target::Spikingjelly = args.to;
    let (cfg, all, source) = match (&args.checkpoint, args.random_init) {
        (Some(ck), _) => {
            let ckpt = nmoco_eval::pretrained::locate(ck).map_err(anyhow::Error::from)?;
            let all = candle_core::safetensors::load(&ckpt.weights, &candle_core::Device::Cpu)
                .with_context(|| format!("cannot read {}", ckpt.weights.display()))?;
            (ckpt.backbone, all, ckpt.weights)
        }
        (None, Some(seed)) => {
            let name = args.preset.as_deref().unwrap_or("sew_resnet18");
            let preset: nmoco_train::config::Preset =
                toml::Value::String(name.into())
                    .try_into()
                    .with_context(|| format!("unknown preset {name:?}"))?;
            let cfg = preset.build();
            nmoco_models::interop::check_supported(&cfg).map_err(anyhow::Error::from)?;
            let varmap = candle_nn::VarMap::new();
            let vb = candle_nn::VarBuilder::from_varmap(
                &varmap,
                candle_core::DType::F32,
                &candle_core::Device::Cpu,
            );
            nmoco_models::Backbone::new(&cfg, vb.pp("backbone"))?;
            nmoco_models::seeded_init_with(&varmap, seed, cfg.conv_init())?;
            let all: HashMap<String, candle_core::Tensor> = nmoco_models::sorted_vars(&varmap)
                .into_iter()
                .map(|(k, v)| (k, v.as_tensor().clone()))
                .collect();
            (
                cfg,
                all,
                PathBuf::from(format!("<random init {name}, seed {seed}>")),
            )
        }
        (None, None) => anyhow::bail!("pass a checkpoint or --random-init SEED --preset NAME"),
    };
    let backbone: HashMap<String, candle_core::Tensor> = all
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("backbone.")
                .map(|n| (n.to_string(), v.clone()))
        })
        .collect();
    let mut out = export_state_dict(&cfg, &backbone, &source)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("exporting {}", source.display()))?;
    if args.with_head {
        let mut n = 0;
        for (k, v) in &all {
            if let Some(h) = k.strip_prefix("head.") {
                out.insert(format!("{MOCO_HEAD_PREFIX}{h}"), v.clone());
                n += 1;
            }
        }
        anyhow::ensure!(
            n > 0,
            "{} has no projection head (head.*) to export",
            source.display()
        );
    }
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    write_safetensors(&out, &args.out).map_err(anyhow::Error::from)?;
    let first = torch_module(&cfg, "stem.conv")
        .or_else(|| torch_module(&cfg, "sps.conv0"))
        .unwrap_or_default();
    println!(
        "wrote {} tensors ({}) to {} (first conv: {first}.weight); see docs/interop.md to load it",
        out.len(),
        nmoco_eval::pretrained::arch_name(&cfg),
        args.out.display()
    );
    Ok(())
}
