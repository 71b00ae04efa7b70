//! Typed errors of this crate. The public API returns `candle_core::Result`; these errors travel
//! inside it as `candle_core::Error::Wrapped` (see [`SnnError::into_candle`]).

/// What went wrong in a neuron op or layer helper.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SnnError {
    /// The input has too few dimensions for a multi-step op (it needs `[T, ...]`).
    #[error("{op}: input of rank {rank} has no time dimension (need rank >= {min_rank})")]
    Rank {
        op: &'static str,
        rank: usize,
        min_rank: usize,
    },
    /// The op does not support this dtype on this device.
    #[error("{op}: unsupported dtype {dtype:?} on {device}")]
    Dtype {
        op: &'static str,
        dtype: candle_core::DType,
        device: &'static str,
    },
    /// A configuration value is out of its valid range.
    #[error("invalid neuron config: {field} = {value} ({reason})")]
    Config {
        field: &'static str,
        value: f32,
        reason: &'static str,
    },
    /// The op does not implement this neuron kind.
    #[error("{op}: neuron kind {kind:?} is not supported here ({hint})")]
    Kind {
        op: &'static str,
        kind: crate::config::NeuronKind,
        hint: &'static str,
    },
    /// PLIF's `w` must hold exactly one element.
    #[error("{op}: w must hold one element, it has shape {shape:?}")]
    WShape { op: &'static str, shape: Vec<usize> },
    /// Two tensors that must match do not.
    #[error("{op}: shape mismatch, expected {expected:?}, found {found:?}")]
    Shape {
        op: &'static str,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A max-pool input is not `[N, C, H, W]` with non-empty spatial dims.
    #[error("{op}: expected [N, C, H, W] with H, W > 0, got {shape:?}")]
    PoolShape { op: &'static str, shape: Vec<usize> },
    /// `seq_unfold`: the leading dimension is not a multiple of `t`.
    #[error("seq_unfold: leading dimension {len} is not a multiple of t = {t}")]
    Unfold { len: usize, t: usize },
    /// The NVRTC library could not be loaded or a symbol is missing.
    #[error("nvrtc: cannot load {path}: {reason}")]
    NvrtcLoad { path: String, reason: String },
    /// NVRTC rejected a kernel source.
    #[error("nvrtc: compiling {module} failed with {code}: {log}")]
    NvrtcCompile {
        module: String,
        code: String,
        log: String,
    },
}

impl SnnError {
    /// Wrap into candle's error type (keeps the typed error as the source).
    pub fn into_candle(self) -> candle_core::Error {
        candle_core::Error::wrap(self)
    }
}

impl From<SnnError> for candle_core::Error {
    fn from(e: SnnError) -> Self {
        e.into_candle()
    }
}
