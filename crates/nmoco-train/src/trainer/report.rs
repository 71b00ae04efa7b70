//! What the loop tells its [`Observer`]: the start, every step, every epoch ([`EpochStats`],
//! which is also the epoch's line of `metrics.jsonl`) and the [`Summary`] it returns.

use std::ops::ControlFlow;
use std::path::PathBuf;

use crate::metrics::Record;

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

/// One epoch's outcome (and, with `epoch = 0`, the kNN accuracy before training): written to
/// `metrics.jsonl` as [`Record::Epoch`] and sent to [`Observer::on_epoch`].
#[derive(Debug, Clone, PartialEq)]
pub struct EpochStats {
    pub epoch: usize,
    /// Global steps done after this epoch.
    pub step: usize,
    /// Mean loss of the epoch's steps (`None` before training).
    pub loss_mean: Option<f64>,
    /// Validation kNN top-1, on the epochs the monitor ran.
    pub knn_top1: Option<f64>,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    /// Training throughput of the epoch (`None` before training).
    pub samples_per_s: Option<f64>,
    /// Seconds since the run started.
    pub elapsed_s: f64,
    /// The checkpoint written after this epoch, if one was due.
    pub checkpoint: Option<PathBuf>,
}

impl EpochStats {
    /// The epoch's line of `metrics.jsonl`.
    pub fn record(&self) -> Record {
        Record::Epoch {
            epoch: self.epoch,
            step: self.step,
            loss_mean: self.loss_mean,
            knn_top1: self.knn_top1,
            lr: self.lr,
            samples_per_s: self.samples_per_s,
            elapsed_s: self.elapsed_s,
        }
    }

    /// One rounded line for a person, e.g. `epoch 3: loss 4.0835 knn top-1 23.3% (chance 10.0%)
    /// 196.5 samples/s [12 s]`; `chance` is the kNN accuracy of guessing.
    pub fn line(&self, chance: Option<f64>) -> String {
        let knn = self
            .knn_top1
            .map(|a| {
                let chance = chance
                    .map(|c| format!(" (chance {:.1}%)", c * 100.0))
                    .unwrap_or_default();
                format!(" knn top-1 {:.1}%{chance}", a * 100.0)
            })
            .unwrap_or_default();
        let loss = self
            .loss_mean
            .map(|l| format!(" loss {l:.4}"))
            .unwrap_or_default();
        let sps = self
            .samples_per_s
            .map(|s| format!(" {s:.1} samples/s"))
            .unwrap_or_default();
        format!(
            "epoch {}:{loss}{knn}{sps} [{:.0} s]",
            self.epoch, self.elapsed_s
        )
    }
}

/// Receives progress. Returning `ControlFlow::Break` from a callback stops the run cleanly
/// after the current step (or epoch), as if the process had been killed there.
pub trait Observer {
    fn on_start(&mut self, _info: &StartInfo) {}
    fn on_step(&mut self, _r: &StepReport) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
    fn on_epoch(&mut self, _r: &EpochStats) -> ControlFlow<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> EpochStats {
        EpochStats {
            epoch: 3,
            step: 39,
            loss_mean: Some(4.083488574394813),
            knn_top1: Some(0.2333333),
            lr: 0.05,
            samples_per_s: Some(196.5355739884202),
            elapsed_s: 12.4,
            checkpoint: None,
        }
    }

    #[test]
    fn the_record_carries_every_value_unrounded() {
        let s = stats();
        assert_eq!(
            s.record(),
            Record::Epoch {
                epoch: 3,
                step: 39,
                loss_mean: Some(4.083488574394813),
                knn_top1: Some(0.2333333),
                lr: 0.05,
                samples_per_s: Some(196.5355739884202),
                elapsed_s: 12.4,
            }
        );
    }

    #[test]
    fn the_line_is_rounded() {
        let s = stats();
        assert_eq!(
            s.line(Some(0.1)),
            "epoch 3: loss 4.0835 knn top-1 23.3% (chance 10.0%) 196.5 samples/s [12 s]"
        );
        assert_eq!(
            s.line(None),
            "epoch 3: loss 4.0835 knn top-1 23.3% 196.5 samples/s [12 s]"
        );
        let before = EpochStats {
            epoch: 0,
            step: 0,
            loss_mean: None,
            samples_per_s: None,
            elapsed_s: 2.6,
            ..s.clone()
        };
        assert_eq!(
            before.line(Some(0.1)),
            "epoch 0: knn top-1 23.3% (chance 10.0%) [3 s]"
        );
        let no_knn = EpochStats {
            knn_top1: None,
            ..s
        };
        assert_eq!(
            no_knn.line(Some(0.1)),
            "epoch 3: loss 4.0835 196.5 samples/s [12 s]"
        );
    }
}
