//! cuDNN handles, descriptors and plans: per-thread, per-device state, the algorithm choice
//! per [`PlanKey`] and direction, and the shared workspace.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use candle_core::Result;
use candle_core::cuda_backend::WrapErr;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaStream};
use cudarc::cudnn::result::{self as cr, CudnnError};
use cudarc::cudnn::sys as cs;

use super::Dir;
use crate::cuda_config::{
    AlgoSearch, Candidate, ConvDType, MathKind, PlanKey, STATS, choose, cuda_conv_config,
    descriptor_math, grown_workspace, nchw_strides,
};
use crate::error::ConvError;

pub(super) fn ck<T>(
    op: &'static str,
    call: &'static str,
    r: std::result::Result<T, CudnnError>,
) -> Result<T> {
    r.map_err(|e| {
        ConvError::Cudnn {
            op,
            call,
            status: format!("{:?}", e.0),
        }
        .into()
    })
}

fn cudnn_dtype(d: ConvDType) -> cs::cudnnDataType_t {
    match d {
        ConvDType::F32 => cs::cudnnDataType_t::CUDNN_DATA_FLOAT,
        ConvDType::Bf16 => cs::cudnnDataType_t::CUDNN_DATA_BFLOAT16,
        ConvDType::F16 => cs::cudnnDataType_t::CUDNN_DATA_HALF,
    }
}

fn to_math(m: MathKind) -> cs::cudnnMathType_t {
    match m {
        MathKind::Default => cs::cudnnMathType_t::CUDNN_DEFAULT_MATH,
        MathKind::TensorOp => cs::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
        MathKind::TensorOpAllowConversion => {
            cs::cudnnMathType_t::CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION
        }
        MathKind::Fma => cs::cudnnMathType_t::CUDNN_FMA_MATH,
    }
}

fn from_math(m: cs::cudnnMathType_t) -> MathKind {
    match m {
        cs::cudnnMathType_t::CUDNN_DEFAULT_MATH => MathKind::Default,
        cs::cudnnMathType_t::CUDNN_TENSOR_OP_MATH => MathKind::TensorOp,
        cs::cudnnMathType_t::CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION => {
            MathKind::TensorOpAllowConversion
        }
        cs::cudnnMathType_t::CUDNN_FMA_MATH => MathKind::Fma,
    }
}

pub(super) struct Handle(pub(super) cs::cudnnHandle_t);
impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created by `create_handle`, destroyed once.
        let _ = unsafe { cr::destroy_handle(self.0) };
    }
}

pub(super) struct TensorDesc(pub(super) cs::cudnnTensorDescriptor_t);
impl Drop for TensorDesc {
    fn drop(&mut self) {
        // SAFETY: created by `create_tensor_descriptor`, destroyed once.
        let _ = unsafe { cr::destroy_tensor_descriptor(self.0) };
    }
}

pub(super) struct FilterDesc(pub(super) cs::cudnnFilterDescriptor_t);
impl Drop for FilterDesc {
    fn drop(&mut self) {
        // SAFETY: created by `create_filter_descriptor`, destroyed once.
        let _ = unsafe { cr::destroy_filter_descriptor(self.0) };
    }
}

pub(super) struct ConvDesc(pub(super) cs::cudnnConvolutionDescriptor_t);
impl Drop for ConvDesc {
    fn drop(&mut self) {
        // SAFETY: created by `create_convolution_descriptor`, destroyed once.
        let _ = unsafe { cr::destroy_convolution_descriptor(self.0) };
    }
}

fn tensor_desc(op: &'static str, dt: ConvDType, dims: [i32; 4]) -> Result<TensorDesc> {
    let d = TensorDesc(ck(
        op,
        "cudnnCreateTensorDescriptor",
        cr::create_tensor_descriptor(),
    )?);
    // SAFETY: live descriptor; dims and strides describe a dense NCHW tensor.
    ck(op, "cudnnSetTensor4dDescriptorEx", unsafe {
        cr::set_tensor4d_descriptor_ex(d.0, cudnn_dtype(dt), dims, nchw_strides(dims))
    })?;
    Ok(d)
}

fn conv_desc(op: &'static str, k: &PlanKey, math: MathKind) -> Result<ConvDesc> {
    let d = ConvDesc(ck(
        op,
        "cudnnCreateConvolutionDescriptor",
        cr::create_convolution_descriptor(),
    )?);
    // SAFETY: live descriptor; plain values.
    unsafe {
        ck(
            op,
            "cudnnSetConvolution2dDescriptor",
            cr::set_convolution2d_descriptor(
                d.0,
                k.pad,
                k.pad,
                k.stride,
                k.stride,
                1,
                1,
                cs::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                cs::cudnnDataType_t::CUDNN_DATA_FLOAT,
            ),
        )?;
        ck(
            op,
            "cudnnSetConvolutionGroupCount",
            cr::set_convolution_group_count(d.0, k.groups),
        )?;
        ck(
            op,
            "cudnnSetConvolutionMathType",
            cr::set_convolution_math_type(d.0, to_math(math)),
        )?;
    }
    Ok(d)
}

/// An algorithm chosen for one direction, with its convolution descriptor (set to the
/// algorithm's math mode) and exact workspace size.
pub(super) struct Chosen<A> {
    conv: ConvDesc,
    pub(super) algo: A,
    workspace: usize,
}

/// Descriptors of one [`PlanKey`] and the algorithms chosen so far.
pub(super) struct Plan {
    pub(super) x: TensorDesc,
    pub(super) w: FilterDesc,
    pub(super) y: TensorDesc,
    /// `[1, C_out, 1, 1]`, for the bias add of `conv2d_bias`.
    pub(super) bias: TensorDesc,
    pub(super) fwd: Option<Chosen<cs::cudnnConvolutionFwdAlgo_t>>,
    pub(super) bwd_data: Option<Chosen<cs::cudnnConvolutionBwdDataAlgo_t>>,
    pub(super) bwd_filter: Option<Chosen<cs::cudnnConvolutionBwdFilterAlgo_t>>,
}

impl Plan {
    fn new(op: &'static str, k: &PlanKey) -> Result<Self> {
        let x = tensor_desc(op, k.dtype, k.x)?;
        let y = tensor_desc(op, k.dtype, k.y)?;
        let bias = tensor_desc(op, k.dtype, [1, k.y[1], 1, 1])?;
        let w = FilterDesc(ck(
            op,
            "cudnnCreateFilterDescriptor",
            cr::create_filter_descriptor(),
        )?);
        // SAFETY: live descriptor; plain values.
        ck(op, "cudnnSetFilter4dDescriptor", unsafe {
            cr::set_filter4d_descriptor(
                w.0,
                cudnn_dtype(k.dtype),
                cs::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                k.w,
            )
        })?;
        // cuDNN's output shape must be ours (it is: same formula); checked once per plan.
        let conv = conv_desc(op, k, MathKind::Default)?;
        let mut o = [0i32; 4];
        // SAFETY: live descriptors; four valid out-pointers.
        let st = unsafe {
            cs::cudnnGetConvolution2dForwardOutputDim(
                conv.0, x.0, w.0, &mut o[0], &mut o[1], &mut o[2], &mut o[3],
            )
        };
        ck(op, "cudnnGetConvolution2dForwardOutputDim", st.result())?;
        if o != k.y {
            Err(ConvError::GradShape {
                op,
                expected: k.y.iter().map(|&v| v as usize).collect(),
                got: o.iter().map(|&v| v as usize).collect(),
            })?
        }
        STATS.plans.fetch_add(1, Ordering::Relaxed);
        Ok(Self {
            x,
            w,
            y,
            bias,
            fwd: None,
            bwd_data: None,
            bwd_filter: None,
        })
    }
}

/// Requested number of ranked candidates (more than any direction has algorithms).
const MAX_ALGOS: usize = 16;

macro_rules! choose_algo {
    ($op:expr, $key:expr, $handle:expr, $perf:ty, $heur:expr, $find:expr, $ws:expr) => {{
        let cfg = cuda_conv_config()?;
        let k: &PlanKey = $key;
        let conv = conv_desc($op, k, descriptor_math(k.dtype, k.tf32))?;
        // SAFETY: the perf structs are plain data whose all-zero pattern is valid (every enum
        // has a 0 variant).
        let mut perfs: [$perf; MAX_ALGOS] = [unsafe { std::mem::zeroed() }; MAX_ALGOS];
        let mut n = 0i32;
        let p = perfs.as_mut_ptr();
        STATS.searches.fetch_add(1, Ordering::Relaxed);
        match cfg.search {
            AlgoSearch::Heuristic => ck(
                $op,
                "cudnnGetConvolution*Algorithm_v7",
                $heur($handle, conv.0, MAX_ALGOS as i32, &mut n, p),
            )?,
            AlgoSearch::Exhaustive => ck(
                $op,
                "cudnnFindConvolution*Algorithm",
                $find($handle, conv.0, MAX_ALGOS as i32, &mut n, p).result(),
            )?,
        }
        let perfs = &perfs[..(n.max(0) as usize).min(MAX_ALGOS)];
        let cands: Vec<Candidate> = perfs
            .iter()
            .map(|p| Candidate {
                ok: p.status == cs::cudnnStatus_t::CUDNN_STATUS_SUCCESS,
                memory: p.memory,
                math: from_math(p.mathType),
            })
            .collect();
        let Some(i) = choose(&cands, k.dtype, k.tf32, cfg.workspace_limit) else {
            return Err(ConvError::Cudnn {
                op: $op,
                call: "algorithm choice",
                status: format!(
                    "none of {n} candidates succeeds within the {} MiB workspace limit",
                    cfg.workspace_limit >> 20
                ),
            }
            .into());
        };
        // SAFETY: live descriptor.
        ck($op, "cudnnSetConvolutionMathType", unsafe {
            cr::set_convolution_math_type(conv.0, perfs[i].mathType)
        })?;
        let algo = perfs[i].algo;
        let workspace = ck($op, "cudnnGetConvolution*WorkspaceSize", $ws($handle, conv.0, algo))?;
        tracing::debug!(op = $op, key = ?k, algo = ?algo, math = ?perfs[i].mathType, workspace, "cuDNN algorithm chosen");
        Chosen {
            conv,
            algo,
            workspace,
        }
    }};
}

/// The convolution descriptor and workspace size of `dir`'s algorithm on `plan` (searched on
/// first use, then cached in the plan).
pub(super) fn chosen(
    op: &'static str,
    key: &PlanKey,
    handle: cs::cudnnHandle_t,
    plan: &mut Plan,
    dir: Dir,
) -> Result<(cs::cudnnConvolutionDescriptor_t, usize)> {
    let (xd, wd, yd) = (plan.x.0, plan.w.0, plan.y.0);
    let (conv, need) = match dir {
        Dir::Forward { .. } => {
            if plan.fwd.is_none() {
                // SAFETY (closures): live handle and descriptors of this plan; out-pointers
                // valid for MAX_ALGOS entries.
                plan.fwd = Some(choose_algo!(
                    op,
                    key,
                    handle,
                    cs::cudnnConvolutionFwdAlgoPerf_t,
                    |h, cv, r, n, p| unsafe {
                        cr::get_convolution_forward_algorithm(h, xd, wd, cv, yd, r, n, p)
                    },
                    |h, cv, r, n, p| unsafe {
                        cs::cudnnFindConvolutionForwardAlgorithm(h, xd, wd, cv, yd, r, n, p)
                    },
                    |h, cv, al| unsafe {
                        cr::get_convolution_forward_workspace_size(h, xd, wd, cv, yd, al)
                    }
                ));
            }
            let ch = plan.fwd.as_ref().map(|c| (c.conv.0, c.workspace));
            ch.ok_or_else(|| candle_core::Error::Msg(format!("{op}: no forward algorithm")))?
        }
        Dir::BackwardData => {
            if plan.bwd_data.is_none() {
                plan.bwd_data = Some(choose_algo!(
                    op,
                    key,
                    handle,
                    cs::cudnnConvolutionBwdDataAlgoPerf_t,
                    |h, cv, r, n, p| unsafe {
                        cr::get_convolution_backward_data_algorithm(h, wd, yd, cv, xd, r, n, p)
                    },
                    |h, cv, r, n, p| unsafe {
                        cs::cudnnFindConvolutionBackwardDataAlgorithm(h, wd, yd, cv, xd, r, n, p)
                    },
                    |h, cv, al| unsafe {
                        cr::get_convolution_backward_data_workspace_size(h, wd, yd, cv, xd, al)
                    }
                ));
            }
            let ch = plan.bwd_data.as_ref().map(|c| (c.conv.0, c.workspace));
            ch.ok_or_else(|| candle_core::Error::Msg(format!("{op}: no backward-data algorithm")))?
        }
        Dir::BackwardFilter => {
            if plan.bwd_filter.is_none() {
                plan.bwd_filter = Some(choose_algo!(
                    op,
                    key,
                    handle,
                    cs::cudnnConvolutionBwdFilterAlgoPerf_t,
                    |h, cv, r, n, p| unsafe {
                        cr::get_convolution_backward_filter_algorithm(h, xd, yd, cv, wd, r, n, p)
                    },
                    |h, cv, r, n, p| unsafe {
                        cs::cudnnFindConvolutionBackwardFilterAlgorithm(h, xd, yd, cv, wd, r, n, p)
                    },
                    |h, cv, al| unsafe {
                        cr::get_convolution_backward_filter_workspace_size(h, xd, yd, cv, wd, al)
                    }
                ));
            }
            let ch = plan.bwd_filter.as_ref().map(|c| (c.conv.0, c.workspace));
            ch.ok_or_else(|| {
                candle_core::Error::Msg(format!("{op}: no backward-filter algorithm"))
            })?
        }
    };
    Ok((conv, need))
}

/// Per-thread, per-device cuDNN state.
pub(super) struct DevState {
    // Field order = drop order: plans (descriptors) before the handle.
    pub(super) plans: HashMap<PlanKey, Plan>,
    pub(super) workspace: Option<CudaSlice<u8>>,
    pub(super) handle: Handle,
    pub(super) stream: Arc<CudaStream>,
}

impl DevState {
    fn new(op: &'static str, stream: Arc<CudaStream>) -> Result<Self> {
        stream.context().bind_to_thread().w()?;
        let handle = Handle(ck(op, "cudnnCreate", cr::create_handle())?);
        // SAFETY: live handle; candle's stream outlives it (held in `self.stream`).
        ck(op, "cudnnSetStream", unsafe {
            cr::set_stream(handle.0, stream.cu_stream() as *mut _)
        })?;
        tracing::debug!(version = cr::get_version(), "cuDNN handle created");
        Ok(Self {
            plans: HashMap::new(),
            workspace: None,
            handle,
            stream,
        })
    }

    /// The plan of `key` (created on first use).
    pub(super) fn plan(&mut self, op: &'static str, key: &PlanKey) -> Result<&mut Plan> {
        Ok(match self.plans.entry(*key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Plan::new(op, key)?),
        })
    }
}

/// Makes the workspace at least `need` bytes.
pub(super) fn ensure_workspace(
    ws: &mut Option<CudaSlice<u8>>,
    stream: &Arc<CudaStream>,
    need: usize,
) -> Result<()> {
    let cur = ws.as_ref().map_or(0, |w| w.len());
    if need > cur {
        let new = grown_workspace(cur, need);
        *ws = None;
        // SAFETY: scratch memory, written by cuDNN before it is read.
        *ws = Some(unsafe { stream.alloc::<u8>(new) }.w()?);
        STATS.workspace_bytes.store(new, Ordering::Relaxed);
    }
    Ok(())
}

thread_local! {
    static STATE: RefCell<HashMap<candle_core::cuda_backend::DeviceId, DevState>> =
        RefCell::new(HashMap::new());
}

pub(super) fn with_state<R>(
    op: &'static str,
    dev: &candle_core::CudaDevice,
    f: impl FnOnce(&mut DevState) -> Result<R>,
) -> Result<R> {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let st = match s.entry(dev.id()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(DevState::new(op, dev.cuda_stream())?),
        };
        st.stream.context().bind_to_thread().w()?;
        f(st)
    })
}
