//! The fused multi-step neuron ops (candle custom ops) and their public wrappers.
//!
//! - [`lif_multistep`] (IF and LIF): `LifFwd` (CustomOp1 on `x`) returns the spikes; its `bwd`
//!   applies `LifBwd` (CustomOp2 on `x`, `dL/ds`) which returns `dL/dx`.
//! - [`plif_multistep`]: `PlifFwd` (CustomOp2 on `x`, `w`); its `bwd` applies `PlifBwd`
//!   (CustomOp3 on `x`, `w`, `dL/ds`) which returns one buffer of `T*N + 1` values: `dL/dx`
//!   followed by `dL/dw`, split with zero-copy narrows.
//!
//! **Membrane trace in the backward pass: recomputed, not saved.** candle's `bwd` only receives
//! the input, the output and the output's gradient. The forward op returns only the spikes; the
//! backward kernel recomputes `h` from `x` (on CPU per block of neurons into an L2-resident
//! scratch, on CUDA into the gradient buffer itself, which is then overwritten in place). Saving
//! `h` would cost one more `[T, N]` tensor of memory per neuron layer kept alive until the
//! backward pass plus one more write in the forward and one more read in the backward
//! (6 x 4 B per element for forward+backward instead of 5 x 4 B); the recompute costs only
//! arithmetic, which is free in this memory-bound op.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use crate::config::{NeuronConfig, NeuronKind, Params};
use crate::cpu;
use crate::error::SnnError;

/// Time steps and neurons per step of a `[T, ...]` shape.
pub(crate) fn t_n(shape: &Shape) -> (usize, usize) {
    let t = shape.dims().first().copied().unwrap_or(0);
    let n = shape.elem_count().checked_div(t).unwrap_or(0);
    (t, n)
}

pub(crate) fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        other => {
            return Err(SnnError::Dtype {
                op,
                dtype: other.dtype(),
                device: "cpu",
            }
            .into());
        }
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// `k = sigmoid(w) = 1 / (1 + exp(-w))`, in the same f32 operations as the reference twin.
pub(crate) fn k_from_w(w: f32) -> f32 {
    1.0 / (1.0 + (-w).exp())
}

fn cpu_w(s: &CpuStorage, l: &Layout, op: &'static str) -> Result<f32> {
    let w = cpu_f32(s, l, op)?;
    match w {
        [w] => Ok(*w),
        _ => Err(SnnError::WShape {
            op,
            shape: l.dims().to_vec(),
        }
        .into()),
    }
}

pub(crate) struct LifFwd {
    pub(crate) p: Params,
}

impl CustomOp1 for LifFwd {
    fn name(&self) -> &'static str {
        "nmoco-lif-fwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s, l, self.name())?;
        let (t, n) = t_n(l.shape());
        let out = cpu::forward(x, t, n, &self.p, self.p.k);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::forward(&self.p, false, s, l, None)
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let g = grad_res.contiguous()?;
        Ok(Some(arg.apply_op2_no_bwd(&g, &LifBwd { p: self.p })?))
    }
}

pub(crate) struct LifBwd {
    pub(crate) p: Params,
}

impl CustomOp2 for LifBwd {
    fn name(&self) -> &'static str {
        "nmoco-lif-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s1, l1, self.name())?;
        let gs = cpu_f32(s2, l2, self.name())?;
        let (t, n) = t_n(l1.shape());
        let (gx, _) = cpu::backward(x, gs, t, n, &self.p, self.p.k, false);
        Ok((CpuStorage::F32(gx), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::backward(&self.p, s1, l1, None, s2, l2)
    }
}

pub(crate) struct PlifFwd {
    pub(crate) p: Params,
}

impl CustomOp2 for PlifFwd {
    fn name(&self) -> &'static str {
        "nmoco-plif-fwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s1, l1, self.name())?;
        let k = k_from_w(cpu_w(s2, l2, self.name())?);
        let (t, n) = t_n(l1.shape());
        let out = cpu::forward(x, t, n, &self.p, k);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::forward(&self.p, true, s1, l1, Some((s2, l2)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad_res.contiguous()?;
        let packed = x.apply_op3_no_bwd(w, &g, &PlifBwd { p: self.p })?;
        let tn = x.elem_count();
        let gx = packed.narrow(0, 0, tn)?.reshape(x.shape())?;
        let gw = packed.narrow(0, tn, 1)?.reshape(w.shape())?;
        Ok((Some(gx), Some(gw)))
    }
}

/// PLIF's backward: returns `[dL/dx (T*N values), dL/dw]` flattened into one buffer.
pub(crate) struct PlifBwd {
    pub(crate) p: Params,
}

impl CustomOp3 for PlifBwd {
    fn name(&self) -> &'static str {
        "nmoco-plif-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s1, l1, self.name())?;
        let k = k_from_w(cpu_w(s2, l2, self.name())?);
        let gs = cpu_f32(s3, l3, self.name())?;
        let (t, n) = t_n(l1.shape());
        let (mut out, gk) = cpu::backward(x, gs, t, n, &self.p, k, true);
        let last = out.len() - 1;
        out[last] = (gk * (k as f64) * (1.0 - k as f64)) as f32;
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::backward(&self.p, s1, l1, Some((s2, l2)), s3, l3)
    }
}

fn check_x(x: &Tensor, op: &'static str) -> Result<()> {
    if x.rank() < 1 {
        return Err(SnnError::Rank {
            op,
            rank: x.rank(),
            min_rank: 1,
        }
        .into());
    }
    Ok(())
}

/// Fused multi-step IF/LIF over `x: [T, ...]`: returns the spikes (same shape and dtype), the
/// membrane starting at rest on every call. Differentiable w.r.t. `x` (fused BPTT).
/// CPU: f32; CUDA: f32, f16, bf16.
pub fn lif_multistep(x: &Tensor, cfg: &NeuronConfig) -> Result<Tensor> {
    check_x(x, "lif_multistep")?;
    if cfg.kind == NeuronKind::Plif {
        return Err(SnnError::Kind {
            op: "lif_multistep",
            kind: cfg.kind,
            hint: "use plif_multistep with a w tensor",
        }
        .into());
    }
    let p = cfg.params()?;
    x.contiguous()?.apply_op1(LifFwd { p })
}

/// The fused backward op of [`lif_multistep`] on its own: `dL/dx` from `x` and `dL/ds`
/// (what autograd calls; exposed for benchmarks and tests).
pub fn lif_multistep_bwd(x: &Tensor, grad_spikes: &Tensor, cfg: &NeuronConfig) -> Result<Tensor> {
    check_x(x, "lif_multistep_bwd")?;
    if x.shape() != grad_spikes.shape() {
        return Err(SnnError::Shape {
            op: "lif_multistep_bwd",
            expected: x.dims().to_vec(),
            found: grad_spikes.dims().to_vec(),
        }
        .into());
    }
    let p = cfg.params()?;
    x.contiguous()?
        .apply_op2_no_bwd(&grad_spikes.contiguous()?, &LifBwd { p })
}

/// Fused multi-step PLIF over `x: [T, ...]` with the learnable scalar `w` (one element, any
/// shape; `k = sigmoid(w)`, `tau = 1 + exp(-w)`). Differentiable w.r.t. `x` and `w`.
pub fn plif_multistep(x: &Tensor, w: &Tensor, cfg: &NeuronConfig) -> Result<Tensor> {
    check_x(x, "plif_multistep")?;
    if w.elem_count() != 1 {
        return Err(SnnError::WShape {
            op: "plif_multistep",
            shape: w.dims().to_vec(),
        }
        .into());
    }
    let p = crate::reference::plif_params(cfg)?;
    let w = w.to_dtype(x.dtype())?;
    x.contiguous()?.apply_op2(&w.contiguous()?, PlifFwd { p })
}

/// Training batch norm (batch statistics given) fused with the following multi-step IF/LIF:
/// `CustomOp3` on (`x`, `gamma`, `beta`) returning the spikes; the normalised tensor is never
/// materialised (the neuron kernel applies `a[c]·x + d[c]` on load).
struct BnLifFwd {
    p: Params,
    mean: Vec<f32>,
    invstd: Vec<f64>,
    t: usize,
    c: usize,
    s: usize,
}

impl BnLifFwd {
    /// `a = γ/σ`, `d = β − μ·γ/σ` per channel, in the same operations as the unfused
    /// batch norm (so the neuron sees bit-identical inputs).
    fn coef(&self, gamma: &[f32], beta: &[f32]) -> (Vec<f32>, Vec<f32>) {
        (0..self.c)
            .map(|ch| {
                let scale = f64::from(gamma[ch]) * self.invstd[ch];
                (
                    scale as f32,
                    (f64::from(beta[ch]) - f64::from(self.mean[ch]) * scale) as f32,
                )
            })
            .unzip()
    }

    fn check(&self, op: &'static str, len: usize, gamma: &[f32], beta: &[f32]) -> Result<()> {
        if gamma.len() != self.c
            || beta.len() != self.c
            || !len.is_multiple_of((self.t * self.c * self.s).max(1))
        {
            return Err(SnnError::Shape {
                op,
                expected: vec![self.c],
                found: vec![gamma.len(), beta.len()],
            }
            .into());
        }
        Ok(())
    }
}

impl CustomOp3 for BnLifFwd {
    fn name(&self) -> &'static str {
        "nmoco-bn-lif-fwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s1, l1, self.name())?;
        let gamma = cpu_f32(s2, l2, self.name())?;
        let beta = cpu_f32(s3, l3, self.name())?;
        self.check(self.name(), x.len(), gamma, beta)?;
        let (a, d) = self.coef(gamma, beta);
        let aff = cpu::ChannelAffine {
            a: &a,
            d: &d,
            c: self.c,
            s: self.s,
        };
        let n = x.len() / self.t;
        let out = cpu::forward_affine(x, self.t, n, &self.p, self.p.k, &aff);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad_res.contiguous()?;
        let gamma_v = gamma.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        let beta_v = beta.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        self.check(self.name(), x.elem_count(), &gamma_v, &beta_v)?;
        let (a, d) = self.coef(&gamma_v, &beta_v);
        let bwd = BnLifBwd {
            gamma: gamma_v,
            a,
            d,
            fwd: BnLifFwd {
                p: self.p,
                mean: self.mean.clone(),
                invstd: self.invstd.clone(),
                t: self.t,
                c: self.c,
                s: self.s,
            },
        };
        let all = x.apply_op2_no_bwd(&g, &bwd)?;
        // Zero-copy narrows of the one buffer (as for PLIF's dL/dw).
        let len = x.elem_count();
        let dx = all.narrow(0, 0, len)?.reshape(x.shape())?;
        let dgamma = all.narrow(0, len, self.c)?;
        let dbeta = all.narrow(0, len + self.c, self.c)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// Backward of [`BnLifFwd`]: `CustomOp2` on (`x`, `dL/ds`) returning one buffer of
/// `len + 2C` values: `dL/dx`, `dL/dγ`, `dL/dβ`. One pass recomputes the membrane, runs BPTT
/// and sums `Σ dL/dy` and `Σ dL/dy·(x − μ)` per channel; a second turns `dL/dy` into `dL/dx`
/// in place.
struct BnLifBwd {
    fwd: BnLifFwd,
    gamma: Vec<f32>,
    /// The forward's affine coefficients.
    a: Vec<f32>,
    d: Vec<f32>,
}

impl CustomOp2 for BnLifBwd {
    fn name(&self) -> &'static str {
        "nmoco-bn-lif-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let f = &self.fwd;
        let x = cpu_f32(s1, l1, self.name())?;
        let gs = cpu_f32(s2, l2, self.name())?;
        let gamma = &self.gamma;
        if gs.len() != x.len() {
            return Err(SnnError::Shape {
                op: self.name(),
                expected: l1.dims().to_vec(),
                found: l2.dims().to_vec(),
            }
            .into());
        }
        let aff = cpu::ChannelAffine {
            a: &self.a,
            d: &self.d,
            c: f.c,
            s: f.s,
        };
        let n = x.len() / f.t;
        let (mut out, s_g, s_gx) = cpu::backward_affine(x, gs, f.t, n, &f.p, f.p.k, &aff, &f.mean);
        // Batch norm's backward (as `nmoco_conv::batch_norm_train`), per channel in f64.
        let m = (x.len() / f.c).max(1) as f64;
        let (mut ka, mut kb, mut kd) = (vec![0f32; f.c], vec![0f32; f.c], vec![0f32; f.c]);
        let len = x.len();
        for ch in 0..f.c {
            let dgamma = s_gx[ch] * f.invstd[ch];
            let k = f64::from(gamma[ch]) * f.invstd[ch];
            let bx = -k * f.invstd[ch] * dgamma / m;
            ka[ch] = k as f32;
            kb[ch] = bx as f32;
            kd[ch] = (-k * s_g[ch] / m - bx * f64::from(f.mean[ch])) as f32;
            out[len + ch] = dgamma as f32;
            out[len + f.c + ch] = s_g[ch] as f32;
        }
        cpu::bn_input_grad_in_place(&mut out[..len], x, n, f.c, f.s, &ka, &kb, &kd);
        let total = out.len();
        Ok((CpuStorage::F32(out), Shape::from(total)))
    }
}

/// Training-mode batch norm of a time-folded `x: [T·B, C, ...]` (CPU, f32, contiguous) with
/// the given batch statistics (`mean`, `invstd` = 1/√(σ² + ε), per channel, treated as
/// constants like the unfused op's), followed by the multi-step IF/LIF `cfg` over `T = t`:
/// returns the spikes in `x`'s layout. Equals `lif(batch_norm_train(x))` (the neuron sees
/// bit-identical inputs) but never writes the normalised tensor: one read of `x` and one write
/// of the spikes forward; backward one pass for BPTT plus the channel sums and one in-place
/// pass for `dL/dx`. Differentiable w.r.t. `x`, `gamma` and `beta`. PLIF is not supported
/// (use the unfused ops).
#[allow(clippy::too_many_arguments)]
pub fn bn_lif_multistep(
    x: &Tensor,
    t: usize,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &[f32],
    invstd: &[f64],
    cfg: &NeuronConfig,
) -> Result<Tensor> {
    const OP: &str = "bn_lif_multistep";
    if cfg.kind == NeuronKind::Plif {
        return Err(SnnError::Kind {
            op: OP,
            kind: cfg.kind,
            hint: "fused batch norm supports IF and LIF; use batch norm then plif_multistep",
        }
        .into());
    }
    let dims = x.dims();
    let c = dims.get(1).copied().unwrap_or(0);
    let tb = dims.first().copied().unwrap_or(0);
    if dims.len() < 2 || t == 0 || !tb.is_multiple_of(t) || mean.len() != c || invstd.len() != c {
        return Err(SnnError::Shape {
            op: OP,
            expected: vec![t, c],
            found: dims.to_vec(),
        }
        .into());
    }
    let p = cfg.params()?;
    let s = dims[2..].iter().product::<usize>();
    let op = BnLifFwd {
        p,
        mean: mean.to_vec(),
        invstd: invstd.to_vec(),
        t,
        c,
        s,
    };
    x.contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)
}
