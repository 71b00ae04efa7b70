//! What `linear-probe` and `finetune` share: finding the checkpoint, resolving the evaluation
//! config (`[data]` from the checkpoint unless given, protocol tables, `--set` overrides), the
//! device, the datasets, and the result table.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use nmoco_data::{DataConfig, Dataset, DatasetKind, Split};
use nmoco_eval::pretrained::{EncoderCheckpoint, check_compatible, locate};
use nmoco_eval::{FinetuneConfig, ProbeConfig};
use serde::{Deserialize, Serialize};

/// Where the default `nmoco pretrain` (no `--config`) writes its run: the default checkpoint.
pub const DEFAULT_CHECKPOINT: &str = "runs/pretrain";

/// Arguments common to the evaluation commands.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// A run folder (runs/<name>), a checkpoint folder, or an encoder safetensors file
    #[arg(long, default_value = DEFAULT_CHECKPOINT)]
    pub checkpoint: PathBuf,
    /// Evaluation config (TOML with optional [data], [probe], [finetune] tables and `seed`);
    /// without [data], the checkpoint's own data config is used
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a value, e.g. --set data.root=/data/gesture --set finetune.epochs=30
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run on the first CUDA device (needs a build with --features cuda)
    #[arg(long)]
    pub cuda: bool,
    /// Skip the baseline (random-init encoder, or supervised from scratch)
    #[arg(long)]
    pub no_baseline: bool,
    /// Evaluate a PyTorch state dict instead of a checkpoint (SpikingJelly sew_resnet18 /
    /// official Spikformer names, .pth or .safetensors; docs/interop.md). It is imported into
    /// runs/imported/<file stem>/, where the reports go; frames from --config's [data], else
    /// the default pre-training's
    #[arg(long, conflicts_with = "checkpoint")]
    pub init_from: Option<PathBuf>,
    /// With --init-from: the backbone preset (sew_resnet18, spikformer_2_256); default: guessed
    /// from the file's keys
    #[arg(long, requires = "init_from")]
    pub preset: Option<String>,
}

/// Imports a PyTorch state dict into `runs/imported/<stem>/`: `encoder.safetensors` (nmoco
/// names) and a `config.toml` with the backbone and `data`, so that it is evaluated like a
/// pre-trained encoder. Every missing, extra or mis-shaped tensor is an error before anything
/// runs.
fn import_run(path: &Path, preset: Option<&str>, data: &DataConfig) -> anyhow::Result<PathBuf> {
    let cfg = super::embed::import_backbone(path, preset)?;
    let imported = nmoco_models::interop::import_file(&cfg, path).map_err(anyhow::Error::from)?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("imported");
    let dir = Path::new("runs").join("imported").join(stem);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tensors: std::collections::HashMap<String, candle_core::Tensor> = imported
        .tensors
        .into_iter()
        .map(|(k, v)| (format!("backbone.{k}"), v))
        .collect();
    let weights = dir.join("encoder.safetensors");
    candle_core::safetensors::save(&tensors, &weights)
        .with_context(|| format!("cannot write {}", weights.display()))?;
    #[derive(Serialize)]
    struct Model<'a> {
        backbone: &'a nmoco_models::BackboneConfig,
        init_from: &'a Path,
    }
    #[derive(Serialize)]
    struct Run<'a> {
        model: Model<'a>,
        data: &'a DataConfig,
    }
    let text = toml::to_string(&Run {
        model: Model {
            backbone: &cfg,
            init_from: path,
        },
        data,
    })?;
    let config = dir.join(nmoco_eval::run_dir::CONFIG);
    std::fs::write(&config, text).with_context(|| format!("cannot write {}", config.display()))?;
    eprintln!(
        "imported {} ({}) into {}",
        path.display(),
        nmoco_eval::pretrained::arch_name(&cfg),
        dir.display()
    );
    Ok(weights)
}

/// The resolved evaluation config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    pub data: DataConfig,
    #[serde(default)]
    pub probe: ProbeConfig,
    #[serde(default)]
    pub finetune: FinetuneConfig,
    #[serde(default)]
    pub seed: u64,
}

/// Everything an evaluation command needs before its protocol runs.
pub struct Setup {
    pub ckpt: EncoderCheckpoint,
    pub cfg: EvalConfig,
    pub device: candle_core::Device,
    pub train: Arc<Dataset>,
    pub test: Arc<Dataset>,
}

pub fn setup(
    args: &CommonArgs,
    default_finetune: impl FnOnce(&EncoderCheckpoint) -> FinetuneConfig,
) -> anyhow::Result<Setup> {
    let mut table = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read eval config {}", p.display()))?;
            text.parse::<toml::Table>()
                .with_context(|| format!("invalid TOML in {}", p.display()))?
        }
        None => toml::Table::new(),
    };
    let ckpt = match &args.init_from {
        Some(path) => {
            // The imported encoder's frames: the default pre-training's `[data]` with the eval
            // config's own `[data]` table on top.
            let mut data = toml::Value::try_from(&nmoco_train::PretrainConfig::default().data)?;
            if let Some(own) = table.get("data") {
                nmoco_config::merge(&mut data, own.clone());
            }
            let data: DataConfig = data
                .try_into()
                .context("evaluation config [data] rejected")?;
            let weights = import_run(path, args.preset.as_deref(), &data)?;
            locate(&weights).map_err(anyhow::Error::from)?
        }
        None => locate(&args.checkpoint).map_err(anyhow::Error::from)?,
    };
    // `[data]`: the checkpoint's, with whatever the eval config's own `[data]` table sets on top
    // (e.g. only `[data.augment]` ranges, or another `root`).
    let mut data = toml::Value::try_from(&ckpt.data)?;
    if let Some(own) = table.remove("data") {
        nmoco_config::merge(&mut data, own);
    }
    table.insert("data".into(), data);
    if !table.contains_key("finetune") {
        table.insert(
            "finetune".into(),
            toml::Value::try_from(default_finetune(&ckpt))?,
        );
    }
    for s in &args.set {
        nmoco_config::apply_override(&mut table, s)
            .map_err(anyhow::Error::from)
            .context("bad --set")?;
    }
    let cfg: EvalConfig = toml::Value::Table(table)
        .try_into()
        .context("evaluation config rejected")?;
    cfg.finetune
        .validate()
        .map_err(anyhow::Error::from)
        .context("evaluation config rejected")?;
    check_compatible(&ckpt, &cfg.data).map_err(anyhow::Error::from)?;
    let device = if args.cuda {
        open_cuda()?
    } else {
        candle_core::Device::Cpu
    };
    let open = |split| -> anyhow::Result<Arc<Dataset>> {
        Ok(Arc::new(Dataset::open(&cfg.data, split).with_context(
            || {
                format!(
                    "cannot open the {split} split of {}",
                    cfg.data.root.display()
                )
            },
        )?))
    };
    let train = open(Split::Train)?;
    let test = open(Split::Test)?;
    eprintln!(
        "checkpoint {} ({}), dataset {} at {}: {} train / {} test samples, {} classes",
        ckpt.weights.display(),
        nmoco_eval::pretrained::arch_name(&ckpt.backbone),
        dataset_name(&cfg.data.dataset),
        cfg.data.root.display(),
        train.len(),
        test.len(),
        train.num_classes()
    );
    Ok(Setup {
        ckpt,
        cfg,
        device,
        train,
        test,
    })
}

pub fn dataset_name(kind: &DatasetKind) -> String {
    kind.name().to_string()
}

/// The first CUDA device, with its memory pool set to keep freed memory (see
/// `nmoco_snn::cuda_retain_pool_memory`).
pub fn open_cuda() -> anyhow::Result<candle_core::Device> {
    let dev = candle_core::Device::new_cuda(0)
        .context("cannot open CUDA device 0 (build with `cargo xtask ... --cuda`)")?;
    // NMOCO_CUDA_POOL_RETAIN=0 keeps the driver's default (release freed memory at every sync).
    #[cfg(feature = "cuda")]
    if std::env::var("NMOCO_CUDA_POOL_RETAIN").as_deref() == Ok("0") {
        tracing::info!("CUDA memory pool: driver default (NMOCO_CUDA_POOL_RETAIN=0)");
    } else if !nmoco_snn::cuda_retain_pool_memory(&dev)
        .context("configuring the CUDA memory pool")?
    {
        tracing::warn!("CUDA device 0 has no memory pools: every allocation goes to the driver");
    }
    Ok(dev)
}

/// The folder of one evaluation's report: `<checkpoint dir>/eval/<protocol>[-<encoder>]`.
pub fn report_dir(ckpt_dir: &Path, protocol: &str, encoder: &str) -> PathBuf {
    let name = if encoder == "pretrained" {
        protocol.to_string()
    } else {
        format!("{protocol}-{encoder}")
    };
    ckpt_dir.join(nmoco_eval::run_dir::EVAL).join(name)
}

/// One row of the printed table.
pub struct Row {
    pub protocol: String,
    pub encoder: String,
    pub top1: f64,
    pub top5: f64,
    pub report: PathBuf,
}

pub fn print_table(rows: &[Row], chance: f64) {
    println!();
    println!(
        "{:<22} {:<16} {:>7} {:>7}  report",
        "protocol", "encoder", "top-1", "top-5"
    );
    for r in rows {
        println!(
            "{:<22} {:<16} {:>6.1}% {:>6.1}%  {}",
            r.protocol,
            r.encoder,
            100.0 * r.top1,
            100.0 * r.top5,
            r.report.display()
        );
    }
    println!("(chance: {:.1}%)", 100.0 * chance);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_finetune_configs_parse_and_validate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if !(name.starts_with("finetune_") && name.ends_with(".toml")) {
                continue;
            }
            let mut t: toml::Table = std::fs::read_to_string(&p).unwrap().parse().unwrap();
            let mut data =
                toml::Value::try_from(DataConfig::for_dataset(DatasetKind::Cifar10Dvs, "/data"))
                    .unwrap();
            if let Some(own) = t.remove("data") {
                nmoco_config::merge(&mut data, own);
            }
            t.insert("data".into(), data);
            let cfg: EvalConfig = toml::Value::Table(t)
                .try_into()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            cfg.finetune
                .validate()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            n += 1;
        }
        assert_eq!(n, 5, "one fine-tuning config per real dataset and backbone");
        // The pre-training configs of the real datasets name theirs.
        for (pre, ft) in [
            ("cifar10dvs_sew18", "finetune_cifar10dvs_sew18"),
            ("cifar10dvs_spikformer", "finetune_cifar10dvs_spikformer"),
            ("dvs128gesture_sew18", "finetune_dvs128gesture_sew18"),
            (
                "dvs128gesture_spikformer",
                "finetune_dvs128gesture_spikformer",
            ),
            ("ncaltech101_sew18", "finetune_ncaltech101_sew18"),
        ] {
            let c = nmoco_train::PretrainConfig::load(
                &dir.join(format!("{pre}.toml")),
                &[],
                Some("/data"),
            )
            .unwrap();
            assert_eq!(
                c.run.finetune_config.as_deref(),
                Some(std::path::Path::new(&format!("configs/{ft}.toml")))
            );
            assert!(dir.join(format!("{ft}.toml")).is_file());
        }
    }

    #[test]
    fn the_default_checkpoint_is_where_the_default_pretraining_writes() {
        let cfg = nmoco_train::PretrainConfig::default();
        assert_eq!(
            cfg.run_dir(),
            std::path::Path::new(super::DEFAULT_CHECKPOINT)
        );
    }
}
