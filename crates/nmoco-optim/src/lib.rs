//! Optimizers over named candle variables and the learning-rate schedule, shared by
//! pre-training (`nmoco-train`) and evaluation (`nmoco-eval`, fine-tuning).
//!
//! - [`Optimizer`]: SGD (momentum, weight decay, Nesterov) and AdamW with PyTorch's update
//!   formulas, gradient clipping by global norm, and a name-keyed state for checkpoints.
//! - [`OptimParams`]: the hyper-parameters and their one validation ([`OptimParams::check`]),
//!   used by the pre-training and the fine-tuning configs under their own keys ([`OptimKeys`]).
//! - [`WarmupCosine`]: linear warm-up, then cosine decay to a floor; [`lr_at`], its case from
//!   and to zero (pre-training).

#![forbid(unsafe_code)]

mod optim;
mod params;
mod schedule;

pub use optim::Optimizer;
pub use params::{InvalidSetting, OptimKeys, OptimKind, OptimParams};
pub use schedule::{WarmupCosine, lr_at};

/// Errors of the optimizers.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Saved optimizer state that does not match a variable.
    #[error("optimizer state for `{name}` does not fit: {reason}")]
    VarMismatch { name: String, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;
