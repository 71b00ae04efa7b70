//! The sections of the pre-training configuration (`[run]`, `[model]`, `[moco]`, `[optim]`,
//! `[monitor]`, `[checkpoint]`), their defaults and each one's validation.

use std::path::PathBuf;

use nmoco_models::BackboneConfig;
use nmoco_optim::{OptimKeys, OptimKind, OptimParams};
use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};
use crate::loss::LossKind;
use crate::momentum::MomentumSchedule;

/// The compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    #[default]
    Cpu,
    Cuda,
}

/// Numeric precision of the training step (`run.precision`).
///
/// `bf16` is mixed precision: activations and the inputs of convolutions and matmuls in bf16
/// (spikes are exact in it); master weights, optimizer state, batch-norm statistics, the loss and
/// the queue stay f32. It needs `run.device = "cuda"`: the CPU path computes in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    /// The dtype activations are computed in.
    pub fn compute_dtype(self) -> candle_core::DType {
        match self {
            Precision::F32 => candle_core::DType::F32,
            Precision::Bf16 => candle_core::DType::BF16,
        }
    }
}

/// `[run]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Run name: outputs go to `<runs_dir>/<name>/`.
    pub name: String,
    /// Where run directories are created.
    pub runs_dir: PathBuf,
    pub seed: u64,
    pub epochs: usize,
    pub device: DeviceKind,
    /// Write a `step` metrics record every this many steps (1 = every step). On an accelerator
    /// losses are read back from the device only at these steps (and at each epoch's end).
    pub log_every: usize,
    /// The fine-tuning recipe for this run (an evaluation config, e.g.
    /// `configs/finetune_cifar10dvs_sew18.toml`, relative to the working directory);
    /// `nmoco finetune` uses it when no `--config` is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finetune_config: Option<PathBuf>,
    /// `f32` (default) or `bf16` mixed precision (CUDA only), see [`Precision`].
    pub precision: Precision,
    /// With `precision = "f32"` on CUDA, let matmuls and convolutions use TF32 tensor cores (as
    /// PyTorch does for convolutions by default). No effect on the CPU.
    pub tf32: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            name: "pretrain".into(),
            runs_dir: "runs".into(),
            seed: 0,
            epochs: 100,
            device: DeviceKind::Cpu,
            log_every: 1,
            finetune_config: None,
            precision: Precision::F32,
            tf32: true,
        }
    }
}

/// Named backbone presets of nmoco-models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    #[default]
    SewSmall,
    SewAnchor,
    SewResnet18,
    #[serde(rename = "spikformer_2_256")]
    Spikformer2x256,
}

impl Preset {
    pub fn build(self) -> BackboneConfig {
        match self {
            Preset::SewSmall => BackboneConfig::sew_small(),
            Preset::SewAnchor => BackboneConfig::sew_anchor(),
            Preset::SewResnet18 => BackboneConfig::sew_resnet18(),
            Preset::Spikformer2x256 => BackboneConfig::spikformer_2_256(),
        }
    }
}

/// `[model]`: the backbone is `backbone` if given (a full nmoco-models `BackboneConfig` table,
/// tagged by `arch`), else the `preset`. The resolved config always spells out `backbone`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub preset: Preset,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backbone: Option<BackboneConfig>,
    /// Projection head: Linear(D, head_hidden)–BN–ReLU–Linear(head_hidden, head_out).
    pub head_hidden: usize,
    pub head_out: usize,
    /// Start the backbone from a PyTorch state dict (SpikingJelly `sew_resnet18` or official
    /// Spikformer key names, `.pth` or `.safetensors`, see docs/interop.md) instead of the
    /// seeded initialisation; the head keeps its seeded initialisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            preset: Preset::SewSmall,
            backbone: None,
            head_hidden: 2048,
            head_out: 128,
            init_from: None,
        }
    }
}

impl ModelConfig {
    /// The backbone to build.
    pub fn backbone(&self) -> BackboneConfig {
        self.backbone.clone().unwrap_or_else(|| self.preset.build())
    }
}

/// `moco.shuffle_bn`: how the key encoder's batch norm sees the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ShuffleBnMode {
    /// Shuffled BN on one device: keys from `moco.bn_sub_batches` sub-batches of a randomly
    /// permuted batch, each with its own BN statistics (queries keep whole-batch BN).
    #[default]
    Split,
    /// Whole-batch BN on the key side too.
    Off,
}

/// `[moco]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MocoConfig {
    /// Queue length K (a multiple of the batch size).
    pub k: usize,
    /// Momentum m of the key encoder.
    pub m: f64,
    pub m_schedule: MomentumSchedule,
    /// Temperature τ.
    pub tau: f64,
    pub loss: LossKind,
    /// Weight λ of the time-mean term in `mix` / `mix_mean_key`.
    pub lambda: f64,
    /// Also swap the views and average the two losses.
    pub symmetric: bool,
    /// Shuffled BN on the key side (`"split"`, the default) or not (`"off"`).
    pub shuffle_bn: ShuffleBnMode,
    /// Sub-batches of the key side's shuffled BN (each gets `optim.batch_size / bn_sub_batches`
    /// samples; at least 2 per sub-batch).
    pub bn_sub_batches: usize,
    /// Accept a queue long enough to hold a sample's own key from its previous epoch
    /// (`k >= training samples - batch size`), which is refused otherwise.
    pub allow_long_queue: bool,
}

impl Default for MocoConfig {
    fn default() -> Self {
        Self {
            k: 4096,
            m: 0.999,
            m_schedule: MomentumSchedule::Constant,
            tau: 0.2,
            loss: LossKind::Mix,
            lambda: 0.5,
            symmetric: false,
            shuffle_bn: ShuffleBnMode::Split,
            bn_sub_batches: 4,
            allow_long_queue: false,
        }
    }
}

/// `[optim]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub kind: OptimKind,
    /// Base learning rate (after warm-up; cosine decay to 0 over the run).
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    /// AdamW β1, β2, ε.
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Linear warm-up length in epochs (may be fractional).
    pub warmup_epochs: f64,
    /// Clip the global gradient norm to this value.
    pub grad_clip: Option<f64>,
    pub batch_size: usize,
}

/// The `[optim]` keys that [`OptimParams::check`] validates.
const OPTIM_KEYS: OptimKeys = OptimKeys {
    lr: "optim.lr",
    momentum: "optim.momentum",
    weight_decay: "optim.weight_decay",
    nesterov: "optim.nesterov",
    beta1: "optim.beta1",
    beta2: "optim.beta2",
    eps: "optim.eps",
    grad_clip: "optim.grad_clip",
};

impl Default for OptimConfig {
    fn default() -> Self {
        let p = OptimParams::default();
        Self {
            kind: p.kind,
            lr: 0.03,
            momentum: p.momentum,
            weight_decay: p.weight_decay,
            nesterov: p.nesterov,
            beta1: p.beta1,
            beta2: p.beta2,
            eps: p.eps,
            warmup_epochs: 0.0,
            grad_clip: None,
            batch_size: 32,
        }
    }
}

/// `[monitor]`: the kNN monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Neighbours k.
    pub knn_k: usize,
    /// Vote temperature.
    pub knn_t: f64,
    /// Run the monitor every this many epochs (0 = never; it always runs after the last epoch
    /// unless 0).
    pub knn_every: usize,
    /// Train samples in the memory bank (evenly spaced over the split; 0 = all).
    pub knn_bank: usize,
    /// Test samples used as queries (evenly spaced over the split; 0 = all).
    pub knn_queries: usize,
    /// Batch size of the monitor's forward passes.
    pub batch_size: usize,
    /// Fraction of each class of the train split held out as the monitor's validation queries
    /// (stratified, seeded by `run.seed`); the rest is the memory bank. The `best` checkpoint
    /// is chosen on it; the test split is read once, after the last epoch.
    pub val_fraction: f64,
    /// Train-mode passes over the bank that re-estimate the BN statistics of the fresh encoder
    /// (plain average of the per-batch statistics) before the "before training" kNN value; the
    /// initial statistics are restored afterwards.
    pub bn_calibration_passes: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            knn_k: 20,
            knn_t: 0.1,
            knn_every: 1,
            knn_bank: 1000,
            knn_queries: 500,
            batch_size: 64,
            val_fraction: 0.1,
            bn_calibration_passes: 1,
        }
    }
}

/// `[checkpoint]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Keep this many most recent checkpoints (the best is kept in addition).
    pub keep_last: usize,
    /// Write a checkpoint every this many epochs (and always after the last).
    pub every_epochs: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            keep_last: 2,
            every_epochs: 1,
        }
    }
}

impl OptimConfig {
    /// The optimizer's hyper-parameters.
    pub fn params(&self) -> OptimParams {
        OptimParams {
            kind: self.kind,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
        }
    }
}

impl RunConfig {
    /// `[run]`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = self;
        if r.name.is_empty() || r.name.contains(['/', '\\']) || r.name.starts_with('.') {
            return Err(invalid(
                "run.name",
                format!("{:?}", r.name),
                "a non-empty name without path separators, not starting with '.'",
            ));
        }
        if r.epochs == 0 {
            return Err(invalid("run.epochs", r.epochs, "at least 1"));
        }
        if r.log_every == 0 {
            return Err(invalid("run.log_every", r.log_every, "at least 1"));
        }
        if r.precision == Precision::Bf16 && r.device != DeviceKind::Cuda {
            return Err(invalid(
                "run.precision",
                "\"bf16\"",
                "\"f32\" on the CPU (bf16 mixed precision needs run.device = \"cuda\")",
            ));
        }
        Ok(())
    }
}

impl ModelConfig {
    /// `[model]`: the backbone (preset or table) and the head.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = self;
        self.backbone()
            .validate()
            .map_err(|e| invalid("model.backbone", "(see config)", e.to_string()))?;
        if m.head_hidden == 0 {
            return Err(invalid("model.head_hidden", m.head_hidden, "at least 1"));
        }
        if m.head_out == 0 {
            return Err(invalid("model.head_out", m.head_out, "at least 1"));
        }
        Ok(())
    }
}

impl OptimConfig {
    /// `[optim]` (`epochs`: `run.epochs`, which bounds the warm-up); the optimizer's own
    /// settings through [`OptimParams::check`].
    pub fn validate(&self, epochs: usize) -> Result<(), ConfigError> {
        let o = self;
        if o.batch_size < 2 {
            return Err(invalid(
                "optim.batch_size",
                o.batch_size,
                "at least 2 (batch norm needs two samples)",
            ));
        }
        self.params()
            .check(o.lr, o.grad_clip, &OPTIM_KEYS)
            .map_err(|e| invalid(e.key, e.value, e.allowed))?;
        if !(o.warmup_epochs >= 0.0 && o.warmup_epochs <= epochs as f64) {
            return Err(invalid(
                "optim.warmup_epochs",
                o.warmup_epochs,
                format!("a number in [0, run.epochs = {}]", epochs),
            ));
        }
        Ok(())
    }
}

impl MocoConfig {
    /// `[moco]` (`batch_size`: `optim.batch_size`, which the queue length and the shuffled-BN
    /// sub-batches must fit).
    pub fn validate(&self, batch_size: usize) -> Result<(), ConfigError> {
        let mc = self;
        if mc.k == 0 || !mc.k.is_multiple_of(batch_size) {
            return Err(invalid(
                "moco.k",
                mc.k,
                format!("a positive multiple of optim.batch_size = {}", batch_size),
            ));
        }
        if mc.shuffle_bn == ShuffleBnMode::Split
            && (mc.bn_sub_batches == 0 || batch_size / mc.bn_sub_batches < 2)
        {
            return Err(invalid(
                "moco.bn_sub_batches",
                mc.bn_sub_batches,
                format!(
                    "between 1 and optim.batch_size / 2 = {} (at least two samples per sub-batch), or moco.shuffle_bn = \"off\"",
                    batch_size / 2
                ),
            ));
        }
        if !(0.0..=1.0).contains(&mc.m) {
            return Err(invalid("moco.m", mc.m, "a number in [0, 1]"));
        }
        if !(mc.tau > 0.0 && mc.tau.is_finite()) {
            return Err(invalid("moco.tau", mc.tau, "a finite number > 0"));
        }
        if !(0.0..=1.0).contains(&mc.lambda) {
            return Err(invalid("moco.lambda", mc.lambda, "a number in [0, 1]"));
        }
        Ok(())
    }
}

impl MonitorConfig {
    /// `[monitor]`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mo = self;
        if mo.knn_k == 0 {
            return Err(invalid("monitor.knn_k", mo.knn_k, "at least 1"));
        }
        if !(mo.knn_t > 0.0 && mo.knn_t.is_finite()) {
            return Err(invalid("monitor.knn_t", mo.knn_t, "a finite number > 0"));
        }
        if !(mo.val_fraction > 0.0 && mo.val_fraction < 1.0) {
            return Err(invalid(
                "monitor.val_fraction",
                mo.val_fraction,
                "a number in (0, 1)",
            ));
        }
        if mo.batch_size == 0 {
            return Err(invalid("monitor.batch_size", mo.batch_size, "at least 1"));
        }
        Ok(())
    }
}

impl CheckpointConfig {
    /// `[checkpoint]`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = self;
        if c.keep_last == 0 {
            return Err(invalid("checkpoint.keep_last", c.keep_last, "at least 1"));
        }
        if c.every_epochs == 0 {
            return Err(invalid(
                "checkpoint.every_epochs",
                c.every_epochs,
                "at least 1",
            ));
        }
        Ok(())
    }
}
