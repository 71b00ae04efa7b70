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
    let d = PyDict::new(py);
    d.set_item("format", format.name())?;
    d.set_item(
        "sensor_size",
        sensor.map(|s| (s.width as usize, s.height as usize, 2usize)),
    )?;
    let sk = PyDict::new(py);
    for (k, v) in skipped {
        sk.set_item(k, v)?;
    }
    d.set_item("skipped", sk)?;
    d.set_item("n_events", n)?;
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

/// Decodes a whole file into `rec` with the GIL released and returns its format. Small files
/// are read once (format sniffed from those bytes); from `MMAP_THRESHOLD` up the crate's
/// memory-mapped reader is used.
fn decode_file_into(
    py: Python<'_>,
    path: &Path,
    o: &Opts,
    rec: &mut Recording,
    bytes: &mut Vec<u8>,
) -> PyResult<Format> {
    let res = py.detach(|| -> Result<Format, EvError> {
        use std::io::Read;
        let io = |source| EvError::Io { offset: 0, source };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len >= nmoco_events::MMAP_THRESHOLD {
            drop(file);
            let format = match o.read.format {
                Some(f) => f,
                None => nmoco_events::sniff_file(path)?,
            };
            let opts = ReadOptions {
                format: Some(format),
                ..o.read.clone()
            };
            *rec = nmoco_events::read_file_with(path, &opts)?;
            return Ok(format);
        }
        bytes.clear();
        file.read_to_end(bytes).map_err(io)?;
        let format = match o.read.format {
            Some(f) => f,
            None => resolve_format(bytes, Some(path))?,
        };
        nmoco_events::decode_into(bytes, format, &o.read, rec)?;
        Ok(format)
    });
    let format = res.map_err(|e| ev_err(py, e, Some(path)))?;
    if o.flip {
        apply_flip(&mut rec.events, format, rec.sensor)?;
    }
    Ok(format)
}

/// Interleaves the columns into a fresh structured array (tonic's field names and dtypes).
fn to_struct<'py>(py: Python<'py>, ev: &Events) -> PyResult<Bound<'py, PyAny>> {
    let np = py.import("numpy")?;
    let arr = np.call_method1("empty", (ev.t.len(), event_dtype(py)?))?;
    let raw = arr.call_method1("view", (np.getattr("uint8")?,))?;
    let raw = raw.cast::<PyArray1<u8>>()?;
    let mut rw = raw.try_readwrite()?;
    let out = rw
        .as_slice_mut()
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    if out.len() != ev.t.len() * REC {
        return Err(PyRuntimeError::new_err(
            "structured array has an unexpected size",
        ));
    }
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
        let format = decode_file_into(py, &path, &o, rec, bytes)?;
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
