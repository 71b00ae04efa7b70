//! `cuda` feature only: argument marshalling for the NVRTC-compiled kernels of `kernels/*.cu`.
//! All maths lives in the `.cu` sources (compile-tested without a GPU) and in the CPU path.
//!
//! PTX is compiled once per (variant, compute capability) and cached for the process; candle
//! caches the loaded module per device under the module name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Shape};

use crate::config::Params;
use crate::cuda_variants::{
    KERNEL_PLIF_FINISH, KERNEL_POOL_BWD, KERNEL_POOL_FWD, KernelDtype, NeuronLaunch, Variant,
    count_neuron_launch, neuron_launch, pool_module_name, pool_options, pool_source, vec_policy,
};
use crate::error::SnnError;
use crate::nvrtc::Nvrtc;
use crate::ops::t_n;

pub(crate) mod bn_lif;
mod connect;
pub(crate) use connect::{iand_bwd, iand_fwd};

const BLOCK: u32 = 256;

type PtxCache = Mutex<HashMap<(Variant, u32), Arc<String>>>;

fn ptx_cache() -> &'static PtxCache {
    static C: OnceLock<PtxCache> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Keep freed device memory in the device's default memory pool instead of returning it to the
/// driver at every synchronisation (the pool's release threshold is 0 by default). candle
/// allocates every output with `cuMemAllocAsync`; with the default threshold each large
/// allocation after a synchronisation maps fresh pages, which costs more than the kernels
/// themselves (measured on an H200: a 1 GiB copy took 2.7 ms instead of 0.5 ms). This is what
/// PyTorch's caching allocator does too. Returns `false` where the device has no memory pools.
pub fn retain_pool_memory(dev: &candle_core::Device) -> Result<bool> {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    let candle_core::Device::Cuda(dev) = dev else {
        return Ok(false);
    };
    let ctx = dev.cuda_stream().context().clone();
    if !ctx.has_async_alloc() {
        return Ok(false);
    }
    ctx.bind_to_thread().w()?;
    let mut threshold: u64 = u64::MAX;
    // SAFETY: the device comes from a live context; the attribute takes a u64 (cuuint64_t).
    unsafe {
        let pool = result::device::get_default_mem_pool(ctx.cu_device()).w()?;
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .w()?;
    }
    Ok(true)
}

/// Memory of the device's default pool (which candle's `cuMemAllocAsync` allocations come
/// from) and of the whole device, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolMemory {
    /// High-water mark of memory handed out to allocations since the last reset.
    pub used_high: u64,
    /// High-water mark of memory the pool held since the last reset.
    pub reserved_high: u64,
    /// Device memory in use by every process (total − free), as nvidia-smi shows it.
    pub device_used: u64,
    pub device_total: u64,
}

/// The pool's high-water marks and the device's memory now; `reset` then restarts the
/// high-water marks from the current use. `None` where the device has no memory pools.
pub fn pool_memory(dev: &candle_core::Device, reset: bool) -> Result<Option<PoolMemory>> {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    let candle_core::Device::Cuda(dev) = dev else {
        return Ok(None);
    };
    let ctx = dev.cuda_stream().context().clone();
    if !ctx.has_async_alloc() {
        return Ok(None);
    }
    ctx.bind_to_thread().w()?;
    let (free, total) = result::mem_get_info().w()?;
    // SAFETY: the device comes from a live context; both attributes are u64 (cuuint64_t), and
    // setting a high-water mark to 0 is how the driver API resets it.
    unsafe {
        let pool = result::device::get_default_mem_pool(ctx.cu_device()).w()?;
        let get = |attr: sys::CUmemPool_attribute| -> Result<u64> {
            let mut v: u64 = 0;
            result::mem_pool::get_attribute(pool, attr, (&mut v as *mut u64).cast()).w()?;
            Ok(v)
        };
        let used_high = get(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?;
        let reserved_high = get(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)?;
        if reset {
            for attr in [
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH,
            ] {
                let mut zero: u64 = 0;
                result::mem_pool::set_attribute(pool, attr, (&mut zero as *mut u64).cast()).w()?;
            }
        }
        Ok(Some(PoolMemory {
            used_high,
            reserved_high,
            device_used: (total - free) as u64,
            device_total: total as u64,
        }))
    }
}

fn arch_of(dev: &CudaDevice) -> Result<u32> {
    let (major, minor) = dev.cuda_stream().context().compute_capability().w()?;
    Ok((major * 10 + minor) as u32)
}

/// Compile (NVRTC, in parallel) the kernels that `cfgs` at sequence lengths `ts` and storage
/// `dtypes` will use on `dev`, so that the first forward passes do not wait for the compiler.
/// PLIF configs get the PLIF kernels. Already compiled variants are skipped.
pub fn precompile(
    dev: &candle_core::Device,
    cfgs: &[crate::NeuronConfig],
    ts: &[usize],
    dtypes: &[DType],
) -> Result<usize> {
    use rayon::prelude::*;
    let candle_core::Device::Cuda(dev) = dev else {
        return Ok(0);
    };
    let arch = arch_of(dev)?;
    let mut todo = Vec::new();
    for cfg in cfgs {
        let p = cfg.params()?;
        let plif = cfg.kind == crate::NeuronKind::Plif;
        for &t in ts {
            for &dt in dtypes {
                let v = Variant::new(&p, kdtype("nmoco-precompile", dt)?, plif, t);
                if !todo.contains(&v) {
                    todo.push(v);
                }
            }
        }
    }
    todo.retain(|v| {
        ptx_cache()
            .lock()
            .map(|c| !c.contains_key(&(*v, arch)))
            .unwrap_or(true)
    });
    let compiled: Vec<(Variant, String)> = todo
        .par_iter()
        .map(|v| {
            let module = format!("{}_sm{arch}", v.module_name());
            let ptx = Nvrtc::global()?.compile_ptx(&v.source(), &module, &v.options(arch))?;
            Ok((*v, ptx))
        })
        .collect::<Result<_>>()?;
    let n = compiled.len();
    let mut cache = ptx_cache()
        .lock()
        .map_err(|_| candle_core::Error::msg("ptx cache poisoned"))?;
    for (v, ptx) in compiled {
        cache.insert((v, arch), Arc::new(ptx));
    }
    Ok(n)
}

fn load(dev: &CudaDevice, v: Variant, kernel: &str) -> Result<CudaFunction> {
    let arch = arch_of(dev)?;
    let module = format!("{}_sm{arch}", v.module_name());
    let ptx = {
        let mut cache = ptx_cache()
            .lock()
            .map_err(|_| candle_core::Error::msg("ptx cache poisoned"))?;
        match cache.get(&(v, arch)) {
            Some(p) => p.clone(),
            None => {
                tracing::debug!(module = %module, "nvrtc: compiling neuron kernels");
                let ptx = Nvrtc::global()?.compile_ptx(&v.source(), &module, &v.options(arch))?;
                let ptx = Arc::new(ptx);
                cache.insert((v, arch), ptx.clone());
                ptx
            }
        }
    };
    Ok(dev
        .get_or_load_custom_func(kernel, &module, &ptx)?
        .into_cuda_function())
}

fn grid(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(BLOCK as usize).max(1) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The neuron kernels' launch over `n` neurons whose `[T, N]` buffers start at `ptrs`
/// ([`neuron_launch`] under the process-wide [`vec_policy`]).
fn neuron_cfg(
    op: &'static str,
    n: usize,
    dtype: KernelDtype,
    ptrs: &[u64],
) -> Result<(NeuronLaunch, LaunchConfig)> {
    let l = neuron_launch(n, dtype, ptrs, vec_policy()).ok_or_else(|| {
        candle_core::Error::msg(format!("{op}: {n} neurons per step exceed one CUDA grid"))
    })?;
    count_neuron_launch(l.lanes);
    let cfg = LaunchConfig {
        grid_dim: (l.grid, 1, 1),
        block_dim: (l.block, 1, 1),
        shared_mem_bytes: 0,
    };
    Ok((l, cfg))
}

fn kdtype(op: &'static str, dt: DType) -> Result<KernelDtype> {
    match dt {
        DType::F32 => Ok(KernelDtype::F32),
        DType::F16 => Ok(KernelDtype::F16),
        DType::BF16 => Ok(KernelDtype::Bf16),
        dtype => Err(SnnError::Dtype {
            op,
            dtype,
            device: "cuda",
        }
        .into()),
    }
}

fn offsets(l: &Layout, op: &'static str) -> Result<(usize, usize)> {
    l.contiguous_offsets()
        .ok_or_else(|| candle_core::Error::msg(format!("{op}: input must be contiguous")))
}

/// Forward: spikes of `x` (`w` for PLIF).
pub(crate) fn forward(
    p: &Params,
    plif: bool,
    s: &CudaStorage,
    l: &Layout,
    w: Option<(&CudaStorage, &Layout)>,
) -> Result<(CudaStorage, Shape)> {
    let op = "nmoco-neuron-fwd";
    let kd = kdtype(op, s.dtype())?;
    let v = Variant::new(p, kd, plif, t_n(l.shape()).0);
    let storage = match kd {
        KernelDtype::F32 => fwd_t::<f32>(p, v, s, l, w)?,
        KernelDtype::F16 => fwd_t::<half::f16>(p, v, s, l, w)?,
        KernelDtype::Bf16 => fwd_t::<half::bf16>(p, v, s, l, w)?,
    };
    Ok((storage, l.shape().clone()))
}

fn fwd_t<T: CudaDType + DeviceRepr>(
    p: &Params,
    v: Variant,
    s: &CudaStorage,
    l: &Layout,
    w: Option<(&CudaStorage, &Layout)>,
) -> Result<CudaStorage> {
    let op = "nmoco-neuron-fwd";
    let dev = s.device().clone();
    let (t, n) = t_n(l.shape());
    let (o1, o2) = offsets(l, op)?;
    let x = T::as_cuda_slice(s)?.slice(o1..o2);
    // SAFETY: every element is written by the kernel before it is read (at least one element
    // is allocated so that empty inputs never ask the driver for 0 bytes).
    let out = unsafe { dev.alloc::<T>((t * n).max(1))? };
    if t * n > 0 {
        let stream = dev.cuda_stream();
        let ptrs = [x.device_ptr(&stream).0, out.device_ptr(&stream).0];
        let (launch, cfg) = neuron_cfg(op, n, v.dtype, &ptrs)?;
        let f = load(&dev, v, launch.fwd)?;
        let w_view = match w {
            Some((ws, wl)) => {
                let (a, b) = offsets(wl, op)?;
                T::as_cuda_slice(ws)?.slice(a..b)
            }
            None => T::as_cuda_slice(s)?.slice(o1..o2),
        };
        let (t32, n64) = (t as u32, n as u64);
        let mut b = stream.launch_builder(&f);
        b.arg(&x);
        b.arg(&out);
        b.arg(&w_view);
        b.arg(&t32);
        b.arg(&n64);
        b.arg(&p.k);
        b.arg(&p.vth);
        b.arg(&p.vr);
        // SAFETY: argument list matches nmoco_neuron_fwd's (and _v2's) signature; with two
        // neurons per thread, `neuron_launch` checked that N is even and x, out are aligned.
        unsafe { b.launch(cfg) }.w()?;
    }
    Ok(T::wrap_cuda_slice(out, dev))
}

/// Backward: `dL/dx` (followed by `dL/dw` when `w` is given).
pub(crate) fn backward(
    p: &Params,
    xs: &CudaStorage,
    xl: &Layout,
    w: Option<(&CudaStorage, &Layout)>,
    gs: &CudaStorage,
    gl: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let op = "nmoco-neuron-bwd";
    let kd = kdtype(op, xs.dtype())?;
    let v = Variant::new(p, kd, w.is_some(), t_n(xl.shape()).0);
    let storage = match kd {
        KernelDtype::F32 => bwd_t::<f32>(p, v, xs, xl, w, gs, gl)?,
        KernelDtype::F16 => bwd_t::<half::f16>(p, v, xs, xl, w, gs, gl)?,
        KernelDtype::Bf16 => bwd_t::<half::bf16>(p, v, xs, xl, w, gs, gl)?,
    };
    let shape = if w.is_some() {
        Shape::from(xl.shape().elem_count() + 1)
    } else {
        xl.shape().clone()
    };
    Ok((storage, shape))
}

fn bwd_t<T: CudaDType + DeviceRepr>(
    p: &Params,
    v: Variant,
    xs: &CudaStorage,
    xl: &Layout,
    w: Option<(&CudaStorage, &Layout)>,
    gs: &CudaStorage,
    gl: &Layout,
) -> Result<CudaStorage> {
    let op = "nmoco-neuron-bwd";
    let dev = xs.device().clone();
    let (t, n) = t_n(xl.shape());
    let tn = t * n;
    let (o1, o2) = offsets(xl, op)?;
    let (g1, g2) = offsets(gl, op)?;
    let x = T::as_cuda_slice(xs)?.slice(o1..o2);
    let g = T::as_cuda_slice(gs)?.slice(g1..g2);
    let plif = w.is_some();
    let w_view = match w {
        Some((ws, wl)) => {
            let (a, b) = offsets(wl, op)?;
            T::as_cuda_slice(ws)?.slice(a..b)
        }
        None => T::as_cuda_slice(xs)?.slice(o1..o2),
    };
    // SAFETY: the kernels write every element (dL/dx, then dL/dw for PLIF) before any read.
    let mut out = unsafe { dev.alloc::<T>((tn + usize::from(plif)).max(1))? };
    // Fixed T: the membrane trace stays in registers. Any T: for f32 it is staged in `out`
    // itself; f16/bf16 need an f32 scratch.
    let scratch: Option<CudaSlice<f32>> = if v.dtype == KernelDtype::F32 || v.t_static > 0 {
        None
    } else {
        // SAFETY: written by the kernel's first pass before being read.
        Some(unsafe { dev.alloc::<f32>(tn.max(1))? })
    };
    let gk_acc = dev.alloc_zeros::<f32>(1)?;
    if tn > 0 {
        let stream = dev.cuda_stream();
        let ptrs = [
            x.device_ptr(&stream).0,
            g.device_ptr(&stream).0,
            out.device_ptr(&stream).0,
        ];
        let (launch, cfg) = neuron_cfg(op, n, v.dtype, &ptrs)?;
        let f = load(&dev, v, launch.bwd)?;
        let (t32, n64, sg_a) = (t as u32, n as u64, p.surrogate.param());
        let mut b = stream.launch_builder(&f);
        b.arg(&x);
        b.arg(&g);
        b.arg(&out);
        match &scratch {
            Some(h) => b.arg(h),
            None => b.arg(&out),
        };
        b.arg(&w_view);
        b.arg(&gk_acc);
        b.arg(&t32);
        b.arg(&n64);
        b.arg(&p.k);
        b.arg(&p.vth);
        b.arg(&p.vr);
        b.arg(&sg_a);
        // SAFETY: argument list matches nmoco_neuron_bwd's (and _v2's) signature; with two
        // neurons per thread, `neuron_launch` checked that N is even and x, g, out are aligned
        // (the f32 trace scratch is read and written per element).
        unsafe { b.launch(cfg) }.w()?;
    }
    if plif {
        let f = load(&dev, v, KERNEL_PLIF_FINISH)?;
        let mut last = out.slice_mut(tn..tn + 1);
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&gk_acc);
        b.arg(&w_view);
        b.arg(&mut last);
        let one = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: argument list matches nmoco_plif_finish's signature.
        unsafe { b.launch(one) }.w()?;
    }
    Ok(T::wrap_cuda_slice(out, dev))
}

type ModuleCache = Mutex<HashMap<(String, u32), Arc<String>>>;

/// Loads `kernel` from the NVRTC module `base` (the max-pool, connect and fused batch-norm
/// modules): compiled once per module and compute capability, the PTX cached for the process.
fn load_module(
    dev: &CudaDevice,
    base: String,
    source: impl FnOnce() -> String,
    options: impl FnOnce(u32) -> Vec<String>,
    kernel: &str,
) -> Result<CudaFunction> {
    static C: OnceLock<ModuleCache> = OnceLock::new();
    let arch = arch_of(dev)?;
    let module = format!("{base}_sm{arch}");
    let ptx = {
        let mut cache = C
            .get_or_init(|| Mutex::new(HashMap::new()))
            .lock()
            .map_err(|_| candle_core::Error::msg("ptx cache poisoned"))?;
        match cache.get(&(base.clone(), arch)) {
            Some(p) => p.clone(),
            None => {
                tracing::debug!(module = %module, "nvrtc: compiling");
                let ptx =
                    Arc::new(Nvrtc::global()?.compile_ptx(&source(), &module, &options(arch))?);
                cache.insert((base, arch), ptx.clone());
                ptx
            }
        }
    };
    Ok(dev
        .get_or_load_custom_func(kernel, &module, &ptx)?
        .into_cuda_function())
}

fn load_pool(dev: &CudaDevice, kd: KernelDtype, kernel: &str) -> Result<CudaFunction> {
    load_module(
        dev,
        pool_module_name(kd),
        pool_source,
        |arch| pool_options(kd, arch),
        kernel,
    )
}

/// Max-pool forward over `planes` planes of `h × w`: maxima then argmax in one buffer.
pub(crate) fn pool_fwd(
    s: &CudaStorage,
    l: &Layout,
    planes: usize,
    h: usize,
    w: usize,
) -> Result<CudaStorage> {
    let op = "nmoco-maxpool-fwd";
    match kdtype(op, s.dtype())? {
        KernelDtype::F32 => pool_fwd_t::<f32>(KernelDtype::F32, s, l, planes, h, w),
        KernelDtype::F16 => pool_fwd_t::<half::f16>(KernelDtype::F16, s, l, planes, h, w),
        KernelDtype::Bf16 => pool_fwd_t::<half::bf16>(KernelDtype::Bf16, s, l, planes, h, w),
    }
}

fn pool_fwd_t<T: CudaDType + DeviceRepr>(
    kd: KernelDtype,
    s: &CudaStorage,
    l: &Layout,
    planes: usize,
    h: usize,
    w: usize,
) -> Result<CudaStorage> {
    let op = "nmoco-maxpool-fwd";
    let dev = s.device().clone();
    let (o1, o2) = offsets(l, op)?;
    let x = T::as_cuda_slice(s)?.slice(o1..o2);
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    let total = planes * ho * wo;
    // SAFETY: the kernel writes all 2·total elements (one thread per output writes two).
    let out = unsafe { dev.alloc::<T>((2 * total).max(1))? };
    if total > 0 {
        let f = load_pool(&dev, kd, KERNEL_POOL_FWD)?;
        let (p64, h32, w32, ho32, wo32) = (planes as u64, h as u32, w as u32, ho as u32, wo as u32);
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x);
        b.arg(&out);
        b.arg(&p64);
        b.arg(&h32);
        b.arg(&w32);
        b.arg(&ho32);
        b.arg(&wo32);
        // SAFETY: argument list matches nmoco_maxpool_fwd's signature.
        unsafe { b.launch(grid(total)) }.w()?;
    }
    Ok(T::wrap_cuda_slice(out, dev))
}

/// Max-pool backward: `dL/dx` from `dL/dy` and the saved argmax.
pub(crate) fn pool_bwd(
    gs: &CudaStorage,
    gl: &Layout,
    as_: &CudaStorage,
    al: &Layout,
    planes: usize,
    h: usize,
    w: usize,
) -> Result<CudaStorage> {
    let op = "nmoco-maxpool-bwd";
    if gs.dtype() != as_.dtype() {
        candle_core::bail!(
            "{op}: gradient {:?} and argmax {:?} dtypes differ",
            gs.dtype(),
            as_.dtype()
        );
    }
    match kdtype(op, gs.dtype())? {
        KernelDtype::F32 => pool_bwd_t::<f32>(KernelDtype::F32, gs, gl, as_, al, planes, h, w),
        KernelDtype::F16 => {
            pool_bwd_t::<half::f16>(KernelDtype::F16, gs, gl, as_, al, planes, h, w)
        }
        KernelDtype::Bf16 => {
            pool_bwd_t::<half::bf16>(KernelDtype::Bf16, gs, gl, as_, al, planes, h, w)
        }
    }
}

fn pool_bwd_t<T: CudaDType + DeviceRepr>(
    kd: KernelDtype,
    gs: &CudaStorage,
    gl: &Layout,
    as_: &CudaStorage,
    al: &Layout,
    planes: usize,
    h: usize,
    w: usize,
) -> Result<CudaStorage> {
    let op = "nmoco-maxpool-bwd";
    let dev = gs.device().clone();
    let (g1, g2) = offsets(gl, op)?;
    let (a1, a2) = offsets(al, op)?;
    let g = T::as_cuda_slice(gs)?.slice(g1..g2);
    let a = T::as_cuda_slice(as_)?.slice(a1..a2);
    let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
    let total = planes * h * w;
    // SAFETY: the kernel writes every input-sized element (one thread each).
    let dx = unsafe { dev.alloc::<T>(total.max(1))? };
    if total > 0 {
        let f = load_pool(&dev, kd, KERNEL_POOL_BWD)?;
        let (p64, h32, w32, ho32, wo32) = (planes as u64, h as u32, w as u32, ho as u32, wo as u32);
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&g);
        b.arg(&a);
        b.arg(&dx);
        b.arg(&p64);
        b.arg(&h32);
        b.arg(&w32);
        b.arg(&ho32);
        b.arg(&wo32);
        // SAFETY: argument list matches nmoco_maxpool_bwd's signature.
        unsafe { b.launch(grid(total)) }.w()?;
    }
    Ok(T::wrap_cuda_slice(dx, dev))
}
