//! Everything before the first step: where the run starts (the resume guard), the training data
//! and the kNN monitor, the model with its optimizer and queue, and the restore from a
//! checkpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use nmoco_data::{Dataset, Split, num_batches};
use nmoco_eval::run_dir::LATEST;
use nmoco_optim::Optimizer;

use super::Resume;
use super::monitor::{KnnMonitor, monitor_split, spaced};
use super::policy::Position;
use crate::checkpoint;
use crate::config::PretrainConfig;
use crate::encoder::{EncoderPair, MocoEncoder, restore};
use crate::error::{Error, Result};
use crate::metrics;
use crate::queue::Queue;

/// The checkpoint the run continues from (`None`: a new run). Refuses a new run over existing
/// checkpoints, a resume without any, and a `--resume-from` name that is not a checkpoint.
pub(super) fn start_checkpoint(ck_dir: &Path, resume: &Resume) -> Result<Option<PathBuf>> {
    let mut latest = checkpoint::pointer(ck_dir, LATEST)?;
    if let Resume::From(name) = resume {
        let dir = ck_dir.join(name);
        if !name.starts_with("epoch-") || name.contains(['/', '\\']) || !dir.is_dir() {
            return Err(Error::Checkpoint {
                path: dir,
                reason: format!(
                    "--resume-from {name:?}: no such checkpoint; complete ones: {:?}",
                    checkpoint::list(ck_dir)?
                        .into_iter()
                        .map(checkpoint::dir_name)
                        .collect::<Vec<_>>()
                ),
            });
        }
        latest = Some(dir);
    }
    let resume = *resume != Resume::No;
    if !resume && latest.is_some() {
        return Err(Error::Checkpoint {
            path: ck_dir.to_path_buf(),
            reason: "this run already has checkpoints: pass --resume to continue it, choose another run.name, or delete the directory".into(),
        });
    }
    if resume && latest.is_none() {
        return Err(Error::NoCheckpoint {
            dir: ck_dir.to_path_buf(),
        });
    }
    Ok(latest)
}

/// The training split, the schedule's lengths and the kNN monitor.
#[derive(Debug)]
pub(super) struct RunData {
    pub train: Arc<Dataset>,
    pub steps_per_epoch: usize,
    pub total_steps: usize,
    pub warmup_steps: usize,
    pub num_classes: usize,
    /// The monitor's whole bank part of train (the final evaluation's bank).
    pub bank_all: Vec<usize>,
    pub monitor: KnnMonitor,
}

impl RunData {
    /// Open the train split (which validates the dataset root and builds the frame cache) and
    /// carve the monitor's bank and validation queries from it. The test split is opened only
    /// after the last epoch: nothing chosen during the run (the `best` checkpoint) can depend
    /// on it.
    pub fn open(cfg: &PretrainConfig) -> Result<Self> {
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
        Ok(Self {
            train,
            steps_per_epoch,
            total_steps,
            warmup_steps,
            num_classes,
            bank_all,
            monitor,
        })
    }

    /// The learning rate after global step `step` (clamped to the last step), as recorded with
    /// each epoch.
    pub fn lr_after(&self, cfg: &PretrainConfig, step: usize) -> f64 {
        nmoco_optim::lr_at(
            cfg.optim.lr,
            step.min(self.total_steps.saturating_sub(1)),
            self.total_steps,
            self.warmup_steps,
        )
    }
}

/// The encoders, the optimizer over the master's trainable variables and the key queue.
#[derive(Debug)]
pub(super) struct Model {
    pub pair: EncoderPair<MocoEncoder>,
    pub optimizer: Optimizer,
    pub queue: Queue,
    pub trainable_params: usize,
}

impl Model {
    /// Build the seeded model (backbone from `model.init_from` for a new run), set TF32 as
    /// configured, and the optimizer and a random queue.
    pub fn build(cfg: &PretrainConfig, device: &Device, resuming: bool) -> Result<Self> {
        let backbone = cfg.model.backbone();
        let (hh, ho) = (cfg.model.head_hidden, cfg.model.head_out);
        let compute = cfg.run.precision.compute_dtype();
        let pair = EncoderPair::with_conv_init(device, cfg.run.seed, backbone.conv_init(), |vb| {
            MocoEncoder::new(&backbone, hh, ho, vb)?.with_compute_dtype(compute)
        })?;
        if let (false, Some(path)) = (resuming, &cfg.model.init_from) {
            // Checked in full (every missing, extra or mis-shaped tensor) before step 0.
            let fail = |e: nmoco_models::interop::InteropError| Error::Checkpoint {
                path: path.clone(),
                reason: e.to_string(),
            };
            let imported = nmoco_models::interop::import_file(&backbone, path).map_err(fail)?;
            nmoco_models::interop::load_into_varmap(
                &pair.master_vars,
                "backbone.",
                &imported,
                path,
            )
            .map_err(fail)?;
            crate::momentum::copy_vars(&pair.key_vars, &pair.master_vars)?;
            tracing::info!(path = %path.display(), "backbone initialised from a PyTorch state dict");
        }
        super::set_tf32(device, cfg.run.tf32)?;
        let trainable = pair.trainable();
        let trainable_params: usize = trainable.iter().map(|(_, v)| v.elem_count()).sum();
        let optimizer = Optimizer::new(trainable, cfg.optim_params());
        let queue = Queue::random(cfg.moco.k, ho, cfg.run.seed ^ 0x0071_7565_7565);
        Ok(Self {
            pair,
            optimizer,
            queue,
            trainable_params,
        })
    }

    /// Load the checkpoint `dir` (made with the config hashed `hash`) into the model, and cut
    /// `metrics` back to it so the records of a killed partial epoch are not duplicated.
    pub fn restore(
        &mut self,
        dir: &Path,
        hash: &str,
        metrics_path: &Path,
        device: &Device,
    ) -> Result<Position> {
        let ck = checkpoint::load(dir, device)?;
        if ck.state.config_hash != hash {
            return Err(Error::ConfigMismatch {
                path: dir.to_path_buf(),
                expected: hash.to_string(),
                found: ck.state.config_hash,
            });
        }
        restore(&self.pair.master_vars, &ck.master)?;
        restore(&self.pair.key_vars, &ck.key)?;
        self.optimizer
            .load_state(ck.optimizer, ck.state.optimizer_steps)?;
        self.queue = Queue::from_parts(
            ck.state.queue_len,
            ck.state.queue_dim,
            ck.queue,
            ck.state.queue_ptr,
        )?;
        let at = Position::of(&ck.state);
        metrics::truncate_after(metrics_path, at.step, at.epoch)?;
        tracing::info!(checkpoint = %dir.display(), epoch = at.epoch, step = at.step, "resumed");
        Ok(at)
    }
}
