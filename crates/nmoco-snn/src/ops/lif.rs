//! IF/LIF: `LifFwd` (CustomOp1 on `x`) returns the spikes; its `bwd` applies `LifBwd`
//! (CustomOp2 on `x`, `dL/ds`), which returns `dL/dx`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::{check_x, cpu_f32, t_n};
use crate::config::{NeuronConfig, NeuronKind, Params};
use crate::cpu;
use crate::error::SnnError;

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
