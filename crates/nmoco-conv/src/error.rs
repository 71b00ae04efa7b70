//! Typed errors of the convolution and batch-norm ops.

/// What went wrong in an `nmoco-conv` op. Carried inside [`candle_core::Error`]
/// (via `Error::wrap`) so that the public functions keep candle's result type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvError {
    /// A tensor had the wrong number of dimensions.
    #[error("{op}: expected {expected} dims for {what}, got shape {shape:?}")]
    Rank {
        op: &'static str,
        what: &'static str,
        expected: &'static str,
        shape: Vec<usize>,
    },
    /// Channel counts of input, kernel and groups do not fit together.
    #[error("{op}: input has {c_in} channels, kernel {kernel:?} and groups {groups} do not match")]
    Channels {
        op: &'static str,
        c_in: usize,
        kernel: Vec<usize>,
        groups: usize,
    },
    /// Stride or groups was zero.
    #[error("{op}: {what} must be at least 1, got {value}")]
    Zero {
        op: &'static str,
        what: &'static str,
        value: usize,
    },
    /// The padded input is smaller than the kernel.
    #[error("{op}: padded input {h}x{w} (padding {padding}) is smaller than kernel {kh}x{kw}")]
    KernelTooLarge {
        op: &'static str,
        h: usize,
        w: usize,
        padding: usize,
        kh: usize,
        kw: usize,
    },
    /// A per-channel parameter does not have shape [C].
    #[error("{op}: {what} must have shape [{channels}], got {shape:?}")]
    ChannelParam {
        op: &'static str,
        what: &'static str,
        channels: usize,
        shape: Vec<usize>,
    },
    /// A tensor had an unexpected dtype or storage in a CPU kernel.
    #[error("{op}: expected contiguous f32 cpu storage for {what}")]
    Storage {
        op: &'static str,
        what: &'static str,
    },
    /// A gradient did not have the shape of the forward output.
    #[error("{op}: gradient shape {got:?} differs from output shape {expected:?}")]
    GradShape {
        op: &'static str,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A setting (environment variable) had a value that is not understood.
    #[error("cuda conv setting {key}: cannot use value {value:?}")]
    Setting { key: &'static str, value: String },
    /// A tensor dimension or element count exceeds cuDNN's `int` range.
    #[error("{op}: size {value} exceeds cuDNN's 32-bit range")]
    TooLarge { op: &'static str, value: usize },
    /// Input and kernel (or output gradient) dtypes differ, or cuDNN does not take the dtype.
    #[error("{op}: unsupported dtypes {dtypes:?}")]
    DType {
        op: &'static str,
        dtypes: Vec<candle_core::DType>,
    },
    /// A cuDNN call failed (`status` is cuDNN's status name), or no algorithm fits.
    #[error("{op}: cuDNN {call} failed: {status}")]
    Cudnn {
        op: &'static str,
        call: &'static str,
        status: String,
    },
}

impl From<ConvError> for candle_core::Error {
    fn from(e: ConvError) -> Self {
        candle_core::Error::wrap(e)
    }
}
