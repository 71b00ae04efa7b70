//! The crate's error type: every variant names the path or value it is about.

use std::path::PathBuf;

/// Errors from indexing, decoding, caching and batching.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("dataset root {} does not exist or is not a folder (expected {expected})", path.display())]
    MissingRoot { path: PathBuf, expected: String },
    #[error("wrong dataset layout at {}: expected {expected}", path.display())]
    Layout { path: PathBuf, expected: String },
    #[error("cannot access {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode event file {}", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: nmoco_events::Error,
    },
    #[error("cannot integrate frames for {}", path.display())]
    Frames {
        path: PathBuf,
        #[source]
        source: nmoco_frames::Error,
    },
    #[error("bad labels file {} line {line}: {reason}", path.display())]
    Labels {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("bad trials list {} line {line}: {reason}", path.display())]
    Trials {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("invalid data config field {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("sample index {index} out of range for a split of {len} samples")]
    IndexOutOfRange { index: usize, len: usize },
    #[error("corrupt frame cache entry {}: {reason}", path.display())]
    CorruptCache { path: PathBuf, reason: String },
    #[error("cannot read or write cache manifest {}", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("frame shape mismatch for sample {index}: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        index: usize,
        expected: (usize, usize, usize, usize),
        got: (usize, usize, usize, usize),
    },
    #[error("building a batch tensor failed")]
    Tensor(#[from] candle_core::Error),
    #[error("the background loader thread stopped unexpectedly")]
    LoaderStopped,
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
