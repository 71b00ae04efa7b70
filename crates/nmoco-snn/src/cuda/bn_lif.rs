//! `cuda` feature only: launches of the fused training batch norm + IF/LIF kernels
//! (`kernels/bn_lif.cu`): the two-stage batch statistics, the forward and the backward (BPTT on
//! the normalised input, then batch norm's two-stage gradient sums and its input gradient).
//! Statistics, coefficients and sums stay on the device (no host copy, no synchronisation).
//!
//! **Compile-tested only**: the kernels compile and assemble in CI (`tests/nvrtc_compile.rs`);
//! their agreement with the plain-candle twin (batch norm op chain + reference neuron) is
//! checked on a device by `examples/gpu_check.rs`, which has not run on a GPU yet.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Shape, Storage, Tensor};

use super::{grid, load_module, offsets};
use crate::config::Params;
use crate::cuda_variants::bn::{
    BN_THREADS, BnLifVariant, KERNEL_BN_COEF, KERNEL_BN_GRAD_FINISH, KERNEL_BN_GRAD_PARTIAL,
    KERNEL_BN_INPUT_GRAD, KERNEL_BN_LIF_BWD, KERNEL_BN_LIF_FWD, KERNEL_BN_STATS_FINISH,
    KERNEL_BN_STATS_PARTIAL, bn_reduce_chunks, bn_reduce_module_name, bn_reduce_options,
    bn_reduce_source,
};
use crate::cuda_variants::{KernelDtype, Variant};
use crate::error::SnnError;

fn load_reduce(dev: &CudaDevice, kd: KernelDtype, kernel: &str) -> Result<CudaFunction> {
    load_module(
        dev,
        bn_reduce_module_name(kd),
        bn_reduce_source,
        |arch| bn_reduce_options(kd, arch),
        kernel,
    )
}

fn load_neuron(dev: &CudaDevice, v: BnLifVariant, kernel: &str) -> Result<CudaFunction> {
    load_module(
        dev,
        v.module_name(),
        || v.source(),
        |arch| v.options(arch),
        kernel,
    )
}

fn kdtype(op: &'static str, dt: DType) -> Result<KernelDtype> {
    match dt {
        DType::F32 => Ok(KernelDtype::F32),
        DType::BF16 => Ok(KernelDtype::Bf16),
        dtype => Err(SnnError::Dtype {
            op,
            dtype,
            device: "cuda",
        }
        .into()),
    }
}

/// The f32 device view of a tensor's storage (statistics, `γ`, `β`: the op's f32 inputs).
fn f32_view<'a>(s: &'a Storage, l: &Layout, op: &'static str) -> Result<CudaView<'a, f32>> {
    let Storage::Cuda(cs) = s else {
        candle_core::bail!("{op}: expected a CUDA tensor");
    };
    let (a, b) = offsets(l, op)?;
    Ok(f32::as_cuda_slice(cs)?.slice(a..b))
}

fn f32_storage_view<'a>(
    cs: &'a CudaStorage,
    l: &Layout,
    op: &'static str,
) -> Result<CudaView<'a, f32>> {
    let (a, b) = offsets(l, op)?;
    Ok(f32::as_cuda_slice(cs)?.slice(a..b))
}

/// `[R, C, S]` of a `[R, C, ...]` layout.
fn rcs(l: &Layout, op: &'static str) -> Result<(usize, usize, usize)> {
    let d = l.dims();
    if d.len() < 2 || d[1] > 65_535 {
        return Err(SnnError::Shape {
            op,
            expected: vec![0, 65_535],
            found: d.to_vec(),
        }
        .into());
    }
    Ok((d[0], d[1], d[2..].iter().product()))
}

/// Stage 1 of a reduction: blocks `(chunk, channel)`.
fn per_channel(c: usize, chunks: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (chunks as u32, c as u32, 1),
        block_dim: (BN_THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Stage 2 of a reduction: one block per channel.
fn one_block_per_channel(c: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (c as u32, 1, 1),
        block_dim: (BN_THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Batch statistics of `x: [R, C, ...]` over every dim but 1: an f32 `[2, C]` buffer (mean,
/// then the biased variance), from the two-stage reduction.
pub(crate) fn batch_stats(s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
    let op = "nmoco-bn-stats";
    let kd = kdtype(op, s.dtype())?;
    let storage = match kd {
        KernelDtype::Bf16 => stats_t::<half::bf16>(kd, s, l)?,
        _ => stats_t::<f32>(kd, s, l)?,
    };
    Ok((storage, Shape::from((2, rcs(l, op)?.1))))
}

fn stats_t<T: CudaDType + DeviceRepr>(
    kd: KernelDtype,
    s: &CudaStorage,
    l: &Layout,
) -> Result<CudaStorage> {
    let op = "nmoco-bn-stats";
    let dev = s.device().clone();
    let (rows, c, sdim) = rcs(l, op)?;
    let (o1, o2) = offsets(l, op)?;
    let x = T::as_cuda_slice(s)?.slice(o1..o2);
    let m = rows * sdim;
    let (chunks, len) = bn_reduce_chunks(m);
    if m == 0 || c == 0 {
        let out = dev.alloc_zeros::<f32>((2 * c).max(1))?;
        return Ok(f32::wrap_cuda_slice(out, dev));
    }
    // SAFETY: stage 1 writes every partial (one per block), stage 2 every statistic.
    let part = unsafe { dev.alloc::<f32>(c * chunks * 3)? };
    let out = unsafe { dev.alloc::<f32>(2 * c)? };
    let stream = dev.cuda_stream();
    let (r64, c32, s64, len64, ch32) = (
        rows as u64,
        c as u32,
        sdim as u64,
        len as u64,
        chunks as u32,
    );
    let f = load_reduce(&dev, kd, KERNEL_BN_STATS_PARTIAL)?;
    let mut b = stream.launch_builder(&f);
    b.arg(&x);
    b.arg(&part);
    b.arg(&r64);
    b.arg(&c32);
    b.arg(&s64);
    b.arg(&len64);
    b.arg(&ch32);
    // SAFETY: argument list matches nmoco_bn_stats_partial's signature.
    unsafe { b.launch(per_channel(c, chunks)) }.w()?;
    let f = load_reduce(&dev, kd, KERNEL_BN_STATS_FINISH)?;
    let mut b = stream.launch_builder(&f);
    b.arg(&part);
    b.arg(&out);
    b.arg(&c32);
    b.arg(&ch32);
    // SAFETY: argument list matches nmoco_bn_stats_finish's signature.
    unsafe { b.launch(one_block_per_channel(c)) }.w()?;
    Ok(f32::wrap_cuda_slice(out, dev))
}

/// What the fused op's CUDA launches share: the neuron, `T`, channels and positions per channel,
/// the batch statistics (f32 `[C]` device tensors) and `ε`.
pub(crate) struct BnLifArgs<'a> {
    pub(crate) p: &'a Params,
    pub(crate) t: usize,
    pub(crate) c: usize,
    pub(crate) s: usize,
    pub(crate) mean: &'a Tensor,
    pub(crate) var: &'a Tensor,
    pub(crate) eps: f64,
}

impl BnLifArgs<'_> {
    fn variant(&self, kd: KernelDtype) -> BnLifVariant {
        BnLifVariant(Variant::new(self.p, kd, false, self.t))
    }

    /// The forward's affine map `a ‖ d` (f32 `[2C]`) from the statistics, `γ` and `β`.
    fn coef(
        &self,
        dev: &CudaDevice,
        kd: KernelDtype,
        gamma: &CudaView<'_, f32>,
        beta: &CudaView<'_, f32>,
    ) -> Result<CudaSlice<f32>> {
        let op = "nmoco-bn-coef";
        let (mg, ml) = self.mean.storage_and_layout();
        let (vg, vl) = self.var.storage_and_layout();
        let mean = f32_view(&mg, ml, op)?;
        let var = f32_view(&vg, vl, op)?;
        // SAFETY: the kernel writes all 2C values.
        let coef = unsafe { dev.alloc::<f32>((2 * self.c).max(1))? };
        let f = load_reduce(dev, kd, KERNEL_BN_COEF)?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        let c32 = self.c as u32;
        b.arg(&mean);
        b.arg(&var);
        b.arg(gamma);
        b.arg(beta);
        b.arg(&coef);
        b.arg(&c32);
        b.arg(&self.eps);
        // SAFETY: argument list matches nmoco_bn_coef's signature.
        unsafe { b.launch(grid(self.c)) }.w()?;
        Ok(coef)
    }
}

/// Forward: the spikes (in `x`'s dtype) of the neuron driven by batch norm of `x`.
pub(crate) fn bn_lif_fwd(
    a: &BnLifArgs<'_>,
    xs: &CudaStorage,
    xl: &Layout,
    gamma: (&CudaStorage, &Layout),
    beta: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let op = "nmoco-bn-lif-fwd";
    let kd = kdtype(op, xs.dtype())?;
    let g = f32_storage_view(gamma.0, gamma.1, op)?;
    let b = f32_storage_view(beta.0, beta.1, op)?;
    let storage = match kd {
        KernelDtype::Bf16 => bn_fwd_t::<half::bf16>(a, kd, xs, xl, &g, &b)?,
        _ => bn_fwd_t::<f32>(a, kd, xs, xl, &g, &b)?,
    };
    Ok((storage, xl.shape().clone()))
}

fn bn_fwd_t<T: CudaDType + DeviceRepr>(
    a: &BnLifArgs<'_>,
    kd: KernelDtype,
    xs: &CudaStorage,
    xl: &Layout,
    gamma: &CudaView<'_, f32>,
    beta: &CudaView<'_, f32>,
) -> Result<CudaStorage> {
    let op = "nmoco-bn-lif-fwd";
    let dev = xs.device().clone();
    let (o1, o2) = offsets(xl, op)?;
    let x = T::as_cuda_slice(xs)?.slice(o1..o2);
    let len = o2 - o1;
    let n = len / a.t.max(1);
    // SAFETY: the kernel writes every element (at least one is allocated).
    let out = unsafe { dev.alloc::<T>(len.max(1))? };
    if len > 0 {
        let coef = a.coef(&dev, kd, gamma, beta)?;
        let f = load_neuron(&dev, a.variant(kd), KERNEL_BN_LIF_FWD)?;
        let (t32, n64, c32, s64) = (a.t as u32, n as u64, a.c as u32, a.s as u64);
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x);
        b.arg(&out);
        b.arg(&coef);
        b.arg(&t32);
        b.arg(&n64);
        b.arg(&c32);
        b.arg(&s64);
        b.arg(&a.p.k);
        b.arg(&a.p.vth);
        b.arg(&a.p.vr);
        // SAFETY: argument list matches nmoco_bn_lif_fwd's signature.
        unsafe { b.launch(grid(n)) }.w()?;
    }
    Ok(T::wrap_cuda_slice(out, dev))
}

/// Backward: one f32 buffer of `len + 2C` values, `dL/dx ‖ dL/dγ ‖ dL/dβ` (the CPU op's layout;
/// `dL/dx` in f32 whatever `x`'s dtype).
pub(crate) fn bn_lif_bwd(
    a: &BnLifArgs<'_>,
    gamma: &Tensor,
    beta: &Tensor,
    xs: &CudaStorage,
    xl: &Layout,
    gs: &CudaStorage,
    gl: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let op = "nmoco-bn-lif-bwd";
    let kd = kdtype(op, xs.dtype())?;
    if gs.dtype() != xs.dtype() || gl.shape().elem_count() != xl.shape().elem_count() {
        return Err(SnnError::Shape {
            op,
            expected: xl.dims().to_vec(),
            found: gl.dims().to_vec(),
        }
        .into());
    }
    let storage = match kd {
        KernelDtype::Bf16 => bn_bwd_t::<half::bf16>(a, kd, gamma, beta, xs, xl, gs, gl)?,
        _ => bn_bwd_t::<f32>(a, kd, gamma, beta, xs, xl, gs, gl)?,
    };
    Ok((storage, Shape::from(xl.shape().elem_count() + 2 * a.c)))
}

#[allow(clippy::too_many_arguments)]
fn bn_bwd_t<T: CudaDType + DeviceRepr>(
    a: &BnLifArgs<'_>,
    kd: KernelDtype,
    gamma: &Tensor,
    beta: &Tensor,
    xs: &CudaStorage,
    xl: &Layout,
    gs: &CudaStorage,
    gl: &Layout,
) -> Result<CudaStorage> {
    let op = "nmoco-bn-lif-bwd";
    let dev = xs.device().clone();
    let (o1, o2) = offsets(xl, op)?;
    let (g1, g2) = offsets(gl, op)?;
    let x = T::as_cuda_slice(xs)?.slice(o1..o2);
    let gsv = T::as_cuda_slice(gs)?.slice(g1..g2);
    let len = o2 - o1;
    let c = a.c;
    let n = len / a.t.max(1);
    if len == 0 || c == 0 {
        let zeros = dev.alloc_zeros::<f32>((len + 2 * c).max(1))?;
        return Ok(f32::wrap_cuda_slice(zeros, dev));
    }
    // SAFETY: the neuron kernel writes dL/dy at every one of the first `len` values (rewritten
    // in place as dL/dx), the finishing kernel the 2C values after them.
    let mut out = unsafe { dev.alloc::<f32>(len + 2 * c)? };
    let (gg, gl_) = gamma.storage_and_layout();
    let (bg, bl) = beta.storage_and_layout();
    let (mg, ml) = a.mean.storage_and_layout();
    let (vg, vl) = a.var.storage_and_layout();
    let gamma_v = f32_view(&gg, gl_, op)?;
    let beta_v = f32_view(&bg, bl, op)?;
    let mean_v = f32_view(&mg, ml, op)?;
    let var_v = f32_view(&vg, vl, op)?;
    let coef = a.coef(&dev, kd, &gamma_v, &beta_v)?;
    let stream = dev.cuda_stream();
    let (t32, n64, c32, s64, sg_a) = (
        a.t as u32,
        n as u64,
        c as u32,
        a.s as u64,
        a.p.surrogate.param(),
    );
    // 1. BPTT on the normalised input: dL/dy into out[..len].
    let f = load_neuron(&dev, a.variant(kd), KERNEL_BN_LIF_BWD)?;
    let mut b = stream.launch_builder(&f);
    b.arg(&x);
    b.arg(&gsv);
    b.arg(&out);
    b.arg(&coef);
    b.arg(&t32);
    b.arg(&n64);
    b.arg(&c32);
    b.arg(&s64);
    b.arg(&a.p.k);
    b.arg(&a.p.vth);
    b.arg(&a.p.vr);
    b.arg(&sg_a);
    // SAFETY: argument list matches nmoco_bn_lif_bwd's signature.
    unsafe { b.launch(grid(n)) }.w()?;
    // 2. Per-channel partial sums of dL/dy and dL/dy·(x − μ).
    let rows = len / (c * a.s).max(1);
    let m = rows * a.s;
    let (chunks, clen) = bn_reduce_chunks(m);
    let (r64, len64, ch32) = (rows as u64, clen as u64, chunks as u32);
    // SAFETY: every block writes its two partials.
    let part = unsafe { dev.alloc::<f32>(c * chunks * 2)? };
    let f = load_reduce(&dev, kd, KERNEL_BN_GRAD_PARTIAL)?;
    let mut b = stream.launch_builder(&f);
    b.arg(&x);
    b.arg(&out);
    b.arg(&mean_v);
    b.arg(&part);
    b.arg(&r64);
    b.arg(&c32);
    b.arg(&s64);
    b.arg(&len64);
    b.arg(&ch32);
    // SAFETY: argument list matches nmoco_bn_grad_partial's signature.
    unsafe { b.launch(per_channel(c, chunks)) }.w()?;
    // 3. dL/dγ, dL/dβ into the tail, and the input-gradient map.
    // SAFETY: the finishing kernel writes all 3C coefficients.
    let kcoef = unsafe { dev.alloc::<f32>(3 * c)? };
    let (mf, eps) = (m as f64, a.eps);
    {
        let mut tail = out.slice_mut(len..len + 2 * c);
        let f = load_reduce(&dev, kd, KERNEL_BN_GRAD_FINISH)?;
        let mut b = stream.launch_builder(&f);
        b.arg(&part);
        b.arg(&mean_v);
        b.arg(&var_v);
        b.arg(&gamma_v);
        b.arg(&mut tail);
        b.arg(&kcoef);
        b.arg(&c32);
        b.arg(&ch32);
        b.arg(&mf);
        b.arg(&eps);
        // SAFETY: argument list matches nmoco_bn_grad_finish's signature.
        unsafe { b.launch(one_block_per_channel(c)) }.w()?;
    }
    // 4. dL/dx = ka·dL/dy + kb·x + kd in place.
    let total = len as u64;
    let f = load_reduce(&dev, kd, KERNEL_BN_INPUT_GRAD)?;
    let mut b = stream.launch_builder(&f);
    b.arg(&x);
    b.arg(&out);
    b.arg(&kcoef);
    b.arg(&total);
    b.arg(&c32);
    b.arg(&s64);
    // SAFETY: argument list matches nmoco_bn_input_grad's signature.
    unsafe { b.launch(grid(len)) }.w()?;
    Ok(f32::wrap_cuda_slice(out, dev))
}
