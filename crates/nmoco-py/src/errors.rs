//! Python exceptions for decode, I/O and argument errors.

use std::path::Path;

use nmoco_events::Error as EvError;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
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

/// Converts a decoder/writer error to a Python exception. `path` names the file when the error
/// does not already carry it (the streaming reader's errors).
pub(crate) fn ev_err(py: Python<'_>, e: EvError, path: Option<&Path>) -> PyErr {
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

pub(crate) fn bad(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}
