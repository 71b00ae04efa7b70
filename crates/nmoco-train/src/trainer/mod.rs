//! The pre-training loop: epochs of [`train_step`](crate::step::train_step), the kNN monitor,
//! metrics, curves, checkpoints and resume. Progress is reported to an [`Observer`]; nothing is
//! printed.
//!
//! [`pretrain_from`] reads as the run: set-up ([`setup`]: the resume guard, data and monitor,
//! model, restore), the kNN before training, a loop over [`Run::epoch`](epoch::Run::epoch)
//! ([`epoch`]: the step loop, then monitor, best, checkpoint and the epoch's record), and
//! `final/` ([`export`]). The decisions are pure functions in [`policy`]; what the observer
//! receives is in [`report`] ([`EpochStats`] is both an epoch's `metrics.jsonl` line and its
//! report).

mod curves;
mod device;
mod epoch;
mod export;
mod monitor;
mod policy;
mod report;
mod setup;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;

pub use curves::plot_curves;
pub use device::{set_defer_losses, set_tf32};
pub use monitor::{KnnMonitor, calibrate_bn, monitor_split, restore_buffers, spaced};
pub use report::{EpochStats, Observer, Silent, StartInfo, StepReport, Summary};

use crate::checkpoint;
use crate::config::PretrainConfig;
use crate::error::{Result, io_err};
use nmoco_eval::run_dir::RunPaths;
use policy::{Position, knn_due};

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
    let from: Option<PathBuf> = setup::start_checkpoint(&paths.checkpoints(), resume)?;
    let data = setup::RunData::open(cfg)?;
    let mut model = setup::Model::build(cfg, device, from.is_some())?;
    let hash = cfg.hash()?;
    std::fs::create_dir_all(&paths.root).map_err(io_err(&paths.root))?;
    checkpoint::write_atomic(&paths.config(), cfg.resolved().to_toml()?.as_bytes())?;
    let at = match &from {
        Some(dir) => model.restore(dir, &hash, &paths.metrics(), device)?,
        None => Position::default(),
    };

    let mut run = epoch::Run::new(cfg, device, &paths, data, model, at, hash, from, wall)?;
    let start = run.start_info();
    observer.on_start(&start);
    tracing::info!(run = %paths.root.display(), train = start.train_samples, steps_per_epoch = start.steps_per_epoch, total_steps = start.total_steps, trainable_params = start.trainable_params, "pre-training");
    if start.resumed_from.is_none() && knn_due(cfg, 0) {
        run.initial_knn(observer)?;
    }
    let mut stopped = false;
    for epoch in start.first_epoch..=cfg.run.epochs {
        if run.epoch(epoch, observer)?.is_break() {
            stopped = true;
            break;
        }
    }

    let final_encoder = if !stopped && run.at.epoch == cfg.run.epochs {
        Some(export::write_final(
            &paths,
            cfg,
            &run.model.pair.master_vars,
        )?)
    } else {
        None
    };
    // The final evaluation: the only place the test split is opened.
    let knn_test = if final_encoder.is_some() && cfg.monitor.knn_every > 0 {
        Some(run.test_knn(observer)?)
    } else {
        None
    };
    Ok(run.summary(final_encoder, knn_test))
}
