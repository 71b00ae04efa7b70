//! Typed errors of this crate.

use std::path::PathBuf;

/// Errors raised while building, checking, saving or loading models.
///
/// Layer constructors and `forward` return `candle_core::Result`; these errors reach callers
/// wrapped in `candle_core::Error::Wrapped` there, and directly from the checkpoint helpers.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration field violates a structural constraint.
    #[error("invalid config field `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An input tensor has the wrong rank, channel count or size.
    #[error("{layer}: bad input shape {shape:?}: {reason}")]
    BadInput {
        /// The layer that rejected the input.
        layer: &'static str,
        /// The input's dims.
        shape: Vec<usize>,
        /// What was expected.
        reason: String,
    },
    /// A checkpoint lacks a variable the model needs.
    #[error("checkpoint {path:?} has no tensor `{name}`")]
    MissingTensor {
        /// The checkpoint file.
        path: PathBuf,
        /// The missing variable name.
        name: String,
    },
    /// A checkpoint tensor has a different shape than the model variable.
    #[error("checkpoint {path:?}: tensor `{name}` has shape {found:?}, model expects {expected:?}")]
    ShapeMismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// The variable name.
        name: String,
        /// Shape in the model.
        expected: Vec<usize>,
        /// Shape in the checkpoint.
        found: Vec<usize>,
    },
    /// A checkpoint holds tensors the model does not have (strict loading only).
    #[error("checkpoint {path:?} has {count} unexpected tensors, e.g. `{example}`")]
    UnexpectedTensors {
        /// The checkpoint file.
        path: PathBuf,
        /// How many names the model does not know.
        count: usize,
        /// The first such name, sorted.
        example: String,
    },
    /// A candle operation failed while reading or writing a checkpoint.
    #[error("checkpoint {path:?}: {source}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// The underlying candle error.
        #[source]
        source: candle_core::Error,
    },
}

impl ModelError {
    /// Wraps this error into a candle error, for functions that return `candle_core::Result`.
    pub fn into_candle(self) -> candle_core::Error {
        candle_core::Error::wrap(self)
    }
}
