//! Streaming: `iter_chunks` and its `ChunkIter`.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::errors::{bad, ev_err};
use crate::options::{apply_flip, make_opts};
use crate::structured::{to_columns, to_struct};
use nmoco_events::{Error as EvError, Events, Format, ReadOptions, Reader};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Iterator over a file in chunks of at most `n` events (bounded memory); returned by
/// `iter_chunks`. Attributes `format`, `sensor_size` and `skipped` describe what was read so
/// far.
#[pyclass(module = "nmoco_events")]
pub(crate) struct ChunkIter {
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
pub(crate) fn iter_chunks(
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
