//! Whole-file and byte-string decoding: `read`, `read_columns`, `decode_bytes`, over per-thread
//! scratch buffers.

use std::path::{Path, PathBuf};

use crate::errors::ev_err;
use crate::options::{Opts, apply_flip, info_dict, make_opts};
use crate::structured::{new_struct_array, shrink_struct_array, to_columns, to_struct};
use nmoco_events::{Error as EvError, Format, ReadOptions, Recording};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Decode buffers reused across calls on one thread (`decode_into` keeps the columns'
/// allocations): the structured-array readers copy out of them, so a call touches fresh memory
/// only for the array it returns. Buffers above `KEEP_EVENTS` events are not kept.
pub(crate) const KEEP_EVENTS: usize = 1 << 22;

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

/// `read(path, format=None, **options)` → `(events, info)`; documented in `__init__.py`.
#[pyfunction]
#[pyo3(signature = (path, format=None, *, nbin_overflow="tonic", aedat2_layout="auto",
    dvs128_polarity=None, keep_special=false, keep_invalid=false, allow_partial_record=false,
    aedat4_stream=None, orientation="raw"))]
pub(crate) fn read<'py>(
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
pub(crate) fn read_columns<'py>(
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
    // The columns become the arrays' own memory, so they are decoded into fresh buffers; the
    // file's bytes go to this thread's reused buffer (a fresh one per call would be zeroed and,
    // freed with the columns, make the allocator hand memory back and fault it in again).
    let mut rec = Recording::default();
    let format = with_scratch(|_, bytes| decode_file_into(py, &path, &o, &mut rec, bytes))?;
    let info = info_dict(py, format, rec.sensor, &rec.skipped, rec.events.t.len())?;
    Ok((to_columns(py, rec.events)?, info))
}

/// `decode_bytes(data, format=None, **options)`: like `read` for bytes in memory (format from
/// the magic line only).
#[pyfunction]
#[pyo3(signature = (data, format=None, *, nbin_overflow="tonic", aedat2_layout="auto",
    dvs128_polarity=None, keep_special=false, keep_invalid=false, allow_partial_record=false,
    aedat4_stream=None, orientation="raw"))]
pub(crate) fn decode_bytes<'py>(
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
