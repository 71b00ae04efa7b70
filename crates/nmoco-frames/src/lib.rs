//! Event-to-frame integration and two-view augmentations, with no ML dependency.
//!
//! [`integrate`] turns an [`Events`] stream into `T × 2 × H × W` count frames ([`Frames`], a
//! plain `Vec<f32>` with its shape; channel 0 = OFF, channel 1 = ON). Slicing modes are in
//! [`Slicing`]: equal event count (SpikingJelly's `split_by='number'` index rule, exactly),
//! equal time (SpikingJelly's `split_by='time'` origin and step) and fixed time windows.
//! [`integrate_batch`] does many samples in parallel with rayon.
//!
//! Frame-level augmentations ([`augment`], [`two_views`]) and event-level ones
//! ([`augment_events`]) are driven by [`AugmentConfig`] and a seeded RNG, so every view is
//! reproducible from `(seed, view)`.
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

pub use augment::{AugmentConfig, augment, augment_events, two_views, two_views_events};
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
