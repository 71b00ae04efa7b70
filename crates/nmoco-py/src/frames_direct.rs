//! The direct path for SpikingJelly's fixed frame number: counts straight from the numpy
//! columns in their own dtypes (AVX2 twins chosen at run time).

use crate::decode::KEEP_EVENTS;
use crate::frames_count::{Count, count_block, flush_counts_any};
use nmoco_events::SensorSize;
use nmoco_frames::{FrameConfig, Resize, Slicing};
use numpy::{PyArray1, PyArrayMethods, PyReadwriteArray4};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// A read-only view of one numpy column, in its own dtype.
enum ColRo<'py> {
    B(numpy::PyReadonlyArray1<'py, bool>),
    I8(numpy::PyReadonlyArray1<'py, i8>),
    U8(numpy::PyReadonlyArray1<'py, u8>),
    I16(numpy::PyReadonlyArray1<'py, i16>),
    U16(numpy::PyReadonlyArray1<'py, u16>),
    I32(numpy::PyReadonlyArray1<'py, i32>),
    U32(numpy::PyReadonlyArray1<'py, u32>),
    I64(numpy::PyReadonlyArray1<'py, i64>),
    U64(numpy::PyReadonlyArray1<'py, u64>),
}

/// A contiguous column as a slice of its own dtype.
#[derive(Clone, Copy)]
enum Col<'a> {
    B(&'a [bool]),
    I8(&'a [i8]),
    U8(&'a [u8]),
    I16(&'a [i16]),
    U16(&'a [u16]),
    I32(&'a [i32]),
    U32(&'a [u32]),
    I64(&'a [i64]),
    U64(&'a [u64]),
}

macro_rules! col_variants {
    ($m:ident) => {
        $m!(B, bool);
        $m!(I8, i8);
        $m!(U8, u8);
        $m!(I16, i16);
        $m!(U16, u16);
        $m!(I32, i32);
        $m!(U32, u32);
        $m!(I64, i64);
        $m!(U64, u64);
    };
}

/// Column values as `u64` for the range checks: negative numbers wrap to huge values, so one
/// unsigned comparison `v < limit` checks `0 <= v < limit`.
/// `w`: the same as a `u32`, saturating (so `w < limit` still checks `0 <= v < limit` for any
/// `limit` below 2^31), in the narrowest lanes the type allows.
trait Lane: Copy {
    fn u(self) -> u64;
    fn w(self) -> u32;
}
macro_rules! lane_narrow {
    ($($t:ty as $via:ty),*) => {$(impl Lane for $t {
        #[inline(always)]
        fn u(self) -> u64 { self as i64 as u64 }
        #[inline(always)]
        fn w(self) -> u32 { self as $via as u32 }
    })*};
}
macro_rules! lane_wide {
    ($($t:ty),*) => {$(impl Lane for $t {
        #[inline(always)]
        fn u(self) -> u64 { self as u64 }
        #[inline(always)]
        fn w(self) -> u32 { (self as u64).min(u64::from(u32::MAX)) as u32 }
    })*};
}
lane_narrow!(
    i8 as i32, i16 as i32, i32 as i32, u8 as u32, u16 as u32, u32 as u32
);
lane_wide!(i64, u64);
impl Lane for bool {
    #[inline(always)]
    fn u(self) -> u64 {
        u64::from(self)
    }
    #[inline(always)]
    fn w(self) -> u32 {
        u32::from(self)
    }
}

/// Pixel indices `on·H·W + y·W + x` of a block of events (`on[k]`: event k is ON) and the
/// largest x and y seen (as saturated `u32`, negatives huge): the caller checks those against
/// the sensor before using any index. Vectorises (the `avx2` twin is the same code).
#[inline(always)]
fn index_block<T: Lane>(
    xs: &[T],
    ys: &[T],
    on: &[u8],
    w: u32,
    hw: u32,
    idx: &mut [u32],
) -> (u32, u32) {
    let (mut mx, mut my) = (0u32, 0u32);
    for (((k, &x), &y), &o) in idx.iter_mut().zip(xs).zip(ys).zip(on) {
        let (x, y) = (x.w(), y.w());
        mx = mx.max(x);
        my = my.max(y);
        *k = x
            .wrapping_add(y.wrapping_mul(w))
            .wrapping_add(u32::from(o).wrapping_mul(hw));
    }
    (mx, my)
}

/// `index_block` compiled for AVX2.
///
/// # Safety
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn index_block_avx2<T: Lane>(
    xs: &[T],
    ys: &[T],
    on: &[u8],
    w: u32,
    hw: u32,
    idx: &mut [u32],
) -> (u32, u32) {
    index_block(xs, ys, on, w, hw, idx)
}

/// `index_block` compiled for AVX-512.
///
/// # Safety
/// The CPU supports AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw")]
unsafe fn index_block_avx512<T: Lane>(
    xs: &[T],
    ys: &[T],
    on: &[u8],
    w: u32,
    hw: u32,
    idx: &mut [u32],
) -> (u32, u32) {
    index_block(xs, ys, on, w, hw, idx)
}

/// The widest vector code the CPU runs: the scalar code is compiled again for AVX2 and for
/// AVX-512 (F, BW), chosen at run time.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Simd {
    None,
    Avx2,
    Avx512,
}

fn simd_level() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
            return Simd::Avx512;
        }
        if is_x86_feature_detected!("avx2") {
            return Simd::Avx2;
        }
    }
    Simd::None
}

/// `index_block` with the fastest code the CPU runs.
#[inline(always)]
fn index_block_any<T: Lane>(
    simd: Simd,
    xs: &[T],
    ys: &[T],
    on: &[u8],
    w: u32,
    hw: u32,
    idx: &mut [u32],
) -> (u32, u32) {
    #[cfg(target_arch = "x86_64")]
    match simd {
        // SAFETY: `simd` comes from `simd_level()`.
        Simd::Avx512 => return unsafe { index_block_avx512(xs, ys, on, w, hw, idx) },
        // SAFETY: as above.
        Simd::Avx2 => return unsafe { index_block_avx2(xs, ys, on, w, hw, idx) },
        Simd::None => {}
    }
    let _ = simd;
    index_block(xs, ys, on, w, hw, idx)
}

impl<'py> ColRo<'py> {
    fn new(a: &Bound<'py, PyAny>) -> Option<Self> {
        macro_rules! try_cast {
            ($v:ident, $t:ty) => {
                if let Ok(arr) = a.cast::<PyArray1<$t>>() {
                    return arr.try_readonly().ok().map(ColRo::$v);
                }
            };
        }
        col_variants!(try_cast);
        None
    }

    /// The slice, when the array is contiguous.
    fn slice(&self) -> Option<Col<'_>> {
        macro_rules! arm {
            ($($v:ident),*) => {
                match self {
                    $(ColRo::$v(r) => r.as_slice().ok().map(Col::$v),)*
                }
            };
        }
        arm!(B, I8, U8, I16, U16, I32, U32, I64, U64)
    }
}

impl Col<'_> {
    fn len(self) -> usize {
        macro_rules! arm {
            ($($v:ident),*) => { match self { $(Col::$v(s) => s.len(),)* } };
        }
        arm!(B, I8, U8, I16, U16, I32, U32, I64, U64)
    }

    /// The column as int64 timestamps (the general path's conversion): borrowed when it is
    /// int64, else converted into `buf`; `None` for uint64 (values above `i64::MAX` are the
    /// general path's error) or when `buf` cannot grow.
    fn timestamps<'b>(self, buf: &'b mut Vec<i64>) -> Option<&'b [i64]>
    where
        Self: 'b,
    {
        macro_rules! conv {
            ($s:expr) => {{
                buf.clear();
                buf.try_reserve_exact($s.len()).ok()?;
                buf.extend($s.iter().map(|&v| i64::from(v)));
                Some(buf.as_slice())
            }};
        }
        match self {
            Col::I64(s) => Some(s),
            Col::U64(_) => None,
            Col::B(s) => conv!(s),
            Col::I8(s) => conv!(s),
            Col::U8(s) => conv!(s),
            Col::I16(s) => conv!(s),
            Col::U16(s) => conv!(s),
            Col::I32(s) => conv!(s),
            Col::U32(s) => conv!(s),
        }
    }

    /// `out[k] = (self[start + k] != 0)` (in bounds: callers stay below `len()`).
    fn on_flags(self, simd: Simd, start: usize, out: &mut [u8]) {
        let r = start..start + out.len();
        macro_rules! arm {
            ($($v:ident),*) => {
                match self {
                    $(Col::$v(s) => on_flags_any(simd, &s[r], out),)*
                }
            };
        }
        arm!(B, I8, U8, I16, U16, I32, U32, I64, U64)
    }
}

#[inline(always)]
fn on_flags<T: Lane>(s: &[T], out: &mut [u8]) {
    for (o, &v) in out.iter_mut().zip(s) {
        *o = u8::from(v.u() != 0);
    }
}

/// `on_flags` compiled for AVX2.
///
/// # Safety
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn on_flags_avx2<T: Lane>(s: &[T], out: &mut [u8]) {
    on_flags(s, out)
}

/// `on_flags` compiled for AVX-512.
///
/// # Safety
/// The CPU supports AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw")]
unsafe fn on_flags_avx512<T: Lane>(s: &[T], out: &mut [u8]) {
    on_flags(s, out)
}

#[inline(always)]
fn on_flags_any<T: Lane>(simd: Simd, s: &[T], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    match simd {
        // SAFETY: `simd` comes from `simd_level()`.
        Simd::Avx512 => return unsafe { on_flags_avx512(s, out) },
        // SAFETY: as above.
        Simd::Avx2 => return unsafe { on_flags_avx2(s, out) },
        Simd::None => {}
    }
    let _ = simd;
    on_flags(s, out)
}

/// Sensor geometry and CPU features for `count_frames`.
struct Geometry {
    w: usize,
    h: usize,
    w32: u32,
    hw32: u32,
    simd: Simd,
}

/// The frames of `frames_direct`: `buf` holds `bounds.len()` frames of
/// `counts.len()` = 2·H·W floats; `counts` is all zero. False when an event is off the sensor.
///
/// Events go in blocks of `FRAME_BLOCK`; the pixel indices of the next block are computed
/// (from the columns in memory) before the current block is counted (in L1), so that the
/// loads of the one overlap the counting of the other.
fn count_frames<C: Count>(
    g: &Geometry,
    buf: &mut [f32],
    bounds: &[std::ops::Range<usize>],
    counts: &mut [C],
    [xc, yc, pc]: [Col<'_>; 3],
) -> bool {
    let mut on = [0u8; FRAME_BLOCK];
    let mut idx_bufs = [[0u32; FRAME_BLOCK]; 2];
    let [idx, idx_next] = &mut idx_bufs;
    let (mut idx, mut idx_next) = (idx, idx_next);
    // Pixel indices of events s..e into idx[..e - s]; false when one is off the sensor.
    let mut index = |s: usize, e: usize, idx: &mut [u32; FRAME_BLOCK]| -> bool {
        let (on, idx) = (&mut on[..e - s], &mut idx[..e - s]);
        pc.on_flags(g.simd, s, on);
        macro_rules! same {
            ($($v:ident),*) => {
                match (xc, yc) {
                    $((Col::$v(xs), Col::$v(ys)) => {
                        index_block_any(g.simd, &xs[s..e], &ys[s..e], on, g.w32, g.hw32, idx)
                    })*
                    _ => return false,
                }
            };
        }
        let (mx, my) = same!(B, I8, U8, I16, U16, I32, U32, I64, U64);
        (mx as usize) < g.w && (my as usize) < g.h
    };
    // (frame, first event, end) of every block, frame by frame.
    let mut blocks = bounds.iter().enumerate().flat_map(|(f, r)| {
        r.clone()
            .step_by(FRAME_BLOCK)
            .map(move |s| (f, s, (s + FRAME_BLOCK).min(r.end)))
    });
    let mut frames = buf.chunks_exact_mut(counts.len());
    // Pixels whose 8-bit counter wrapped (once per 256 events there), in this frame.
    let mut wrapped: Vec<u32> = Vec::new();
    // Writes the frames before `upto` (the current one from `counts`, any later ones empty).
    let mut flushed = 0;
    let mut flush_upto = |upto: usize, counts: &mut [C], wrapped: &mut Vec<u32>| {
        for frame in frames.by_ref().take(upto.saturating_sub(flushed)) {
            flush_counts_any(g.simd, frame, counts);
            for &k in wrapped.iter() {
                if let Some(v) = frame.get_mut(k as usize) {
                    *v += 256.0; // exact: the frame has fewer than 2^24 events
                }
            }
            wrapped.clear();
        }
        flushed = flushed.max(upto);
    };
    let mut cur = blocks.next();
    if let Some((f, s, e)) = cur {
        if !index(s, e, idx) {
            return false;
        }
        flush_upto(f, counts, &mut wrapped); // empty frames before the first event
    }
    while let Some((f, s, e)) = cur {
        let next = blocks.next();
        if let Some((_, ns, ne)) = next
            && !index(ns, ne, idx_next)
        {
            return false;
        }
        count_block(counts, &idx[..e - s], &mut wrapped);
        let next_frame = next.map_or(bounds.len(), |b| b.0);
        if next_frame != f {
            flush_upto(next_frame, counts, &mut wrapped);
        }
        std::mem::swap(&mut idx, &mut idx_next);
        cur = next;
    }
    flush_upto(bounds.len(), counts, &mut wrapped); // no events at all
    true
}

/// Events per block of the direct path: their pixel indices stay in L1.
const FRAME_BLOCK: usize = 256;

thread_local! {
    /// Per-pixel counts of one frame, reused across `to_frames` calls on one thread.
    static FRAME_COUNTS: std::cell::RefCell<(Vec<u8>, Vec<u32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// A fresh, uninitialised, C-contiguous float32 array allocated by numpy's C API (a failed
/// allocation is a Python `MemoryError`, as with `np.empty`). Its elements are read only
/// after `count_frames` returned true, which means it wrote every frame (`bounds` has one
/// range per frame and each frame's flush writes all of its 2·H·W floats); otherwise the
/// array is dropped unread.
fn empty_f32(py: Python<'_>, dims: [usize; 4]) -> PyResult<Bound<'_, numpy::PyArray4<f32>>> {
    use numpy::npyffi::{NpyTypes, PY_ARRAY_API, npy_intp};
    use numpy::{Element, PyArrayDescr};
    let descr: Bound<'_, PyArrayDescr> = f32::get_dtype(py);
    let mut d = [0 as npy_intp; 4];
    for (o, &v) in d.iter_mut().zip(&dims) {
        *o = npy_intp::try_from(v)
            .map_err(|_| pyo3::exceptions::PyMemoryError::new_err(format!("{dims:?} frames")))?;
    }
    // SAFETY: `descr` is numpy's float32 dtype; `PyArray_NewFromDescr` steals one reference to
    // it (hence `into_ptr`). Four dimensions, default (C) strides, numpy-allocated data; a NULL
    // result carries a Python exception (MemoryError for a size it cannot allocate).
    let arr = unsafe {
        let ptr = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            numpy::npyffi::get_type_object(py, NpyTypes::PyArray_Type),
            descr.into_ptr().cast(),
            4,
            d.as_mut_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
        );
        Bound::from_owned_ptr_or_err(py, ptr)?
    };
    Ok(arr.cast_into::<numpy::PyArray4<f32>>()?)
}

/// How the direct path splits the events into frames: SpikingJelly's
/// `integrate_events_by_fixed_frames_number` by `'number'` or `'time'` (T frames) and
/// `integrate_events_by_fixed_duration` (µs per frame).
#[derive(Clone, Copy)]
pub(crate) enum DirectSplit {
    Number(usize),
    Time(usize),
    Duration(i64),
}

/// SpikingJelly's frame integration on a canvas of the sensor's own size without
/// post-processing, counted straight from the numpy columns in their own dtypes (x and y of one
/// dtype): per block of events one pass turns p into ON flags, a second range-checks x and y
/// and adds one at `on·H·W + y·W + x`; no converted copy of the columns. Every split makes
/// each frame one contiguous range of events (`'time'` and `'duration'` only for timestamps in
/// non-decreasing order, of any integer dtype but uint64), all events in one of them.
/// `None` when the inputs are outside this case (any event off the sensor, x and y of different
/// dtypes, unsorted or uint64 timestamps for a time split, a dtype or layout the general
/// path must judge, 2^24 or more events); the general path then decides, and produces the
/// same frames or the same error (its twin: pytests compare both paths).
/// Runs with the GIL held: the columns are borrowed from numpy arrays other threads could
/// otherwise write meanwhile.
pub(crate) fn frames_direct<'py>(
    py: Python<'py>,
    cols: [&Bound<'_, PyAny>; 4],
    split: DirectSplit,
    sensor: SensorSize,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let [t, x, y, p] = cols;
    let (w, h) = (sensor.width as usize, sensor.height as usize);
    if w == 0 || h == 0 {
        return Ok(None);
    }
    let (Some(tr), Some(xr), Some(yr), Some(pr)) =
        (ColRo::new(t), ColRo::new(x), ColRo::new(y), ColRo::new(p))
    else {
        return Ok(None);
    };
    let (Some(tc), Some(xc), Some(yc), Some(pc)) = (tr.slice(), xr.slice(), yr.slice(), pr.slice())
    else {
        return Ok(None);
    };
    let n = xc.len();
    // The general path refuses u64 timestamps / polarities above i64::MAX; leave those to it.
    let wide = |c: Col<'_>| matches!(c, Col::U64(_));
    if tc.len() != n || yc.len() != n || pc.len() != n || wide(tc) || wide(pc) || n >= 1 << 24 {
        return Ok(None);
    }
    // Absurd frame counts go to the general path, which lets numpy refuse the output first.
    if let DirectSplit::Number(t_frames) | DirectSplit::Time(t_frames) = split
        && t_frames > 1 << 20
    {
        return Ok(None);
    }
    // Timestamps of another integer dtype, as int64, for a time split.
    let mut ts_buf = Vec::new();
    let bounds = match split {
        DirectSplit::Number(t_frames) => nmoco_frames::event_count_bounds(n, t_frames),
        // `equal_time_bounds` checks the order itself.
        DirectSplit::Time(t_frames) => {
            // `equal_time_bounds` checks the order itself.
            let ts = tc.timestamps(&mut ts_buf);
            match ts.and_then(|ts| nmoco_frames::equal_time_bounds(ts, t_frames)) {
                Some(b) => b,
                None => return Ok(None),
            }
        }
        DirectSplit::Duration(d) => match tc.timestamps(&mut ts_buf) {
            // Too many frames is the general path's error to raise.
            Some(ts) if d > 0 && ts.windows(2).all(|w| w[0] <= w[1]) => {
                match crate::frames::duration_bounds(ts, d) {
                    Ok(b) => b,
                    Err(_) => return Ok(None),
                }
            }
            _ => return Ok(None),
        },
    };
    drop(ts_buf);
    let t_frames = bounds.len();
    let cfg = FrameConfig {
        t: t_frames,
        slicing: Slicing::EventCount,
        height: h,
        width: w,
        resize: Resize::None,
        ..FrameConfig::default()
    };
    // One range per frame, together all events in order (else the general path decides).
    let contiguous = bounds.first().is_some_and(|r| r.start == 0)
        && bounds.windows(2).all(|b| b[0].end == b[1].start)
        && bounds.last().is_some_and(|r| r.end == n);
    if cfg.validate().is_err() || !contiguous {
        return Ok(None);
    }
    let plane = 2 * h * w;
    if u32::try_from(plane).is_err() {
        return Ok(None);
    }
    let arr = empty_f32(py, [t_frames, 2, h, w])?;
    let mut rw: PyReadwriteArray4<'_, f32> = arr.try_readwrite()?;
    let buf = rw
        .as_slice_mut()
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let geo = Geometry {
        w,
        h,
        w32: w as u32,        // 2·H·W < 2^32 was checked
        hw32: (h * w) as u32, //
        simd: simd_level(),
    };
    // 8-bit counters (a quarter of the cache footprint) unless the plane is large.
    let narrow = plane <= 1 << 17;
    let inside = FRAME_COUNTS.with(|cell| -> PyResult<bool> {
        let mut fresh = (Vec::new(), Vec::new());
        let mut guard = cell.try_borrow_mut();
        let (c8, c32) = match guard.as_mut() {
            Ok(g) => &mut **g,
            Err(_) => &mut fresh,
        };
        /// Zeroed counters for one plane; a failed allocation is a MemoryError, not an abort.
        fn zeroed<C: Count>(c: &mut Vec<C>, plane: usize) -> PyResult<&mut [C]> {
            c.clear();
            c.try_reserve_exact(plane).map_err(|e| {
                pyo3::exceptions::PyMemoryError::new_err(format!("frame counters: {e}"))
            })?;
            c.resize(plane, C::default());
            Ok(c.as_mut_slice())
        }
        let ok = if narrow {
            count_frames(&geo, buf, &bounds, zeroed(c8, plane)?, [xc, yc, pc])
        } else {
            count_frames(&geo, buf, &bounds, zeroed(c32, plane)?, [xc, yc, pc])
        };
        if c32.capacity() > KEEP_EVENTS {
            *c32 = Vec::new();
        }
        Ok(ok)
    })?;
    if !inside {
        return Ok(None);
    }
    drop(rw);
    Ok(Some(arr.into_any()))
}
