//! Python bindings for `nmoco-events` and `nmoco-frames`: the native half (`nmoco_events._native`)
//! of the `nmoco_events` wheel. The pure-Python half (`python/nmoco_events/__init__.py`) turns
//! user inputs (structured arrays, dicts, `sensor_size` tuples) into the plain contiguous
//! columns these functions take, and documents the public API.
//!
//! Every failure is a Python exception: decode errors become `DecodeError` (a `ValueError`
//! subclass carrying `file`, `offset`, `value` and `kind`), I/O errors the matching `OSError`
//! subclass, bad arguments `ValueError`. Nothing here unwraps on input-dependent data, and
//! the decoders themselves never panic (an nmoco-events invariant).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nmoco_events::{
    Aedat2Layout, Compression, Dvs128Polarity, Error as EvError, Events, Format, NbinOverflow,
    ReadOptions, Reader, Recording, SensorSize,
};
use nmoco_frames::{FrameConfig, Resize, Slicing};
use numpy::{PyArray1, PyArrayMethods, PyReadwriteArray4};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple};
use pyo3::{IntoPyObjectExt, create_exception};

create_exception!(
    nmoco_events,
    DecodeError,
    PyValueError,
    "An event file (or byte string) could not be decoded.\n\n\
     Attributes: `file` (the path as a str, or None), `offset` (absolute byte offset of the \
     problem, or None), `value` (the offending value: a number or the bytes/text found, or \
     None) and `kind` (the error's name, e.g. 'Truncated', 'BadMagic', 'BadField')."
);

/// Record layout of the structured event array: tonic's `events_struct`
/// (`x` int16, `y` int16, `t` int64, `p` bool), packed, 13 bytes.
const REC: usize = 13;
const OFF_X: usize = 0;
const OFF_Y: usize = 2;
const OFF_T: usize = 4;
const OFF_P: usize = 12;

static EVENT_DTYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The structured dtype, built once and checked against the offsets the interleaving loop
/// writes to.
fn event_dtype(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    EVENT_DTYPE
        .get_or_try_init(py, || {
            let np = py.import("numpy")?;
            let fields = vec![("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "?")];
            let dt = np.call_method1("dtype", (fields,))?;
            let size: usize = dt.getattr("itemsize")?.extract()?;
            let f = dt.getattr("fields")?;
            let off = |name: &str| -> PyResult<usize> { f.get_item(name)?.get_item(1)?.extract() };
            if size != REC
                || off("x")? != OFF_X
                || off("y")? != OFF_Y
                || off("t")? != OFF_T
                || off("p")? != OFF_P
            {
                return Err(PyRuntimeError::new_err(
                    "numpy laid out the event dtype differently than expected",
                ));
            }
            Ok(dt.unbind())
        })
        .map(|d| d.bind(py))
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Converts a decoder/writer error to a Python exception. `path` names the file when the error
/// does not already carry it (the streaming reader's errors).
fn ev_err(py: Python<'_>, e: EvError, path: Option<&Path>) -> PyErr {
    let file = match &e {
        EvError::File { path, .. } => Some(path.display().to_string()),
        _ => path.map(|p| p.display().to_string()),
    };
    let inner = e.kind();
    let msg = match &file {
        Some(f) => format!("{f}: {inner}"),
        None => inner.to_string(),
    };
    match inner {
        EvError::Io { source, .. } | EvError::Write { source } => {
            return std::io::Error::new(source.kind(), format!("{msg}: {source}")).into();
        }
        EvError::Unrepresentable { .. } => return PyValueError::new_err(msg),
        _ => {}
    }
    let (kind, value): (&str, Option<Bound<'_, PyAny>>) = match inner {
        EvError::UnknownFormat { .. } => ("UnknownFormat", None),
        EvError::UnsupportedVersion { version, .. } => (
            "UnsupportedVersion",
            version.clone().into_bound_py_any(py).ok(),
        ),
        EvError::BadMagic { found, .. } => ("BadMagic", found.clone().into_bound_py_any(py).ok()),
        EvError::Truncated { needed, .. } => ("Truncated", needed.into_bound_py_any(py).ok()),
        EvError::PartialRecord { remainder, .. } => {
            ("PartialRecord", remainder.into_bound_py_any(py).ok())
        }
        EvError::CorruptHeader { reason, .. } => {
            ("CorruptHeader", reason.clone().into_bound_py_any(py).ok())
        }
        EvError::BadField { value, .. } => ("BadField", value.into_bound_py_any(py).ok()),
        EvError::PacketPastEnd { size, .. } => ("PacketPastEnd", size.into_bound_py_any(py).ok()),
        EvError::TooLarge { size, .. } => ("TooLarge", size.into_bound_py_any(py).ok()),
        EvError::Decompress { .. } => ("Decompress", None),
        EvError::Flatbuffer { reason, .. } => {
            ("Flatbuffer", reason.clone().into_bound_py_any(py).ok())
        }
        _ => ("Other", None),
    };
    let err = DecodeError::new_err(msg);
    let v = err.value(py);
    // Setting attributes on a fresh exception instance cannot fail short of memory exhaustion;
    // if it does, the exception still carries its message.
    let _ = v.setattr("file", file);
    let _ = v.setattr("offset", inner.offset());
    let _ = v.setattr("value", value);
    let _ = v.setattr("kind", kind);
    err
}

fn bad(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

// ---------------------------------------------------------------------------------------------
// Read options

struct Opts {
    read: ReadOptions,
    /// SpikingJelly's CIFAR10-DVS orientation: `x = 127 − Y`, `y = 127 − X` (polarity via
    /// `Dvs128Polarity::Jaer`).
    flip: bool,
}

fn parse_format(name: &str) -> PyResult<Format> {
    name.parse::<Format>().map_err(|e| bad(e.to_string()))
}

fn make_opts(
    format: Option<&str>,
    nbin_overflow: &str,
    aedat2_layout: &str,
    dvs128_polarity: Option<&str>,
    keep_special: bool,
    keep_invalid: bool,
    allow_partial_record: bool,
    aedat4_stream: Option<u32>,
    orientation: &str,
) -> PyResult<Opts> {
    let format = format.map(parse_format).transpose()?;
    let nbin_overflow = match nbin_overflow {
        "tonic" => NbinOverflow::Tonic,
        "wrap23" => NbinOverflow::Wrap23,
        "ignore" => NbinOverflow::Ignore,
        o => {
            return Err(bad(format!(
                "nbin_overflow must be 'tonic', 'wrap23' or 'ignore', not {o:?}"
            )));
        }
    };
    let aedat2_layout = match aedat2_layout {
        "auto" => Aedat2Layout::Auto,
        "dvs128" => Aedat2Layout::Dvs128,
        "davis240" => Aedat2Layout::Davis240,
        "davis346" => Aedat2Layout::Davis346,
        o => {
            return Err(bad(format!(
                "aedat2_layout must be 'auto', 'dvs128', 'davis240' or 'davis346', not {o:?}"
            )));
        }
    };
    let flip = match orientation {
        "raw" => false,
        "spikingjelly" => true,
        o => {
            return Err(bad(format!(
                "orientation must be 'raw' or 'spikingjelly', not {o:?}"
            )));
        }
    };
    let dvs128_polarity = match (dvs128_polarity, flip) {
        (None, false) | (Some("bit0_on"), false) => Dvs128Polarity::Bit0On,
        (None, true) | (Some("jaer"), _) => Dvs128Polarity::Jaer,
        (Some("bit0_on"), true) => {
            return Err(bad(
                "orientation='spikingjelly' implies dvs128_polarity='jaer' (SpikingJelly's p = 1 - bit0)",
            ));
        }
        (Some(o), _) => {
            return Err(bad(format!(
                "dvs128_polarity must be 'bit0_on' or 'jaer', not {o:?}"
            )));
        }
    };
    if flip && !matches!(aedat2_layout, Aedat2Layout::Auto | Aedat2Layout::Dvs128) {
        return Err(bad(
            "orientation='spikingjelly' applies to the DVS128 layout (CIFAR10-DVS) only",
        ));
    }
    Ok(Opts {
        read: ReadOptions {
            format,
            nbin_overflow,
            aedat2_layout,
            dvs128_polarity,
            keep_special,
            keep_invalid,
            allow_partial_record,
            aedat4_stream,
            ..ReadOptions::default()
        },
        flip,
    })
}

/// Applies the CIFAR10-DVS orientation in place; only for AEDAT 2.0 DVS128 (128 × 128) data.
fn apply_flip(ev: &mut Events, format: Format, sensor: Option<SensorSize>) -> PyResult<()> {
    let dvs128 = SensorSize {
        width: 128,
        height: 128,
    };
    if format != Format::Aedat2 || sensor != Some(dvs128) {
        return Err(bad(format!(
            "orientation='spikingjelly' applies to AEDAT 2.0 DVS128 (128x128) recordings only; this is {format} with sensor {sensor:?}"
        )));
    }
    for i in 0..ev.t.len() {
        let (x, y) = (ev.x[i], ev.y[i]);
        // The DVS128 masks give x, y <= 127, so both subtractions stay in range.
        match (127u16.checked_sub(y), 127u16.checked_sub(x)) {
            (Some(nx), Some(ny)) => {
                ev.x[i] = nx;
                ev.y[i] = ny;
            }
            _ => {
                return Err(bad(format!(
                    "event {i} at x={x}, y={y} is outside the DVS128 sensor"
                )));
            }
        }
    }
    Ok(())
}

fn info_dict<'py>(
    py: Python<'py>,
    format: Format,
    sensor: Option<SensorSize>,
    skipped: &nmoco_events::Skipped,
    n: usize,
) -> PyResult<Bound<'py, PyDict>> {
    use pyo3::intern;
    let d = PyDict::new(py);
    d.set_item(intern!(py, "format"), format.name())?;
    d.set_item(
        intern!(py, "sensor_size"),
        sensor.map(|s| (s.width as usize, s.height as usize, 2usize)),
    )?;
    let sk = PyDict::new(py);
    for (k, v) in skipped {
        sk.set_item(k, v)?;
    }
    d.set_item(intern!(py, "skipped"), sk)?;
    d.set_item(intern!(py, "n_events"), n)?;
    Ok(d)
}

/// Decode buffers reused across calls on one thread (`decode_into` keeps the columns'
/// allocations): the structured-array readers copy out of them, so a call touches fresh memory
/// only for the array it returns. Buffers above `KEEP_EVENTS` events are not kept.
const KEEP_EVENTS: usize = 1 << 22;

thread_local! {
    static SCRATCH: std::cell::RefCell<(Recording, Vec<u8>)> =
        std::cell::RefCell::new((Recording::default(), Vec::new()));
}

/// Runs `f` with this thread's scratch buffers, or fresh ones when they are in use (a
/// re-entrant call from a finalizer, say).
fn with_scratch<T>(f: impl FnOnce(&mut Recording, &mut Vec<u8>) -> T) -> T {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut g) => {
            let (rec, bytes) = &mut *g;
            let out = f(rec, bytes);
            if rec.events.t.capacity() > KEEP_EVENTS {
                *rec = Recording::default();
            }
            if bytes.capacity() > (nmoco_events::MMAP_THRESHOLD as usize) {
                *bytes = Vec::new();
            }
            out
        }
        Err(_) => f(&mut Recording::default(), &mut Vec::new()),
    })
}

/// Resolves the format of an in-memory file: the magic line, then (for a path) the extension.
fn resolve_format(head: &[u8], path: Option<&Path>) -> Result<Format, EvError> {
    if let Some(f) = nmoco_events::sniff_bytes(head)? {
        return Ok(f);
    }
    if let Some(f) = path.and_then(nmoco_events::sniff_extension) {
        return Ok(f);
    }
    Err(EvError::UnknownFormat {
        reason: "no AEDAT magic line and no telling extension (.bin, .aedat4); pass format=".into(),
    })
}

/// Reads a file below `MMAP_THRESHOLD` (or an N-binary file of any size) into `bytes` with
/// the GIL released (open, fstat, one read of exactly the file's length, close) and returns
/// its format (the `format` option, else the magic line, else the extension); `None` for a
/// large file of another format, which `decode_mapped` decodes from a memory map.
fn load_bytes(
    py: Python<'_>,
    path: &Path,
    o: &Opts,
    bytes: &mut Vec<u8>,
) -> PyResult<Option<Format>> {
    let res = py.detach(|| -> Result<Option<Format>, EvError> {
        use std::io::Read;
        let io = |source| EvError::Io { offset: 0, source };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut format = o.read.format;
        if len >= nmoco_events::MMAP_THRESHOLD {
            let f = match format {
                Some(f) => f,
                None => nmoco_events::sniff_file(path)?,
            };
            if f != Format::NBin {
                return Ok(None);
            }
            format = Some(f);
        }
        let oom = |what: String| io(std::io::Error::new(std::io::ErrorKind::OutOfMemory, what));
        let len = usize::try_from(len).map_err(|_| oom(format!("file of {len} bytes")))?;
        // One read of exactly the length fstat gave (a file that grew since is read up to it;
        // one that shrank is an UnexpectedEof error). Stale bytes of the recycled buffer are
        // all overwritten.
        if bytes.len() < len {
            bytes
                .try_reserve_exact(len - bytes.len())
                .map_err(|e| oom(e.to_string()))?;
            bytes.resize(len, 0);
        }
        bytes.truncate(len);
        let mut file = file;
        file.read_exact(bytes).map_err(io)?;
        Ok(Some(match format {
            Some(f) => f,
            None => resolve_format(bytes, Some(path))?,
        }))
    });
    res.map_err(|e| ev_err(py, e, Some(path)))
}

/// Decodes bytes loaded by `load_bytes` into `rec` (GIL released for large inputs).
fn decode_loaded(
    py: Python<'_>,
    path: &Path,
    bytes: &[u8],
    format: Format,
    o: &Opts,
    rec: &mut Recording,
) -> PyResult<()> {
    let res = if bytes.len() >= DETACH_BYTES {
        py.detach(|| nmoco_events::decode_into(bytes, format, &o.read, rec))
    } else {
        nmoco_events::decode_into(bytes, format, &o.read, rec)
    };
    res.map_err(|e| ev_err(py, e, Some(path)))
}

/// Decodes a large file with the crate's memory-mapped reader (GIL released).
fn decode_mapped(py: Python<'_>, path: &Path, o: &Opts, rec: &mut Recording) -> PyResult<Format> {
    let res = py.detach(|| -> Result<Format, EvError> {
        let format = match o.read.format {
            Some(f) => f,
            None => nmoco_events::sniff_file(path)?,
        };
        let opts = ReadOptions {
            format: Some(format),
            ..o.read.clone()
        };
        *rec = nmoco_events::read_file_with(path, &opts)?;
        Ok(format)
    });
    res.map_err(|e| ev_err(py, e, Some(path)))
}

/// Decodes a whole file into `rec` and returns its format: small files are read once (format
/// sniffed from those bytes), larger ones memory-mapped (`load_bytes`).
fn decode_file_into(
    py: Python<'_>,
    path: &Path,
    o: &Opts,
    rec: &mut Recording,
    bytes: &mut Vec<u8>,
) -> PyResult<Format> {
    let format = match load_bytes(py, path, o, bytes)? {
        Some(format) => {
            decode_loaded(py, path, bytes, format, o, rec)?;
            format
        }
        None => decode_mapped(py, path, o, rec)?,
    };
    if o.flip {
        apply_flip(&mut rec.events, format, rec.sensor)?;
    }
    Ok(format)
}

/// A fresh, C-contiguous, writable structured array of `n` events (tonic's dtype), allocated by
/// numpy through its C API (no Python-level calls), and its data as a byte slice of `n · 13`
/// bytes. The slice stays valid while the array lives and is neither resized nor shared.
fn new_struct_array<'py>(
    py: Python<'py>,
    n: usize,
) -> PyResult<(Bound<'py, PyAny>, &'py mut [u8])> {
    use numpy::npyffi::{NpyTypes, PY_ARRAY_API, PyArray_Descr, npy_intp};
    let dtype = event_dtype(py)?;
    let bytes = n
        .checked_mul(REC)
        .filter(|&b| npy_intp::try_from(b).is_ok())
        .ok_or_else(|| pyo3::exceptions::PyMemoryError::new_err(format!("{n} events")))?;
    let mut dims = [n as npy_intp];
    // SAFETY: `dtype` is a numpy dtype object (a `PyArray_Descr`); `PyArray_NewFromDescr`
    // steals one reference to it, hence the increment. One dimension, default (C) strides,
    // numpy-allocated data; a NULL result carries a Python exception (e.g. MemoryError).
    let arr = unsafe {
        pyo3::ffi::Py_INCREF(dtype.as_ptr());
        let ptr = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            numpy::npyffi::get_type_object(py, NpyTypes::PyArray_Type),
            dtype.as_ptr().cast::<PyArray_Descr>(),
            1,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
        );
        Bound::from_owned_ptr_or_err(py, ptr)?
    };
    // SAFETY: a fresh C-contiguous array of `n` records of REC bytes (the dtype's itemsize,
    // checked by `event_dtype`) owns `bytes` bytes at `data`; nothing else refers to it yet.
    let out = unsafe {
        let data = (*arr.as_ptr().cast::<numpy::npyffi::PyArrayObject>())
            .fields
            .data;
        if bytes == 0 {
            &mut []
        } else {
            std::slice::from_raw_parts_mut(data.cast::<u8>(), bytes)
        }
    };
    Ok((arr, out))
}

/// Shrinks a fresh array from `new_struct_array` to its first `n` events (numpy's
/// `PyArray_Resize`: a `realloc`, which shrinks in place).
fn shrink_struct_array(py: Python<'_>, arr: &Bound<'_, PyAny>, n: usize) -> PyResult<()> {
    use numpy::npyffi::{NPY_ORDER, PY_ARRAY_API, PyArray_Dims, npy_intp};
    let mut dims = [n as npy_intp];
    let mut shape = PyArray_Dims {
        ptr: dims.as_mut_ptr(),
        len: 1,
    };
    // SAFETY: `arr` is a one-dimensional numpy array that owns its data and has no views
    // (refcheck off is sound: no other reference exists yet); the result is a new reference
    // to None or NULL with an exception set.
    unsafe {
        let r = PY_ARRAY_API.PyArray_Resize(
            py,
            arr.as_ptr().cast(),
            &mut shape,
            0,
            NPY_ORDER::NPY_CORDER,
        );
        Bound::from_owned_ptr_or_err(py, r)?;
    }
    Ok(())
}

/// Interleaves the columns into a fresh structured array (tonic's field names and dtypes).
fn to_struct<'py>(py: Python<'py>, ev: &Events) -> PyResult<Bound<'py, PyAny>> {
    let (arr, out) = new_struct_array(py, ev.t.len())?;
    let cols = ev.x.iter().zip(&ev.y).zip(ev.t.iter().zip(&ev.on));
    for (rec, ((&x, &y), (&t, &on))) in out.chunks_exact_mut(REC).zip(cols) {
        let Ok(rec) = <&mut [u8; REC]>::try_from(rec) else {
            continue; // chunks_exact_mut yields exactly REC bytes
        };
        rec[OFF_X..OFF_X + 2].copy_from_slice(&(x as i16).to_le_bytes());
        rec[OFF_Y..OFF_Y + 2].copy_from_slice(&(y as i16).to_le_bytes());
        rec[OFF_T..OFF_T + 8].copy_from_slice(&t.to_le_bytes());
        rec[OFF_P] = on as u8;
    }
    Ok(arr)
}

/// Files (and byte strings) from this size up are decoded with the GIL released.
const DETACH_BYTES: usize = 256 << 10;

/// N-binary bytes straight into a structured array (`nbin::decode_tonic_records`: one pass,
/// no columns, no interleaving copy) → `(array, n_events, skipped)`.
fn nbin_struct<'py>(
    py: Python<'py>,
    data: &[u8],
    opts: &ReadOptions,
    path: Option<&Path>,
) -> PyResult<(Bound<'py, PyAny>, usize, nmoco_events::Skipped)> {
    let cap = data.len() / nmoco_events::nbin::RECORD;
    let (arr, out) = new_struct_array(py, cap)?;
    let mut skipped = nmoco_events::Skipped::new();
    let res = if data.len() >= DETACH_BYTES {
        py.detach(|| nmoco_events::nbin::decode_tonic_records(data, opts, out, &mut skipped))
    } else {
        nmoco_events::nbin::decode_tonic_records(data, opts, out, &mut skipped)
    };
    let n = res.map_err(|e| ev_err(py, e, path))?;
    if n < cap {
        shrink_struct_array(py, &arr, n)?;
    }
    Ok((arr, n, skipped))
}

/// The four columns as separate arrays that own the decoder's buffers (no copy for `t` and
/// `p`; `x`/`y` reinterpret `u16` as `int16` in place, the bit pattern AEDAT 4 stores).
fn to_columns(py: Python<'_>, ev: Events) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    let x: Vec<i16> = ev.x.into_iter().map(|v| v as i16).collect();
    let y: Vec<i16> = ev.y.into_iter().map(|v| v as i16).collect();
    d.set_item("t", PyArray1::from_vec(py, ev.t))?;
    d.set_item("x", PyArray1::from_vec(py, x))?;
    d.set_item("y", PyArray1::from_vec(py, y))?;
    d.set_item("p", PyArray1::from_vec(py, ev.on))?;
    Ok(d)
}

/// `read(path, format=None, **options)` → `(events, info)`; documented in `__init__.py`.
#[pyfunction]
#[pyo3(signature = (path, format=None, *, nbin_overflow="tonic", aedat2_layout="auto",
    dvs128_polarity=None, keep_special=false, keep_invalid=false, allow_partial_record=false,
    aedat4_stream=None, orientation="raw"))]
fn read<'py>(
    py: Python<'py>,
    path: PathBuf,
    format: Option<&str>,
    nbin_overflow: &str,
    aedat2_layout: &str,
    dvs128_polarity: Option<&str>,
    keep_special: bool,
    keep_invalid: bool,
    allow_partial_record: bool,
    aedat4_stream: Option<u32>,
    orientation: &str,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyDict>)> {
    let o = make_opts(
        format,
        nbin_overflow,
        aedat2_layout,
        dvs128_polarity,
        keep_special,
        keep_invalid,
        allow_partial_record,
        aedat4_stream,
        orientation,
    )?;
    with_scratch(|rec, bytes| {
        let format = match load_bytes(py, &path, &o, bytes)? {
            Some(Format::NBin) if !o.flip => {
                // One pass from the file's bytes into the array tonic's reader returns.
                let (arr, n, skipped) = nbin_struct(py, bytes, &o.read, Some(&path))?;
                return Ok((arr, info_dict(py, Format::NBin, None, &skipped, n)?));
            }
            Some(format) => {
                decode_loaded(py, &path, bytes, format, &o, rec)?;
                format
            }
            None => decode_mapped(py, &path, &o, rec)?,
        };
        if o.flip {
            apply_flip(&mut rec.events, format, rec.sensor)?;
        }
        let info = info_dict(py, format, rec.sensor, &rec.skipped, rec.events.t.len())?;
        Ok((to_struct(py, &rec.events)?, info))
    })
}

/// `read_columns(path, format=None, **options)` → `(dict of t/x/y/p arrays, info)`.
#[pyfunction]
#[pyo3(signature = (path, format=None, *, nbin_overflow="tonic", aedat2_layout="auto",
    dvs128_polarity=None, keep_special=false, keep_invalid=false, allow_partial_record=false,
    aedat4_stream=None, orientation="raw"))]
fn read_columns<'py>(
    py: Python<'py>,
    path: PathBuf,
    format: Option<&str>,
    nbin_overflow: &str,
    aedat2_layout: &str,
    dvs128_polarity: Option<&str>,
    keep_special: bool,
    keep_invalid: bool,
    allow_partial_record: bool,
    aedat4_stream: Option<u32>,
    orientation: &str,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>)> {
    let o = make_opts(
        format,
        nbin_overflow,
        aedat2_layout,
        dvs128_polarity,
        keep_special,
        keep_invalid,
        allow_partial_record,
        aedat4_stream,
        orientation,
    )?;
    // The columns become the arrays' own memory, so they are decoded into fresh buffers.
    let mut rec = Recording::default();
    let format = decode_file_into(py, &path, &o, &mut rec, &mut Vec::new())?;
    let info = info_dict(py, format, rec.sensor, &rec.skipped, rec.events.t.len())?;
    Ok((to_columns(py, rec.events)?, info))
}

/// `decode_bytes(data, format=None, **options)`: like `read` for bytes in memory (format from
/// the magic line only).
#[pyfunction]
#[pyo3(signature = (data, format=None, *, nbin_overflow="tonic", aedat2_layout="auto",
    dvs128_polarity=None, keep_special=false, keep_invalid=false, allow_partial_record=false,
    aedat4_stream=None, orientation="raw"))]
fn decode_bytes<'py>(
    py: Python<'py>,
    data: &[u8],
    format: Option<&str>,
    nbin_overflow: &str,
    aedat2_layout: &str,
    dvs128_polarity: Option<&str>,
    keep_special: bool,
    keep_invalid: bool,
    allow_partial_record: bool,
    aedat4_stream: Option<u32>,
    orientation: &str,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyDict>)> {
    let o = make_opts(
        format,
        nbin_overflow,
        aedat2_layout,
        dvs128_polarity,
        keep_special,
        keep_invalid,
        allow_partial_record,
        aedat4_stream,
        orientation,
    )?;
    let format = match o.read.format {
        Some(f) => f,
        None => resolve_format(data, None).map_err(|e| ev_err(py, e, None))?,
    };
    let opts = ReadOptions {
        format: Some(format),
        ..o.read.clone()
    };
    if format == Format::NBin && !o.flip {
        let (arr, n, skipped) = nbin_struct(py, data, &opts, None)?;
        return Ok((arr, info_dict(py, format, None, &skipped, n)?));
    }
    with_scratch(|rec, _| {
        py.detach(|| nmoco_events::decode_into(data, format, &opts, rec))
            .map_err(|e| ev_err(py, e, None))?;
        if o.flip {
            apply_flip(&mut rec.events, format, rec.sensor)?;
        }
        let info = info_dict(py, format, rec.sensor, &rec.skipped, rec.events.t.len())?;
        Ok((to_struct(py, &rec.events)?, info))
    })
}

// ---------------------------------------------------------------------------------------------
// Streaming

/// Iterator over a file in chunks of at most `n` events (bounded memory); returned by
/// `iter_chunks`. Attributes `format`, `sensor_size` and `skipped` describe what was read so
/// far.
#[pyclass(module = "nmoco_events")]
struct ChunkIter {
    reader: Mutex<Option<Reader<std::fs::File>>>,
    path: PathBuf,
    format: Format,
    flip: bool,
    columns: bool,
    chunk: usize,
}

#[pymethods]
impl ChunkIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let mut guard = self.reader.try_lock().map_err(|_| {
            PyRuntimeError::new_err("this iterator is being advanced by another thread")
        })?;
        let Some(reader) = guard.as_mut() else {
            return Ok(None);
        };
        let mut ev = Events::with_capacity(self.chunk.min(1 << 20));
        let res = py.detach(|| reader.read_chunk(&mut ev));
        match res {
            // The reader stays (it keeps answering 0), so `sensor_size` and `skipped` remain
            // readable after the end.
            Ok(0) => Ok(None),
            Ok(_) => {
                if self.flip {
                    apply_flip(&mut ev, self.format, reader.sensor())?;
                }
                if self.columns {
                    Ok(Some(to_columns(py, ev)?.into_any()))
                } else {
                    Ok(Some(to_struct(py, &ev)?))
                }
            }
            Err(e) => {
                *guard = None;
                Err(ev_err(py, e, Some(&self.path)))
            }
        }
    }

    #[getter]
    fn format(&self) -> &'static str {
        self.format.name()
    }

    /// Records or packets skipped so far, by kind.
    #[getter]
    fn skipped<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let g = self
            .reader
            .try_lock()
            .map_err(|_| PyRuntimeError::new_err("iterator busy"))?;
        let d = PyDict::new(py);
        if let Some(r) = g.as_ref() {
            for (k, v) in r.skipped() {
                d.set_item(k, v)?;
            }
        }
        Ok(d)
    }

    #[getter]
    fn sensor_size(&self) -> PyResult<Option<(usize, usize, usize)>> {
        let g = self
            .reader
            .try_lock()
            .map_err(|_| PyRuntimeError::new_err("iterator busy"))?;
        Ok(g.as_ref()
            .and_then(|r| r.sensor())
            .map(|s| (s.width as usize, s.height as usize, 2)))
    }
}

/// `iter_chunks(path, n=65536, format=None, *, columns=False, **options)`.
#[pyfunction]
#[pyo3(signature = (path, n=65536, format=None, *, columns=false, nbin_overflow="tonic",
    aedat2_layout="auto", dvs128_polarity=None, keep_special=false, keep_invalid=false,
    allow_partial_record=false, aedat4_stream=None, orientation="raw"))]
fn iter_chunks(
    py: Python<'_>,
    path: PathBuf,
    n: usize,
    format: Option<&str>,
    columns: bool,
    nbin_overflow: &str,
    aedat2_layout: &str,
    dvs128_polarity: Option<&str>,
    keep_special: bool,
    keep_invalid: bool,
    allow_partial_record: bool,
    aedat4_stream: Option<u32>,
    orientation: &str,
) -> PyResult<ChunkIter> {
    if n == 0 {
        return Err(bad("n (events per chunk) must be at least 1"));
    }
    let o = make_opts(
        format,
        nbin_overflow,
        aedat2_layout,
        dvs128_polarity,
        keep_special,
        keep_invalid,
        allow_partial_record,
        aedat4_stream,
        orientation,
    )?;
    let format = match o.read.format {
        Some(f) => f,
        None => py
            .detach(|| nmoco_events::sniff_file(&path))
            .map_err(|e| ev_err(py, e, Some(&path)))?,
    };
    let opts = ReadOptions {
        format: Some(format),
        chunk_events: n,
        ..o.read.clone()
    };
    let file = std::fs::File::open(&path)
        .map_err(|source| ev_err(py, EvError::Io { offset: 0, source }, Some(&path)))?;
    let reader = py
        .detach(|| Reader::new(file, &opts))
        .map_err(|e| ev_err(py, e, Some(&path)))?;
    Ok(ChunkIter {
        reader: Mutex::new(Some(reader)),
        path,
        format,
        flip: o.flip,
        columns,
        chunk: n,
    })
}

// ---------------------------------------------------------------------------------------------
// Writing

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
fn events_from(
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

fn sensor_from(sensor: Option<(u64, u64)>) -> PyResult<Option<SensorSize>> {
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
fn _write(
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

// ---------------------------------------------------------------------------------------------
// Frames

/// SpikingJelly's `integrate_events_by_fixed_duration` frame assignment: `t0 = min(t)`,
/// `T = ceil((t[N-1] − t0) / d)` (at least 1), event → `min((t − t0) // d, T − 1)`. On
/// time-sorted input this is SpikingJelly's `searchsorted` split exactly.
fn duration_groups(ev: &Events, d: i64) -> PyResult<Vec<Events>> {
    let Some(&t0) = ev.t.iter().min() else {
        return Err(bad(
            "split_by='duration' without n_frames needs at least one event",
        ));
    };
    let last = ev.t[ev.t.len() - 1];
    let span = i128::from(last) - i128::from(t0);
    let d128 = i128::from(d);
    let t_frames = ((span + d128 - 1) / d128).max(1);
    if t_frames > 1 << 20 {
        return Err(bad(format!(
            "split_by='duration' would make {t_frames} frames (span {span} us, duration {d} us)"
        )));
    }
    let t_frames = t_frames as usize;
    if ev.t.windows(2).all(|w| w[0] <= w[1]) {
        // Time-sorted (the usual case): each frame is a contiguous range, found by binary
        // search; no per-event division (64-bit `idiv` costs tens of cycles).
        let mut starts = vec![0usize];
        for k in 1..t_frames {
            let edge = i128::from(t0) + k as i128 * d128;
            starts.push(ev.t.partition_point(|&t| i128::from(t) < edge));
        }
        starts.push(ev.t.len());
        return Ok(starts.windows(2).map(|w| ev.slice(w[0]..w[1])).collect());
    }
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
fn _to_frames<'py>(
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
    if split_by == "number"
        && duration.is_none()
        && !binarize
        && clip.is_none()
        && !log_scale
        && let Ok(Some(sensor)) = sensor_from(Some(sensor))
        && size == (sensor.height as usize, sensor.width as usize)
        && let Some(out) =
            frames_by_number_direct(py, [&t, &x, &y, &p], n_frames.unwrap_or(16), sensor)?
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

// ---------------------------------------------------------------------------------------------
// Frames: the direct path for SpikingJelly's fixed frame number

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

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `index_block` with the fastest code the CPU runs.
#[inline(always)]
fn index_block_any<T: Lane>(
    avx2: bool,
    xs: &[T],
    ys: &[T],
    on: &[u8],
    w: u32,
    hw: u32,
    idx: &mut [u32],
) -> (u32, u32) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` comes from `has_avx2()`.
        return unsafe { index_block_avx2(xs, ys, on, w, hw, idx) };
    }
    let _ = avx2;
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

    /// `out[k] = (self[start + k] != 0)` (in bounds: callers stay below `len()`).
    fn on_flags(self, avx2: bool, start: usize, out: &mut [u8]) {
        let r = start..start + out.len();
        macro_rules! arm {
            ($($v:ident),*) => {
                match self {
                    $(Col::$v(s) => on_flags_any(avx2, &s[r], out),)*
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

#[inline(always)]
fn on_flags_any<T: Lane>(avx2: bool, s: &[T], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` comes from `has_avx2()`.
        return unsafe { on_flags_avx2(s, out) };
    }
    let _ = avx2;
    on_flags(s, out)
}

/// A per-pixel counter: `u8` (the plane of a 128×128 sensor then fits in L1; a counter that
/// wraps is recorded and adds 256 at the flush) or `u32` (below 2^24, so exact in f32).
trait Count: Copy + Default {
    /// Adds one; true when the counter wrapped to zero.
    fn inc(&mut self) -> bool;
    fn f32(self) -> f32;
}
impl Count for u8 {
    #[inline(always)]
    fn inc(&mut self) -> bool {
        *self = self.wrapping_add(1);
        *self == 0
    }
    #[inline(always)]
    fn f32(self) -> f32 {
        f32::from(self)
    }
}
impl Count for u32 {
    #[inline(always)]
    fn inc(&mut self) -> bool {
        *self += 1; // fewer than 2^24 events
        false
    }
    #[inline(always)]
    fn f32(self) -> f32 {
        self as i32 as f32
    }
}

/// Writes one frame from its counts and zeroes the counts.
#[inline(always)]
fn flush_counts<C: Count>(frame: &mut [f32], counts: &mut [C]) {
    for (o, c) in frame.iter_mut().zip(counts.iter_mut()) {
        *o = c.f32();
        *c = C::default();
    }
}

/// `flush_counts` compiled for AVX2.
///
/// # Safety
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn flush_counts_avx2<C: Count>(frame: &mut [f32], counts: &mut [C]) {
    flush_counts(frame, counts)
}

fn flush_counts_any<C: Count>(avx2: bool, frame: &mut [f32], counts: &mut [C]) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` comes from `has_avx2()`.
        return unsafe { flush_counts_avx2(frame, counts) };
    }
    let _ = avx2;
    flush_counts(frame, counts)
}

/// Sensor geometry and CPU features for `count_frames`.
struct Geometry {
    w: usize,
    h: usize,
    w32: u32,
    hw32: u32,
    avx2: bool,
}

/// The frames of `frames_by_number_direct`: `buf` holds `bounds.len()` frames of
/// `counts.len()` = 2·H·W floats; `counts` is all zero. False when an event is off the sensor.
fn count_frames<C: Count>(
    g: &Geometry,
    buf: &mut [f32],
    bounds: &[std::ops::Range<usize>],
    counts: &mut [C],
    [xc, yc, pc]: [Col<'_>; 3],
) -> bool {
    let mut on = [0u8; FRAME_BLOCK];
    let mut idx = [0u32; FRAME_BLOCK];
    // Pixels whose 8-bit counter wrapped (once per 256 events there), in this frame.
    let mut wrapped: Vec<u32> = Vec::new();
    for (frame, r) in buf.chunks_exact_mut(counts.len()).zip(bounds) {
        let mut s = r.start;
        while s < r.end {
            let e = (s + FRAME_BLOCK).min(r.end);
            let (on, idx) = (&mut on[..e - s], &mut idx[..e - s]);
            pc.on_flags(g.avx2, s, on);
            macro_rules! same {
                ($($v:ident),*) => {
                    match (xc, yc) {
                        $((Col::$v(xs), Col::$v(ys)) => {
                            index_block_any(g.avx2, &xs[s..e], &ys[s..e], on, g.w32, g.hw32, idx)
                        })*
                        _ => return false,
                    }
                };
            }
            let (mx, my) = same!(B, I8, U8, I16, U16, I32, U32, I64, U64);
            if mx as usize >= g.w || my as usize >= g.h {
                return false;
            }
            for &k in idx.iter() {
                // k < 2·H·W (x < W, y < H checked above), so this never skips.
                if let Some(c) = counts.get_mut(k as usize)
                    && c.inc()
                {
                    wrapped.push(k);
                }
            }
            s = e;
        }
        flush_counts_any(g.avx2, frame, counts);
        for &k in &wrapped {
            if let Some(v) = frame.get_mut(k as usize) {
                *v += 256.0; // exact: the frame has fewer than 2^24 events
            }
        }
        wrapped.clear();
    }
    true
}

/// Events per block of the direct path: their pixel indices stay in L1.
const FRAME_BLOCK: usize = 2048;

/// SpikingJelly's `integrate_events_by_fixed_frames_number(.., 'number', ..)` on a canvas of the
/// sensor's own size without post-processing, counted straight from the numpy columns in
/// their own dtypes (x and y of one dtype): per block of events one pass turns p into ON
/// flags, a second range-checks x and y and adds one at `on·H·W + y·W + x`; no converted copy
/// of the columns.
/// `None` when the inputs are outside this case (any event off the sensor, x and y of different
/// dtypes, a dtype or layout the general path must judge, 2^24 or more events); the general path then decides, and
/// produces the same frames or the same error (its twin: pytests compare both paths).
/// Runs with the GIL held: the columns are borrowed from numpy arrays other threads could
/// otherwise write meanwhile.
fn frames_by_number_direct<'py>(
    py: Python<'py>,
    cols: [&Bound<'_, PyAny>; 4],
    t_frames: usize,
    sensor: SensorSize,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let [t, x, y, p] = cols;
    let (w, h) = (sensor.width as usize, sensor.height as usize);
    let cfg = FrameConfig {
        t: t_frames,
        slicing: Slicing::EventCount,
        height: h,
        width: w,
        resize: Resize::None,
        ..FrameConfig::default()
    };
    if cfg.validate().is_err() || w == 0 || h == 0 {
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
    let plane = 2 * h * w;
    if u32::try_from(plane).is_err() {
        return Ok(None);
    }
    let np = py.import("numpy")?;
    let out = np.call_method1("empty", ((t_frames, 2usize, h, w), np.getattr("float32")?))?;
    let arr = out.cast::<numpy::PyArray4<f32>>()?;
    let mut rw: PyReadwriteArray4<'_, f32> = arr.try_readwrite()?;
    let buf = rw
        .as_slice_mut()
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    let geo = Geometry {
        w,
        h,
        w32: w as u32,        // 2·H·W < 2^32 was checked
        hw32: (h * w) as u32, //
        avx2: has_avx2(),
    };
    let bounds = nmoco_frames::event_count_bounds(n, t_frames);
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
    Ok(Some(out))
}

thread_local! {
    /// Per-pixel counts of one frame, reused across `to_frames` calls on one thread.
    static FRAME_COUNTS: std::cell::RefCell<(Vec<u8>, Vec<u32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    /// Event columns reused across `to_frames` calls on one thread (see `SCRATCH`).
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

// ---------------------------------------------------------------------------------------------

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("DecodeError", py.get_type::<DecodeError>())?;
    m.add("EVENT_DTYPE", event_dtype(py)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    let formats = PyList::new(py, Format::ALL.iter().map(|f| f.name()))?;
    m.add("FORMATS", PyTuple::new(py, formats)?)?;
    m.add_class::<ChunkIter>()?;
    m.add_function(wrap_pyfunction!(read, m)?)?;
    m.add_function(wrap_pyfunction!(read_columns, m)?)?;
    m.add_function(wrap_pyfunction!(decode_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(iter_chunks, m)?)?;
    m.add_function(wrap_pyfunction!(_write, m)?)?;
    m.add_function(wrap_pyfunction!(_to_frames, m)?)?;
    Ok(())
}
