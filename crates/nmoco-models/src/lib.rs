//! Spiking backbones (SEW-ResNet, Spikformer) and heads on candle.
//!
//! A [`Backbone`] maps event frames `[T, B, C, H, W]` to per-time-step features `[T, B, D]`;
//! a [`Classifier`] averages them over T and applies a linear layer, a [`ProjectionHead`]
//! (MoCo v2) maps them per time step. Inside a backbone, time is folded into the batch
//! (`[T·B, ...]`, time major) for convolution, batch norm (statistics over T·B) and linear
//! layers; the multi-step neurons of `nmoco-snn` run on the unfolded `[T, B, ...]`.
//! Convolution and batch norm run through `nmoco-conv`'s fused CPU ops.
//!
//! # Variables and names
//!
//! Every variable comes from the caller's [`candle_nn::VarBuilder`]; build from a
//! [`candle_nn::VarMap`] to train, and save/load with [`save_weights`] / [`load_weights`]
//! (safetensors, VarMap names). BN running statistics are variables too (`*.running_mean`,
//! `*.running_var`), updated in place in train mode (momentum 0.1, unbiased variance), so EMA
//! updates and checkpoints cover them by name; [`is_buffer`] tells them apart from trainable
//! parameters and [`count_params`] skips them. Names, relative to the backbone's prefix:
//!
//! | layer | names |
//! |---|---|
//! | conv (no bias) | `{p}.weight` `[C_out, C_in, k, k]` |
//! | linear | `{p}.weight` `[out, in]`, `{p}.bias` `[out]` (if any) |
//! | batch norm | `{p}.weight`, `{p}.bias`, `{p}.running_mean`, `{p}.running_var` |
//! | neuron | under `{p}` (PLIF: `{p}.w`; LIF/IF: none) |
//!
//! SEW-ResNet: `stem.{conv,bn,sn}`; per stage `stages.{i}.transition.{conv,bn,sn}`
//! (transition downsampling only) and per block `stages.{i}.blocks.{j}.{conv1,bn1,sn1,conv2,
//! bn2,sn2}` plus `stages.{i}.blocks.{j}.downsample.{conv,bn,sn}` (shortcut downsampling
//! only). Example: `stages.1.blocks.0.conv1.weight`, `stem.bn.running_mean`.
//!
//! Spikformer: `sps.{conv0..conv3,bn0..bn3,sn0..sn3,rpe_conv,rpe_bn,rpe_sn}`; per block
//! `blocks.{j}.attn.{q,k,v}` (linear, no bias), `blocks.{j}.attn.{q,k,v}_{bn,sn}`,
//! `blocks.{j}.attn.attn_sn`, `blocks.{j}.attn.proj` (linear with bias), `..attn.proj_{bn,sn}`,
//! `blocks.{j}.mlp.{fc1,fc2}` (linear with bias), `blocks.{j}.mlp.{fc1,fc2}_{bn,sn}`.
//!
//! Heads: [`ProjectionHead`] `fc1.weight`, `bn1.*`, `fc2.{weight,bias}`; [`Classifier`]
//! `fc.{weight,bias}`.
//!
//! # Parameter counts (trainable, LIF neurons)
//!
//! | config | backbone | with a Linear(D → 10) head |
//! |---|---|---|
//! | [`BackboneConfig::sew_resnet18`] (2-ch 7×7 stem) | 11,173,376 | 11,178,506 |
//! | [`BackboneConfig::sew_anchor`] (`sewnet.py`) | 204,288 | 204,938 |
//! | [`BackboneConfig::sew_small`] | 116,096 | 116,746 |
//! | [`BackboneConfig::spikformer_2_256`] | 2,564,096 | 2,566,666 |
//!
//! The arithmetic is written out in `tests/models.rs`.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use nmoco_models::{Backbone, BackboneConfig, count_params};
//! # fn main() -> candle_core::Result<()> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let net = Backbone::new(&BackboneConfig::sew_small(), vb.pp("backbone"))?;
//! assert_eq!(count_params(&varmap), 116_096);
//! let x = Tensor::zeros((2, 1, 2, 16, 16), DType::F32, &Device::Cpu)?;
//! let f = net.forward(&x, false)?;
//! assert_eq!(f.dims(), &[2, 1, 64]);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod config;
mod error;
mod heads;
pub mod interop;
mod layers;
mod params;
mod sew;
mod spikformer;

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

pub use config::{
    BackboneConfig, Connect, ConvInit, Downsample, SewConfig, SpikformerConfig, StageConfig,
};
pub use error::ModelError;
pub use heads::{Classifier, ProjectionHead};
pub use layers::{
    BatchNorm, Conv2d, Linear, Spiking, bn_lif_fusion, global_avg_pool, max_pool_3x3_s2,
    record_spikes, set_bn_lif_fusion,
};
pub use nmoco_snn::{NeuronConfig, seq_fold, seq_unfold};
pub use params::{
    count_params, is_buffer, load_weights, save_weights, seeded_init, seeded_init_with,
    sorted_vars, var_shapes,
};
pub use sew::{SewResnet, connect};
pub use spikformer::Spikformer;

#[derive(Debug)]
enum Net {
    Sew(SewResnet),
    Spikformer(Spikformer),
}

/// A spiking backbone built from a [`BackboneConfig`].
#[derive(Debug)]
pub struct Backbone {
    net: Net,
    in_channels: usize,
    feature_dim: usize,
    compute: DType,
}

impl Backbone {
    /// Validates the config and creates (or fetches) every variable from `vb`.
    pub fn new(cfg: &BackboneConfig, vb: VarBuilder<'_>) -> Result<Self> {
        cfg.validate().map_err(ModelError::into_candle)?;
        let (net, in_channels) = match cfg {
            BackboneConfig::SewResnet(c) => (Net::Sew(SewResnet::new(c, vb)?), c.in_channels),
            BackboneConfig::Spikformer(c) => {
                (Net::Spikformer(Spikformer::new(c, vb)?), c.in_channels)
            }
        };
        let feature_dim = match &net {
            Net::Sew(n) => n.feature_dim(),
            Net::Spikformer(n) => n.feature_dim(),
        };
        tracing::debug!(?cfg, feature_dim, "built backbone");
        Ok(Self {
            net,
            in_channels,
            feature_dim,
            compute: DType::F32,
        })
    }

    /// The same backbone computing its activations in `dtype`: `F32` (the default) or `BF16` /
    /// `F16` mixed precision, where convolution and matmul inputs are in that dtype, variables
    /// stay f32 (cast at use, gradients in f32) and batch norms normalise in f32. The features
    /// come out in `dtype`.
    pub fn with_compute_dtype(mut self, dtype: DType) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(candle_core::Error::Msg(format!(
                "backbone compute dtype {dtype:?}: expected f32, bf16 or f16"
            )));
        }
        self.compute = dtype;
        Ok(self)
    }

    /// The dtype activations are computed in.
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// Per-time-step feature dimension D.
    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }

    /// `[T, B, C, H, W]` → `[T, B, D]`. With `train`, every BN normalises with its batch
    /// statistics over T·B (·H·W or ·N) and updates its running statistics; otherwise it uses
    /// the running statistics. Neurons start from rest on every call.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() != 5 || dims[2] != self.in_channels || dims[0] == 0 || dims[1] == 0 {
            return Err(layers::bad_input(
                "backbone",
                x,
                format!("expected [T, B, {}, H, W] with T, B > 0", self.in_channels),
            ));
        }
        let t = dims[0];
        let xf = seq_fold(&layers::cast(x, self.compute)?)?;
        let y = match &self.net {
            Net::Sew(n) => n.forward_folded(&xf, t, train)?,
            Net::Spikformer(n) => n.forward_folded(&xf, t, train)?,
        };
        seq_unfold(&y, t)
    }
}
