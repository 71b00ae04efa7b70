//! Event-to-frame integration and two-view augmentations, with no ML dependency.
//!
//! [`integrate`] turns an [`Events`] stream into `T × 2 × H × W` count frames ([`Frames`], a
//! plain `Vec<f32>` with its shape; channel 0 = OFF, channel 1 = ON). Slicing modes are in
//! [`Slicing`]: equal event count (SpikingJelly's `split_by='number'` index rule, exactly),
//! equal time (SpikingJelly's `split_by='time'` origin and step) and fixed time windows.
//! [`integrate_batch`] does many samples in parallel with rayon; [`integrate_into`] and
//! [`integrate_batch_into`] write into caller-owned buffers (e.g. a whole `[B, T, 2, H, W]`
//! batch), which avoids a fresh allocation per sample (its page faults cost more than the
//! counting itself on small samples). Spatial mapping ([`Resize`]): crop/pad at the top-left,
//! coordinate rescaling, or count-preserving area pooling.
//!
//! Frame-level augmentations ([`augment`], [`two_views`]) and event-level ones
//! ([`augment_events`]) are driven by [`AugmentConfig`] and a seeded RNG, so every view is
//! reproducible from `(seed, view)`.
//!
//! # Agreement with SpikingJelly (read from `spikingjelly/datasets/__init__.py`, fangwei123456/spikingjelly at 01823bed)
//!
//! * **Count split** (`cal_fixed_frames_number_segment_index`, `split_by='number'`): identical
//!   index rule, in file order, including `N < T` (every frame but the last empty).
//! * **Time split** (`split_by='time'`): SpikingJelly takes `dt = (t[-1] − t[0]) // T` and, for
//!   each frame, the index range from the first to the last event with
//!   `t0 + i·dt <= t < t0 + (i+1)·dt`, then forces the last frame's end to `N`. On time-sorted
//!   input that is exactly [`Slicing::EqualTime`]. Differences: SpikingJelly raises
//!   `IndexError` when a frame has no event (we give an empty frame), and on unsorted input its
//!   index ranges pull in events from other times (we assign every event by its own
//!   timestamp).
//! * **Fixed windows**: SpikingJelly's `integrate_events_by_fixed_duration` counts windows
//!   from absolute time 0 (`frame = t // duration`) and makes a variable number of frames
//!   (`ceil(t[-1] / duration)`); [`Slicing::TimeWindow`] starts at the first event and always
//!   makes `T` frames, dropping later events, as the issue specifies.
//! * **Channels**: SpikingJelly's `integrate_events_segment_to_frame` puts `p == 0` in channel 0
//!   and everything else in channel 1; so do we (`on == false` → 0).
//! * **Resizing**: SpikingJelly's datasets do not resize; they integrate at the dataset's
//!   native `H × W` (e.g. 180 × 240 for N-Caltech101, raw coordinates unshifted). Pipelines
//!   built on it resize the float frames afterwards, e.g. torchvision `transforms.Resize((48,
//!   48))` (bilinear; antialiased on tensors in recent torchvision) for DVS128 Gesture, or
//!   `F.interpolate(..., mode='bilinear' | 'nearest')`; Spikformer's CIFAR10-DVS code uses the
//!   native 128 × 128 with no resize. None of these preserves counts. [`Resize::Pool`] is
//!   count-preserving area resampling (for integer factors `k`, exactly `k²·F.interpolate(
//!   mode='area')`, i.e. sum pooling); [`Resize::Events`] maps coordinates
//!   (`x' = floor(x·W'/W)`), which equals `Pool` for integer factors and is the fast choice.
//!   Neither reproduces bilinear interpolation; a pipeline that needs it must resize the
//!   frames itself.
//!
//! ```
//! use nmoco_events::{Events, SensorSize};
//! use nmoco_frames::{FrameConfig, integrate};
//!
//! let ev = Events { t: vec![0, 1, 2, 3], x: vec![0, 1, 0, 1], y: vec![0, 0, 1, 1], on: vec![true, false, true, true] };
//! let cfg = FrameConfig { t: 2, height: 2, width: 2, ..FrameConfig::default() };
//! let f = integrate(&ev, SensorSize { width: 2, height: 2 }, &cfg).unwrap();
//! assert_eq!((f.t, f.h, f.w), (2, 2, 2));
//! assert_eq!(f.get(0, 1, 0, 0), 1.0); // frame 0, ON, y=0, x=0
//! assert_eq!(f.get(0, 0, 0, 1), 1.0); // frame 0, OFF, y=0, x=1
//! assert_eq!(f.data.iter().sum::<f32>(), 4.0);
//! ```

mod augment;
mod config;
mod integrate;
mod resize;

pub use augment::{
    AugmentConfig, TrivialOp, augment, augment_events, trivial_augment, two_views, two_views_events,
};
pub use config::{FrameConfig, Normalize, Resize, Slicing};
pub use integrate::{
    equal_time_bounds, event_count_bounds, integrate, integrate_batch, integrate_batch_into,
    integrate_into, time_window_bounds,
};

pub use nmoco_events::{Events, SensorSize};

/// Errors from frame integration and config validation.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("event {index} at x={x}, y={y} is outside the {width}x{height} sensor")]
    OutOfBounds {
        index: usize,
        x: u16,
        y: u16,
        width: u16,
        height: u16,
    },
    #[error("event columns differ in length: t={t}, x={x}, y={y}, on={on}")]
    ColumnMismatch {
        t: usize,
        x: usize,
        y: usize,
        on: usize,
    },
    #[error("invalid config value {field}={value}: {reason}")]
    InvalidConfig {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("output buffer holds {found} values, expected {expected}")]
    BufferSize { expected: usize, found: usize },
    #[error("sensor size {width}x{height} has a zero dimension")]
    EmptySensor { width: u16, height: u16 },
}

/// `T × 2 × H × W` frames in one row-major buffer; index `((ti·2 + c)·h + y)·w + x`.
/// Channel 0 = OFF (`on == false`, SpikingJelly's `p = 0`), channel 1 = ON.
#[derive(Debug, Clone, PartialEq)]
pub struct Frames {
    pub data: Vec<f32>,
    pub t: usize,
    pub h: usize,
    pub w: usize,
}

impl Frames {
    /// Number of channels, always 2.
    pub const C: usize = 2;

    /// All-zero frames. Panics only if `t·2·h·w` overflows `usize`.
    pub fn zeros(t: usize, h: usize, w: usize) -> Self {
        Self {
            data: vec![0.0; t * 2 * h * w],
            t,
            h,
            w,
        }
    }

    /// The shape as `[T, 2, H, W]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.t, 2, self.h, self.w]
    }

    /// Flat index of `(ti, c, y, x)`.
    #[inline]
    pub fn index(&self, ti: usize, c: usize, y: usize, x: usize) -> usize {
        ((ti * 2 + c) * self.h + y) * self.w + x
    }

    /// Value at `(ti, c, y, x)`; panics if out of range (it is an indexing helper).
    #[inline]
    pub fn get(&self, ti: usize, c: usize, y: usize, x: usize) -> f32 {
        self.data[self.index(ti, c, y, x)]
    }

    /// The `2 × H × W` slice of frame `ti`.
    pub fn frame(&self, ti: usize) -> &[f32] {
        let n = 2 * self.h * self.w;
        &self.data[ti * n..(ti + 1) * n]
    }

    /// Sum of all values.
    pub fn sum(&self) -> f64 {
        self.data.iter().map(|&v| v as f64).sum()
    }

    /// Whether `data.len() == t·2·h·w`.
    pub fn is_consistent(&self) -> bool {
        self.t
            .checked_mul(2 * self.h)
            .and_then(|v| v.checked_mul(self.w))
            == Some(self.data.len())
    }
}
