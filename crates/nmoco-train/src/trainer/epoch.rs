//! One epoch: the step loop (losses read back at log steps on accelerators), then the monitor,
//! best tracking, the checkpoint and the epoch's record. [`Run`] holds what the epochs share.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use nmoco_data::{Dataset, Loader, LoaderConfig, Split, Views};

use super::device::defer_losses;
use super::monitor::{KnnMonitor, calibrate_bn, restore_buffers, spaced};
use super::policy::{LoopFacts, Position, capture, checkpoint_due, is_log_step, knn_due};
use super::report::{EpochStats, Observer, StartInfo, StepReport, Summary};
use super::setup::{Model, RunData};
use crate::checkpoint::{self, Checkpoint};
use crate::config::PretrainConfig;
use crate::encoder::snapshot;
use crate::error::{Error, Result};
use crate::metrics::{MetricsWriter, Record};
use crate::momentum::momentum_at;
use crate::step::{StepConfig, StepSync, train_step_with};
use nmoco_eval::run_dir::RunPaths;
use nmoco_optim::lr_at;

/// A step whose loss has not been read back yet.
struct PendingStep {
    step: usize,
    step_in_epoch: usize,
    lr: f64,
    momentum: f64,
    loss: Tensor,
    grad_norm: Option<f64>,
}

/// What the step loop of one epoch measured.
#[derive(Debug, Default)]
struct Trained {
    loss_sum: f64,
    losses: usize,
    samples: usize,
}

/// The run between set-up and `final/`: configuration, data, model, metrics file and the
/// running totals that become the [`Summary`].
pub(super) struct Run<'a> {
    pub cfg: &'a PretrainConfig,
    pub device: &'a Device,
    pub paths: &'a RunPaths,
    pub data: RunData,
    pub model: Model,
    pub at: Position,
    hash: String,
    wall: Instant,
    writer: MetricsWriter,
    step_cfg: StepConfig,
    /// On an accelerator a step only queues its work: its loss stays on the device until the
    /// next log step (or the epoch's last step), where the pending losses are read back together
    /// and checked (a non-finite one stops the run there, before any checkpoint). On the CPU
    /// every loss is read and checked before its update.
    defer_losses: bool,
    losses: Vec<f32>,
    first_loss_mean: Option<f64>,
    last_loss_mean: Option<f64>,
    knn_initial: Option<f64>,
    knn_final: Option<f64>,
    train_time: f64,
    train_samples: usize,
    pub last_checkpoint: Option<PathBuf>,
}

impl<'a> Run<'a> {
    /// Move the queue to `device` and open the metrics file for appending.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &'a PretrainConfig,
        device: &'a Device,
        paths: &'a RunPaths,
        data: RunData,
        mut model: Model,
        at: Position,
        hash: String,
        from: Option<PathBuf>,
        wall: Instant,
    ) -> Result<Self> {
        model.queue = model.queue.to_device(device)?;
        let writer = MetricsWriter::open(&paths.metrics())?;
        Ok(Self {
            cfg,
            device,
            paths,
            data,
            model,
            at,
            hash,
            wall,
            writer,
            step_cfg: StepConfig {
                loss: cfg.loss_params(),
                symmetric: cfg.moco.symmetric,
                grad_clip: cfg.optim.grad_clip,
                shuffle_bn: cfg.shuffle_bn(),
            },
            defer_losses: defer_losses(device),
            losses: Vec::new(),
            first_loss_mean: None,
            last_loss_mean: None,
            knn_initial: None,
            knn_final: None,
            train_time: 0.0,
            train_samples: 0,
            last_checkpoint: from,
        })
    }

    pub fn start_info(&self) -> StartInfo {
        StartInfo {
            run_dir: self.paths.root.clone(),
            train_samples: self.data.train.len(),
            steps_per_epoch: self.data.steps_per_epoch,
            total_steps: self.data.total_steps,
            batch_size: self.cfg.optim.batch_size,
            first_epoch: self.at.epoch + 1,
            epochs: self.cfg.run.epochs,
            start_step: self.at.step,
            trainable_params: self.model.trainable_params,
            num_classes: self.data.num_classes,
            resumed_from: self.last_checkpoint.clone(),
        }
    }

    fn elapsed_s(&self) -> f64 {
        self.wall.elapsed().as_secs_f64()
    }

    /// The kNN accuracy before training (epoch 0). A fresh encoder's BN running statistics
    /// (0 / 1) make eval-mode forwards fire nothing: they are re-estimated on train (as the
    /// probe's random-init baseline does) for the evaluation, then put back so training starts
    /// from the seeded initialisation.
    pub fn initial_knn(&mut self, observer: &mut dyn Observer) -> Result<()> {
        observer.on_monitor(0);
        let mon = &self.cfg.monitor;
        let saved = calibrate_bn(
            &self.model.pair.master,
            &self.model.pair.master_vars,
            &self.data.train,
            &self.data.monitor.bank,
            mon.batch_size,
            mon.bn_calibration_passes,
            self.device,
        )?;
        let acc = self
            .data
            .monitor
            .evaluate(&self.model.pair.master, self.device);
        restore_buffers(&saved)?;
        let acc = acc?;
        self.knn_initial = Some(acc);
        let stats = EpochStats {
            epoch: 0,
            step: 0,
            loss_mean: None,
            knn_top1: Some(acc),
            lr: self.data.lr_after(self.cfg, 0),
            samples_per_s: None,
            elapsed_s: self.elapsed_s(),
            checkpoint: None,
        };
        self.writer.write(&stats.record())?;
        tracing::info!(
            knn_top1 = acc,
            chance = 1.0 / self.data.num_classes as f64,
            "kNN before training"
        );
        let _ = observer.on_epoch(&stats);
        Ok(())
    }

    /// Train epoch `epoch` and finish it (monitor, checkpoint, record). `Break` when the
    /// observer stopped the run: during the steps (the epoch does not count) or after it.
    pub fn epoch(&mut self, epoch: usize, observer: &mut dyn Observer) -> Result<ControlFlow<()>> {
        let t_epoch = Instant::now();
        let ControlFlow::Continue(trained) = self.train_steps(epoch, t_epoch, observer)? else {
            return Ok(ControlFlow::Break(()));
        };
        let epoch_sps = trained.samples as f64 / t_epoch.elapsed().as_secs_f64().max(1e-9);
        let stats = self.finish_epoch(epoch, &trained, epoch_sps, observer)?;
        self.at.epoch = epoch;
        Ok(observer.on_epoch(&stats))
    }

    /// The step loop of one epoch.
    fn train_steps(
        &mut self,
        epoch: usize,
        t_epoch: Instant,
        observer: &mut dyn Observer,
    ) -> Result<ControlFlow<(), Trained>> {
        let cfg = self.cfg;
        let lc = LoaderConfig {
            batch_size: cfg.optim.batch_size,
            shuffle: true,
            drop_last: true,
            seed: cfg.run.seed,
            epoch: epoch as u64,
            views: Views::TwoViews,
            prefetch: 2,
        };
        let (steps_per_epoch, total_steps) = (self.data.steps_per_epoch, self.data.total_steps);
        let mut trained = Trained::default();
        let mut pending: Vec<PendingStep> = Vec::new();
        let loader = Loader::new(self.data.train.clone(), &lc, &cfg.data.augment, self.device);
        for (i, batch) in loader.enumerate() {
            let batch = batch?;
            let x2 = batch.x2.as_ref().ok_or_else(|| Error::Shape {
                what: "two-view batch",
                expected: "x2 present".into(),
                got: vec![],
            })?;
            let step = self.at.step;
            let lr = lr_at(cfg.optim.lr, step, total_steps, self.data.warmup_steps);
            let m = momentum_at(cfg.moco.m, cfg.moco.m_schedule, step, total_steps);
            let log_now = is_log_step(step + 1, i + 1, cfg.run.log_every, steps_per_epoch);
            let sync = StepSync {
                read_loss: !self.defer_losses || log_now,
                grad_norm: log_now,
            };
            let t0 = Instant::now();
            let model = &mut self.model;
            let out = train_step_with(
                &model.pair,
                &mut model.optimizer,
                &mut model.queue,
                &batch.x,
                x2,
                lr,
                m,
                &self.step_cfg,
                sync,
            )?;
            self.at.step += 1;
            let b = batch.indices.len();
            trained.samples += b;
            self.train_samples += b;
            pending.push(PendingStep {
                step: self.at.step,
                step_in_epoch: i + 1,
                lr,
                momentum: m,
                loss: out.loss,
                grad_norm: out.grad_norm,
            });
            let Some(last) = out.loss_value else {
                self.train_time += t0.elapsed().as_secs_f64();
                continue;
            };
            // One read-back for the losses of the steps since the last one read.
            let values = if pending.len() == 1 {
                vec![last]
            } else {
                let ls: Vec<Tensor> = pending.iter().map(|p| p.loss.clone()).collect();
                Tensor::stack(&ls, 0)?.to_vec1::<f32>()?
            };
            self.train_time += t0.elapsed().as_secs_f64();
            let sps = trained.samples as f64 / t_epoch.elapsed().as_secs_f64().max(1e-9);
            let read = pending.drain(..).zip(values);
            if self
                .report_steps(epoch, read, sps, &mut trained, observer)?
                .is_break()
            {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(trained))
    }

    /// Check, record and report the steps whose losses were just read back, in order.
    fn report_steps(
        &mut self,
        epoch: usize,
        read: impl Iterator<Item = (PendingStep, f32)>,
        sps: f64,
        trained: &mut Trained,
        observer: &mut dyn Observer,
    ) -> Result<ControlFlow<()>> {
        let (log_every, steps_per_epoch) = (self.cfg.run.log_every, self.data.steps_per_epoch);
        for (p, loss) in read {
            if !loss.is_finite() {
                tracing::error!(epoch, step = p.step, loss, "loss is not finite; stopping");
                return Err(Error::Diverged {
                    epoch,
                    step: p.step,
                    loss,
                    last_checkpoint: self.last_checkpoint.clone(),
                });
            }
            trained.loss_sum += loss as f64;
            trained.losses += 1;
            self.losses.push(loss);
            let grad_norm = p.grad_norm.unwrap_or(f64::NAN);
            if is_log_step(p.step, p.step_in_epoch, log_every, steps_per_epoch) {
                self.writer.write(&Record::Step {
                    epoch,
                    step: p.step,
                    loss: loss as f64,
                    lr: p.lr,
                    momentum: p.momentum,
                    grad_norm,
                    samples_per_s: sps,
                    elapsed_s: self.elapsed_s(),
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
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// After the steps of `epoch`: the monitor, best tracking, the checkpoint when due, the
    /// epoch's record and `curves.png`.
    fn finish_epoch(
        &mut self,
        epoch: usize,
        trained: &Trained,
        epoch_sps: f64,
        observer: &mut dyn Observer,
    ) -> Result<EpochStats> {
        let loss_mean = (trained.losses > 0).then(|| trained.loss_sum / trained.losses as f64);
        self.first_loss_mean = self.first_loss_mean.or(loss_mean);
        self.last_loss_mean = loss_mean;
        let knn = if knn_due(self.cfg, epoch) {
            observer.on_monitor(epoch);
            Some(
                self.data
                    .monitor
                    .evaluate(&self.model.pair.master, self.device)?,
            )
        } else {
            None
        };
        self.knn_final = knn.or(self.knn_final);
        let is_best = self.at.best.offer(knn, epoch);
        let ck = &self.cfg.checkpoint;
        let mut checkpoint = None;
        if checkpoint_due(ck.every_epochs, self.cfg.run.epochs, epoch) {
            let at = Position { epoch, ..self.at };
            let p = self.save_checkpoint(at, loss_mean, knn, is_best)?;
            self.last_checkpoint = Some(p.clone());
            checkpoint = Some(p);
        }
        let stats = EpochStats {
            epoch,
            step: self.at.step,
            loss_mean,
            knn_top1: knn,
            lr: self.data.lr_after(self.cfg, self.at.step),
            samples_per_s: Some(epoch_sps),
            elapsed_s: self.elapsed_s(),
            checkpoint,
        };
        self.writer.write(&stats.record())?;
        if let Err(e) = super::plot_curves(&self.paths.metrics(), &self.paths.curves()) {
            tracing::warn!(error = %e, "could not draw curves.png");
        }
        tracing::info!(
            epoch,
            step = stats.step,
            loss_mean,
            knn_top1 = knn,
            samples_per_s = epoch_sps,
            "epoch done"
        );
        Ok(stats)
    }

    /// Save the checkpoint of position `at`, then prune old ones.
    fn save_checkpoint(
        &self,
        at: Position,
        loss_mean: Option<f64>,
        knn_top1: Option<f64>,
        is_best: bool,
    ) -> Result<PathBuf> {
        let model = &self.model;
        let facts = LoopFacts {
            at,
            optimizer_steps: model.optimizer.steps(),
            queue_len: model.queue.len(),
            queue_dim: model.queue.dim(),
            queue_ptr: model.queue.ptr(),
            seed: self.cfg.run.seed,
            loss_mean,
            knn_top1,
        };
        let ck = Checkpoint {
            master: snapshot(&model.pair.master_vars)?,
            key: snapshot(&model.pair.key_vars)?,
            optimizer: model.optimizer.state().clone(),
            queue: model.queue.keys()?,
            state: capture(&facts, &self.hash),
        };
        let ck_dir = self.paths.checkpoints();
        let p = checkpoint::save(&ck_dir, &ck, is_best)?;
        checkpoint::prune(&ck_dir, self.cfg.checkpoint.keep_last)?;
        Ok(p)
    }

    /// kNN top-1 on the test split with the whole monitor bank: the only place the test split
    /// is opened, once after the last epoch.
    pub fn test_knn(&self, observer: &mut dyn Observer) -> Result<f64> {
        let cfg = self.cfg;
        let test = Arc::new(Dataset::open(&cfg.data, Split::Test)?);
        let final_monitor = KnnMonitor {
            bank: self.data.bank_all.clone(),
            queries: spaced(test.len(), cfg.monitor.knn_queries),
            bank_set: self.data.train.clone(),
            query_set: test,
            k: cfg.monitor.knn_k,
            t: cfg.monitor.knn_t,
            batch: cfg.monitor.batch_size,
            num_classes: self.data.num_classes,
        };
        observer.on_monitor(self.at.epoch);
        let acc = final_monitor.evaluate(&self.model.pair.master, self.device)?;
        tracing::info!(knn_top1_test = acc, "kNN on the test split after training");
        Ok(acc)
    }

    pub fn summary(self, final_encoder: Option<PathBuf>, knn_test: Option<f64>) -> Summary {
        Summary {
            run_dir: self.paths.root.clone(),
            epochs_done: self.at.epoch,
            steps_done: self.at.step,
            losses: self.losses,
            first_loss_mean: self.first_loss_mean,
            last_loss_mean: self.last_loss_mean,
            knn_initial: self.knn_initial,
            knn_final: self.knn_final,
            best_knn: self.at.best.knn,
            knn_test,
            chance: 1.0 / self.data.num_classes.max(1) as f64,
            samples_per_s: self.train_samples as f64 / self.train_time.max(1e-9),
            wall_s: self.wall.elapsed().as_secs_f64(),
            final_encoder,
            last_checkpoint: self.last_checkpoint,
        }
    }
}
