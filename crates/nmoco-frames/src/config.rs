//! Frame integration settings (serde-friendly, every field has a default).

use serde::{Deserialize, Serialize};

use crate::Error;

/// How the event stream is cut into `t` frames.
///
/// Serialised with an internal tag: `{ mode = "event_count" }`, `{ mode = "equal_time" }`,
/// `{ mode = "time_window", window_us = 10000 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Slicing {
    /// SpikingJelly's `split_by='number'`: with `N` events **in file order** and
    /// `di = N / T` (integer division), frame `i` takes the events with index in
    /// `[i·di, (i+1)·di)`, except the last frame, which takes `[(T−1)·di, N)` and so also gets
    /// the `N mod T` remainder. Events are never re-sorted by time. With `N < T` every frame but
    /// the last is empty.
    #[default]
    EventCount,
    /// Equal time per frame, SpikingJelly's `split_by='time'` origin and step: `t0 = t[0]` and
    /// `t_end = t[N−1]` (first and last event in file order), `dt = (t_end − t0) / T` (integer
    /// division, µs). Frame `i < T−1` takes the events with `t0 + i·dt <= t < t0 + (i+1)·dt`,
    /// the last frame takes every event with `t >= t0 + (T−1)·dt` (so up to and including
    /// `t_end`, plus the `(t_end − t0) mod T` µs that the floor division leaves over). Events
    /// with `t < t0` (possible only in unsorted input) are dropped. If `dt == 0` all events
    /// with `t >= t0` go to the last frame.
    EqualTime,
    /// Fixed windows of `window_us` µs starting at the first event in file order (`t0 = t[0]`):
    /// frame `i` takes `t0 + i·window_us <= t < t0 + (i+1)·window_us` for `i < T`; events
    /// after the last window (and, in unsorted input, before `t0`) are dropped.
    TimeWindow { window_us: i64 },
}

/// How sensor coordinates are mapped onto the `height × width` canvas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    /// Coordinates are kept as they are: a sensor larger than the canvas is cropped (events with
    /// `x >= width` or `y >= height` are dropped), a smaller one is zero-padded on the right and
    /// bottom. The canvas is anchored at the sensor's top-left corner (0, 0).
    #[default]
    None,
    /// Rescale event coordinates before integrating: `x' = floor(x·width / sensor.width)`,
    /// `y' = floor(y·height / sensor.height)` (nearest-lower mapping, counts are preserved).
    Events,
    /// Integrate at full sensor resolution, then resample each frame to `height × width` by
    /// exact area weighting: every source pixel spreads its value over the destination pixels
    /// in proportion to the overlap of its footprint. The result is a *sum* (total count is
    /// preserved); for integer factors it is plain sum pooling, i.e. `k²` times torch's
    /// `F.interpolate(mode='area')` / `adaptive_avg_pool2d`.
    Pool,
}

/// Normalisation applied last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    #[default]
    None,
    /// Divide the whole sample by its maximum value (if the maximum is > 0).
    Max,
    /// Divide each frame (both channels) by the number of events integrated into it
    /// (counted before resize, clip, binarize and log-scale); empty frames stay zero.
    FrameCount,
}

/// Everything [`crate::integrate`] needs besides the events.
///
/// Processing order: slice → integrate counts (with [`Resize::Events`] mapping) →
/// [`Resize::Pool`] resampling → `clip` → `binarize` → `log_scale` → `normalize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrameConfig {
    /// Number of frames `T` (> 0). Default 16.
    pub t: usize,
    pub slicing: Slicing,
    /// Canvas height (> 0). Default 128.
    pub height: usize,
    /// Canvas width (> 0). Default 128.
    pub width: usize,
    pub resize: Resize,
    /// Replace every non-zero value by 1.
    pub binarize: bool,
    /// Clamp values to at most this (must be > 0 and finite).
    pub clip: Option<f32>,
    /// Apply `ln(1 + v)`.
    pub log_scale: bool,
    pub normalize: Normalize,
    /// Silently drop events outside the sensor instead of failing with
    /// [`Error::OutOfBounds`]. Default `false`.
    pub drop_out_of_bounds: bool,
}

impl Default for FrameConfig {
    fn default() -> Self {
        Self {
            t: 16,
            slicing: Slicing::EventCount,
            height: 128,
            width: 128,
            resize: Resize::None,
            binarize: false,
            clip: None,
            log_scale: false,
            normalize: Normalize::None,
            drop_out_of_bounds: false,
        }
    }
}

impl FrameConfig {
    /// Checks the ranges of every field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &'static str, value: String, reason: &'static str| {
            Err(Error::InvalidConfig {
                field,
                value,
                reason,
            })
        };
        if self.t == 0 {
            return bad("t", self.t.to_string(), "must be at least 1");
        }
        if self.height == 0 {
            return bad("height", self.height.to_string(), "must be at least 1");
        }
        if self.width == 0 {
            return bad("width", self.width.to_string(), "must be at least 1");
        }
        if self
            .t
            .checked_mul(2)
            .and_then(|v| v.checked_mul(self.height))
            .and_then(|v| v.checked_mul(self.width))
            .is_none()
        {
            return bad("t", self.t.to_string(), "t·2·height·width overflows usize");
        }
        if let Slicing::TimeWindow { window_us } = self.slicing
            && window_us <= 0
        {
            return bad("window_us", window_us.to_string(), "must be positive");
        }
        if let Some(c) = self.clip
            && !(c.is_finite() && c > 0.0)
        {
            return bad("clip", c.to_string(), "must be finite and positive");
        }
        Ok(())
    }
}
