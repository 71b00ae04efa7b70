//! Slicing and counting: events → `T × 2 × H × W` frames.

use std::ops::Range;

use nmoco_events::{Events, SensorSize};
use rayon::prelude::*;

use crate::config::{FrameConfig, Normalize, Resize, Slicing};
use crate::resize::AreaResampler;
use crate::{Error, Frames};

/// SpikingJelly's `split_by='number'` index ranges for `n` events and `t` frames:
/// `di = n / t`; frame `i` is `[i·di, (i+1)·di)`, the last frame is `[(t−1)·di, n)`.
/// Returns an empty vector when `t == 0`.
pub fn event_count_bounds(n: usize, t: usize) -> Vec<Range<usize>> {
    if t == 0 {
        return Vec::new();
    }
    let di = n / t;
    (0..t)
        .map(|i| {
            let lo = i * di;
            let hi = if i + 1 == t { n } else { lo + di };
            lo..hi
        })
        .collect()
}

/// Index ranges of [`Slicing::EqualTime`] for **non-decreasing** timestamps `ts` (for unsorted
/// input [`integrate`] assigns each event by its own timestamp instead; see [`Slicing`]).
/// Returns `None` if `ts` is not sorted or `t == 0`.
pub fn equal_time_bounds(ts: &[i64], t: usize) -> Option<Vec<Range<usize>>> {
    if t == 0 || !is_sorted(ts) {
        return None;
    }
    let n = ts.len();
    if n == 0 {
        return Some(vec![0..0; t]);
    }
    let (t0, dt) = equal_time_origin_step(ts, t);
    let start = |i: usize| -> usize {
        let edge = t0 + dt * i as i128;
        ts.partition_point(|&v| (v as i128) < edge)
    };
    let mut out = Vec::with_capacity(t);
    for i in 0..t {
        let lo = start(i);
        let hi = if i + 1 == t { n } else { start(i + 1) };
        out.push(lo..hi);
    }
    Some(out)
}

/// Index ranges of [`Slicing::TimeWindow`] for **non-decreasing** timestamps `ts`. Events past
/// the last window are in no range. Returns `None` if `ts` is not sorted, `t == 0` or
/// `window_us <= 0`.
pub fn time_window_bounds(ts: &[i64], t: usize, window_us: i64) -> Option<Vec<Range<usize>>> {
    if t == 0 || window_us <= 0 || !is_sorted(ts) {
        return None;
    }
    if ts.is_empty() {
        return Some(vec![0..0; t]);
    }
    let t0 = ts[0] as i128;
    let start = |i: usize| -> usize {
        let edge = t0 + window_us as i128 * i as i128;
        ts.partition_point(|&v| (v as i128) < edge)
    };
    Some((0..t).map(|i| start(i)..start(i + 1)).collect())
}

fn is_sorted(ts: &[i64]) -> bool {
    ts.windows(2).all(|w| w[0] <= w[1])
}

/// `(t0, dt)` of the equal-time split, in i128 so no timestamp range can overflow.
/// `dt = floor((t[N−1] − t[0]) / T)` clamped at 0.
fn equal_time_origin_step(ts: &[i64], t: usize) -> (i128, i128) {
    let t0 = ts[0] as i128;
    let tend = ts[ts.len() - 1] as i128;
    let dt = (tend - t0).div_euclid(t as i128).max(0);
    (t0, dt)
}

/// Which frame each event goes to.
enum Plan {
    /// `(frame, index range)`; ranges are disjoint.
    Segments(Vec<(usize, Range<usize>)>),
    /// One frame per event, `u32::MAX` = dropped (unsorted time-based slicing).
    PerEvent(Vec<u32>),
}

const DROP: u32 = u32::MAX;

fn plan(ev: &Events, cfg: &FrameConfig) -> Plan {
    let n = ev.t.len();
    let t = cfg.t;
    let segs = |b: Vec<Range<usize>>| Plan::Segments(b.into_iter().enumerate().collect());
    match cfg.slicing {
        Slicing::EventCount => segs(event_count_bounds(n, t)),
        Slicing::EqualTime => match equal_time_bounds(&ev.t, t) {
            Some(b) => segs(b),
            None => {
                let (t0, dt) = equal_time_origin_step(&ev.t, t);
                let last = (t - 1) as i128;
                Plan::PerEvent(
                    ev.t.iter()
                        .map(|&v| {
                            let d = v as i128 - t0;
                            if d < 0 {
                                DROP
                            } else if dt == 0 {
                                last as u32
                            } else {
                                (d / dt).min(last) as u32
                            }
                        })
                        .collect(),
                )
            }
        },
        Slicing::TimeWindow { window_us } => match time_window_bounds(&ev.t, t, window_us) {
            Some(b) => segs(b),
            None => {
                let t0 = ev.t[0] as i128;
                let w = window_us as i128;
                Plan::PerEvent(
                    ev.t.iter()
                        .map(|&v| {
                            let d = v as i128 - t0;
                            if d < 0 || d / w >= t as i128 {
                                DROP
                            } else {
                                (d / w) as u32
                            }
                        })
                        .collect(),
                )
            }
        },
    }
}

/// Maps a sensor coordinate pair to a pixel offset within one `H × W` plane.
///
/// # Safety
/// Every `Some(p)` returned must satisfy `p < H·W` of the plane the map was built for;
/// [`accumulate`] indexes without bounds checks on that promise.
unsafe trait PixelMap: Sync {
    fn pixel(&self, x: u16, y: u16) -> Option<usize>;
}

/// Coordinates used as they are. Only built by `integrate_core` after `check_bounds` showed
/// every `x < sensor.width <= w` and `y < sensor.height <= h`, so `y·w + x < h·w`.
struct Identity {
    w: usize,
}

// SAFETY: see the struct docs: the only construction site has checked every coordinate.
unsafe impl PixelMap for Identity {
    #[inline(always)]
    fn pixel(&self, x: u16, y: u16) -> Option<usize> {
        Some(y as usize * self.w + x as usize)
    }
}

/// Lookup tables; `DROP` marks coordinates that fall off the canvas or the sensor.
struct Lut {
    /// Column per x, or `NO_PIXEL`.
    xmap: Vec<usize>,
    /// Row offset (`row · w`) per y, or `NO_PIXEL`.
    ymap: Vec<usize>,
}

const NO_PIXEL: usize = usize::MAX;

// SAFETY: `integrate_core` fills `xmap` with columns `< w` or `NO_PIXEL`, and `ymap` with
// `row·w` for rows `< h` or `NO_PIXEL`; those return `None`, so `Some(ym + xm) <= (h−1)·w + w−1`.
unsafe impl PixelMap for Lut {
    #[inline(always)]
    fn pixel(&self, x: u16, y: u16) -> Option<usize> {
        let xm = *self.xmap.get(x as usize)?;
        let ym = *self.ymap.get(y as usize)?;
        if xm == NO_PIXEL || ym == NO_PIXEL {
            None
        } else {
            Some(ym + xm)
        }
    }
}

/// Adds one count per event of `x/y/on` to `frame` (a `2 × hw` slice).
///
/// Panics (before the loop, never inside it) if `frame.len() != 2·hw`.
#[inline(always)]
fn accumulate<M: PixelMap>(frame: &mut [f32], hw: usize, x: &[u16], y: &[u16], on: &[bool], m: &M) {
    assert_eq!(frame.len(), 2 * hw, "frame slice length");
    for ((&xi, &yi), &oi) in x.iter().zip(y).zip(on) {
        if let Some(p) = m.pixel(xi, yi) {
            let i = oi as usize * hw + p;
            debug_assert!(i < frame.len());
            // SAFETY: `PixelMap` is an `unsafe trait` whose implementors promise
            // `pixel(..) < hw` for the plane size they were built for (see `Identity` and `Lut`),
            // `oi as usize` is 0 or 1, and `frame.len() == 2·hw` was asserted above, so
            // `i <= hw + (hw − 1) < frame.len()`. Removing the bounds check is worth ~10 % on the
            // 20 M-event benchmark (docs/benchmarks.md).
            unsafe { *frame.get_unchecked_mut(i) += 1.0 };
        }
    }
}

fn run_plan<M: PixelMap>(plan: &Plan, ev: &Events, data: &mut [f32], hw: usize, m: &M) {
    let fsz = 2 * hw;
    match plan {
        Plan::Segments(segs) => {
            for (fi, r) in segs {
                let frame = &mut data[fi * fsz..(fi + 1) * fsz];
                accumulate(
                    frame,
                    hw,
                    &ev.x[r.clone()],
                    &ev.y[r.clone()],
                    &ev.on[r.clone()],
                    m,
                );
            }
        }
        Plan::PerEvent(ids) => {
            for (i, &fi) in ids.iter().enumerate() {
                if fi == DROP {
                    continue;
                }
                if let Some(p) = m.pixel(ev.x[i], ev.y[i])
                    && let Some(v) = data.get_mut(fi as usize * fsz + ev.on[i] as usize * hw + p)
                {
                    *v += 1.0;
                }
            }
        }
    }
}

/// Checks coordinates against the sensor. Returns `Ok(true)` if every event is inside, `Ok(false)`
/// if some are outside and `drop` allows it.
fn check_bounds(ev: &Events, sensor: SensorSize, drop: bool) -> Result<bool, Error> {
    let max_x = ev.x.iter().copied().max().unwrap_or(0);
    let max_y = ev.y.iter().copied().max().unwrap_or(0);
    if ev.x.is_empty() || (max_x < sensor.width && max_y < sensor.height) {
        return Ok(true);
    }
    if drop {
        return Ok(false);
    }
    let index =
        ev.x.iter()
            .zip(&ev.y)
            .position(|(&x, &y)| x >= sensor.width || y >= sensor.height)
            .unwrap_or(0);
    Err(Error::OutOfBounds {
        index,
        x: ev.x[index],
        y: ev.y[index],
        width: sensor.width,
        height: sensor.height,
    })
}

/// Integrates one sample into `cfg.t × 2 × cfg.height × cfg.width` frames (single thread).
///
/// Errors: [`Error::InvalidConfig`] for a bad `cfg`, [`Error::ColumnMismatch`] if the event
/// columns differ in length, [`Error::EmptySensor`], and [`Error::OutOfBounds`] (first event
/// with `x >= sensor.width` or `y >= sensor.height`, checked over *all* events) unless
/// `cfg.drop_out_of_bounds`.
pub fn integrate(ev: &Events, sensor: SensorSize, cfg: &FrameConfig) -> Result<Frames, Error> {
    cfg.validate()?;
    let mut frames = Frames::zeros(cfg.t, cfg.height, cfg.width);
    integrate_core(ev, sensor, cfg, &mut frames.data, true)?;
    Ok(frames)
}

/// [`integrate`] into a caller-owned buffer of exactly `cfg.t · 2 · cfg.height · cfg.width`
/// values (overwritten). Reusing one buffer avoids a fresh allocation per sample, whose page
/// faults dominate on small samples (docs/benchmarks.md).
pub fn integrate_into(
    ev: &Events,
    sensor: SensorSize,
    cfg: &FrameConfig,
    out: &mut [f32],
) -> Result<(), Error> {
    cfg.validate()?;
    check_out_len(cfg, out.len(), 1)?;
    integrate_core(ev, sensor, cfg, out, false)
}

fn check_out_len(cfg: &FrameConfig, len: usize, samples: usize) -> Result<(), Error> {
    let want = cfg.t * 2 * cfg.height * cfg.width;
    if want.checked_mul(samples) != Some(len) {
        return Err(Error::BufferSize {
            expected: want.saturating_mul(samples),
            found: len,
        });
    }
    Ok(())
}

/// The integration proper; `cfg` is valid and `out.len() == t·2·height·width`. `zeroed` says
/// whether `out` is already all zero.
fn integrate_core(
    ev: &Events,
    sensor: SensorSize,
    cfg: &FrameConfig,
    out: &mut [f32],
    zeroed: bool,
) -> Result<(), Error> {
    if !ev.columns_consistent() {
        return Err(Error::ColumnMismatch {
            t: ev.t.len(),
            x: ev.x.len(),
            y: ev.y.len(),
            on: ev.on.len(),
        });
    }
    if sensor.width == 0 || sensor.height == 0 {
        return Err(Error::EmptySensor {
            width: sensor.width,
            height: sensor.height,
        });
    }
    let all_inside = check_bounds(ev, sensor, cfg.drop_out_of_bounds)?;

    // Integration canvas: full sensor for Pool, the target canvas otherwise.
    let (ih, iw) = match cfg.resize {
        Resize::Pool => (sensor.height as usize, sensor.width as usize),
        Resize::None | Resize::Events => (cfg.height, cfg.width),
    };
    let pooled = cfg.resize == Resize::Pool && (ih, iw) != (cfg.height, cfg.width);
    if !zeroed {
        out.fill(0.0);
    }
    let p = plan(ev, cfg);
    let canvas = Canvas { ih, iw, pooled };

    let fits = sensor.width as usize <= iw && sensor.height as usize <= ih;
    let counts = if all_inside && fits && cfg.resize != Resize::Events {
        count_events(&p, ev, cfg, &canvas, out, &Identity { w: iw })
    } else {
        // Tables cover every coordinate present, marking off-sensor / off-canvas ones.
        let lut_w =
            (ev.x.iter().copied().max().unwrap_or(0) as usize + 1).max(sensor.width as usize);
        let lut_h =
            (ev.y.iter().copied().max().unwrap_or(0) as usize + 1).max(sensor.height as usize);
        let sw = sensor.width as usize;
        let sh = sensor.height as usize;
        let map = |v: usize, s: usize, canvas: usize| -> usize {
            if v >= s {
                return NO_PIXEL;
            }
            let m = match cfg.resize {
                Resize::Events => v * canvas / s,
                Resize::None | Resize::Pool => v,
            };
            if m < canvas { m } else { NO_PIXEL }
        };
        let xmap = (0..lut_w).map(|x| map(x, sw, iw)).collect();
        let ymap = (0..lut_h)
            .map(|y| match map(y, sh, ih) {
                NO_PIXEL => NO_PIXEL,
                r => r * iw,
            })
            .collect();
        count_events(&p, ev, cfg, &canvas, out, &Lut { xmap, ymap })
    };
    post_process(out, 2 * cfg.height * cfg.width, cfg, &counts);
    Ok(())
}

/// The integration canvas (`ih × iw`: the sensor for pooling, else the output canvas).
struct Canvas {
    ih: usize,
    iw: usize,
    pooled: bool,
}

/// Counts the events into `out` (zeroed), resampling when pooled; returns the per-frame event
/// counts when `cfg.normalize` needs them (else an empty vector).
fn count_events<M: PixelMap>(
    p: &Plan,
    ev: &Events,
    cfg: &FrameConfig,
    c: &Canvas,
    out: &mut [f32],
    m: &M,
) -> Vec<f32> {
    let hw = c.ih * c.iw;
    let want_counts = cfg.normalize == Normalize::FrameCount;
    let sum_frames =
        |data: &[f32]| -> Vec<f32> { data.chunks_exact(2 * hw).map(|f| f.iter().sum()).collect() };
    if !c.pooled {
        run_plan(p, ev, out, hw, m);
        return if want_counts {
            sum_frames(out)
        } else {
            Vec::new()
        };
    }
    let dhw = cfg.height * cfg.width;
    let mut r = AreaResampler::new(c.ih, c.iw, cfg.height, cfg.width);
    match p {
        Plan::Segments(segs) => {
            // One sensor-sized frame of scratch at a time (stays in cache, no big allocation).
            let mut scratch = vec![0.0f32; 2 * hw];
            let mut counts = if want_counts {
                vec![0.0f32; cfg.t]
            } else {
                Vec::new()
            };
            for (fi, range) in segs {
                scratch.fill(0.0);
                accumulate(
                    &mut scratch,
                    hw,
                    &ev.x[range.clone()],
                    &ev.y[range.clone()],
                    &ev.on[range.clone()],
                    m,
                );
                if want_counts {
                    counts[*fi] = scratch.iter().sum();
                }
                let dst = &mut out[fi * 2 * dhw..(fi + 1) * 2 * dhw];
                for (src, d) in scratch.chunks_exact(hw).zip(dst.chunks_exact_mut(dhw)) {
                    r.apply(src, d);
                }
            }
            counts
        }
        Plan::PerEvent(_) => {
            let mut scratch = vec![0.0f32; cfg.t * 2 * hw];
            run_plan(p, ev, &mut scratch, hw, m);
            for (src, d) in scratch.chunks_exact(hw).zip(out.chunks_exact_mut(dhw)) {
                r.apply(src, d);
            }
            if want_counts {
                sum_frames(&scratch)
            } else {
                Vec::new()
            }
        }
    }
}

fn post_process(data: &mut [f32], fsz: usize, cfg: &FrameConfig, counts: &[f32]) {
    if let Some(c) = cfg.clip {
        data.iter_mut().for_each(|v| *v = v.min(c));
    }
    if cfg.binarize {
        data.iter_mut()
            .for_each(|v| *v = if *v != 0.0 { 1.0 } else { 0.0 });
    }
    if cfg.log_scale {
        data.iter_mut().for_each(|v| *v = v.ln_1p());
    }
    match cfg.normalize {
        Normalize::None => {}
        Normalize::Max => {
            let m = data.iter().copied().fold(0.0f32, f32::max);
            if m > 0.0 {
                data.iter_mut().for_each(|v| *v /= m);
            }
        }
        Normalize::FrameCount => {
            for (frame, &n) in data.chunks_exact_mut(fsz).zip(counts) {
                if n > 0.0 {
                    frame.iter_mut().for_each(|v| *v /= n);
                }
            }
        }
    }
}

/// [`integrate`] over many samples in parallel (rayon's global pool; wrap the call in
/// `ThreadPool::install` to choose the threads). Output order = input order; on failure the
/// error of the first failing sample (in input order) is returned.
pub fn integrate_batch(
    samples: &[(&Events, SensorSize)],
    cfg: &FrameConfig,
) -> Result<Vec<Frames>, Error> {
    cfg.validate()?;
    let results: Vec<Result<Frames, Error>> = samples
        .par_iter()
        .map(|(ev, sensor)| integrate(ev, *sensor, cfg))
        .collect();
    results.into_iter().collect()
}

/// [`integrate_batch`] into one caller-owned `[B, T, 2, H, W]` buffer (`B = samples.len()`,
/// overwritten), e.g. the storage of a batch tensor: no per-sample allocation. On failure the
/// error of the first failing sample (in input order) is returned and `out` is partly written.
pub fn integrate_batch_into(
    samples: &[(&Events, SensorSize)],
    cfg: &FrameConfig,
    out: &mut [f32],
) -> Result<(), Error> {
    cfg.validate()?;
    check_out_len(cfg, out.len(), samples.len())?;
    let per = cfg.t * 2 * cfg.height * cfg.width;
    if per == 0 {
        return Ok(());
    }
    let results: Vec<Result<(), Error>> = out
        .par_chunks_mut(per)
        .zip(samples.par_iter())
        .map(|(o, (ev, sensor))| integrate_core(ev, *sensor, cfg, o, false))
        .collect();
    results.into_iter().collect()
}
