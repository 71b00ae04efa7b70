//! Spikformer (Zhou et al. 2023, "Spikformer: when spiking neural network meets transformer").
//!
//! Our exact design, on time-folded activations:
//! - SPS stem `sps`: four stages `conv{i}` 3×3/1 (no bias) → `bn{i}` → `sn{i}`, channels D/8,
//!   D/4, D/2, D, each followed by max-pool 3×3/2/1 when `sps_pool[i]`; then the relative
//!   position embedding `x + sn_rpe(bn_rpe(rpe_conv(x)))` (conv 3×3, D → D, no bias). The
//!   feature map is flattened to N = H'·W' tokens `[T·B, N, D]`.
//! - `blocks.{j}`: `x = x + attn(x)`, `x = x + mlp(x)` where
//!   - `attn`: Q, K, V each `Linear(D, D, no bias) → BN → neuron` (`q`, `q_bn`, `q_sn`, ...),
//!     split into heads, `A = Q Kᵀ · attn_scale` (no softmax), `A V`, merge heads, neuron with
//!     threshold `attn_threshold` (`attn_sn`), then `proj` `Linear(D, D, bias) → proj_bn →
//!     proj_sn`;
//!   - `mlp`: `fc1` `Linear(D, r·D, bias) → fc1_bn → fc1_sn`, `fc2` `Linear(r·D, D, bias) →
//!     fc2_bn → fc2_sn`.
//! - output: mean over tokens → `[T, B, D]`.
//!
//! The Linear layers are Spikformer's 1×1 Conv1d layers; their BN statistics run over T·B·N.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use nmoco_snn::NeuronConfig;

use crate::config::{ConvInit, SpikformerConfig};
use crate::layers::{BatchNorm, Linear, Spiking, max_pool_3x3_s2};
use crate::sew::ConvBnSn;

/// Linear → BN (over all rows) → neuron, on token tensors `[T·B, N, D]`.
#[derive(Debug)]
struct LinearBnSn {
    fc: Linear,
    bn: BatchNorm,
    sn: Spiking,
}

impl LinearBnSn {
    fn new(
        d_in: usize,
        d_out: usize,
        bias: bool,
        neuron: &NeuronConfig,
        vb: &VarBuilder<'_>,
        name: &str,
    ) -> Result<Self> {
        Ok(Self {
            fc: Linear::new(d_in, d_out, bias, vb.pp(name))?,
            bn: BatchNorm::new(d_out, vb.pp(format!("{name}_bn")))?,
            sn: Spiking::new(neuron, vb.pp(format!("{name}_sn")))?,
        })
    }

    fn forward(&self, x: &Tensor, t: usize, train: bool) -> Result<Tensor> {
        let (tb, n, _) = x.dims3()?;
        let y = self.fc.forward(x)?;
        let d = y.dim(2)?;
        if train {
            // `[T·B·N, D]` rows in the same order as the neuron's `[T, B·N·D]`: BN fused into
            // the neuron where it can be (see `BatchNorm::forward_train_spiking`).
            let s = self
                .bn
                .forward_train_spiking(&y.reshape((tb * n, d))?, &self.sn, t)?;
            return s.reshape((tb, n, d));
        }
        let y = self.bn.forward(&y.reshape((tb * n, d))?, false)?;
        self.sn.forward_folded(&y.reshape((tb, n, d))?, t)
    }
}

#[derive(Debug)]
struct SelfAttention {
    q: LinearBnSn,
    k: LinearBnSn,
    v: LinearBnSn,
    attn_sn: Spiking,
    proj: LinearBnSn,
    heads: usize,
    scale: f64,
}

impl SelfAttention {
    fn forward(&self, x: &Tensor, t: usize, train: bool) -> Result<Tensor> {
        let (tb, n, d) = x.dims3()?;
        let h = self.heads;
        let split = |y: Tensor| -> Result<Tensor> {
            y.reshape((tb, n, h, d / h))?.transpose(1, 2)?.contiguous()
        };
        let q = split(self.q.forward(x, t, train)?)?;
        let k = split(self.k.forward(x, t, train)?)?;
        let v = split(self.v.forward(x, t, train)?)?;
        let kt = k.transpose(2, 3)?.contiguous()?;
        let attn = (q.matmul(&kt)? * self.scale)?;
        let y = attn.matmul(&v)?; // [T·B, H, N, D/H]
        let y = y.transpose(1, 2)?.contiguous()?.reshape((tb, n, d))?;
        let y = self.attn_sn.forward_folded(&y, t)?;
        self.proj.forward(&y, t, train)
    }
}

#[derive(Debug)]
struct EncoderBlock {
    attn: SelfAttention,
    fc1: LinearBnSn,
    fc2: LinearBnSn,
}

impl EncoderBlock {
    fn forward(&self, x: &Tensor, t: usize, train: bool) -> Result<Tensor> {
        let x = (x + self.attn.forward(x, t, train)?)?;
        let m = self
            .fc2
            .forward(&self.fc1.forward(&x, t, train)?, t, train)?;
        x + m
    }
}

/// A Spikformer backbone.
#[derive(Debug)]
pub struct Spikformer {
    sps: Vec<(ConvBnSn, bool)>,
    rpe: ConvBnSn,
    blocks: Vec<EncoderBlock>,
    embed_dim: usize,
}

impl Spikformer {
    /// Builds the network; the config must be valid (see [`SpikformerConfig::validate`]).
    pub fn new(cfg: &SpikformerConfig, vb: VarBuilder<'_>) -> Result<Self> {
        let n = &cfg.neuron;
        let d = cfg.embed_dim;
        let svb = vb.pp("sps");
        let widths = [d / 8, d / 4, d / 2, d];
        let mut c_in = cfg.in_channels;
        let mut sps = Vec::with_capacity(4);
        for (i, (&c, &pool)) in widths.iter().zip(&cfg.sps_pool).enumerate() {
            let names = [format!("conv{i}"), format!("bn{i}"), format!("sn{i}")];
            let unit = ConvBnSn::new(
                c_in,
                c,
                3,
                1,
                n,
                ConvInit::UniformFanIn,
                &svb,
                [names[0].as_str(), names[1].as_str(), names[2].as_str()],
            )?;
            sps.push((unit, pool));
            c_in = c;
        }
        let rpe = ConvBnSn::new(
            d,
            d,
            3,
            1,
            n,
            ConvInit::UniformFanIn,
            &svb,
            ["rpe_conv", "rpe_bn", "rpe_sn"],
        )?;
        let attn_neuron = NeuronConfig {
            v_threshold: cfg.attn_threshold,
            ..n.clone()
        };
        let mut blocks = Vec::with_capacity(cfg.depth);
        for j in 0..cfg.depth {
            let bvb = vb.pp(format!("blocks.{j}"));
            let avb = bvb.pp("attn");
            let mvb = bvb.pp("mlp");
            let hidden = cfg.mlp_ratio * d;
            blocks.push(EncoderBlock {
                attn: SelfAttention {
                    q: LinearBnSn::new(d, d, false, n, &avb, "q")?,
                    k: LinearBnSn::new(d, d, false, n, &avb, "k")?,
                    v: LinearBnSn::new(d, d, false, n, &avb, "v")?,
                    attn_sn: Spiking::new(&attn_neuron, avb.pp("attn_sn"))?,
                    proj: LinearBnSn::new(d, d, true, n, &avb, "proj")?,
                    heads: cfg.heads,
                    scale: f64::from(cfg.attn_scale),
                },
                fc1: LinearBnSn::new(d, hidden, true, n, &mvb, "fc1")?,
                fc2: LinearBnSn::new(hidden, d, true, n, &mvb, "fc2")?,
            });
        }
        Ok(Self {
            sps,
            rpe,
            blocks,
            embed_dim: d,
        })
    }

    /// Feature dimension D.
    pub fn feature_dim(&self) -> usize {
        self.embed_dim
    }

    /// `[T·B, C_in, H, W]` (time-folded) → token-averaged features `[T·B, D]`.
    pub(crate) fn forward_folded(&self, x: &Tensor, t: usize, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        for (unit, pool) in &self.sps {
            y = unit.forward(&y, t, train)?;
            if *pool {
                y = max_pool_3x3_s2(&y)?;
            }
        }
        let y = (&y + self.rpe.forward(&y, t, train)?)?;
        let (tb, d, h, w) = y.dims4()?;
        let mut tokens = y.reshape((tb, d, h * w))?.transpose(1, 2)?.contiguous()?;
        for block in &self.blocks {
            tokens = block.forward(&tokens, t, train)?;
        }
        tokens.mean(1)
    }
}
