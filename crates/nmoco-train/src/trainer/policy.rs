//! The loop's decisions, as pure functions: when the monitor runs, when a checkpoint is written,
//! which steps are logged, what counts as a new best, and what a checkpoint records of where
//! the run stands.

use crate::checkpoint::{FORMAT_VERSION, TrainerState};
use crate::config::PretrainConfig;

/// Whether the kNN monitor runs after `epoch` (0: before training): every
/// `monitor.knn_every` epochs and after the last one; never when `knn_every` is 0.
pub(super) fn knn_due(cfg: &PretrainConfig, epoch: usize) -> bool {
    let every = cfg.monitor.knn_every;
    every > 0 && (epoch.is_multiple_of(every) || epoch == cfg.run.epochs || epoch == 0)
}

/// Whether a checkpoint is written after `epoch`: every `every_epochs` epochs and after the last
/// of `epochs`.
pub(super) fn checkpoint_due(every_epochs: usize, epochs: usize, epoch: usize) -> bool {
    epoch.is_multiple_of(every_epochs) || epoch == epochs
}

/// Whether global step `step` (1-based; `step_in_epoch` within its epoch) is a log step: every
/// `log_every` steps and the last step of each epoch. Log steps write a metrics record and, on
/// accelerators, read the pending losses back.
pub(super) fn is_log_step(
    step: usize,
    step_in_epoch: usize,
    log_every: usize,
    steps_per_epoch: usize,
) -> bool {
    step.is_multiple_of(log_every) || step_in_epoch == steps_per_epoch
}

/// Whether a monitor value improves on the best so far: any value beats none, ties do not
/// count (the earlier epoch stays best), no value never improves.
pub(super) fn improves(knn: Option<f64>, best: Option<f64>) -> bool {
    match (knn, best) {
        (Some(a), Some(b)) => a > b,
        (Some(_), None) => true,
        _ => false,
    }
}

/// The best validation kNN so far and its epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Best {
    pub knn: Option<f64>,
    pub epoch: Option<usize>,
}

impl Best {
    /// Take `knn` of `epoch` when it [`improves`] on the best; returns whether it did.
    pub fn offer(&mut self, knn: Option<f64>, epoch: usize) -> bool {
        let better = improves(knn, self.knn);
        if better {
            *self = Best {
                knn,
                epoch: Some(epoch),
            };
        }
        better
    }
}

/// Where the run stands between two epochs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Position {
    /// Epochs completed.
    pub epoch: usize,
    /// Global steps completed.
    pub step: usize,
    pub best: Best,
}

impl Position {
    /// The position a checkpoint recorded.
    pub fn of(state: &TrainerState) -> Self {
        Self {
            epoch: state.epoch,
            step: state.step,
            best: Best {
                knn: state.best_knn_top1,
                epoch: state.best_epoch,
            },
        }
    }
}

/// What the loop knows besides the tensors, for a checkpoint's `state.json`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct LoopFacts {
    pub at: Position,
    pub optimizer_steps: u64,
    pub queue_len: usize,
    pub queue_dim: usize,
    pub queue_ptr: usize,
    pub seed: u64,
    pub loss_mean: Option<f64>,
    pub knn_top1: Option<f64>,
}

/// The state a checkpoint records (its `files` are filled in when it is saved).
pub(super) fn capture(facts: &LoopFacts, config_hash: &str) -> TrainerState {
    TrainerState {
        format: FORMAT_VERSION,
        epoch: facts.at.epoch,
        step: facts.at.step,
        optimizer_steps: facts.optimizer_steps,
        queue_len: facts.queue_len,
        queue_dim: facts.queue_dim,
        queue_ptr: facts.queue_ptr,
        config_hash: config_hash.to_string(),
        seed: facts.seed,
        loss_mean: facts.loss_mean,
        knn_top1: facts.knn_top1,
        best_knn_top1: facts.at.best.knn,
        best_epoch: facts.at.best.epoch,
        files: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_runs_before_training_every_n_epochs_and_at_the_end() {
        let mut cfg = PretrainConfig::default();
        cfg.run.epochs = 10;
        cfg.monitor.knn_every = 4;
        let due: Vec<usize> = (0..=10).filter(|&e| knn_due(&cfg, e)).collect();
        assert_eq!(due, vec![0, 4, 8, 10]);
        cfg.monitor.knn_every = 0;
        assert!((0..=10).all(|e| !knn_due(&cfg, e)));
    }

    #[test]
    fn checkpoints_every_n_epochs_and_at_the_end() {
        let due: Vec<usize> = (1..=7).filter(|&e| checkpoint_due(3, 7, e)).collect();
        assert_eq!(due, vec![3, 6, 7]);
        assert!((1..=4).all(|e| checkpoint_due(1, 4, e)));
    }

    #[test]
    fn log_steps_every_n_steps_and_at_the_end_of_each_epoch() {
        // 5 steps per epoch, log every 3: steps 3, 5 (end), 6, 9, 10 (end).
        let logged: Vec<usize> = (1..=10)
            .filter(|&s| is_log_step(s, (s - 1) % 5 + 1, 3, 5))
            .collect();
        assert_eq!(logged, vec![3, 5, 6, 9, 10]);
    }

    #[test]
    fn only_a_strictly_higher_value_improves() {
        assert!(improves(Some(0.1), None));
        assert!(improves(Some(0.3), Some(0.2)));
        assert!(!improves(Some(0.2), Some(0.2)));
        assert!(!improves(Some(0.1), Some(0.2)));
        assert!(!improves(None, None));
        assert!(!improves(None, Some(0.2)));
        let mut best = Best::default();
        assert!(best.offer(Some(0.2), 1));
        assert!(!best.offer(None, 2));
        assert!(!best.offer(Some(0.2), 3));
        assert!(best.offer(Some(0.4), 4));
        assert_eq!(
            best,
            Best {
                knn: Some(0.4),
                epoch: Some(4)
            }
        );
    }

    #[test]
    fn capture_records_the_position_it_is_restored_from() {
        let facts = LoopFacts {
            at: Position {
                epoch: 3,
                step: 39,
                best: Best {
                    knn: Some(0.25),
                    epoch: Some(2),
                },
            },
            optimizer_steps: 39,
            queue_len: 64,
            queue_dim: 16,
            queue_ptr: 8,
            seed: 7,
            loss_mean: Some(4.5),
            knn_top1: Some(0.2),
        };
        let s = capture(&facts, "abc");
        assert_eq!(s.format, FORMAT_VERSION);
        assert_eq!((s.epoch, s.step, s.optimizer_steps), (3, 39, 39));
        assert_eq!((s.queue_len, s.queue_dim, s.queue_ptr), (64, 16, 8));
        assert_eq!((s.config_hash.as_str(), s.seed), ("abc", 7));
        assert_eq!((s.loss_mean, s.knn_top1), (Some(4.5), Some(0.2)));
        assert_eq!((s.best_knn_top1, s.best_epoch), (Some(0.25), Some(2)));
        assert!(s.files.is_empty());
        assert_eq!(Position::of(&s), facts.at);
    }
}
