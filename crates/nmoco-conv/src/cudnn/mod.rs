//! `cuda` feature only: cuDNN forward, backward-data and backward-filter convolutions behind the
//! custom ops of `conv.rs`, through cudarc's cuDNN bindings (its `result` layer, with `sys` for
//! the calls `result` lacks: exhaustive search, output-dimension check, bias add).
//!
//! State is per thread and per device (a cuDNN handle is not thread-safe): the handle bound to
//! candle's stream of the device, one plan per [`PlanKey`] (tensor, filter and convolution
//! descriptors; one convolution descriptor per direction, carrying the math mode of the
//! algorithm chosen for it), the chosen algorithms (searched once per key and direction), and
//! one workspace buffer that only grows. Inputs and outputs are NCHW-contiguous in the tensor's
//! dtype (f32, bf16, f16); the maths accumulates in f32 (`CUDNN_DATA_FLOAT` compute type), with
//! TF32 for f32 tensors when [`crate::CudaConvConfig::conv_tf32`] allows it.

mod plan;

use std::ffi::c_void;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::CudaDType;
use candle_core::cuda_backend::cudarc::driver::{
    CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, ValidAsZeroBits,
};
use candle_core::{CudaStorage, DType, Layout, Result, Shape};
use cudarc::cudnn::result as cr;
use cudarc::cudnn::sys as cs;

use crate::cuda_config::{ConvDType, PlanKey, cuda_conv_config};
use crate::error::ConvError;
use crate::geom::ConvGeom;
use plan::{Plan, chosen, ck, ensure_workspace, with_state};

fn conv_dtype(op: &'static str, ds: &[DType]) -> Result<ConvDType> {
    match ConvDType::of(ds[0]) {
        Some(d) if ds.iter().all(|&x| x == ds[0]) => Ok(d),
        _ => Err(ConvError::DType {
            op,
            dtypes: ds.to_vec(),
        }
        .into()),
    }
}

fn offsets(op: &'static str, what: &'static str, l: &Layout) -> Result<(usize, usize)> {
    l.contiguous_offsets()
        .ok_or_else(|| ConvError::Storage { op, what }.into())
}

const ONE: f32 = 1.0;
const ZERO: f32 = 0.0;

fn scal(v: &f32) -> *const c_void {
    (v as *const f32).cast()
}

/// Which convolution to run.
#[derive(Clone, Copy)]
enum Dir {
    /// `(x, w[, b]) -> y`.
    Forward { bias: bool },
    /// `(dy, w) -> dx`.
    BackwardData,
    /// `(x, dy) -> dw`.
    BackwardFilter,
}

/// Runs one direction: `a`, `b` (and `c`, the bias) are the op's inputs in the order of [`Dir`].
fn run(
    op: &'static str,
    g: &ConvGeom,
    dir: Dir,
    a: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
    c: Option<(&CudaStorage, &Layout)>,
) -> Result<(CudaStorage, Shape)> {
    let mut dts = vec![a.0.dtype(), b.0.dtype()];
    dts.extend(c.map(|c| c.0.dtype()));
    let dt = conv_dtype(op, &dts)?;
    let cfg = cuda_conv_config()?;
    let key = PlanKey::new(op, g, dt, cfg.conv_tf32)?;
    let (out_len, shape) = match dir {
        Dir::Forward { .. } => (g.y_len(), Shape::from((g.n, g.c_out, g.oh, g.ow))),
        Dir::BackwardData => (g.x_len(), Shape::from((g.n, g.c_in, g.h, g.w))),
        Dir::BackwardFilter => {
            let len = g.c_out * (g.c_in / g.groups) * g.kh * g.kw;
            (len, Shape::from((g.c_out, g.c_in / g.groups, g.kh, g.kw)))
        }
    };
    let storage = match dt {
        ConvDType::F32 => run_t::<f32>(op, &key, dir, out_len, a, b, c)?,
        ConvDType::Bf16 => run_t::<half::bf16>(op, &key, dir, out_len, a, b, c)?,
        ConvDType::F16 => run_t::<half::f16>(op, &key, dir, out_len, a, b, c)?,
    };
    Ok((storage, shape))
}

fn run_t<T: CudaDType + DeviceRepr + ValidAsZeroBits>(
    op: &'static str,
    key: &PlanKey,
    dir: Dir,
    out_len: usize,
    a: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
    c: Option<(&CudaStorage, &Layout)>,
) -> Result<CudaStorage> {
    let dev = a.0.device().clone();
    let (a0, a1) = offsets(op, "first input", a.1)?;
    let (b0, b1) = offsets(op, "second input", b.1)?;
    let av = T::as_cuda_slice(a.0)?.slice(a0..a1);
    let bv = T::as_cuda_slice(b.0)?.slice(b0..b1);
    let empty = key.x.contains(&0) || key.y.contains(&0) || key.w.contains(&0);
    if empty {
        // Nothing to convolve (an empty batch or channel count): the result is zeros.
        return Ok(T::wrap_cuda_slice(
            dev.alloc_zeros::<T>(out_len.max(1))?,
            dev,
        ));
    }
    // SAFETY: every element is written by cuDNN (beta = 0) before it is read.
    let mut out = unsafe { dev.alloc::<T>(out_len)? };
    with_state(op, &dev, |st| {
        let handle = st.handle.0;
        let stream = st.stream.clone();
        let (conv, need) = chosen(op, key, handle, st.plan(op, key)?, dir)?;
        ensure_workspace(&mut st.workspace, &stream, need)?;
        let (ws_ptr, _ws_guard) = match (need, st.workspace.as_mut()) {
            (0, _) | (_, None) => (std::ptr::null_mut(), None),
            (_, Some(w)) => {
                let (p, g) = w.device_ptr_mut(&stream);
                (p as *mut c_void, Some(g))
            }
        };
        let (ap, _ga) = av.device_ptr(&stream);
        let (bp, _gb) = bv.device_ptr(&stream);
        let (op_ptr, _go) = out.device_ptr_mut(&stream);
        let (ap, bp, outp) = (
            ap as *const c_void,
            bp as *const c_void,
            op_ptr as *mut c_void,
        );
        let plan = st
            .plans
            .get(key)
            .ok_or_else(|| candle_core::Error::Msg(format!("{op}: cuDNN plan missing")))?;
        let call = Call {
            handle,
            conv,
            ws: ws_ptr,
            ws_len: need,
            a: ap,
            b: bp,
            out: outp,
        };
        // SAFETY: live handle and descriptors matching the buffers' dtype and dense NCHW shapes
        // (checked by `geometry` and the plan key); the workspace holds at least `need` bytes.
        unsafe { launch::<T>(op, plan, &call, dir, c, &stream) }
    })?;
    Ok(T::wrap_cuda_slice(out, dev))
}

/// Device pointers and descriptors of one cuDNN convolution call.
struct Call {
    handle: cs::cudnnHandle_t,
    conv: cs::cudnnConvolutionDescriptor_t,
    ws: *mut c_void,
    ws_len: usize,
    a: *const c_void,
    b: *const c_void,
    out: *mut c_void,
}

/// Runs `dir`'s convolution with the algorithm chosen on `plan` (and for a forward with a bias,
/// the bias add of `c`).
///
/// # Safety
/// `call` holds a live handle and convolution descriptor, device buffers matching `plan`'s
/// dtype and dense NCHW shapes, and a workspace of at least `call.ws_len` bytes.
unsafe fn launch<T: CudaDType>(
    op: &'static str,
    plan: &Plan,
    call: &Call,
    dir: Dir,
    c: Option<(&CudaStorage, &Layout)>,
    stream: &CudaStream,
) -> Result<()> {
    let (handle, conv, ws_ptr, need) = (call.handle, call.conv, call.ws, call.ws_len);
    let (ap, bp, outp) = (call.a, call.b, call.out);
    let (xd, wd, yd, bias_d) = (plan.x.0, plan.w.0, plan.y.0, plan.bias.0);
    let algo_of = |p: &Plan| {
        (
            p.fwd.as_ref().map(|c| c.algo),
            p.bwd_data.as_ref().map(|c| c.algo),
            p.bwd_filter.as_ref().map(|c| c.algo),
        )
    };
    let (fa, da, fla) = algo_of(plan);
    // SAFETY: the caller's contract.
    unsafe {
        match dir {
            Dir::Forward { bias } => {
                let algo = fa.ok_or_else(|| {
                    candle_core::Error::Msg(format!("{op}: no forward algorithm"))
                })?;
                ck(
                    op,
                    "cudnnConvolutionForward",
                    cr::convolution_forward(
                        handle,
                        scal(&ONE),
                        xd,
                        ap,
                        wd,
                        bp,
                        conv,
                        algo,
                        ws_ptr,
                        need,
                        scal(&ZERO),
                        yd,
                        outp,
                    ),
                )?;
                if bias {
                    let (c, cl) =
                        c.ok_or_else(|| candle_core::Error::Msg(format!("{op}: bias missing")))?;
                    let (c0, c1) = offsets(op, "bias", cl)?;
                    let cv = T::as_cuda_slice(c)?.slice(c0..c1);
                    let (cp, _gc) = cv.device_ptr(stream);
                    ck(
                        op,
                        "cudnnAddTensor",
                        cs::cudnnAddTensor(
                            handle,
                            scal(&ONE),
                            bias_d,
                            cp as *const c_void,
                            scal(&ONE),
                            yd,
                            outp,
                        )
                        .result(),
                    )?;
                }
            }
            Dir::BackwardData => {
                let algo = da.ok_or_else(|| {
                    candle_core::Error::Msg(format!("{op}: no backward-data algorithm"))
                })?;
                // a = dy, b = w
                ck(
                    op,
                    "cudnnConvolutionBackwardData",
                    cr::convolution_backward_data(
                        handle,
                        scal(&ONE),
                        wd,
                        bp,
                        yd,
                        ap,
                        conv,
                        algo,
                        ws_ptr,
                        need,
                        scal(&ZERO),
                        xd,
                        outp,
                    ),
                )?;
            }
            Dir::BackwardFilter => {
                let algo = fla.ok_or_else(|| {
                    candle_core::Error::Msg(format!("{op}: no backward-filter algorithm"))
                })?;
                // a = x, b = dy
                ck(
                    op,
                    "cudnnConvolutionBackwardFilter",
                    cr::convolution_backward_filter(
                        handle,
                        scal(&ONE),
                        xd,
                        ap,
                        yd,
                        bp,
                        conv,
                        algo,
                        ws_ptr,
                        need,
                        scal(&ZERO),
                        wd,
                        outp,
                    ),
                )?;
            }
        }
    }
    Ok(())
}

/// cuDNN forward `(x, w[, b]) -> y`.
pub(crate) fn forward(
    op: &'static str,
    g: &ConvGeom,
    x: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
    b: Option<(&CudaStorage, &Layout)>,
) -> Result<(CudaStorage, Shape)> {
    run(op, g, Dir::Forward { bias: b.is_some() }, x, w, b)
}

/// cuDNN backward-data `(dy, w) -> dx`.
pub(crate) fn backward_data(
    op: &'static str,
    g: &ConvGeom,
    dy: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    run(op, g, Dir::BackwardData, dy, w, None)
}

/// cuDNN backward-filter `(x, dy) -> dw`.
pub(crate) fn backward_filter(
    op: &'static str,
    g: &ConvGeom,
    x: (&CudaStorage, &Layout),
    dy: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    run(op, g, Dir::BackwardFilter, x, dy, None)
}
