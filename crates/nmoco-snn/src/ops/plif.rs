//! PLIF: `PlifFwd` (CustomOp2 on `x`, `w`); its `bwd` applies `PlifBwd` (CustomOp3 on `x`, `w`,
//! `dL/ds`), which returns one buffer of `T*N + 1` values: `dL/dx` followed by `dL/dw`, split
//! with zero-copy narrows.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::{check_x, cpu_f32, cpu_w, k_from_w, t_n};
use crate::config::{NeuronConfig, Params};
use crate::cpu;
use crate::error::SnnError;

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
