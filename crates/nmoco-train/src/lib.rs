//! NeuroMoCo pre-training: a master encoder (spiking backbone + projection head, applied per
//! time step) trained by backpropagation, a subordinate encoder updated as its momentum copy,
//! a FIFO queue of normalised time-mean keys, and the InfoNCE / MixInfoNCE losses.
//!
//! The MixInfoNCE formula ([`loss`]) is **our reconstruction**: the paper (Ma et al. 2024,
//! arXiv 2406.06305) names the loss but publishes no formula or code.
//!
//! Layers, from the bottom:
//! - [`loss`]: [`moco_loss`] on plain tensors (tested against a scalar computation);
//! - [`queue`], [`momentum`]; the optimizer ([`Optimizer`]: SGD/AdamW over candle `Var`s) and
//!   the schedule ([`lr_at`]) come from `nmoco_optim`;
//! - [`step`]: [`train_step`], one step on one batch, independent of the loop;
//!   [`profile`]: per-phase timing of a step ([`PhaseTimer`]: CUDA events or the host clock);
//! - [`trainer`]: [`pretrain`], the loop over epochs with the kNN monitor, `metrics.jsonl`
//!   ([`metrics`]), `curves.png`, atomic checkpoints ([`checkpoint`]) and exact resume;
//! - [`config`]: [`PretrainConfig`], `--set` overrides and validation.
//!
//! The library prints nothing: progress goes to an [`Observer`], logs to `tracing`.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use nmoco_train::loss::{LossKind, LossParams, moco_loss};
//! # fn main() -> Result<(), nmoco_train::Error> {
//! let dev = Device::Cpu;
//! let q = Tensor::randn(0f32, 1.0, (4, 2, 8), &dev)?; // [T, B, C]
//! let k = Tensor::randn(0f32, 1.0, (4, 2, 8), &dev)?;
//! let queue = nmoco_train::Queue::random(16, 8, 0).tensor(&dev)?;
//! let p = LossParams { kind: LossKind::Mix, lambda: 0.5, tau: 0.2 };
//! let out = moco_loss(&q, &k, &queue, &p)?;
//! assert!(out.loss.to_scalar::<f32>()? > 0.0);
//! assert_eq!(out.key_mean.dims(), &[2, 8]);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod config;
pub mod encoder;
mod error;
pub mod loss;
pub mod metrics;
pub mod momentum;
pub mod profile;
pub mod queue;
pub mod step;
pub mod trainer;

pub use config::{ConfigError, Precision, PretrainConfig};
pub use encoder::{Encoder, EncoderPair, MocoEncoder};
pub use error::{Error, Result};
pub use loss::{LossKind, LossParams, moco_loss};
/// The run directory layout (owned by `nmoco_eval::run_dir`, which the evaluation commands read).
pub use nmoco_eval::run_dir::{FINAL_FILES, RunPaths};
pub use nmoco_optim::{OptimKind, OptimParams, Optimizer, lr_at};
pub use profile::{Phase, PhaseTimer, PhaseTimes};
pub use queue::Queue;
pub use step::{
    ShuffleBn, StepConfig, StepOutput, StepResult, StepSync, shuffled_keys, train_step,
    train_step_marked, train_step_with,
};
pub use trainer::{
    EpochStats, Observer, Resume, Silent, StartInfo, StepReport, Summary, pretrain, pretrain_from,
};
