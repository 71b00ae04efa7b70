//! Evaluation of pre-trained spiking encoders: linear probe on frozen time-mean features, kNN,
//! fine-tuning, and the baselines (random init, supervised from scratch).
//!
//! This crate reads checkpoints (safetensors plus the saved config); it does not depend on the
//! trainer's code.

#![forbid(unsafe_code)]

pub mod accuracy;
pub mod features;
pub mod finetune;
pub mod knn;
pub mod linear;
pub mod pretrained;
pub mod probe;
pub mod report;
pub mod run_dir;

use std::path::PathBuf;

pub use accuracy::{Metrics, evaluate, top_k};
pub use features::Features;
pub use finetune::{FinetuneConfig, FinetuneOutcome, FinetuneProgress, finetune};
pub use knn::{KnnConfig, knn_scores};
pub use linear::{LinearConfig, LinearModel, Selection, fit, fit_with_selection};
pub use pretrained::{EncoderCheckpoint, locate};
pub use probe::{ProbeConfig, ProbeOutcome, SplitFeatures, probe};
pub use report::{Report, SplitSizes};
pub use run_dir::RunPaths;

/// Errors of the evaluation crate.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: expected {expected}, found {found}")]
    Shape {
        what: &'static str,
        expected: String,
        found: String,
    },
    #[error("label {label} of sample {index} is outside 0..{classes}")]
    LabelOutOfRange {
        index: usize,
        label: usize,
        classes: usize,
    },
    #[error("invalid setting `{key}`: {message}")]
    Config { key: &'static str, message: String },
    #[error("{what} is not finite")]
    NonFinite { what: &'static str },
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// An encoder file differs from the size or SHA-256 recorded when it was written.
    #[error(
        "encoder file {file} is damaged: {what}; {}",
        match alternative {
            Some(a) => format!("the checkpoint weights {} are intact: pass --checkpoint {}", a.display(), a.parent().map(|p| p.display().to_string()).unwrap_or_default()),
            None => "no intact checkpoint of this run was found".to_string(),
        }
    )]
    Damaged {
        file: PathBuf,
        what: String,
        alternative: Option<PathBuf>,
    },
    #[error("checkpoint {path} does not fit: {reason}")]
    Incompatible { path: PathBuf, reason: String },
    #[error(transparent)]
    Data(#[from] nmoco_data::Error),
    #[error(transparent)]
    Model(#[from] nmoco_models::ModelError),
    #[error(transparent)]
    Optim(#[from] nmoco_optim::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
