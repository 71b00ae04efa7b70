//! tonic's structured event array: the dtype, allocation through numpy's C API, interleaving
//! the decoded columns into it, and the column dict of `read_columns`.

use nmoco_events::Events;
use numpy::PyArray1;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

/// Record layout of the structured event array: tonic's `events_struct`
/// (`x` int16, `y` int16, `t` int64, `p` bool), packed, 13 bytes.
const REC: usize = 13;
const OFF_X: usize = 0;
const OFF_Y: usize = 2;
const OFF_T: usize = 4;
const OFF_P: usize = 12;

static EVENT_DTYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static VOID_DTYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// numpy's unstructured `V13` dtype: same size as the event dtype, no fields.
fn void_dtype(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    VOID_DTYPE
        .get_or_try_init(py, || {
            let dt = py
                .import("numpy")?
                .call_method1("dtype", (format!("V{REC}"),))?;
            Ok(dt.unbind())
        })
        .map(|d| d.bind(py))
}

/// The structured dtype, built once and checked against the offsets the interleaving loop
/// writes to.
pub(crate) fn event_dtype(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
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

/// A fresh, C-contiguous, writable structured array of `n` events (tonic's dtype), allocated by
/// numpy through its C API (no Python-level calls), and its data as a byte slice of `n · 13`
/// bytes. The slice stays valid while the array lives and is neither resized nor shared.
///
/// The array is created with the unstructured `V13` dtype and then given the event dtype (what
/// numpy's own `dtype` setter does for an equal itemsize): creating it with the structured
/// dtype directly makes numpy build and free a per-field zero-fill plan on every call (a few
/// hundred ns, a tenth of an N-MNIST-sized `read`), only to find that no field needs one.
pub(crate) fn new_struct_array<'py>(
    py: Python<'py>,
    n: usize,
) -> PyResult<(Bound<'py, PyAny>, &'py mut [u8])> {
    use numpy::npyffi::{NpyTypes, PY_ARRAY_API, PyArray_Descr, PyArrayObject, npy_intp};
    let dtype = event_dtype(py)?;
    let void = void_dtype(py)?;
    let bytes = n
        .checked_mul(REC)
        .filter(|&b| npy_intp::try_from(b).is_ok())
        .ok_or_else(|| pyo3::exceptions::PyMemoryError::new_err(format!("{n} events")))?;
    let mut dims = [n as npy_intp];
    // SAFETY: `void` is a numpy dtype object (a `PyArray_Descr`); `PyArray_NewFromDescr`
    // steals one reference to it, hence the increment. One dimension, default (C) strides,
    // numpy-allocated data; a NULL result carries a Python exception (e.g. MemoryError).
    let arr = unsafe {
        pyo3::ffi::Py_INCREF(void.as_ptr());
        let ptr = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            numpy::npyffi::get_type_object(py, NpyTypes::PyArray_Type),
            void.as_ptr().cast::<PyArray_Descr>(),
            1,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
        );
        Bound::from_owned_ptr_or_err(py, ptr)?
    };
    // SAFETY: `arr` is a fresh array that nothing else refers to yet; its descriptor is
    // replaced by the event dtype, which has the same itemsize (REC, checked by `event_dtype`),
    // alignment 1 and no object fields, so the data, strides and flags stay valid. The array
    // holds one reference to its descriptor: the new one is incremented, the old one released.
    // Then: a C-contiguous array of `n` records of REC bytes owns `bytes` bytes at `data`.
    let out = unsafe {
        let fields = arr.as_ptr().cast::<PyArrayObject>();
        pyo3::ffi::Py_INCREF(dtype.as_ptr());
        let old = std::mem::replace(
            &mut (*fields).fields.descr,
            dtype.as_ptr().cast::<PyArray_Descr>(),
        );
        pyo3::ffi::Py_DECREF(old.cast::<pyo3::ffi::PyObject>());
        let data = (*fields).fields.data;
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
pub(crate) fn shrink_struct_array(
    py: Python<'_>,
    arr: &Bound<'_, PyAny>,
    n: usize,
) -> PyResult<()> {
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
pub(crate) fn to_struct<'py>(py: Python<'py>, ev: &Events) -> PyResult<Bound<'py, PyAny>> {
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

/// The four columns as separate arrays that own the decoder's buffers (no copy for `t` and
/// `p`; `x`/`y` reinterpret `u16` as `int16` in place, the bit pattern AEDAT 4 stores).
pub(crate) fn to_columns(py: Python<'_>, ev: Events) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    let x: Vec<i16> = ev.x.into_iter().map(|v| v as i16).collect();
    let y: Vec<i16> = ev.y.into_iter().map(|v| v as i16).collect();
    d.set_item("t", PyArray1::from_vec(py, ev.t))?;
    d.set_item("x", PyArray1::from_vec(py, x))?;
    d.set_item("y", PyArray1::from_vec(py, y))?;
    d.set_item("p", PyArray1::from_vec(py, ev.on))?;
    Ok(d)
}
