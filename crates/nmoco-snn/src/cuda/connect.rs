//! `cuda` feature only: launches of the SEW IAND connect kernels (`kernels/connect.cu`).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, CudaStorage, Layout, Result};

use super::{kdtype, load_module, offsets};
use crate::cuda_variants::{
    KERNEL_IAND_BWD, KERNEL_IAND_FWD, KernelDtype, connect_module_name, connect_source,
    pool_options,
};

fn load(dev: &CudaDevice, kd: KernelDtype, kernel: &str) -> Result<CudaFunction> {
    load_module(
        dev,
        connect_module_name(kd),
        connect_source,
        |arch| pool_options(kd, arch),
        kernel,
    )
}

/// Blocks of 256 threads for a grid-stride loop over `n` elements (at most 2^16 blocks).
fn stride_grid(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 1 << 16) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn same_len(op: &'static str, la: &Layout, lb: &Layout) -> Result<usize> {
    let n = la.shape().elem_count();
    if lb.shape().elem_count() != n {
        candle_core::bail!("{op}: shapes {:?} and {:?} differ", la.dims(), lb.dims());
    }
    Ok(n)
}

/// `y = a · (1 − b)`.
pub(crate) fn iand_fwd(
    sa: &CudaStorage,
    la: &Layout,
    sb: &CudaStorage,
    lb: &Layout,
) -> Result<CudaStorage> {
    let op = "nmoco-iand-fwd";
    if sa.dtype() != sb.dtype() {
        candle_core::bail!("{op}: dtypes {:?} and {:?} differ", sa.dtype(), sb.dtype());
    }
    match kdtype(op, sa.dtype())? {
        KernelDtype::F32 => fwd_t::<f32>(KernelDtype::F32, sa, la, sb, lb),
        KernelDtype::F16 => fwd_t::<half::f16>(KernelDtype::F16, sa, la, sb, lb),
        KernelDtype::Bf16 => fwd_t::<half::bf16>(KernelDtype::Bf16, sa, la, sb, lb),
    }
}

fn fwd_t<T: CudaDType + DeviceRepr>(
    kd: KernelDtype,
    sa: &CudaStorage,
    la: &Layout,
    sb: &CudaStorage,
    lb: &Layout,
) -> Result<CudaStorage> {
    let op = "nmoco-iand-fwd";
    let dev = sa.device().clone();
    let n = same_len(op, la, lb)?;
    let (a1, a2) = offsets(la, op)?;
    let (b1, b2) = offsets(lb, op)?;
    let a = T::as_cuda_slice(sa)?.slice(a1..a2);
    let b = T::as_cuda_slice(sb)?.slice(b1..b2);
    // SAFETY: the kernel writes every one of the n elements before any read.
    let y = unsafe { dev.alloc::<T>(n.max(1))? };
    if n > 0 {
        let f = load(&dev, kd, KERNEL_IAND_FWD)?;
        let n64 = n as u64;
        let stream = dev.cuda_stream();
        let mut bld = stream.launch_builder(&f);
        bld.arg(&a);
        bld.arg(&b);
        bld.arg(&y);
        bld.arg(&n64);
        // SAFETY: argument list matches nmoco_iand_fwd's signature; a, b hold n elements each.
        unsafe { bld.launch(stride_grid(n)) }.w()?;
    }
    Ok(T::wrap_cuda_slice(y, dev))
}

/// `[dL/da ‖ dL/db]` (2n elements) from `a`, `b` and `dL/dy`.
pub(crate) fn iand_bwd(
    (sa, la): (&CudaStorage, &Layout),
    (sb, lb): (&CudaStorage, &Layout),
    (sg, lg): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let op = "nmoco-iand-bwd";
    if sa.dtype() != sb.dtype() || sa.dtype() != sg.dtype() {
        candle_core::bail!(
            "{op}: dtypes {:?}, {:?} and {:?} differ",
            sa.dtype(),
            sb.dtype(),
            sg.dtype()
        );
    }
    let args = [(sa, la), (sb, lb), (sg, lg)];
    match kdtype(op, sa.dtype())? {
        KernelDtype::F32 => bwd_t::<f32>(KernelDtype::F32, args),
        KernelDtype::F16 => bwd_t::<half::f16>(KernelDtype::F16, args),
        KernelDtype::Bf16 => bwd_t::<half::bf16>(KernelDtype::Bf16, args),
    }
}

fn bwd_t<T: CudaDType + DeviceRepr>(
    kd: KernelDtype,
    [(sa, la), (sb, lb), (sg, lg)]: [(&CudaStorage, &Layout); 3],
) -> Result<CudaStorage> {
    let op = "nmoco-iand-bwd";
    let dev = sa.device().clone();
    let n = same_len(op, la, lb)?;
    same_len(op, la, lg)?;
    let (a1, a2) = offsets(la, op)?;
    let (b1, b2) = offsets(lb, op)?;
    let (g1, g2) = offsets(lg, op)?;
    let a = T::as_cuda_slice(sa)?.slice(a1..a2);
    let b = T::as_cuda_slice(sb)?.slice(b1..b2);
    let g = T::as_cuda_slice(sg)?.slice(g1..g2);
    // SAFETY: the kernel writes all 2n elements (two per index) before any read.
    let out = unsafe { dev.alloc::<T>((2 * n).max(1))? };
    if n > 0 {
        let f = load(&dev, kd, KERNEL_IAND_BWD)?;
        let n64 = n as u64;
        let stream = dev.cuda_stream();
        let mut bld = stream.launch_builder(&f);
        bld.arg(&a);
        bld.arg(&b);
        bld.arg(&g);
        bld.arg(&out);
        bld.arg(&n64);
        // SAFETY: argument list matches nmoco_iand_bwd's signature; a, b, g hold n elements,
        // out 2n.
        unsafe { bld.launch(stride_grid(n)) }.w()?;
    }
    Ok(T::wrap_cuda_slice(out, dev))
}
