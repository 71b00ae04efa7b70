//! Python bindings for `nmoco-events` and `nmoco-frames`: the native half (`nmoco_events._native`)
//! of the `nmoco_events` wheel. The pure-Python half (`python/nmoco_events/__init__.py`) turns
//! user inputs (structured arrays, dicts, `sensor_size` tuples) into the plain contiguous
//! columns these functions take, and documents the public API.
//!
//! Every failure is a Python exception: decode errors become `DecodeError` (a `ValueError`
//! subclass carrying `file`, `offset`, `value` and `kind`), I/O errors the matching `OSError`
//! subclass, bad arguments `ValueError`. Nothing here unwraps on input-dependent data, and
//! the decoders themselves never panic (an nmoco-events invariant).

mod chunks;
mod decode;
mod errors;
mod frames;
mod frames_count;
mod frames_direct;
mod options;
mod structured;
mod write;

use crate::chunks::{ChunkIter, iter_chunks};
use crate::decode::{decode_bytes, read, read_columns};
use crate::errors::DecodeError;
use crate::frames::_to_frames;
use crate::structured::event_dtype;
use crate::write::_write;
use nmoco_events::Format;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

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
