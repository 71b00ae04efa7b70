//! The SEW-ResNet IAND connect `g(a, b) = a · (1 − b)` (`a` the block's identity path, `b` its
//! output spikes) as one custom op each way: `IandFwd` (CustomOp2 on `a`, `b`) writes `y`; its
//! `bwd` applies `IandBwd` (CustomOp3 on `a`, `b`, `dL/dy`), which writes `dL/da ‖ dL/db` into
//! one `[2, ...]` buffer split with zero-copy narrows. Each value is the same single f32
//! operation as the plain-ops twin [`sew_iand_ref`] (`a * b.affine(-1, 1)` and its autograd), so
//! in f32 the op and the twin agree bit for bit.
//!
//! [`sew_iand`] runs the op on CUDA (f32, f16, bf16; `kernels/connect.cu`) and the twin
//! elsewhere; [`sew_iand_fused`] runs the op wherever it has a kernel (CUDA, and f32 on the
//! CPU, where it exists for the tests).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};

use super::cpu_f32;

fn same_shape(op: &'static str, a: &Layout, b: &Layout) -> Result<()> {
    if a.dims() != b.dims() {
        candle_core::bail!("{op}: shapes {:?} and {:?} differ", a.dims(), b.dims());
    }
    Ok(())
}

struct IandFwd;

impl CustomOp2 for IandFwd {
    fn name(&self) -> &'static str {
        "nmoco-iand-fwd"
    }

    fn cpu_fwd(
        &self,
        sa: &CpuStorage,
        la: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        same_shape(op, la, lb)?;
        let (a, b) = (cpu_f32(sa, la, op)?, cpu_f32(sb, lb, op)?);
        let y: Vec<f32> = a.iter().zip(b).map(|(a, b)| a * (1.0 - b)).collect();
        Ok((CpuStorage::F32(y), la.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sa: &candle_core::CudaStorage,
        la: &Layout,
        sb: &candle_core::CudaStorage,
        lb: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        same_shape(self.name(), la, lb)?;
        Ok((crate::cuda::iand_fwd(sa, la, sb, lb)?, la.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad_res.contiguous()?;
        let both = a.detach().apply_op3_no_bwd(&b.detach(), &g, &IandBwd)?;
        let da = both.narrow(0, 0, 1)?.squeeze(0)?;
        let db = both.narrow(0, 1, 1)?.squeeze(0)?;
        Ok((Some(da), Some(db)))
    }
}

/// `(a, b, dL/dy)` → `[dL/da, dL/db]` stacked on a new leading dimension.
struct IandBwd;

impl CustomOp3 for IandBwd {
    fn name(&self) -> &'static str {
        "nmoco-iand-bwd"
    }

    fn cpu_fwd(
        &self,
        sa: &CpuStorage,
        la: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        same_shape(op, la, lb)?;
        same_shape(op, la, lg)?;
        let (a, b, g) = (
            cpu_f32(sa, la, op)?,
            cpu_f32(sb, lb, op)?,
            cpu_f32(sg, lg, op)?,
        );
        let mut out = Vec::with_capacity(2 * a.len());
        out.extend(g.iter().zip(b).map(|(g, b)| g * (1.0 - b)));
        out.extend(g.iter().zip(a).map(|(g, a)| -(g * a)));
        Ok((CpuStorage::F32(out), stacked(la)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sa: &candle_core::CudaStorage,
        la: &Layout,
        sb: &candle_core::CudaStorage,
        lb: &Layout,
        sg: &candle_core::CudaStorage,
        lg: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        same_shape(self.name(), la, lb)?;
        same_shape(self.name(), la, lg)?;
        let out = crate::cuda::iand_bwd((sa, la), (sb, lb), (sg, lg))?;
        Ok((out, stacked(la)))
    }
}

/// `[2, dims of l...]`.
fn stacked(l: &Layout) -> Shape {
    let mut d = vec![2];
    d.extend_from_slice(l.dims());
    Shape::from(d)
}

/// Whether [`sew_iand_fused`] has a kernel for `a` and `b`.
fn fused_supports(a: &Tensor, b: &Tensor) -> bool {
    a.dtype() == b.dtype()
        && a.dims() == b.dims()
        && match a.device() {
            Device::Cpu => a.dtype() == DType::F32,
            Device::Cuda(_) => {
                cfg!(feature = "cuda") && matches!(a.dtype(), DType::F32 | DType::F16 | DType::BF16)
            }
            _ => false,
        }
}

/// The IAND connect `a · (1 − b)`: the fused op on CUDA, the plain-ops twin elsewhere (the CPU
/// path is the twin's few vectorised candle ops; see the module docs).
pub fn sew_iand(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.device().is_cuda() && fused_supports(a, b) {
        sew_iand_fused(a, b)
    } else {
        sew_iand_ref(a, b)
    }
}

/// The fused IAND op wherever it has a kernel (CUDA f32/f16/bf16, CPU f32); the twin otherwise.
pub fn sew_iand_fused(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !fused_supports(a, b) {
        return sew_iand_ref(a, b);
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, IandFwd)
}

/// The reference twin of [`sew_iand`] from plain candle ops: `a * (b · (−1) + 1)`.
pub fn sew_iand_ref(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a * b.affine(-1.0, 1.0)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// `n` values in [-2, 2) from a 64-bit LCG (or spikes: 1 where the value is above 0.5).
    fn rand(n: usize, seed: u64, spikes: bool) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let v = (s >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0;
                if spikes {
                    f32::from(u8::from(v > 0.5))
                } else {
                    v
                }
            })
            .collect()
    }

    /// `(y, dL/da, dL/db)` of `loss = sum(f(a, b) · g)`.
    fn run(
        f: fn(&Tensor, &Tensor) -> Result<Tensor>,
        a: &[f32],
        b: &[f32],
        g: &[f32],
        shape: &[usize],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let dev = Device::Cpu;
        let av = Var::from_tensor(&Tensor::from_slice(a, shape, &dev).unwrap()).unwrap();
        let bv = Var::from_tensor(&Tensor::from_slice(b, shape, &dev).unwrap()).unwrap();
        let gt = Tensor::from_slice(g, shape, &dev).unwrap();
        let y = f(av.as_tensor(), bv.as_tensor()).unwrap();
        let grads = (&y * &gt).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (
            flat(&y),
            flat(grads.get(av.as_tensor()).unwrap()),
            flat(grads.get(bv.as_tensor()).unwrap()),
        )
    }

    #[test]
    fn fused_op_and_twin_agree_bit_for_bit_on_values_and_gradients() {
        for (i, shape) in [&[4usize, 2, 3, 5, 5][..], &[1], &[3, 7]]
            .iter()
            .enumerate()
        {
            let n: usize = shape.iter().product();
            for spikes in [true, false] {
                let s = 10 * i as u64;
                let (a, b, g) = (
                    rand(n, s, spikes),
                    rand(n, s + 1, spikes),
                    rand(n, s + 2, false),
                );
                let fused = run(sew_iand_fused, &a, &b, &g, shape);
                let twin = run(sew_iand_ref, &a, &b, &g, shape);
                assert_eq!(fused, twin, "{shape:?} spikes={spikes}");
                // And the formula itself, element by element.
                for k in 0..n {
                    assert_eq!(fused.0[k], a[k] * (1.0 - b[k]));
                    assert_eq!(fused.1[k], g[k] * (1.0 - b[k]));
                    assert_eq!(fused.2[k], -(g[k] * a[k]));
                }
            }
        }
    }

    #[test]
    fn sew_iand_on_the_cpu_is_the_twin() {
        let (a, b, g) = (rand(30, 1, true), rand(30, 2, true), rand(30, 3, false));
        assert_eq!(
            run(sew_iand, &a, &b, &g, &[5, 6]),
            run(sew_iand_ref, &a, &b, &g, &[5, 6])
        );
    }

    #[test]
    fn non_contiguous_inputs_and_unsupported_dtypes_are_handled() {
        let dev = Device::Cpu;
        let a = Tensor::from_vec(rand(12, 4, false), (3, 4), &dev).unwrap();
        let b = Tensor::from_vec(rand(12, 5, true), (4, 3), &dev).unwrap();
        let bt = b.t().unwrap();
        let fused = sew_iand_fused(&a, &bt).unwrap();
        let twin = sew_iand_ref(&a, &bt).unwrap();
        assert_eq!(
            fused.to_vec2::<f32>().unwrap(),
            twin.to_vec2::<f32>().unwrap()
        );
        // f64 has no kernel: the twin runs.
        let a64 = a.to_dtype(DType::F64).unwrap();
        let b64 = bt.to_dtype(DType::F64).unwrap();
        assert_eq!(sew_iand_fused(&a64, &b64).unwrap().dtype(), DType::F64);
        // Mismatched shapes are an error, never a silent broadcast.
        assert!(sew_iand_fused(&a, &b).is_err());
    }
}
