//! `_to_frames`: frames through `nmoco_frames::integrate_into`, SpikingJelly's fixed-duration
//! grouping, and the dispatch to the direct path.

use crate::decode::KEEP_EVENTS;
use crate::errors::bad;
use crate::frames_direct::{DirectSplit, frames_direct};
use crate::write::{events_from, sensor_from};
use nmoco_events::Events;
use nmoco_frames::{FrameConfig, Resize, Slicing};
use numpy::{PyArrayMethods, PyReadwriteArray4};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// The number of frames of SpikingJelly's `integrate_events_by_fixed_duration` for timestamps
/// from `t0` to `last`: `T = ceil((last − t0) / d)`, at least 1, at most 2^20 (else an error).
fn duration_frames(t0: i64, last: i64, d: i64) -> PyResult<usize> {
    let span = i128::from(last) - i128::from(t0);
    let t_frames = ((span + i128::from(d) - 1) / i128::from(d)).max(1);
    if t_frames > 1 << 20 {
        return Err(bad(format!(
            "split_by='duration' would make {t_frames} frames (span {span} us, duration {d} us)"
        )));
    }
    Ok(t_frames as usize)
}

/// SpikingJelly's fixed-duration frames of **non-decreasing** timestamps `ts` (at least one;
/// `d > 0`) as index ranges: frame `k` holds `t0 + k·d <= t < t0 + (k+1)·d`, the last frame
/// everything from its start on. Found by binary search: no per-event division (64-bit `idiv`
/// costs tens of cycles).
pub(crate) fn duration_bounds(ts: &[i64], d: i64) -> PyResult<Vec<std::ops::Range<usize>>> {
    let (Some(&t0), Some(&last)) = (ts.first(), ts.last()) else {
        return Err(bad(
            "split_by='duration' without n_frames needs at least one event",
        ));
    };
    let t_frames = duration_frames(t0, last, d)?;
    let mut starts = vec![0usize];
    for k in 1..t_frames {
        let edge = i128::from(t0) + k as i128 * i128::from(d);
        starts.push(ts.partition_point(|&t| i128::from(t) < edge));
    }
    starts.push(ts.len());
    Ok(starts.windows(2).map(|w| w[0]..w[1]).collect())
}

/// SpikingJelly's `integrate_events_by_fixed_duration` frame assignment: `t0 = min(t)`,
/// `T = ceil((t[N-1] − t0) / d)` (at least 1), event → `min((t − t0) // d, T − 1)`. On
/// time-sorted input this is SpikingJelly's `searchsorted` split exactly.
fn duration_groups(ev: &Events, d: i64) -> PyResult<Vec<Events>> {
    if ev.t.windows(2).all(|w| w[0] <= w[1]) {
        // Time-sorted (the usual case): each frame is a contiguous range.
        let bounds = duration_bounds(&ev.t, d)?;
        return Ok(bounds.into_iter().map(|r| ev.slice(r)).collect());
    }
    let Some(&t0) = ev.t.iter().min() else {
        return Err(bad(
            "split_by='duration' without n_frames needs at least one event",
        ));
    };
    let t_frames = duration_frames(t0, ev.t[ev.t.len() - 1], d)?;
    let d128 = i128::from(d);
    // Counting sort by frame (stable, so each group keeps file order): exact capacities, no
    // regrowth.
    let frame: Vec<u32> =
        ev.t.iter()
            .map(|&t| {
                // t >= t0; the i64 difference overflows only for spans beyond 2^63 us.
                let k = match t.checked_sub(t0) {
                    Some(rel) => i128::from(rel / d),
                    None => (i128::from(t) - i128::from(t0)) / d128,
                };
                k.min(t_frames as i128 - 1) as u32
            })
            .collect();
    let mut counts = vec![0usize; t_frames];
    for &k in &frame {
        counts[k as usize] += 1;
    }
    let mut groups: Vec<Events> = counts.iter().map(|&c| Events::with_capacity(c)).collect();
    for (i, &k) in frame.iter().enumerate() {
        let g = &mut groups[k as usize];
        g.t.push(ev.t[i]);
        g.x.push(ev.x[i]);
        g.y.push(ev.y[i]);
        g.on.push(ev.on[i]);
    }
    Ok(groups)
}

/// Upper bound on the full-resolution scratch of `resize='pool'` (2^28 floats = 1 GiB).
const MAX_POOL_SCRATCH_FLOATS: u128 = 1 << 28;

fn frames_err(e: nmoco_frames::Error) -> PyErr {
    bad(e.to_string())
}

/// `_to_frames(t, x, y, p, n_frames, split_by, sensor, size, resize, duration, ...)` →
/// float32 `[T, 2, H, W]`. Arguments are prepared by `to_frames` in `__init__.py`.
#[pyfunction]
#[pyo3(signature = (t, x, y, p, n_frames, split_by, sensor, size, resize, duration,
    drop_out_of_bounds, binarize, clip, log_scale))]
pub(crate) fn _to_frames<'py>(
    py: Python<'py>,
    t: Bound<'_, PyAny>,
    x: Bound<'_, PyAny>,
    y: Bound<'_, PyAny>,
    p: Bound<'_, PyAny>,
    n_frames: Option<usize>,
    split_by: &str,
    sensor: (u64, u64),
    size: (usize, usize),
    resize: &str,
    duration: Option<i64>,
    drop_out_of_bounds: bool,
    binarize: bool,
    clip: Option<f32>,
    log_scale: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let direct = match (split_by, duration, n_frames) {
        ("number", None, n) => Some(DirectSplit::Number(n.unwrap_or(16))),
        ("time", None, n) => Some(DirectSplit::Time(n.unwrap_or(16))),
        ("duration", Some(d), None) => Some(DirectSplit::Duration(d)),
        _ => None,
    };
    if let Some(split) = direct
        && !binarize
        && clip.is_none()
        && !log_scale
        && let Ok(Some(sensor)) = sensor_from(Some(sensor))
        && size == (sensor.height as usize, sensor.width as usize)
        && let Some(out) = frames_direct(py, [&t, &x, &y, &p], split, sensor)?
    {
        return Ok(out);
    }
    FRAME_EVENTS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut ev) => {
            let r = frames_impl(
                py,
                &t,
                &x,
                &y,
                &p,
                &mut ev,
                n_frames,
                split_by,
                sensor,
                size,
                resize,
                duration,
                drop_out_of_bounds,
                binarize,
                clip,
                log_scale,
            );
            if ev.t.capacity() > KEEP_EVENTS {
                *ev = Events::new();
            }
            r
        }
        Err(_) => frames_impl(
            py,
            &t,
            &x,
            &y,
            &p,
            &mut Events::new(),
            n_frames,
            split_by,
            sensor,
            size,
            resize,
            duration,
            drop_out_of_bounds,
            binarize,
            clip,
            log_scale,
        ),
    })
}

thread_local! {
    /// Event columns reused across `to_frames` calls on one thread (see `decode::SCRATCH`).
    static FRAME_EVENTS: std::cell::RefCell<Events> = std::cell::RefCell::new(Events::new());
}

fn frames_impl<'py>(
    py: Python<'py>,
    t: &Bound<'_, PyAny>,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    p: &Bound<'_, PyAny>,
    ev: &mut Events,
    n_frames: Option<usize>,
    split_by: &str,
    sensor: (u64, u64),
    size: (usize, usize),
    resize: &str,
    duration: Option<i64>,
    drop_out_of_bounds: bool,
    binarize: bool,
    clip: Option<f32>,
    log_scale: bool,
) -> PyResult<Bound<'py, PyAny>> {
    events_from(t, x, y, p, false, ev)?;
    let ev = &*ev;
    let Some(sensor) = sensor_from(Some(sensor))? else {
        return Err(bad("sensor size missing"));
    };
    let resize = match resize {
        "none" => Resize::None,
        "events" => Resize::Events,
        "pool" => Resize::Pool,
        o => {
            return Err(bad(format!(
                "resize must be 'none', 'events' or 'pool', not {o:?}"
            )));
        }
    };
    let (height, width) = size;
    // On a canvas of the sensor's own size every resize mode is the identity; `None` takes the
    // counting kernel's table-free path.
    let resize = if (height, width) == (sensor.height as usize, sensor.width as usize) {
        Resize::None
    } else {
        resize
    };
    let mut cfg = FrameConfig {
        t: 1,
        slicing: Slicing::EventCount,
        height,
        width,
        resize,
        binarize,
        clip,
        log_scale,
        drop_out_of_bounds,
        ..FrameConfig::default()
    };
    // Either one integrate call over the whole stream, or (SpikingJelly's fixed duration) one
    // single-frame call per group of events.
    let groups: Option<Vec<Events>> = match (split_by, duration, n_frames) {
        ("number", None, n) => {
            cfg.t = n.unwrap_or(16);
            None
        }
        ("time", None, n) => {
            cfg.t = n.unwrap_or(16);
            cfg.slicing = Slicing::EqualTime;
            None
        }
        ("duration", Some(d), n) if d > 0 => match n {
            Some(n) => {
                cfg.t = n;
                cfg.slicing = Slicing::TimeWindow { window_us: d };
                None
            }
            None => Some(duration_groups(ev, d)?),
        },
        ("duration", Some(d), _) => {
            return Err(bad(format!("duration must be positive (us), not {d}")));
        }
        ("duration", None, _) => return Err(bad("split_by='duration' needs duration= (us)")),
        ("number" | "time", Some(_), _) => {
            return Err(bad("duration= applies to split_by='duration' only"));
        }
        (o, _, _) => {
            return Err(bad(format!(
                "split_by must be 'number', 'time' or 'duration', not {o:?}"
            )));
        }
    };
    let t_frames = groups.as_ref().map_or(cfg.t, Vec::len);
    {
        let mut check = cfg.clone();
        check.t = t_frames;
        check.validate().map_err(frames_err)?;
    }
    if cfg.resize == Resize::Pool {
        // Pooling integrates at full sensor resolution in scratch memory that nmoco-frames
        // allocates itself (one frame, or all frames for unsorted equal-time / window
        // slicing); a failed Rust allocation would abort the interpreter, so bound it here.
        let frames = if groups.is_none() { cfg.t } else { 1 };
        let floats = (frames as u128) * 2 * u128::from(sensor.width) * u128::from(sensor.height);
        if floats > MAX_POOL_SCRATCH_FLOATS {
            return Err(pyo3::exceptions::PyMemoryError::new_err(format!(
                "resize='pool' would integrate {frames} frame(s) of 2x{}x{} at full sensor resolution ({floats} floats); use resize='events' or a smaller sensor",
                sensor.height, sensor.width
            )));
        }
    }
    // numpy allocates (and raises MemoryError for an absurd size instead of aborting);
    // `integrate_into` zero-fills, so recycled memory needs no page faults.
    let np = py.import("numpy")?;
    let out = np.call_method1(
        "empty",
        ((t_frames, 2usize, height, width), np.getattr("float32")?),
    )?;
    {
        let arr = out.cast::<numpy::PyArray4<f32>>()?;
        let mut rw: PyReadwriteArray4<'_, f32> = arr.try_readwrite()?;
        let buf = rw
            .as_slice_mut()
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let res = py.detach(|| match &groups {
            None => nmoco_frames::integrate_into(ev, sensor, &cfg, buf),
            Some(groups) => {
                let per = 2 * height * width;
                for (g, chunk) in groups.iter().zip(buf.chunks_exact_mut(per)) {
                    nmoco_frames::integrate_into(g, sensor, &cfg, chunk)?;
                }
                Ok(())
            }
        });
        res.map_err(frames_err)?;
    }
    Ok(out)
}
