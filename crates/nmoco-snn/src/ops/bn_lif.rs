//! Training batch norm fused with the following multi-step IF/LIF: `BnLifFwd` (CustomOp3 on
//! `x`, `γ`, `β`) and its backward `BnLifBwd`. Batch norm's maths (coefficients, `dL/dγ`, the
//! input gradient) is nmoco-conv's (`nmoco_conv::batch_norm_coef` and friends), the same
//! functions `nmoco_conv::batch_norm_train` calls.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::cpu_f32;
use crate::config::{NeuronConfig, NeuronKind, Params};
use crate::cpu;
use crate::error::SnnError;

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
    /// `a = γ/σ`, `d = β − μ·γ/σ` per channel: `nmoco_conv::batch_norm_coef`, the unfused batch
    /// norm's own coefficients (so the neuron sees bit-identical inputs).
    fn coef(&self, gamma: &[f32], beta: &[f32]) -> (Vec<f32>, Vec<f32>) {
        nmoco_conv::batch_norm_coef(gamma, beta, &self.mean, &self.invstd)
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
        // Batch norm's backward: the functions `nmoco_conv::batch_norm_train`'s backward calls.
        let m = (x.len() / f.c).max(1) as f64;
        let dgamma = nmoco_conv::batch_norm_dgamma(&s_gx, &f.invstd);
        let (ka, kb, kd) =
            nmoco_conv::batch_norm_input_grad_coef(gamma, &f.mean, &f.invstd, &dgamma, &s_g, m);
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
