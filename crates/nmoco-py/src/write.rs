//! Event columns from numpy (range-checked integer conversion) and `_write`.

use std::path::PathBuf;

use crate::errors::{bad, ev_err};
use crate::options::parse_format;
use nmoco_events::{Compression, Events, Format, SensorSize};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;

/// One column as a contiguous slice of any integer dtype (or bool), converted to `Out`.
/// `lo..=hi` is the accepted range; the first value outside it is reported with its index.
/// The range is checked in one vectorisable pass before the conversion pass.
fn int_column<Out: Copy>(
    name: &str,
    a: &Bound<'_, PyAny>,
    lo: i64,
    hi: i64,
    conv: impl Fn(i64) -> Out + Copy,
    out: &mut Vec<Out>,
) -> PyResult<()> {
    fn go<T: Copy + Ord + Into<i64>, Out>(
        name: &str,
        s: &[T],
        lo: i64,
        hi: i64,
        conv: impl Fn(i64) -> Out,
        out: &mut Vec<Out>,
    ) -> PyResult<()> {
        let checked = lo > i64::MIN || hi < i64::MAX;
        let report = |i: usize, v: i64| {
            bad(format!(
                "event {i} has {name} = {v}, outside the range {lo}..={hi}"
            ))
        };
        if checked && std::mem::size_of::<T>() > 2 {
            // Wide types: one fused check-and-convert pass (64-bit min/max do not vectorise
            // on baseline x86-64).
            out.clear();
            out.reserve(s.len());
            for (i, &v) in s.iter().enumerate() {
                let w: i64 = v.into();
                if w < lo || w > hi {
                    return Err(report(i, w));
                }
                out.push(conv(w));
            }
            return Ok(());
        }
        // Narrow types: min/max in the column's own type vectorise (pminsw & co.).
        if checked
            && let (Some(mn), Some(mx)) = (s.iter().copied().min(), s.iter().copied().max())
            && (mn.into() < lo || mx.into() > hi)
        {
            let (i, v) = s
                .iter()
                .map(|&v| v.into())
                .enumerate()
                .find(|&(_, v)| v < lo || v > hi)
                .unwrap_or((0, mn.into()));
            return Err(report(i, v));
        }
        out.clear();
        out.extend(s.iter().map(|&v| conv(v.into())));
        Ok(())
    }
    macro_rules! try_dtype {
        ($($t:ty),*) => {$(
            if let Ok(arr) = a.cast::<PyArray1<$t>>() {
                let ro = arr.try_readonly()?;
                let s = ro.as_slice().map_err(|e| bad(format!("column {name}: {e}")))?;
                return go(name, s, lo, hi, conv, out);
            }
        )*};
    }
    try_dtype!(i64, i32, i16, i8, u32, u16, u8);
    if let Ok(arr) = a.cast::<PyArray1<u64>>() {
        let ro = arr.try_readonly()?;
        let s = ro
            .as_slice()
            .map_err(|e| bad(format!("column {name}: {e}")))?;
        let mut wide = Vec::with_capacity(s.len());
        for (i, &v) in s.iter().enumerate() {
            match i64::try_from(v) {
                Ok(v) => wide.push(v),
                Err(_) => {
                    return Err(bad(format!(
                        "event {i} has {name} = {v}, outside the int64 range"
                    )));
                }
            }
        }
        return go(name, &wide, lo, hi, conv, out);
    }
    if let Ok(arr) = a.cast::<PyArray1<bool>>() {
        let ro = arr.try_readonly()?;
        let s = ro
            .as_slice()
            .map_err(|e| bad(format!("column {name}: {e}")))?;
        // false/true are 0/1, inside every accepted range.
        out.clear();
        out.extend(s.iter().map(|&b| conv(i64::from(b))));
        return Ok(());
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "column {name} must be a one-dimensional contiguous array of native integers or booleans"
    )))
}

/// The four columns (contiguous 1-D numpy arrays of any native integer dtype; `p` also bool,
/// counted as ON when non-zero, SpikingJelly's `p != 0`) as `Events`. Coordinates must be in
/// `0..=65535`, or for AEDAT 4 in the `int16` range, stored as its bit pattern (what the AEDAT 4
/// reader gives back).
pub(crate) fn events_from(
    t: &Bound<'_, PyAny>,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    p: &Bound<'_, PyAny>,
    signed16: bool,
    ev: &mut Events,
) -> PyResult<()> {
    let (lo, hi) = if signed16 {
        (i64::from(i16::MIN), i64::from(i16::MAX))
    } else {
        (0, i64::from(u16::MAX))
    };
    let coord = |v: i64| v as i16 as u16;
    int_column("t", t, i64::MIN, i64::MAX, |v| v, &mut ev.t)?;
    int_column("x", x, lo, hi, coord, &mut ev.x)?;
    int_column("y", y, lo, hi, coord, &mut ev.y)?;
    int_column("p", p, i64::MIN, i64::MAX, |v| v != 0, &mut ev.on)?;
    if !ev.columns_consistent() {
        return Err(bad(format!(
            "event columns differ in length: t={}, x={}, y={}, p={}",
            ev.t.len(),
            ev.x.len(),
            ev.y.len(),
            ev.on.len()
        )));
    }
    Ok(())
}

pub(crate) fn sensor_from(sensor: Option<(u64, u64)>) -> PyResult<Option<SensorSize>> {
    sensor
        .map(|(w, h)| match (u16::try_from(w), u16::try_from(h)) {
            (Ok(width), Ok(height)) => Ok(SensorSize { width, height }),
            _ => Err(bad(format!("sensor size {w}x{h} does not fit in 16 bits"))),
        })
        .transpose()
}

/// `_write(path, t, x, y, p, format, sensor, compression)`: the columns are contiguous
/// (`int64`, `int64`, `int64`, `bool`); the wrapper in `__init__.py` prepares them.
#[pyfunction]
#[pyo3(signature = (path, t, x, y, p, format, sensor=None, compression="lz4"))]
pub(crate) fn _write(
    py: Python<'_>,
    path: PathBuf,
    t: Bound<'_, PyAny>,
    x: Bound<'_, PyAny>,
    y: Bound<'_, PyAny>,
    p: Bound<'_, PyAny>,
    format: &str,
    sensor: Option<(u64, u64)>,
    compression: &str,
) -> PyResult<()> {
    let format = parse_format(format)?;
    let compression = match compression {
        "none" => Compression::None,
        "lz4" => Compression::Lz4,
        "lz4_high" => Compression::Lz4High,
        "zstd" => Compression::Zstd,
        "zstd_high" => Compression::ZstdHigh,
        o => {
            return Err(bad(format!(
                "compression must be 'none', 'lz4', 'lz4_high', 'zstd' or 'zstd_high', not {o:?}"
            )));
        }
    };
    let mut ev = Events::new();
    events_from(&t, &x, &y, &p, format == Format::Aedat4, &mut ev)?;
    let sensor = sensor_from(sensor)?;
    let res = py.detach(|| match format {
        Format::Aedat4 => nmoco_events::aedat4::write_file(&path, &ev, sensor, compression),
        f => nmoco_events::write_file(&path, f, &ev, sensor),
    });
    res.map_err(|e| ev_err(py, e, Some(&path)))
}
