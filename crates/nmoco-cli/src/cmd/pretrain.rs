//! `nmoco pretrain [--config FILE] [--set key=value ...] [--cuda] [--resume] [--name RUN]`:
//! NeuroMoCo pre-training. Without `--config` it runs the CPU default on the synthetic set
//! (generating it first if missing). See docs/training.md.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use nmoco_data::DatasetKind;
use nmoco_train::config::{DATA_ROOT_ENV, DeviceKind};
use nmoco_train::{
    EpochStats, Observer, PretrainConfig, Resume, StartInfo, StepReport, pretrain_from,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Config file (TOML); without it, the built-in CPU default on the synthetic set
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a config value, e.g. --set optim.lr=0.1 --set data.root=/data/gesture
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run on the first CUDA device (needs a build with --features cuda)
    #[arg(long)]
    pub cuda: bool,
    /// Continue the run from its latest checkpoint
    #[arg(long)]
    pub resume: bool,
    /// Continue the run from the named checkpoint (e.g. epoch-0003) instead of the latest one
    #[arg(long, value_name = "epoch-NNNN", conflicts_with = "resume")]
    pub resume_from: Option<String>,
    /// Run name (outputs go to runs/<name>/)
    #[arg(long)]
    pub name: Option<String>,
    /// Start the backbone from a PyTorch state dict (SpikingJelly sew_resnet18 / official
    /// Spikformer names, .pth or .safetensors; `model.init_from`, docs/interop.md)
    #[arg(long)]
    pub init_from: Option<PathBuf>,
}

/// Draws the progress bar: loss, learning rate, samples/s and ETA.
struct Bar {
    pb: ProgressBar,
    chance: Option<f64>,
}

impl Observer for Bar {
    fn on_start(&mut self, info: &StartInfo) {
        self.pb.set_length(info.total_steps as u64);
        self.pb.set_position(info.start_step as u64);
        self.pb.reset_eta();
        self.chance = Some(1.0 / info.num_classes.max(1) as f64);
        self.pb.println(format!(
            "run {}: {} train samples, {} steps/epoch x {} epochs, batch {}, {} trainable parameters{}",
            info.run_dir.display(),
            info.train_samples,
            info.steps_per_epoch,
            info.epochs,
            info.batch_size,
            info.trainable_params,
            info.resumed_from
                .as_ref()
                .map(|p| format!(", resumed from {}", p.display()))
                .unwrap_or_default()
        ));
    }

    fn on_step(&mut self, r: &StepReport) -> ControlFlow<()> {
        self.pb.set_position(r.step as u64);
        self.pb.set_message(format!(
            "ep {} loss {:.4} lr {:.2e} {:.1} samples/s",
            r.epoch, r.loss, r.lr, r.samples_per_s
        ));
        ControlFlow::Continue(())
    }

    fn on_monitor(&mut self, epoch: usize) {
        self.pb.set_message(format!("ep {epoch}: kNN monitor"));
    }

    fn on_epoch(&mut self, r: &EpochStats) -> ControlFlow<()> {
        self.pb.println(r.line(self.chance));
        ControlFlow::Continue(())
    }
}

/// Generate the synthetic dataset into `root` when it does not exist yet.
fn ensure_synthetic(root: &Path) -> anyhow::Result<()> {
    let present = root.is_dir()
        && std::fs::read_dir(root)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
    if present {
        return Ok(());
    }
    // Only the default set is generated on the fly; another root (e.g. the larger pool of
    // configs/synthetic_pool.toml) is made with `nmoco make-synthetic` and its own settings.
    let default_root = PretrainConfig::default().data.root;
    if root != default_root {
        anyhow::bail!(
            "the synthetic dataset {} does not exist: generate it first, e.g. `nmoco make-synthetic --out {} --per-class 20` for configs/synthetic_pool.toml",
            root.display(),
            root.display()
        );
    }
    eprintln!("generating the synthetic dataset in {} ...", root.display());
    let s = nmoco_synth::generate(&nmoco_synth::SynthConfig::default(), root)
        .with_context(|| format!("generating the synthetic dataset in {}", root.display()))?;
    eprintln!(
        "  {} train / {} test samples in {:.1} s",
        s.train_samples,
        s.test_samples,
        s.elapsed.as_secs_f64()
    );
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut sets = args.set.clone();
    if let Some(n) = &args.name {
        sets.push(format!("run.name={n:?}"));
    }
    if args.cuda {
        sets.push("run.device=\"cuda\"".into());
    }
    if let Some(p) = &args.init_from {
        let p = p.to_str().context("--init-from: the path is not UTF-8")?;
        sets.push(format!("model.init_from={}", toml::Value::String(p.into())));
    }
    let env_root = std::env::var(DATA_ROOT_ENV).ok();
    let cfg = match &args.config {
        Some(p) => PretrainConfig::load(p, &sets, env_root.as_deref()),
        None => PretrainConfig::default_with(&sets, env_root.as_deref()),
    }
    .map_err(anyhow::Error::from)
    .context("config rejected")?;
    let device = match cfg.run.device {
        DeviceKind::Cpu => candle_core::Device::Cpu,
        DeviceKind::Cuda => super::evalcfg::open_cuda()?,
    };
    if cfg.data.dataset == DatasetKind::Synthetic {
        ensure_synthetic(&cfg.data.root)?;
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps [{elapsed_precise} < {eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(Duration::from_millis(500));
    let mut bar = Bar { pb, chance: None };
    let resume = match (&args.resume_from, args.resume) {
        (Some(name), _) => Resume::From(name.clone()),
        (None, true) => Resume::Latest,
        (None, false) => Resume::No,
    };
    let summary = pretrain_from(&cfg, &device, &resume, &mut bar);
    bar.pb.finish_and_clear();
    let s = summary
        .map_err(anyhow::Error::from)
        .context("pre-training failed")?;
    println!("run:            {}", s.run_dir.display());
    println!("epochs:         {} ({} steps)", s.epochs_done, s.steps_done);
    println!(
        "loss:           {} -> {} (epoch means)",
        s.first_loss_mean
            .map(|v| format!("{v:.4}"))
            .unwrap_or("-".into()),
        s.last_loss_mean
            .map(|v| format!("{v:.4}"))
            .unwrap_or("-".into())
    );
    let pct = |v: Option<f64>| {
        v.map(|a| format!("{:.1}%", a * 100.0))
            .unwrap_or("-".into())
    };
    println!(
        "knn top-1 val:  {} -> {} (best {}, chance {:.1}%; validation split of train)",
        pct(s.knn_initial),
        pct(s.knn_final),
        pct(s.best_knn),
        s.chance * 100.0
    );
    println!("knn top-1 test: {} (after the last epoch)", pct(s.knn_test));
    println!(
        "throughput:     {:.1} samples/s (training steps)",
        s.samples_per_s
    );
    println!("wall time:      {:.1} s", s.wall_s);
    if let Some(p) = &s.final_encoder {
        println!("final encoder:  {}", p.display());
    }
    if let Some(p) = &s.last_checkpoint {
        println!("checkpoint:     {}", p.display());
    }
    Ok(())
}
