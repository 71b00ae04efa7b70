//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while configuring or running pre-training.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error("tensor operation failed")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Optim(#[from] nmoco_optim::Error),
    /// The configuration was rejected before any work started.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Reading or writing a file failed.
    #[error("i/o error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint or metrics file is malformed or inconsistent.
    #[error("bad checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// A checkpoint file differs from the size or SHA-256 recorded when it was written.
    #[error(
        "checkpoint file {file} is damaged: {what}; {}",
        match earlier {
            Some(e) => format!("the earlier checkpoint {e} is intact: pass --resume-from {e} to continue from it"),
            None => "no earlier checkpoint is intact".to_string(),
        }
    )]
    Damaged {
        file: PathBuf,
        what: String,
        earlier: Option<String>,
    },
    /// `--resume` was asked for but the run has no complete checkpoint.
    #[error("no checkpoint to resume from in {dir}")]
    NoCheckpoint { dir: PathBuf },
    /// The resumed run's configuration differs from the one the checkpoint was made with.
    #[error(
        "config hash {found} of the checkpoint in {path} differs from the current config hash {expected}: resume with the same config (run.name and run.device may differ)"
    )]
    ConfigMismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },
    /// The phase timer was used out of order, or a CUDA event call failed.
    #[error("phase timer: {reason}")]
    PhaseTimer { reason: String },
    /// Two variable maps that must hold the same names and shapes do not.
    #[error("variable {name}: {reason}")]
    VarMismatch { name: String, reason: String },
    /// The loss became NaN or infinite; no update was applied for this step.
    #[error(
        "training diverged: loss {loss} at epoch {epoch}, step {step}; the last good checkpoint is {last_checkpoint:?}"
    )]
    Diverged {
        epoch: usize,
        step: usize,
        loss: f32,
        last_checkpoint: Option<PathBuf>,
    },
    /// An input tensor has the wrong shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        what: &'static str,
        expected: String,
        got: Vec<usize>,
    },
    /// The dataset layer failed.
    #[error("data error")]
    Data(#[from] nmoco_data::Error),
    /// Frozen-feature evaluation (the kNN monitor's features and classifier) failed.
    #[error(transparent)]
    Eval(#[from] nmoco_eval::Error),
    /// The model layer failed.
    #[error("model error")]
    Model(#[from] nmoco_models::ModelError),
    /// The CUDA convolution settings (environment overrides) were rejected.
    #[error(transparent)]
    Conv(#[from] nmoco_conv::ConvError),
    /// Writing the curves image failed.
    #[error("cannot draw the curves")]
    Plot(#[from] nmoco_viz::Error),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
