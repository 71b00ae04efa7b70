//! Serde configuration of the backbones.
//!
//! Every config is plain data: it can be written into a run directory (TOML or JSON) and read
//! back to rebuild the same network, so checkpoints are always interpreted with the config that
//! produced them.

use nmoco_snn::NeuronConfig;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Which backbone to build, tagged by `arch` (`"sew_resnet"` or `"spikformer"`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "arch", rename_all = "snake_case", deny_unknown_fields)]
pub enum BackboneConfig {
    /// A SEW-ResNet (spike-element-wise residual network).
    SewResnet(SewConfig),
    /// A Spikformer (spiking patch splitting + spiking self-attention).
    Spikformer(SpikformerConfig),
}

/// The SEW connect function `g(identity, out)` that closes a residual block.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Connect {
    /// `identity + out` (spike counts may exceed 1).
    Add,
    /// `identity * (1 - out)` (binary if both inputs are binary).
    Iand,
    /// `identity * out`.
    And,
}

/// How a stage changes resolution or channel count.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Downsample {
    /// ResNet style: the first block of the stage carries the stride in its first conv, and its
    /// identity path becomes a 1x1 conv-BN-neuron (`downsample.*`) whenever stride or channels
    /// change.
    Shortcut,
    /// The benchmark-net (`sewnet.py`) style: a standalone conv3x3-BN-neuron layer with the
    /// stage's stride and channels (`transition.*`) runs before the blocks, which then keep
    /// shape; it is omitted when neither stride nor channels change.
    Transition,
}

/// How the convolution weights of a SEW-ResNet are initialised (by [`crate::seeded_init_with`]
/// and when the layers are created). Linear layers and biases always use PyTorch's default
/// `U(−1/√fan_in, 1/√fan_in)`; BN starts at weight 1, bias 0.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConvInit {
    /// PyTorch's default for `nn.Conv2d`: `U(−1/√fan_in, 1/√fan_in)`, `fan_in = C_in·k·k`.
    #[default]
    UniformFanIn,
    /// SpikingJelly's `SEWResNet` (and torchvision's ResNet): `kaiming_normal_(mode="fan_out",
    /// nonlinearity="relu")`, i.e. `N(0, 2 / fan_out)` with `fan_out = C_out·k·k`.
    KaimingNormalFanOut,
}

/// One stage of a SEW-ResNet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Output channels of every block in the stage.
    pub channels: usize,
    /// Number of SEW basic blocks.
    pub blocks: usize,
    /// Spatial stride applied at the start of the stage (1 or 2).
    pub stride: usize,
}

/// SEW-ResNet configuration. The network is fully convolutional with a global average pool, so
/// it accepts any input size that survives its strides.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SewConfig {
    /// Input channels (2 for ON/OFF event frames).
    pub in_channels: usize,
    /// Stem output channels.
    pub stem_channels: usize,
    /// Stem kernel size (odd; 7 for ImageNet-style inputs, 3 for small ones); padding is `k / 2`.
    pub stem_kernel: usize,
    /// Stem stride.
    pub stem_stride: usize,
    /// Max-pool 3x3, stride 2, padding 1 after the stem.
    pub stem_maxpool: bool,
    /// The stages, in order.
    pub stages: Vec<StageConfig>,
    /// How stages change shape.
    pub downsample: Downsample,
    /// SEW connect function.
    pub connect: Connect,
    /// Neuron used after every BN.
    pub neuron: NeuronConfig,
    /// Initialisation of the convolution weights (absent in older configs: `uniform_fan_in`).
    #[serde(default)]
    pub init: ConvInit,
}

/// Spikformer configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpikformerConfig {
    /// Input channels (2 for ON/OFF event frames).
    pub in_channels: usize,
    /// Embedding dimension D (must be divisible by 8 and by `heads`).
    pub embed_dim: usize,
    /// Number of encoder blocks.
    pub depth: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP hidden size is `mlp_ratio * embed_dim`.
    pub mlp_ratio: usize,
    /// One flag per SPS stage (exactly 4): max-pool 3x3, stride 2, padding 1 after that stage.
    pub sps_pool: Vec<bool>,
    /// Firing threshold of the neuron after `Q Kᵀ V`.
    pub attn_threshold: f32,
    /// Scale applied to `Q Kᵀ` (no softmax).
    pub attn_scale: f32,
    /// Neuron used after every BN.
    pub neuron: NeuronConfig,
}

impl BackboneConfig {
    /// SEW-ResNet-18: stem conv 7x7/2 (2 → 64) + BN + neuron + max-pool, four stages of two
    /// basic blocks with 64–128–256–512 channels, ResNet-style shortcuts, ADD connect, LIF;
    /// convolutions initialised as SpikingJelly's `sew_resnet18` does
    /// ([`ConvInit::KaimingNormalFanOut`]). 11,173,376 trainable parameters.
    pub fn sew_resnet18() -> Self {
        let stage = |channels, stride| StageConfig {
            channels,
            blocks: 2,
            stride,
        };
        Self::SewResnet(SewConfig {
            in_channels: 2,
            stem_channels: 64,
            stem_kernel: 7,
            stem_stride: 2,
            stem_maxpool: true,
            stages: vec![stage(64, 1), stage(128, 2), stage(256, 2), stage(512, 2)],
            downsample: Downsample::Shortcut,
            connect: Connect::Add,
            neuron: NeuronConfig::default(),
            init: ConvInit::KaimingNormalFanOut,
        })
    }

    /// The small CPU default: stem conv3x3 (2 → 16) + BN + LIF, then two stages (32 and 64
    /// channels, stride 2 each, one block each) with conv3x3 transitions, ADD connect.
    /// 116,096 trainable parameters; 64-d features.
    pub fn sew_small() -> Self {
        Self::SewResnet(SewConfig {
            in_channels: 2,
            stem_channels: 16,
            stem_kernel: 3,
            stem_stride: 1,
            stem_maxpool: false,
            stages: vec![
                StageConfig {
                    channels: 32,
                    blocks: 1,
                    stride: 2,
                },
                StageConfig {
                    channels: 64,
                    blocks: 1,
                    stride: 2,
                },
            ],
            downsample: Downsample::Transition,
            connect: Connect::Add,
            neuron: NeuronConfig::default(),
            init: ConvInit::UniformFanIn,
        })
    }

    /// Exactly the benchmark network of `anchors/sewnet.py`: stem conv3x3 (2 → 32) + BN + LIF,
    /// 2 SEW blocks (32 ch, ADD), conv3x3/2 (32 → 64) + BN + LIF, 2 SEW blocks (64 ch), global
    /// average pool. 204,288 trainable parameters (204,938 with its Linear(64 → 10) head).
    pub fn sew_anchor() -> Self {
        Self::SewResnet(SewConfig {
            in_channels: 2,
            stem_channels: 32,
            stem_kernel: 3,
            stem_stride: 1,
            stem_maxpool: false,
            stages: vec![
                StageConfig {
                    channels: 32,
                    blocks: 2,
                    stride: 1,
                },
                StageConfig {
                    channels: 64,
                    blocks: 2,
                    stride: 2,
                },
            ],
            downsample: Downsample::Transition,
            connect: Connect::Add,
            neuron: NeuronConfig::default(),
            init: ConvInit::UniformFanIn,
        })
    }

    /// Spikformer-2-256 for 128×128 inputs: SPS with 32/64/128/256 channels and a max-pool
    /// after each of the 4 stages (128 → 8, 64 tokens), 2 blocks, 16 heads, MLP ratio 4,
    /// attention threshold 0.5, scale 0.25, LIF τ = 2 with detach reset and the Sigmoid (α = 4)
    /// surrogate: the official DVS model (`ZK-Zhou/spikformer`, `cifar10dvs/model.py`, whose
    /// `MultiStepLIFNode` defaults to that surrogate). 2,564,096 trainable parameters.
    pub fn spikformer_2_256() -> Self {
        Self::Spikformer(SpikformerConfig {
            in_channels: 2,
            embed_dim: 256,
            depth: 2,
            heads: 16,
            mlp_ratio: 4,
            sps_pool: vec![true; 4],
            attn_threshold: 0.5,
            attn_scale: 0.25,
            neuron: NeuronConfig {
                surrogate: nmoco_snn::Surrogate::Sigmoid { alpha: 4.0 },
                ..NeuronConfig::default()
            },
        })
    }

    /// The neuron configuration used throughout the network.
    pub fn neuron(&self) -> &NeuronConfig {
        match self {
            Self::SewResnet(c) => &c.neuron,
            Self::Spikformer(c) => &c.neuron,
        }
    }

    /// The convolution initialisation ([`ConvInit::UniformFanIn`] for Spikformer, as the
    /// official code leaves its convolutions at PyTorch's default).
    pub fn conv_init(&self) -> ConvInit {
        match self {
            Self::SewResnet(c) => c.init,
            Self::Spikformer(_) => ConvInit::UniformFanIn,
        }
    }

    /// Per-time-step feature dimension D of the backbone output `[T, B, D]`.
    pub fn feature_dim(&self) -> usize {
        match self {
            Self::SewResnet(c) => c.stages.last().map_or(c.stem_channels, |s| s.channels),
            Self::Spikformer(c) => c.embed_dim,
        }
    }

    /// Checks the structural constraints (non-zero sizes, divisibility, strides).
    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            Self::SewResnet(c) => c.validate(),
            Self::Spikformer(c) => c.validate(),
        }
    }
}

fn invalid(field: &'static str, reason: String) -> ModelError {
    ModelError::InvalidConfig { field, reason }
}

impl SewConfig {
    /// Checks the structural constraints.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.in_channels == 0 {
            return Err(invalid("in_channels", "must be positive".into()));
        }
        if self.stem_channels == 0 {
            return Err(invalid("stem_channels", "must be positive".into()));
        }
        if self.stem_kernel == 0 || self.stem_kernel.is_multiple_of(2) {
            return Err(invalid(
                "stem_kernel",
                format!("must be odd and positive, got {}", self.stem_kernel),
            ));
        }
        if self.stem_stride == 0 {
            return Err(invalid("stem_stride", "must be positive".into()));
        }
        for (i, s) in self.stages.iter().enumerate() {
            if s.channels == 0 {
                return Err(invalid(
                    "stages.channels",
                    format!("stage {i} has 0 channels"),
                ));
            }
            if s.stride == 0 {
                return Err(invalid("stages.stride", format!("stage {i} has stride 0")));
            }
            if self.downsample == Downsample::Shortcut && s.blocks == 0 {
                let prev = if i == 0 {
                    self.stem_channels
                } else {
                    self.stages[i - 1].channels
                };
                if s.stride != 1 || s.channels != prev {
                    return Err(invalid(
                        "stages.blocks",
                        format!("stage {i} changes shape but has no block to carry the shortcut"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl SpikformerConfig {
    /// Checks the structural constraints.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.in_channels == 0 {
            return Err(invalid("in_channels", "must be positive".into()));
        }
        if self.embed_dim == 0 || !self.embed_dim.is_multiple_of(8) {
            return Err(invalid(
                "embed_dim",
                format!("must be a positive multiple of 8, got {}", self.embed_dim),
            ));
        }
        if self.heads == 0 || !self.embed_dim.is_multiple_of(self.heads) {
            return Err(invalid(
                "heads",
                format!(
                    "must divide embed_dim {}, got {}",
                    self.embed_dim, self.heads
                ),
            ));
        }
        if self.mlp_ratio == 0 {
            return Err(invalid("mlp_ratio", "must be positive".into()));
        }
        if self.sps_pool.len() != 4 {
            return Err(invalid(
                "sps_pool",
                format!(
                    "needs one flag per SPS stage (4), got {}",
                    self.sps_pool.len()
                ),
            ));
        }
        if !(self.attn_threshold.is_finite() && self.attn_threshold > 0.0) {
            return Err(invalid(
                "attn_threshold",
                format!("must be positive and finite, got {}", self.attn_threshold),
            ));
        }
        if !self.attn_scale.is_finite() {
            return Err(invalid(
                "attn_scale",
                format!("must be finite, got {}", self.attn_scale),
            ));
        }
        Ok(())
    }
}
