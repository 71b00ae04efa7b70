//! Optimizers over named candle variables and the learning-rate schedule, shared by
//! pre-training (`nmoco-train`) and evaluation (`nmoco-eval`, fine-tuning).
//!
//! - [`Optimizer`]: SGD (momentum, weight decay, Nesterov) and AdamW with PyTorch's update
//!   formulas, gradient clipping by global norm, and a name-keyed state for checkpoints.
//! - [`lr_at`]: linear warm-up, then cosine decay to zero.

#![forbid(unsafe_code)]

mod optim;
mod schedule;

pub use optim::{OptimKind, OptimParams, Optimizer};
pub use schedule::lr_at;

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
