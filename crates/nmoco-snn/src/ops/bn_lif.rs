//! Training batch norm fused with the following multi-step IF/LIF: `BnLifFwd` (CustomOp3 on
//! `x`, `γ`, `β`) and its backward `BnLifBwd`. Batch norm's maths (coefficients, `dL/dγ`, the
//! input gradient) is nmoco-conv's (`nmoco_conv::batch_norm_coef` and friends), the same
//! functions `nmoco_conv::batch_norm_train` calls.
//!
//! Two packings of the batch statistics: on the CPU they are host values (`Stats::Host`, mean
//! and `invstd`, as the CPU kernels take them); on CUDA they stay device tensors
//! (`Stats::Device`: mean and biased variance, f32 `[C]`, plus `ε`), read by the kernels of
//! `kernels/bn_lif.cu` without a host copy. The CUDA path is compile-tested only until
//! `examples/gpu_check.rs` runs on a device.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};

use super::cpu_f32;
use crate::config::{NeuronConfig, NeuronKind, Params};
use crate::cpu;
use crate::error::SnnError;

/// Training batch norm (batch statistics given) fused with the following multi-step IF/LIF:
/// `CustomOp3` on (`x`, `gamma`, `beta`) returning the spikes; the normalised tensor is never
/// materialised (the neuron kernel applies `a[c]·x + d[c]` on load).
struct BnLifFwd {
    p: Params,
    stats: Stats,
    t: usize,
    c: usize,
    s: usize,
}

/// The batch statistics the op normalises with (constants for autograd, like the unfused
/// op's).
#[derive(Clone)]
enum Stats {
    /// CPU: the mean and `invstd` = 1/√(σ² + ε) per channel.
    Host { mean: Vec<f32>, invstd: Vec<f64> },
    /// CUDA: the mean and biased variance, f32 `[C]` device tensors, and `ε`.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Device { mean: Tensor, var: Tensor, eps: f64 },
}

impl BnLifFwd {
    /// The host statistics, or an error naming the op (a CPU op given device statistics).
    fn host(&self, op: &'static str) -> Result<(&[f32], &[f64])> {
        match &self.stats {
            Stats::Host { mean, invstd } => Ok((mean, invstd)),
            Stats::Device { .. } => Err(SnnError::Dtype {
                op,
                dtype: DType::F32,
                device: "cpu (with device batch statistics)",
            }
            .into()),
        }
    }

    /// `a = γ/σ`, `d = β − μ·γ/σ` per channel: `nmoco_conv::batch_norm_coef`, the unfused batch
    /// norm's own coefficients (so the neuron sees bit-identical inputs).
    fn coef(&self, gamma: &[f32], beta: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let (mean, invstd) = self.host("nmoco-bn-lif")?;
        Ok(nmoco_conv::batch_norm_coef(gamma, beta, mean, invstd))
    }

    #[cfg(feature = "cuda")]
    fn cuda_args(&self) -> Result<crate::cuda::bn_lif::BnLifArgs<'_>> {
        let Stats::Device { mean, var, eps } = &self.stats else {
            candle_core::bail!("nmoco-bn-lif: CUDA input with host batch statistics");
        };
        Ok(crate::cuda::bn_lif::BnLifArgs {
            p: &self.p,
            t: self.t,
            c: self.c,
            s: self.s,
            mean,
            var,
            eps: *eps,
        })
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
        let (a, d) = self.coef(gamma, beta)?;
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
        if l2.shape().elem_count() != self.c || l3.shape().elem_count() != self.c {
            return Err(SnnError::Shape {
                op: self.name(),
                expected: vec![self.c],
                found: vec![l2.shape().elem_count(), l3.shape().elem_count()],
            }
            .into());
        }
        crate::cuda::bn_lif::bn_lif_fwd(&self.cuda_args()?, s1, l1, (s2, l2), (s3, l3))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if let Stats::Device { .. } = &self.stats {
            let g = grad_res.to_dtype(x.dtype())?.contiguous()?;
            let bwd = BnLifBwdDev {
                fwd: self.clone_op(),
                gamma: gamma.detach(),
                beta: beta.detach(),
            };
            let all = x.apply_op2_no_bwd(&g, &bwd)?;
            return split_grads(&all, x, self.c);
        }
        let g = grad_res.contiguous()?;
        let gamma_v = gamma.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        let beta_v = beta.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        self.check(self.name(), x.elem_count(), &gamma_v, &beta_v)?;
        let (a, d) = self.coef(&gamma_v, &beta_v)?;
        let bwd = BnLifBwd {
            gamma: gamma_v,
            a,
            d,
            fwd: self.clone_op(),
        };
        let all = x.apply_op2_no_bwd(&g, &bwd)?;
        split_grads(&all, x, self.c)
    }
}

impl BnLifFwd {
    fn clone_op(&self) -> BnLifFwd {
        BnLifFwd {
            p: self.p,
            stats: self.stats.clone(),
            t: self.t,
            c: self.c,
            s: self.s,
        }
    }
}

type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

/// `dL/dx` (in `x`'s dtype), `dL/dγ`, `dL/dβ` from the backward's one f32 buffer
/// `dL/dx ‖ dL/dγ ‖ dL/dβ`: zero-copy narrows (as for PLIF's `dL/dw`); a bf16 `x` gets its
/// gradient cast from f32.
fn split_grads(all: &Tensor, x: &Tensor, c: usize) -> Result<Grads3> {
    let len = x.elem_count();
    let dx = all
        .narrow(0, 0, len)?
        .reshape(x.shape())?
        .to_dtype(x.dtype())?;
    let dgamma = all.narrow(0, len, c)?;
    let dbeta = all.narrow(0, len + c, c)?;
    Ok((Some(dx), Some(dgamma), Some(dbeta)))
}

/// CUDA backward of [`BnLifFwd`] with device statistics: `CustomOp2` on (`x`, `dL/ds`)
/// returning one f32 buffer `dL/dx ‖ dL/dγ ‖ dL/dβ` (BPTT on the normalised input, then batch
/// norm's two-stage gradient sums and its input gradient; `crate::cuda::bn_lif::bn_lif_bwd`).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct BnLifBwdDev {
    fwd: BnLifFwd,
    gamma: Tensor,
    beta: Tensor,
}

impl CustomOp2 for BnLifBwdDev {
    fn name(&self) -> &'static str {
        "nmoco-bn-lif-bwd-dev"
    }

    fn cpu_fwd(
        &self,
        _s1: &CpuStorage,
        _l1: &Layout,
        _s2: &CpuStorage,
        _l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd.host(self.name())?;
        candle_core::bail!("{}: device statistics with CPU tensors", self.name())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::bn_lif::bn_lif_bwd(
            &self.fwd.cuda_args()?,
            &self.gamma,
            &self.beta,
            s1,
            l1,
            s2,
            l2,
        )
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
        let (mean, invstd) = f.host(self.name())?;
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
        let (mut out, s_g, s_gx) = cpu::backward_affine(x, gs, f.t, n, &f.p, f.p.k, &aff, mean);
        // Batch norm's backward: the functions `nmoco_conv::batch_norm_train`'s backward calls.
        let m = (x.len() / f.c).max(1) as f64;
        let dgamma = nmoco_conv::batch_norm_dgamma(&s_gx, invstd);
        let (ka, kb, kd) =
            nmoco_conv::batch_norm_input_grad_coef(gamma, mean, invstd, &dgamma, &s_g, m);
        let len = x.len();
        for ch in 0..f.c {
            out[len + ch] = dgamma[ch] as f32;
            out[len + f.c + ch] = s_g[ch] as f32;
        }
        cpu::bn_input_grad_in_place(&mut out[..len], x, n, f.c, f.s, &ka, &kb, &kd);
        let total = out.len();
        Ok((CpuStorage::F32(out), Shape::from(total)))
    }
}

/// Checks the fused op's arguments; returns the neuron parameters, `C` and the positions per
/// channel `S`.
fn check_args(
    op: &'static str,
    x: &Tensor,
    t: usize,
    stats_len: [usize; 2],
    cfg: &NeuronConfig,
) -> Result<(Params, usize, usize)> {
    if cfg.kind == NeuronKind::Plif {
        return Err(SnnError::Kind {
            op,
            kind: cfg.kind,
            hint: "fused batch norm supports IF and LIF; use batch norm then plif_multistep",
        }
        .into());
    }
    let dims = x.dims();
    let c = dims.get(1).copied().unwrap_or(0);
    let tb = dims.first().copied().unwrap_or(0);
    if dims.len() < 2 || t == 0 || !tb.is_multiple_of(t) || stats_len != [c, c] {
        return Err(SnnError::Shape {
            op,
            expected: vec![t, c],
            found: dims.to_vec(),
        }
        .into());
    }
    Ok((cfg.params()?, c, dims[2..].iter().product::<usize>()))
}

/// Training-mode batch norm of a time-folded `x: [T·B, C, ...]` (CPU, f32, contiguous) with
/// the given batch statistics (`mean`, `invstd` = 1/√(σ² + ε), per channel, treated as
/// constants like the unfused op's), followed by the multi-step IF/LIF `cfg` over `T = t`:
/// returns the spikes in `x`'s layout. Equals `lif(batch_norm_train(x))` (the neuron sees
/// bit-identical inputs) but never writes the normalised tensor: one read of `x` and one write
/// of the spikes forward; backward one pass for BPTT plus the channel sums and one in-place
/// pass for `dL/dx`. Differentiable w.r.t. `x`, `gamma` and `beta`. PLIF is not supported
/// (use the unfused ops). For CUDA tensors use [`bn_lif_multistep_stats`].
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
    let (p, c, s) = check_args("bn_lif_multistep", x, t, [mean.len(), invstd.len()], cfg)?;
    let op = BnLifFwd {
        p,
        stats: Stats::Host {
            mean: mean.to_vec(),
            invstd: invstd.to_vec(),
        },
        t,
        c,
        s,
    };
    x.contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)
}

/// [`bn_lif_multistep`] with the batch statistics as tensors: `mean` and the biased `var`
/// (`[C]`, e.g. from [`bn_batch_stats`]; detached) and `eps`. On the CPU (f32) it reads them
/// back and runs [`bn_lif_multistep`] (`invstd` = 1/√(var + ε) in f64, exactly as
/// `nmoco_conv::batch_norm_train` computes it). On CUDA (`x` f32 or bf16; `gamma`, `beta` and
/// the statistics taken as f32) they stay on the device: the kernels of `kernels/bn_lif.cu`
/// compute the affine map, the spikes (in `x`'s dtype) and, backward, the BPTT and batch norm's
/// gradient sums with no host synchronisation. The CUDA path is compile-tested only until
/// `examples/gpu_check.rs` runs on a device.
#[allow(clippy::too_many_arguments)]
pub fn bn_lif_multistep_stats(
    x: &Tensor,
    t: usize,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
    cfg: &NeuronConfig,
) -> Result<Tensor> {
    const OP: &str = "bn_lif_multistep_stats";
    if x.device().is_cpu() {
        let invstd: Vec<f64> = var
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .map(|&v| 1.0 / (f64::from(v) + eps).sqrt())
            .collect();
        let mean = mean.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        return bn_lif_multistep(x, t, gamma, beta, &mean, &invstd, cfg);
    }
    let (p, c, s) = check_args(OP, x, t, [mean.elem_count(), var.elem_count()], cfg)?;
    if c > 65_535 {
        // The reductions put channels on the grid's y dimension.
        return Err(SnnError::Shape {
            op: OP,
            expected: vec![t, 65_535],
            found: x.dims().to_vec(),
        }
        .into());
    }
    if !matches!(x.dtype(), DType::F32 | DType::BF16) {
        return Err(SnnError::Dtype {
            op: OP,
            dtype: x.dtype(),
            device: "cuda (f32 and bf16 only)",
        }
        .into());
    }
    let f32c = |v: &Tensor| -> Result<Tensor> { v.to_dtype(DType::F32)?.contiguous() };
    let op = BnLifFwd {
        p,
        stats: Stats::Device {
            mean: f32c(&mean.detach().flatten_all()?)?,
            var: f32c(&var.detach().flatten_all()?)?,
            eps,
        },
        t,
        c,
        s,
    };
    x.contiguous()?.apply_op3(&f32c(gamma)?, &f32c(beta)?, op)
}

/// The batch statistics of training-mode batch norm over every dim but 1 of `x: [N, C, ...]`:
/// `(mean [C], biased var [C])`, f32, detached. On CUDA (f32 or bf16 input) a two-stage
/// reduction on the device (per-block shifted sums merged with Chan's formula, then one block
/// per channel in f64; no host copy; compile-tested only until `examples/gpu_check.rs` runs on
/// a device); elsewhere `nmoco_conv::batch_stats` (`x` 4-D).
pub fn bn_batch_stats(x: &Tensor) -> Result<(Tensor, Tensor)> {
    const OP: &str = "bn_batch_stats";
    if !x.device().is_cuda() {
        return nmoco_conv::batch_stats(x);
    }
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(SnnError::Shape {
            op: OP,
            expected: vec![0, 0],
            found: dims.to_vec(),
        }
        .into());
    }
    let stats = x.detach().contiguous()?.apply_op1_no_bwd(&BnStatsOp)?;
    Ok((stats.get(0)?, stats.get(1)?))
}

/// Batch statistics on CUDA ([`bn_batch_stats`]): `CustomOp1` on `x` returning f32 `[2, C]`.
struct BnStatsOp;

impl CustomOp1 for BnStatsOp {
    fn name(&self) -> &'static str {
        "nmoco-bn-stats"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!(
            "{}: CUDA only (the CPU uses nmoco_conv::batch_stats)",
            self.name()
        )
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::bn_lif::batch_stats(s, l)
    }
}
