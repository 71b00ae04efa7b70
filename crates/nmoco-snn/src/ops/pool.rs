//! Max-pool 3×3, stride 2, padding 1 with the argmax saved (the SEW-ResNet stem pool and
//! Spikformer's SPS pools), as PyTorch's `max_pool2d(x, 3, 2, 1)`: the padding never wins and a
//! window's gradient goes to its first maximal element in row-major window order.
//!
//! [`max_pool_3x3_s2`] is one custom op (`PoolFwd`): the forward writes the maxima and the
//! argmax (0..8, exact in every float dtype) into one `[2, N, C, Ho, Wo]` buffer, so candle hands
//! the argmax to the backward as part of the op's result; the backward (`PoolBwd`) gathers each
//! input element's gradient from the at most four windows whose argmax it is, in a fixed order
//! (deterministic, no atomics). CPU: f32; CUDA (`kernels/pool.cu`): f32, f16, bf16; other
//! dtypes use the reference twin [`max_pool_3x3_s2_ref`], built from plain candle ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_f32;
use crate::error::SnnError;

/// Output size of the pool along a dimension of size `n`.
fn out_len(n: usize) -> usize {
    n.div_ceil(2)
}

/// `(planes, h, w)` of an `[N, C, H, W]` layout.
fn dims(l: &Layout, op: &'static str) -> Result<(usize, usize, usize)> {
    match l.dims() {
        [n, c, h, w] if *h > 0 && *w > 0 => Ok((n * c, *h, *w)),
        d => Err(SnnError::PoolShape {
            op,
            shape: d.to_vec(),
        }
        .into()),
    }
}

/// Forward of one plane: maxima into `out`, argmax (as f32) into `arg`.
fn fwd_plane(x: &[f32], h: usize, w: usize, out: &mut [f32], arg: &mut [f32]) {
    let (ho, wo) = (out_len(h), out_len(w));
    for oy in 0..ho {
        for ox in 0..wo {
            let (mut best, mut at) = (0f32, -1i32);
            for dy in 0..3 {
                let Some(y) = (2 * oy + dy).checked_sub(1).filter(|&y| y < h) else {
                    continue;
                };
                for dx in 0..3 {
                    let Some(xx) = (2 * ox + dx).checked_sub(1).filter(|&x| x < w) else {
                        continue;
                    };
                    let v = x[y * w + xx];
                    if at < 0 || v > best || v.is_nan() {
                        best = v;
                        at = (dy * 3 + dx) as i32;
                    }
                }
            }
            out[oy * wo + ox] = best;
            arg[oy * wo + ox] = at as f32;
        }
    }
}

/// Backward of one plane: `dx[y, x]` = the sum of `g` over the windows whose argmax is (y, x).
fn bwd_plane(g: &[f32], arg: &[f32], h: usize, w: usize, dx: &mut [f32]) {
    let (ho, wo) = (out_len(h), out_len(w));
    for y in 0..h {
        let (oy0, oy1) = (y / 2, y.div_ceil(2).min(ho - 1));
        for x in 0..w {
            let (ox0, ox1) = (x / 2, x.div_ceil(2).min(wo - 1));
            let mut acc = 0f32;
            for oy in oy0..=oy1 {
                let dy = y + 1 - 2 * oy;
                for ox in ox0..=ox1 {
                    let dxx = x + 1 - 2 * ox;
                    let o = oy * wo + ox;
                    if arg[o] as usize == dy * 3 + dxx {
                        acc += g[o];
                    }
                }
            }
            dx[y * w + x] = acc;
        }
    }
}

struct PoolFwd;

impl CustomOp1 for PoolFwd {
    fn name(&self) -> &'static str {
        "nmoco-maxpool-fwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (p, h, w) = dims(l, op)?;
        let x = cpu_f32(s, l, op)?;
        let (ho, wo) = (out_len(h), out_len(w));
        let plane_out = ho * wo;
        let mut out = vec![0f32; 2 * p * plane_out];
        let (vals, args) = out.split_at_mut(p * plane_out);
        vals.par_chunks_mut(plane_out)
            .zip(args.par_chunks_mut(plane_out))
            .zip(x.par_chunks(h * w))
            .for_each(|((o, a), xp)| fwd_plane(xp, h, w, o, a));
        let d = l.dims();
        Ok((CpuStorage::F32(out), Shape::from((2, d[0], d[1], ho, wo))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (p, h, w) = dims(l, self.name())?;
        let storage = crate::cuda::pool_fwd(s, l, p, h, w)?;
        let d = l.dims();
        Ok((
            storage,
            Shape::from((2, d[0], d[1], out_len(h), out_len(w))),
        ))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let g = grad_res.narrow(0, 0, 1)?.squeeze(0)?.contiguous()?;
        let at = res.narrow(0, 1, 1)?.squeeze(0)?.detach().contiguous()?;
        let (_, _, h, w) = arg.dims4()?;
        Ok(Some(g.apply_op2_no_bwd(&at, &PoolBwd { h, w })?))
    }
}

/// `(dL/dy, argmax)` → `dL/dx` for an input of spatial size `h × w`.
struct PoolBwd {
    h: usize,
    w: usize,
}

impl CustomOp2 for PoolBwd {
    fn name(&self) -> &'static str {
        "nmoco-maxpool-bwd"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        as_: &CpuStorage,
        al: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (p, ho, wo) = dims(gl, op)?;
        let (g, a) = (cpu_f32(gs, gl, op)?, cpu_f32(as_, al, op)?);
        let (h, w) = (self.h, self.w);
        if (ho, wo) != (out_len(h), out_len(w)) || a.len() != g.len() {
            candle_core::bail!(
                "{op}: gradient {:?} does not fit an input of {h}x{w}",
                gl.dims()
            );
        }
        let mut dx = vec![0f32; p * h * w];
        dx.par_chunks_mut(h * w)
            .zip(g.par_chunks(ho * wo).zip(a.par_chunks(ho * wo)))
            .for_each(|(d, (gp, ap))| bwd_plane(gp, ap, h, w, d));
        let d = gl.dims();
        Ok((CpuStorage::F32(dx), Shape::from((d[0], d[1], h, w))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
        as_: &candle_core::CudaStorage,
        al: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (p, ho, wo) = dims(gl, self.name())?;
        let (h, w) = (self.h, self.w);
        if (ho, wo) != (out_len(h), out_len(w)) || al.dims() != gl.dims() {
            candle_core::bail!(
                "{}: gradient {:?} does not fit an input of {h}x{w}",
                self.name(),
                gl.dims()
            );
        }
        let storage = crate::cuda::pool_bwd(gs, gl, as_, al, p, h, w)?;
        let d = gl.dims();
        Ok((storage, Shape::from((d[0], d[1], h, w))))
    }
}

/// Whether the fused op runs `x` (else the reference twin does).
fn fused_supports(x: &Tensor) -> bool {
    match x.device() {
        candle_core::Device::Cpu => x.dtype() == DType::F32,
        candle_core::Device::Cuda(_) => {
            cfg!(feature = "cuda") && matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16)
        }
        _ => false,
    }
}

/// Max-pool 3×3, stride 2, padding 1 of `[N, C, H, W]` → `[N, C, ⌈H/2⌉, ⌈W/2⌉]`, one fused op
/// with a saved argmax (see the module docs); the reference twin where the op has no kernel.
pub fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    let d = x.dims();
    if d.len() != 4 || d[2] == 0 || d[3] == 0 {
        return Err(SnnError::PoolShape {
            op: "max_pool_3x3_s2",
            shape: d.to_vec(),
        }
        .into());
    }
    if !fused_supports(x) {
        return max_pool_3x3_s2_ref(x);
    }
    let both = x.contiguous()?.apply_op1(PoolFwd)?;
    both.narrow(0, 0, 1)?.squeeze(0)
}

/// The reference twin of [`max_pool_3x3_s2`] from plain candle ops: the nine strided window
/// views of the border-replicated input, the maximum, and the gradient routed through a mask of
/// each window's first maximal view. Replicated border elements are copies of the nearest
/// element, and the mapping of padded window positions to input elements preserves row-major
/// order, so the first maximum is the same element as with PyTorch's `-inf` padding.
pub fn max_pool_3x3_s2_ref(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h == 0 || w == 0 {
        return Err(SnnError::PoolShape {
            op: "max_pool_3x3_s2_ref",
            shape: x.dims().to_vec(),
        }
        .into());
    }
    let (ho, wo) = (out_len(h), out_len(w));
    // Pad to 2·out + 2 so that `narrow(d, 2·out)` fits for d = 0, 1, 2.
    let xp = x
        .pad_with_same(2, 1, 2 * ho + 1 - h)?
        .pad_with_same(3, 1, 2 * wo + 1 - w)?;
    let mut views = Vec::with_capacity(9);
    for dy in 0..3 {
        let rows = xp.narrow(2, dy, 2 * ho)?;
        let (n, c, _, wp) = rows.dims4()?;
        let rows = rows
            .reshape((n, c, ho, 2, wp))?
            .narrow(3, 0, 1)?
            .squeeze(3)?;
        for dx in 0..3 {
            let v = rows.narrow(3, dx, 2 * wo)?;
            let v = v
                .reshape((n, c, ho, wo, 2))?
                .narrow(4, 0, 1)?
                .squeeze(4)?
                .contiguous()?;
            views.push(v);
        }
    }
    let mut m = views[0].detach();
    for v in &views[1..] {
        m = m.maximum(&v.detach())?;
    }
    // first_i = [v_i == m] · Π_{j<i} (1 − [v_j == m]).
    let mut none_before = m.ones_like()?;
    let mut s = m.zeros_like()?;
    for v in &views {
        let eq = v.detach().eq(&m)?.to_dtype(x.dtype())?;
        let first = (&eq * &none_before)?;
        none_before = (&none_before - &first)?;
        s = (s + (v * first)?)?;
    }
    // Exact maxima in the forward value, first-maximum gradient in the backward.
    m + (&s - s.detach())?
}
