//! SEW-ResNet (Fang et al. 2021, "Deep residual learning in spiking neural networks").
//!
//! Layout, on time-folded activations `[T·B, C, H, W]`:
//! - `stem`: conv k×k/stem_stride (padding k/2) → BN → neuron, then optional max-pool 3×3/2.
//! - `stages.{i}`: with [`Downsample::Transition`], an optional `transition` conv3×3/stride →
//!   BN → neuron first; then `blocks.{j}`: `out = sn2(bn2(conv2(sn1(bn1(conv1(x))))))`,
//!   `identity = x` or `downsample` (conv1×1/stride → BN → neuron, [`Downsample::Shortcut`]
//!   only, first block, when stride or channels change), result `connect(identity, out)`.
//! - global average pool → `[T, B, C_last]`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use nmoco_snn::NeuronConfig;

use crate::config::{Connect, ConvInit, Downsample, SewConfig};
use crate::layers::{BatchNorm, Conv2d, Spiking, global_avg_pool, max_pool_3x3_s2};

/// Conv (no bias) → BN → neuron, with variable prefixes given by the caller.
#[derive(Debug)]
pub(crate) struct ConvBnSn {
    conv: Conv2d,
    bn: BatchNorm,
    sn: Spiking,
}

impl ConvBnSn {
    /// `conv` names are `{conv}.weight`, `{bn}.*`, `{sn}.*`.
    pub(crate) fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        neuron: &NeuronConfig,
        init: ConvInit,
        vb: &VarBuilder<'_>,
        names: [&str; 3],
    ) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new_with_init(
                c_in,
                c_out,
                kernel,
                stride,
                kernel / 2,
                init,
                vb.pp(names[0]),
            )?,
            bn: BatchNorm::new(c_out, vb.pp(names[1]))?,
            sn: Spiking::new(neuron, vb.pp(names[2]))?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, t: usize, train: bool) -> Result<Tensor> {
        if train {
            // BN fused into the neuron where it can be (see `BatchNorm::forward_train_spiking`).
            return self
                .bn
                .forward_train_spiking(&self.conv.forward(x)?, &self.sn, t);
        }
        self.sn.forward_folded(&self.conv_bn(x, false)?, t)
    }

    /// Conv → BN. In eval mode the BN is folded into the convolution (weight and bias).
    pub(crate) fn conv_bn(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            self.bn.forward(&self.conv.forward(x)?, true)
        } else {
            self.conv.forward_bn_eval(x, &self.bn)
        }
    }
}

/// Applies the SEW connect function `g(identity, out)`.
pub fn connect(kind: Connect, identity: &Tensor, out: &Tensor) -> Result<Tensor> {
    match kind {
        Connect::Add => identity + out,
        Connect::And => identity * out,
        // One fused op each way on CUDA; on the CPU the plain ops `identity · (1 − out)`.
        Connect::Iand => nmoco_snn::sew_iand(identity, out),
    }
}

#[derive(Debug)]
struct SewBlock {
    a: ConvBnSn,
    b: ConvBnSn,
    downsample: Option<ConvBnSn>,
    connect: Connect,
}

impl SewBlock {
    fn forward(&self, x: &Tensor, t: usize, train: bool) -> Result<Tensor> {
        let out = self.b.forward(&self.a.forward(x, t, train)?, t, train)?;
        let identity = match &self.downsample {
            Some(ds) => ds.forward(x, t, train)?,
            None => x.clone(),
        };
        connect(self.connect, &identity, &out)
    }
}

#[derive(Debug)]
struct Stage {
    transition: Option<ConvBnSn>,
    blocks: Vec<SewBlock>,
}

/// A SEW-ResNet backbone.
#[derive(Debug)]
pub struct SewResnet {
    stem: ConvBnSn,
    stem_maxpool: bool,
    stages: Vec<Stage>,
    feature_dim: usize,
}

impl SewResnet {
    /// Builds the network; the config must be valid (see [`SewConfig::validate`]).
    pub fn new(cfg: &SewConfig, vb: VarBuilder<'_>) -> Result<Self> {
        let n = &cfg.neuron;
        let stem = ConvBnSn::new(
            cfg.in_channels,
            cfg.stem_channels,
            cfg.stem_kernel,
            cfg.stem_stride,
            n,
            cfg.init,
            &vb.pp("stem"),
            ["conv", "bn", "sn"],
        )?;
        let mut c_in = cfg.stem_channels;
        let mut stages = Vec::with_capacity(cfg.stages.len());
        for (i, sc) in cfg.stages.iter().enumerate() {
            let svb = vb.pp(format!("stages.{i}"));
            let changes = sc.stride != 1 || sc.channels != c_in;
            let mut transition = None;
            let mut first_stride = 1;
            match cfg.downsample {
                Downsample::Transition if changes => {
                    transition = Some(ConvBnSn::new(
                        c_in,
                        sc.channels,
                        3,
                        sc.stride,
                        n,
                        cfg.init,
                        &svb.pp("transition"),
                        ["conv", "bn", "sn"],
                    )?);
                    c_in = sc.channels;
                }
                Downsample::Transition => {}
                Downsample::Shortcut => first_stride = sc.stride,
            }
            let mut blocks = Vec::with_capacity(sc.blocks);
            for j in 0..sc.blocks {
                let bvb = svb.pp(format!("blocks.{j}"));
                let stride = if j == 0 { first_stride } else { 1 };
                let a = ConvBnSn::new(
                    c_in,
                    sc.channels,
                    3,
                    stride,
                    n,
                    cfg.init,
                    &bvb,
                    ["conv1", "bn1", "sn1"],
                )?;
                let b = ConvBnSn::new(
                    sc.channels,
                    sc.channels,
                    3,
                    1,
                    n,
                    cfg.init,
                    &bvb,
                    ["conv2", "bn2", "sn2"],
                )?;
                let downsample = if stride != 1 || c_in != sc.channels {
                    Some(ConvBnSn::new(
                        c_in,
                        sc.channels,
                        1,
                        stride,
                        n,
                        cfg.init,
                        &bvb.pp("downsample"),
                        ["conv", "bn", "sn"],
                    )?)
                } else {
                    None
                };
                blocks.push(SewBlock {
                    a,
                    b,
                    downsample,
                    connect: cfg.connect,
                });
                c_in = sc.channels;
            }
            stages.push(Stage { transition, blocks });
        }
        Ok(Self {
            stem,
            stem_maxpool: cfg.stem_maxpool,
            stages,
            feature_dim: c_in,
        })
    }

    /// Feature dimension D.
    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }

    /// `[T·B, C_in, H, W]` (time-folded) → pooled features `[T·B, D]`.
    pub(crate) fn forward_folded(&self, x: &Tensor, t: usize, train: bool) -> Result<Tensor> {
        let mut y = self.stem.forward(x, t, train)?;
        if self.stem_maxpool {
            y = max_pool_3x3_s2(&y)?;
        }
        for stage in &self.stages {
            if let Some(tr) = &stage.transition {
                y = tr.forward(&y, t, train)?;
            }
            for block in &stage.blocks {
                y = block.forward(&y, t, train)?;
            }
        }
        global_avg_pool(&y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn eval_mode_folds_batch_norm_into_the_convolution() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let l = ConvBnSn::new(
            3,
            5,
            3,
            2,
            &NeuronConfig::default(),
            ConvInit::UniformFanIn,
            &vb,
            ["c", "b", "s"],
        )?;
        {
            let d = vm.data().lock().expect("varmap");
            let set = |n: &str, t: Tensor| d.get(n).expect(n).set(&t);
            set("b.weight", Tensor::randn(1f32, 0.3, 5, &dev)?)?;
            set("b.bias", Tensor::randn(0f32, 0.5, 5, &dev)?)?;
            set("b.running_mean", Tensor::randn(0f32, 0.5, 5, &dev)?)?;
            set("b.running_var", Tensor::rand(0.2f32, 2.0, 5, &dev)?)?;
        }
        let x = Tensor::randn(0f32, 1., (4, 3, 9, 9), &dev)?;
        let folded = l.conv_bn(&x, false)?;
        let plain = l.bn.forward(&l.conv.forward(&x)?, false)?;
        let err = (&folded - &plain)?
            .sqr()?
            .sum_all()?
            .sqrt()?
            .to_scalar::<f32>()?
            / plain.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
        assert!(err < 1e-5, "folded eval BN differs: rel err {err}");
        // Train mode is untouched by the fold: batch statistics, not running ones.
        let train = l.conv_bn(&x, true)?;
        assert!((&train - &plain)?.abs()?.max_all()?.to_scalar::<f32>()? > 1e-3);
        Ok(())
    }
}
