//! The pre-training loop: epochs of [`train_step`], the kNN monitor, metrics, curves,
//! checkpoints and resume. Progress is reported to an [`Observer`]; nothing is printed.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use nmoco_data::{Dataset, Loader, LoaderConfig, Split, Views, num_batches};

use crate::checkpoint::{self, Checkpoint, FORMAT_VERSION, TrainerState};
use crate::config::PretrainConfig;
use crate::encoder::{Encoder, EncoderPair, MocoEncoder, restore, snapshot};
use crate::error::{Error, Result, io_err};
use crate::metrics::{self, MetricsWriter, Record};
use crate::momentum::momentum_at;
use crate::queue::Queue;
use crate::step::{StepConfig, StepSync, train_step_with};
use nmoco_eval::features::time_mean_features;
use nmoco_eval::knn::{KnnConfig, knn_scores};
use nmoco_eval::run_dir::{FINAL_ENCODER, LATEST, RunPaths};
use nmoco_optim::Optimizer;
use nmoco_optim::lr_at;

/// Sent once before the first step.
#[derive(Debug, Clone)]
pub struct StartInfo {
    pub run_dir: PathBuf,
    pub train_samples: usize,
    pub steps_per_epoch: usize,
    pub total_steps: usize,
    pub batch_size: usize,
    /// First epoch to run (1-based; > 1 when resuming).
    pub first_epoch: usize,
    pub epochs: usize,
    /// Steps already done (when resuming).
    pub start_step: usize,
    pub trainable_params: usize,
    pub num_classes: usize,
    pub resumed_from: Option<PathBuf>,
}

/// Sent after every step. On an accelerator the reports of the steps between two log steps
/// arrive together at the later one, when their losses are read back.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    pub epoch: usize,
    /// Global step, 1-based.
    pub step: usize,
    pub step_in_epoch: usize,
    pub loss: f32,
    pub lr: f64,
    pub momentum: f64,
    /// Global gradient norm before clipping; computed at log steps and whenever clipping is on,
    /// NaN on the other steps (computing it costs a device synchronisation).
    pub grad_norm: f64,
    /// Samples per second over this epoch so far.
    pub samples_per_s: f64,
}

/// Lets f32 convolutions (cuDNN) and matmuls (cuBLAS) on CUDA use TF32 tensor cores, or not.
/// Both are process-wide settings; nothing changes on the CPU.
pub fn set_tf32(device: &Device, enabled: bool) -> Result<()> {
    if device.is_cuda() {
        // One switch for both: cuDNN convolutions and cuBLAS matmuls of f32 tensors. The rest of
        // the convolution settings (backend, search, workspace) keep their environment values.
        let mut c = nmoco_conv::cuda_conv_config()?;
        c.conv_tf32 = enabled;
        c.matmul_tf32 = enabled;
        nmoco_conv::set_cuda_conv_config(c);
        tracing::info!(tf32 = enabled, "f32 convolutions and matmuls on CUDA");
    }
    Ok(())
}

static DEFER_LOSSES: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Overrides, process-wide, whether [`pretrain`] leaves losses on the device until log steps:
/// `None` (the default) defers on accelerators and reads every loss on the CPU. Results are the
/// same either way unless a loss is not finite (tested on the CPU); meant for tests and
/// benchmarks.
pub fn set_defer_losses(mode: Option<bool>) {
    let v = match mode {
        None => 0,
        Some(true) => 1,
        Some(false) => 2,
    };
    DEFER_LOSSES.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// A step whose loss has not been read back yet.
struct PendingStep {
    step: usize,
    step_in_epoch: usize,
    lr: f64,
    momentum: f64,
    loss: Tensor,
    grad_norm: Option<f64>,
}

/// Sent after every epoch (and once with `epoch = 0` for the kNN accuracy before training).
#[derive(Debug, Clone)]
pub struct EpochReport {
    pub epoch: usize,
    pub step: usize,
    pub loss_mean: Option<f64>,
    pub knn_top1: Option<f64>,
    pub samples_per_s: Option<f64>,
    pub elapsed_s: f64,
    pub checkpoint: Option<PathBuf>,
}

/// Receives progress. Returning `ControlFlow::Break` from a callback stops the run cleanly
/// after the current step (or epoch), as if the process had been killed there.
pub trait Observer {
    fn on_start(&mut self, _info: &StartInfo) {}
    fn on_step(&mut self, _r: &StepReport) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
    fn on_epoch(&mut self, _r: &EpochReport) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
    /// The kNN monitor is about to run on `queries + bank` samples.
    fn on_monitor(&mut self, _epoch: usize) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Silent;
impl Observer for Silent {}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub run_dir: PathBuf,
    /// Epochs completed (equals `run.epochs` unless stopped by the observer).
    pub epochs_done: usize,
    pub steps_done: usize,
    /// Losses of the steps run by this call, in order.
    pub losses: Vec<f32>,
    pub first_loss_mean: Option<f64>,
    pub last_loss_mean: Option<f64>,
    /// kNN top-1 on the validation split (carved from train) before training, with the BN
    /// statistics re-estimated on train.
    pub knn_initial: Option<f64>,
    /// kNN top-1 on the validation split after the last epoch run.
    pub knn_final: Option<f64>,
    /// Best validation kNN top-1 (the `best` checkpoint's).
    pub best_knn: Option<f64>,
    /// kNN top-1 on the test split, computed once after the last epoch (the test split is not
    /// read before).
    pub knn_test: Option<f64>,
    pub chance: f64,
    /// Mean throughput of the steps run by this call (training steps only).
    pub samples_per_s: f64,
    pub wall_s: f64,
    /// `final/encoder.safetensors`, written when all epochs completed.
    pub final_encoder: Option<PathBuf>,
    pub last_checkpoint: Option<PathBuf>,
}

/// Evenly spaced indices: `n` of `0..len` (all when `n == 0` or `n >= len`).
pub fn spaced(len: usize, n: usize) -> Vec<usize> {
    if n == 0 || n >= len {
        return (0..len).collect();
    }
    (0..n).map(|i| i * len / n).collect()
}

/// The kNN monitor's data: a labelled memory bank and queries. During training both come from
/// the train split (queries = a stratified, seeded validation part of it, bank = the rest);
/// the test split is used once, after the last epoch.
#[derive(Debug)]
pub struct KnnMonitor {
    pub bank_set: Arc<Dataset>,
    pub query_set: Arc<Dataset>,
    pub bank: Vec<usize>,
    pub queries: Vec<usize>,
    pub k: usize,
    pub t: f64,
    pub batch: usize,
    pub num_classes: usize,
}

/// The monitor's (bank, validation) indices into the train split: a stratified split with
/// `val_fraction` of each class in validation, seeded by `seed`.
pub fn monitor_split(train: &Dataset, val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    nmoco_data::split::stratified_split(train.labels(), val_fraction, seed ^ 0x0076_616c)
}

/// Re-estimate the BN running statistics of `enc` from `passes` train-mode passes over
/// `indices` of `ds` (seeded order, batches of `batch`): each statistic becomes the plain
/// average of its per-batch values (PyTorch's `momentum = None`), so one pass gives converged
/// statistics however far the initial ones (0 / 1) are from the data's. Returns the statistics
/// before, for [`restore_buffers`].
pub fn calibrate_bn<E: Encoder>(
    enc: &E,
    vars: &candle_nn::VarMap,
    ds: &Dataset,
    indices: &[usize],
    batch: usize,
    passes: usize,
    device: &Device,
) -> Result<Vec<(candle_core::Var, Tensor)>> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let saved = crate::momentum::sorted_vars(vars)
        .into_iter()
        .filter(|(n, _)| nmoco_models::is_buffer(n))
        .map(|(_, v)| {
            let t = v.as_detached_tensor().copy()?;
            Ok((v, t))
        })
        .collect::<Result<Vec<_>>>()?;
    let batch = batch.max(2);
    // BN's update is r ← 0.9·r + 0.1·s: from r = 0, one forward leaves 0.1·s.
    let mut sums: Vec<Option<Tensor>> = vec![None; saved.len()];
    let mut batches = 0usize;
    for pass in 0..passes.max(1) {
        let mut order = indices.to_vec();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
            0x00b7_ca11 + pass as u64,
        ));
        for chunk in order.chunks(batch).filter(|c| c.len() >= 2) {
            let mut xs = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let (f, _) = ds.get(i)?;
                xs.push(Tensor::from_vec(f.data, (f.t, 2, f.h, f.w), device)?);
            }
            let x = Tensor::stack(&xs, 1)?;
            for (v, _) in &saved {
                v.set(&v.as_detached_tensor().zeros_like()?)?;
            }
            enc.features(&x, true)?;
            for ((v, _), sum) in saved.iter().zip(sums.iter_mut()) {
                let s = (v.as_detached_tensor() * 10.0)?;
                *sum = Some(match sum.take() {
                    Some(acc) => (acc + s)?,
                    None => s,
                });
            }
            batches += 1;
        }
    }
    for ((v, init), sum) in saved.iter().zip(sums) {
        match sum {
            Some(s) => v.set(&(s / batches as f64)?)?,
            None => v.set(init)?,
        }
    }
    Ok(saved)
}

/// Put back BN statistics saved by [`calibrate_bn`].
pub fn restore_buffers(saved: &[(candle_core::Var, Tensor)]) -> Result<()> {
    for (v, t) in saved {
        v.set(t)?;
    }
    Ok(())
}

impl KnnMonitor {
    /// Top-1 accuracy of the kNN classifier on the encoder's backbone features (features and
    /// classifier: `nmoco_eval`'s, the ones the kNN protocol uses).
    pub fn evaluate<E: Encoder>(&self, enc: &E, device: &Device) -> Result<f64> {
        let forward = |x: &Tensor| enc.features(x, false);
        let features = |set: &Dataset, indices: &[usize]| {
            let subset = Arc::new(set.subset(indices)?);
            time_mean_features(&forward, subset, self.batch, device, &|_, _| {})
        };
        let bank = features(&self.bank_set, &self.bank)?;
        let queries = features(&self.query_set, &self.queries)?;
        let knn = KnnConfig {
            k: self.k,
            t: self.t as f32,
        };
        let scores = knn_scores(
            &bank.features,
            &bank.labels,
            &queries.features,
            self.num_classes,
            &knn,
        )?;
        Ok(nmoco_eval::evaluate(&scores, self.num_classes, &queries.labels)?.top1)
    }
}

fn knn_due(cfg: &PretrainConfig, epoch: usize) -> bool {
    let every = cfg.monitor.knn_every;
    every > 0 && (epoch.is_multiple_of(every) || epoch == cfg.run.epochs || epoch == 0)
}

/// Draw the curves from the metrics file into `curves.png`.
pub fn plot_curves(metrics_path: &Path, png: &Path) -> Result<()> {
    use nmoco_viz::lines::{Panel, Series, plot};
    let recs = metrics::read(metrics_path)?;
    let (mut loss, mut lr, mut knn, mut epoch_loss) = (vec![], vec![], vec![], vec![]);
    for r in &recs {
        match r {
            Record::Step {
                step,
                loss: l,
                lr: x,
                ..
            } => {
                loss.push((*step as f64, *l));
                lr.push((*step as f64, *x));
            }
            Record::Epoch {
                epoch,
                knn_top1,
                loss_mean,
                step,
                ..
            } => {
                if let Some(a) = knn_top1 {
                    knn.push((*epoch as f64, a * 100.0));
                }
                if let Some(l) = loss_mean {
                    epoch_loss.push((*step as f64, *l));
                }
            }
        }
    }
    let panels = [
        Panel {
            title: "loss".into(),
            x_label: "step".into(),
            series: vec![
                Series::new("step", loss, [150, 170, 230]),
                Series::new("epoch mean", epoch_loss, [200, 40, 40]).with_markers(),
            ],
        },
        Panel {
            title: "knn top-1 %".into(),
            x_label: "epoch".into(),
            series: vec![Series::new("knn", knn, [30, 140, 60]).with_markers()],
        },
        Panel {
            title: "learning rate".into(),
            x_label: "step".into(),
            series: vec![Series::new("lr", lr, [60, 60, 60])],
        },
    ];
    plot(&panels, 1200, 360).save_png(png)?;
    Ok(())
}

/// Where a run starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// A new run (refused when the run already has checkpoints).
    No,
    /// From the checkpoint `checkpoints/latest` names.
    Latest,
    /// From a named checkpoint directory (`epoch-NNNN`), e.g. the intact one before a damaged
    /// latest.
    From(String),
}

/// Run (or resume) pre-training as configured. Writes `config.toml` before step 0, metrics per
/// step and epoch, `curves.png` and a checkpoint per epoch, and `final/` at the end.
pub fn pretrain(
    cfg: &PretrainConfig,
    device: &Device,
    resume: bool,
    observer: &mut dyn Observer,
) -> Result<Summary> {
    let r = if resume { Resume::Latest } else { Resume::No };
    pretrain_from(cfg, device, &r, observer)
}

/// [`pretrain`] with the starting checkpoint chosen by `resume`.
pub fn pretrain_from(
    cfg: &PretrainConfig,
    device: &Device,
    resume: &Resume,
    observer: &mut dyn Observer,
) -> Result<Summary> {
    cfg.validate()?;
    let wall = Instant::now();
    let paths = RunPaths::new(cfg.run_dir());
    let ck_dir = paths.checkpoints();
    let mut latest = checkpoint::pointer(&ck_dir, LATEST)?;
    let resume_requested = *resume != Resume::No;
    if let Resume::From(name) = resume {
        let dir = ck_dir.join(name);
        if !name.starts_with("epoch-") || name.contains(['/', '\\']) || !dir.is_dir() {
            return Err(Error::Checkpoint {
                path: dir,
                reason: format!(
                    "--resume-from {name:?}: no such checkpoint; complete ones: {:?}",
                    checkpoint::list(&ck_dir)?
                        .into_iter()
                        .map(checkpoint::dir_name)
                        .collect::<Vec<_>>()
                ),
            });
        }
        latest = Some(dir);
    }
    let resume = resume_requested;
    if !resume && latest.is_some() {
        return Err(Error::Checkpoint {
            path: ck_dir.clone(),
            reason: "this run already has checkpoints: pass --resume to continue it, choose another run.name, or delete the directory".into(),
        });
    }
    if resume && latest.is_none() {
        return Err(Error::NoCheckpoint { dir: ck_dir });
    }

    // Data (opening validates the dataset root and builds the frame cache).
    // The test split is opened (read) only after the last epoch: nothing chosen during the run
    // (the `best` checkpoint) can depend on it.
    let train = Arc::new(Dataset::open(&cfg.data, Split::Train)?);
    let bs = cfg.optim.batch_size;
    cfg.check_queue(train.len())?;
    let steps_per_epoch = num_batches(train.len(), bs, true);
    if steps_per_epoch == 0 {
        return Err(Error::Config(crate::config::ConfigError::Invalid {
            key: "optim.batch_size".into(),
            value: bs.to_string(),
            allowed: format!("at most the {} training samples", train.len()),
        }));
    }
    let total_steps = steps_per_epoch * cfg.run.epochs;
    let warmup_steps = (cfg.optim.warmup_epochs * steps_per_epoch as f64).round() as usize;
    let num_classes = train.num_classes();
    let (bank_all, val_all) = monitor_split(&train, cfg.monitor.val_fraction, cfg.run.seed);
    let pick = |all: &[usize], n| spaced(all.len(), n).into_iter().map(|i| all[i]).collect();
    let monitor = KnnMonitor {
        bank: pick(&bank_all, cfg.monitor.knn_bank),
        queries: pick(&val_all, cfg.monitor.knn_queries),
        bank_set: train.clone(),
        query_set: train.clone(),
        k: cfg.monitor.knn_k,
        t: cfg.monitor.knn_t,
        batch: cfg.monitor.batch_size,
        num_classes,
    };

    // Model, optimizer, queue.
    let backbone = cfg.model.backbone();
    let (hh, ho) = (cfg.model.head_hidden, cfg.model.head_out);
    let compute = cfg.run.precision.compute_dtype();
    let pair = EncoderPair::with_conv_init(device, cfg.run.seed, backbone.conv_init(), |vb| {
        MocoEncoder::new(&backbone, hh, ho, vb)?.with_compute_dtype(compute)
    })?;
    if let (false, Some(path)) = (resume, &cfg.model.init_from) {
        // Checked in full (every missing, extra or mis-shaped tensor) before step 0.
        let fail = |e: nmoco_models::interop::InteropError| Error::Checkpoint {
            path: path.clone(),
            reason: e.to_string(),
        };
        let imported = nmoco_models::interop::import_file(&backbone, path).map_err(fail)?;
        nmoco_models::interop::load_into_varmap(&pair.master_vars, "backbone.", &imported, path)
            .map_err(fail)?;
        crate::momentum::copy_vars(&pair.key_vars, &pair.master_vars)?;
        tracing::info!(path = %path.display(), "backbone initialised from a PyTorch state dict");
    }
    set_tf32(device, cfg.run.tf32)?;
    let trainable = pair.trainable();
    let trainable_params: usize = trainable.iter().map(|(_, v)| v.elem_count()).sum();
    let mut optimizer = Optimizer::new(trainable, cfg.optim_params());
    let mut queue = Queue::random(cfg.moco.k, ho, cfg.run.seed ^ 0x0071_7565_7565);
    let hash = cfg.hash()?;

    std::fs::create_dir_all(&paths.root).map_err(io_err(&paths.root))?;
    checkpoint::write_atomic(&paths.config(), cfg.resolved().to_toml()?.as_bytes())?;

    let (mut epoch_done, mut step, mut best) = (0usize, 0usize, (None::<f64>, None::<usize>));
    let mut knn_initial = None;
    if let Some(dir) = latest.as_ref().filter(|_| resume) {
        let ck = checkpoint::load(dir, device)?;
        if ck.state.config_hash != hash {
            return Err(Error::ConfigMismatch {
                path: dir.clone(),
                expected: hash,
                found: ck.state.config_hash,
            });
        }
        restore(&pair.master_vars, &ck.master)?;
        restore(&pair.key_vars, &ck.key)?;
        optimizer.load_state(ck.optimizer, ck.state.optimizer_steps)?;
        queue = Queue::from_parts(
            ck.state.queue_len,
            ck.state.queue_dim,
            ck.queue,
            ck.state.queue_ptr,
        )?;
        epoch_done = ck.state.epoch;
        step = ck.state.step;
        best = (ck.state.best_knn_top1, ck.state.best_epoch);
        metrics::truncate_after(&paths.metrics(), step, epoch_done)?;
        tracing::info!(checkpoint = %dir.display(), epoch = epoch_done, step, "resumed");
    }
    let mut queue = queue.to_device(device)?;
    let mut writer = MetricsWriter::open(&paths.metrics())?;

    observer.on_start(&StartInfo {
        run_dir: paths.root.clone(),
        train_samples: train.len(),
        steps_per_epoch,
        total_steps,
        batch_size: bs,
        first_epoch: epoch_done + 1,
        epochs: cfg.run.epochs,
        start_step: step,
        trainable_params,
        num_classes,
        resumed_from: latest.clone(),
    });
    tracing::info!(run = %paths.root.display(), train = train.len(), steps_per_epoch, total_steps, trainable_params, "pre-training");

    if latest.is_none() && knn_due(cfg, 0) {
        observer.on_monitor(0);
        // A fresh encoder's BN running statistics (0 / 1) make eval-mode forwards fire nothing:
        // re-estimate them on train (as the probe's random-init baseline does), evaluate, and
        // put the initial values back so training starts from the seeded initialisation.
        let saved = calibrate_bn(
            &pair.master,
            &pair.master_vars,
            &train,
            &monitor.bank,
            cfg.monitor.batch_size,
            cfg.monitor.bn_calibration_passes,
            device,
        )?;
        let acc = monitor.evaluate(&pair.master, device);
        restore_buffers(&saved)?;
        let acc = acc?;
        knn_initial = Some(acc);
        let rec = Record::Epoch {
            epoch: 0,
            step: 0,
            loss_mean: None,
            knn_top1: Some(acc),
            lr: lr_at(cfg.optim.lr, 0, total_steps, warmup_steps),
            samples_per_s: None,
            elapsed_s: wall.elapsed().as_secs_f64(),
        };
        writer.write(&rec)?;
        tracing::info!(
            knn_top1 = acc,
            chance = 1.0 / num_classes as f64,
            "kNN before training"
        );
        let _ = observer.on_epoch(&EpochReport {
            epoch: 0,
            step: 0,
            loss_mean: None,
            knn_top1: Some(acc),
            samples_per_s: None,
            elapsed_s: wall.elapsed().as_secs_f64(),
            checkpoint: None,
        });
    }

    let step_cfg = StepConfig {
        loss: cfg.loss_params(),
        symmetric: cfg.moco.symmetric,
        grad_clip: cfg.optim.grad_clip,
        shuffle_bn: cfg.shuffle_bn(),
    };
    let mut losses = Vec::new();
    let (mut first_loss_mean, mut last_loss_mean, mut knn_final) = (None, None, None);
    let mut last_checkpoint = latest.clone();
    let (mut train_time, mut train_samples) = (0f64, 0usize);
    let mut stopped = false;
    // On an accelerator a step only queues its work: its loss stays on the device until the next
    // log step (or the epoch's last step), where the pending losses are read back together and
    // checked (a non-finite one stops the run there, before any checkpoint). On the CPU every
    // loss is read and checked before its update.
    let defer_losses = match DEFER_LOSSES.load(std::sync::atomic::Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => !device.is_cpu(),
    };

    'epochs: for epoch in epoch_done + 1..=cfg.run.epochs {
        let lc = LoaderConfig {
            batch_size: bs,
            shuffle: true,
            drop_last: true,
            seed: cfg.run.seed,
            epoch: epoch as u64,
            views: Views::TwoViews,
            prefetch: 2,
        };
        let t_epoch = Instant::now();
        let (mut sum, mut n, mut seen) = (0f64, 0usize, 0usize);
        let mut pending: Vec<PendingStep> = Vec::new();
        for (i, batch) in Loader::new(train.clone(), &lc, &cfg.data.augment, device).enumerate() {
            let batch = batch?;
            let x2 = batch.x2.as_ref().ok_or_else(|| Error::Shape {
                what: "two-view batch",
                expected: "x2 present".into(),
                got: vec![],
            })?;
            let lr = lr_at(cfg.optim.lr, step, total_steps, warmup_steps);
            let m = momentum_at(cfg.moco.m, cfg.moco.m_schedule, step, total_steps);
            let log_now = (step + 1).is_multiple_of(cfg.run.log_every) || i + 1 == steps_per_epoch;
            let sync = StepSync {
                read_loss: !defer_losses || log_now,
                grad_norm: log_now,
            };
            let t0 = Instant::now();
            let out = train_step_with(
                &pair,
                &mut optimizer,
                &mut queue,
                &batch.x,
                x2,
                lr,
                m,
                &step_cfg,
                sync,
            )?;
            step += 1;
            let b = batch.indices.len();
            seen += b;
            train_samples += b;
            let read = out.loss_value;
            pending.push(PendingStep {
                step,
                step_in_epoch: i + 1,
                lr,
                momentum: m,
                loss: out.loss,
                grad_norm: out.grad_norm,
            });
            let Some(last) = read else {
                train_time += t0.elapsed().as_secs_f64();
                continue;
            };
            // One read-back for the losses of the steps since the last one read.
            let values = if pending.len() == 1 {
                vec![last]
            } else {
                let ls: Vec<Tensor> = pending.iter().map(|p| p.loss.clone()).collect();
                Tensor::stack(&ls, 0)?.to_vec1::<f32>()?
            };
            train_time += t0.elapsed().as_secs_f64();
            let sps = seen as f64 / t_epoch.elapsed().as_secs_f64().max(1e-9);
            for (p, loss) in pending.drain(..).zip(values) {
                if !loss.is_finite() {
                    tracing::error!(epoch, step = p.step, loss, "loss is not finite; stopping");
                    return Err(Error::Diverged {
                        epoch,
                        step: p.step,
                        loss,
                        last_checkpoint,
                    });
                }
                sum += loss as f64;
                n += 1;
                losses.push(loss);
                let grad_norm = p.grad_norm.unwrap_or(f64::NAN);
                if p.step.is_multiple_of(cfg.run.log_every) || p.step_in_epoch == steps_per_epoch {
                    writer.write(&Record::Step {
                        epoch,
                        step: p.step,
                        loss: loss as f64,
                        lr: p.lr,
                        momentum: p.momentum,
                        grad_norm,
                        samples_per_s: sps,
                        elapsed_s: wall.elapsed().as_secs_f64(),
                    })?;
                }
                tracing::debug!(epoch, step = p.step, loss, lr = p.lr, grad_norm, "step");
                let report = StepReport {
                    epoch,
                    step: p.step,
                    step_in_epoch: p.step_in_epoch,
                    loss,
                    lr: p.lr,
                    momentum: p.momentum,
                    grad_norm,
                    samples_per_s: sps,
                };
                if observer.on_step(&report).is_break() {
                    stopped = true;
                    break 'epochs;
                }
            }
        }
        let loss_mean = (n > 0).then(|| sum / n as f64);
        first_loss_mean = first_loss_mean.or(loss_mean);
        last_loss_mean = loss_mean;
        let epoch_sps = seen as f64 / t_epoch.elapsed().as_secs_f64().max(1e-9);
        let knn = if knn_due(cfg, epoch) {
            observer.on_monitor(epoch);
            Some(monitor.evaluate(&pair.master, device)?)
        } else {
            None
        };
        knn_final = knn.or(knn_final);
        let is_best = match (knn, best.0) {
            (Some(a), Some(b)) => a > b,
            (Some(_), None) => true,
            _ => false,
        };
        if is_best {
            best = (knn, Some(epoch));
        }
        let mut ck_path = None;
        if epoch.is_multiple_of(cfg.checkpoint.every_epochs) || epoch == cfg.run.epochs {
            let state = TrainerState {
                format: FORMAT_VERSION,
                epoch,
                step,
                optimizer_steps: optimizer.steps(),
                queue_len: queue.len(),
                queue_dim: queue.dim(),
                queue_ptr: queue.ptr(),
                config_hash: hash.clone(),
                seed: cfg.run.seed,
                loss_mean,
                knn_top1: knn,
                best_knn_top1: best.0,
                best_epoch: best.1,
                files: Default::default(),
            };
            let ck = Checkpoint {
                master: snapshot(&pair.master_vars)?,
                key: snapshot(&pair.key_vars)?,
                optimizer: optimizer.state().clone(),
                queue: queue.keys()?,
                state,
            };
            let p = checkpoint::save(&ck_dir, &ck, is_best)?;
            checkpoint::prune(&ck_dir, cfg.checkpoint.keep_last)?;
            last_checkpoint = Some(p.clone());
            ck_path = Some(p);
        }
        let elapsed = wall.elapsed().as_secs_f64();
        writer.write(&Record::Epoch {
            epoch,
            step,
            loss_mean,
            knn_top1: knn,
            lr: lr_at(
                cfg.optim.lr,
                step.min(total_steps.saturating_sub(1)),
                total_steps,
                warmup_steps,
            ),
            samples_per_s: Some(epoch_sps),
            elapsed_s: elapsed,
        })?;
        if let Err(e) = plot_curves(&paths.metrics(), &paths.curves()) {
            tracing::warn!(error = %e, "could not draw curves.png");
        }
        tracing::info!(
            epoch,
            step,
            loss_mean,
            knn_top1 = knn,
            samples_per_s = epoch_sps,
            "epoch done"
        );
        epoch_done = epoch;
        let r = EpochReport {
            epoch,
            step,
            loss_mean,
            knn_top1: knn,
            samples_per_s: Some(epoch_sps),
            elapsed_s: elapsed,
            checkpoint: ck_path,
        };
        if observer.on_epoch(&r).is_break() {
            stopped = true;
            break;
        }
    }

    let mut final_encoder = None;
    if !stopped && epoch_done == cfg.run.epochs {
        let dir = paths.final_dir();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let enc = paths.final_encoder();
        let tmp = dir.join(format!(".{FINAL_ENCODER}.tmp"));
        let tensors: HashMap<String, Tensor> = snapshot(&pair.master_vars)?;
        candle_core::safetensors::save(&tensors, &tmp)?;
        std::fs::rename(&tmp, &enc).map_err(io_err(&enc))?;
        checkpoint::write_atomic(&paths.final_config(), cfg.resolved().to_toml()?.as_bytes())?;
        // Size and SHA-256 of the encoder, checked by linear-probe / finetune before use.
        let files = std::collections::BTreeMap::from([(
            FINAL_ENCODER.to_string(),
            checkpoint::digest_file(&enc)?,
        )]);
        let json =
            serde_json::to_vec_pretty(&serde_json::json!({ "files": files })).map_err(|e| {
                Error::Checkpoint {
                    path: paths.final_files(),
                    reason: e.to_string(),
                }
            })?;
        checkpoint::write_atomic(&paths.final_files(), &json)?;
        final_encoder = Some(enc);
    }
    // The final evaluation: the only place the test split is opened.
    let mut knn_test = None;
    if final_encoder.is_some() && cfg.monitor.knn_every > 0 {
        let test = Arc::new(Dataset::open(&cfg.data, Split::Test)?);
        let final_monitor = KnnMonitor {
            bank: bank_all.clone(),
            queries: spaced(test.len(), cfg.monitor.knn_queries),
            bank_set: train.clone(),
            query_set: test,
            k: cfg.monitor.knn_k,
            t: cfg.monitor.knn_t,
            batch: cfg.monitor.batch_size,
            num_classes,
        };
        observer.on_monitor(epoch_done);
        let acc = final_monitor.evaluate(&pair.master, device)?;
        tracing::info!(knn_top1_test = acc, "kNN on the test split after training");
        knn_test = Some(acc);
    }
    Ok(Summary {
        run_dir: paths.root,
        epochs_done: epoch_done,
        steps_done: step,
        losses,
        first_loss_mean,
        last_loss_mean,
        knn_initial,
        knn_final,
        best_knn: best.0,
        knn_test,
        chance: 1.0 / num_classes.max(1) as f64,
        samples_per_s: train_samples as f64 / train_time.max(1e-9),
        wall_s: wall.elapsed().as_secs_f64(),
        final_encoder,
        last_checkpoint,
    })
}
