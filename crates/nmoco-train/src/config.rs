//! The pre-training configuration: nested serde structs with defaults, `--set` overrides on the
//! TOML tree, and validation with errors that name the offending key.

use std::path::{Path, PathBuf};

use nmoco_data::{DataConfig, DatasetKind};
use nmoco_models::BackboneConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::loss::{LossKind, LossParams};
use crate::momentum::MomentumSchedule;
use nmoco_optim::{OptimKeys, OptimKind, OptimParams};

/// Environment variable consulted when the config leaves `data.root` unset.
pub const DATA_ROOT_ENV: &str = "NMOCO_DATA_ROOT";

/// A configuration rejected before any work started.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a wrong type (the message names the key).
    #[error("invalid config{}: {message}", .path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Parse {
        path: Option<PathBuf>,
        message: String,
    },
    /// A `--set key=value` argument that cannot be applied.
    #[error("bad override {arg:?}: {reason}")]
    Override { arg: String, reason: String },
    /// A value outside what the trainer accepts.
    #[error("invalid value {value} for {key}: {allowed}")]
    Invalid {
        key: String,
        value: String,
        allowed: String,
    },
}

fn invalid(key: &str, value: impl std::fmt::Display, allowed: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

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

/// The whole pre-training configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainConfig {
    pub run: RunConfig,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub moco: MocoConfig,
    pub optim: OptimConfig,
    pub monitor: MonitorConfig,
    pub checkpoint: CheckpointConfig,
}

impl Default for PretrainConfig {
    /// The CPU default: the synthetic set at `datasets/synthetic/generated`, the small
    /// SEW-ResNet, sized to finish in minutes on two cores (see `docs/training.md`).
    fn default() -> Self {
        let mut data =
            DataConfig::for_dataset(DatasetKind::Synthetic, "datasets/synthetic/generated");
        data.frames.t = 4;
        data.frames.height = 32;
        data.frames.width = 32;
        data.frames.resize = nmoco_frames::Resize::Pool;
        data.augment.translate_px = 2;
        Self {
            run: RunConfig {
                name: "pretrain".into(),
                epochs: 16,
                ..RunConfig::default()
            },
            data,
            model: ModelConfig {
                preset: Preset::SewSmall,
                backbone: None,
                head_hidden: 256,
                head_out: 64,
                init_from: None,
            },
            moco: MocoConfig {
                k: 256,
                m: 0.99,
                ..MocoConfig::default()
            },
            optim: OptimConfig {
                lr: 0.06,
                batch_size: 32,
                warmup_epochs: 1.0,
                ..OptimConfig::default()
            },
            monitor: MonitorConfig {
                knn_k: 10,
                knn_bank: 0,
                knn_queries: 0,
                ..MonitorConfig::default()
            },
            checkpoint: CheckpointConfig::default(),
        }
    }
}

/// Apply one `a.b.c=value` override to a TOML tree. The value is read as a TOML value when it
/// parses as one (integer, float, boolean, quoted string, array, inline table), else as a bare
/// string; an integer given for a key that currently holds a float becomes a float.
pub fn apply_override(root: &mut toml::Table, arg: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::Override {
        arg: arg.to_string(),
        reason: reason.to_string(),
    };
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| bad("expected key=value"))?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad("empty key segment"));
    }
    let raw = raw.trim();
    let mut value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let mut table = root;
    for (i, p) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| bad(&format!("{} is not a table", parts[..=i].join("."))))?;
    }
    let last = parts[parts.len() - 1];
    match (table.get(last), &value) {
        (Some(toml::Value::Float(_)), toml::Value::Integer(i)) => {
            value = toml::Value::Float(*i as f64)
        }
        (Some(toml::Value::String(_)), v) if !v.is_str() => {
            value = toml::Value::String(raw.to_string())
        }
        _ => {}
    }
    table.insert(last.to_string(), value);
    Ok(())
}

impl PretrainConfig {
    /// Parse TOML text, apply `--set` overrides, fill `data.root` from [`DATA_ROOT_ENV`] when it
    /// is unset, deserialise (unknown keys and wrong types are errors) and [`validate`].
    ///
    /// [`validate`]: PretrainConfig::validate
    pub fn from_toml(
        text: &str,
        path: Option<&Path>,
        overrides: &[String],
        env_root: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: path.map(Path::to_path_buf),
            message,
        };
        let mut tree: toml::Table = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        for o in overrides {
            apply_override(&mut tree, o)?;
        }
        let has_root = tree
            .get("data")
            .and_then(|d| d.get("root"))
            .and_then(|r| r.as_str())
            .is_some_and(|s| !s.is_empty());
        if !has_root && let Some(env) = env_root.filter(|s| !s.is_empty()) {
            let data = tree
                .entry("data")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let Some(t) = data.as_table_mut() {
                t.insert("root".into(), toml::Value::String(env.to_string()));
            }
        }
        let cfg: PretrainConfig = toml::Value::Table(tree)
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read a config file (see [`PretrainConfig::from_toml`]).
    pub fn load(
        path: &Path,
        overrides: &[String],
        env_root: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, Some(path), overrides, env_root)
    }

    /// The default config with `--set` overrides applied.
    pub fn default_with(overrides: &[String], env_root: Option<&str>) -> Result<Self, ConfigError> {
        let text = Self::default().to_toml()?;
        Self::from_toml(&text, None, overrides, env_root)
    }

    /// Check every value; the error names the key and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = &self.run;
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
        if self.data.root.as_os_str().is_empty() {
            return Err(invalid(
                "data.root",
                "(unset)",
                format!(
                    "the dataset folder: set it in the config, with --set data.root=DIR, or in ${DATA_ROOT_ENV}"
                ),
            ));
        }
        self.data.frames.validate().map_err(|e| {
            invalid(
                "data.frames",
                format!("{:?}", self.data.frames),
                e.to_string(),
            )
        })?;
        let m = &self.model;
        self.model
            .backbone()
            .validate()
            .map_err(|e| invalid("model.backbone", "(see config)", e.to_string()))?;
        if m.head_hidden == 0 {
            return Err(invalid("model.head_hidden", m.head_hidden, "at least 1"));
        }
        if m.head_out == 0 {
            return Err(invalid("model.head_out", m.head_out, "at least 1"));
        }
        let o = &self.optim;
        if o.batch_size < 2 {
            return Err(invalid(
                "optim.batch_size",
                o.batch_size,
                "at least 2 (batch norm needs two samples)",
            ));
        }
        let mc = &self.moco;
        if mc.k == 0 || !mc.k.is_multiple_of(o.batch_size) {
            return Err(invalid(
                "moco.k",
                mc.k,
                format!("a positive multiple of optim.batch_size = {}", o.batch_size),
            ));
        }
        if mc.shuffle_bn == ShuffleBnMode::Split
            && (mc.bn_sub_batches == 0 || o.batch_size / mc.bn_sub_batches < 2)
        {
            return Err(invalid(
                "moco.bn_sub_batches",
                mc.bn_sub_batches,
                format!(
                    "between 1 and optim.batch_size / 2 = {} (at least two samples per sub-batch), or moco.shuffle_bn = \"off\"",
                    o.batch_size / 2
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
        self.optim_params()
            .check(o.lr, o.grad_clip, &OPTIM_KEYS)
            .map_err(|e| invalid(e.key, e.value, e.allowed))?;
        if !(o.warmup_epochs >= 0.0 && o.warmup_epochs <= r.epochs as f64) {
            return Err(invalid(
                "optim.warmup_epochs",
                o.warmup_epochs,
                format!("a number in [0, run.epochs = {}]", r.epochs),
            ));
        }
        let mo = &self.monitor;
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
        let c = &self.checkpoint;
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

    /// The config with every default spelled out (`model.backbone` resolved from the preset).
    pub fn resolved(&self) -> Self {
        let mut c = self.clone();
        c.model.backbone = Some(self.model.backbone());
        c
    }

    /// TOML text of the config.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Parse {
            path: None,
            message: e.to_string(),
        })
    }

    /// SHA-256 (hex) of the resolved config without `run.name`, `run.runs_dir` and `run.device`
    /// (a run may be resumed under another name or on another device, nothing else).
    pub fn hash(&self) -> Result<String, ConfigError> {
        let mut c = self.resolved();
        c.run.name = String::new();
        c.run.runs_dir = PathBuf::new();
        c.run.device = DeviceKind::Cpu;
        c.run.finetune_config = None;
        // Execution settings like the device: a run may resume in another precision.
        c.run.precision = Precision::F32;
        c.run.tf32 = true;
        let text = c.to_toml()?;
        let d = Sha256::digest(text.as_bytes());
        Ok(d.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The run directory `<runs_dir>/<name>`.
    pub fn run_dir(&self) -> PathBuf {
        self.run.runs_dir.join(&self.run.name)
    }

    /// Refuse a queue that would hold a sample's own key from its previous epoch
    /// (`moco.k >= train_samples - optim.batch_size`) unless `moco.allow_long_queue`.
    pub fn check_queue(&self, train_samples: usize) -> Result<(), ConfigError> {
        let (k, bs) = (self.moco.k, self.optim.batch_size);
        let limit = train_samples.saturating_sub(bs);
        if k >= limit && !self.moco.allow_long_queue {
            return Err(invalid(
                "moco.k",
                k,
                format!(
                    "less than training samples - batch size = {train_samples} - {bs} = {limit}: a queue of {k} keys would hold a sample's own key from its previous epoch as a negative; lower moco.k or set moco.allow_long_queue = true"
                ),
            ));
        }
        Ok(())
    }

    /// The step's shuffled-BN setting.
    pub fn shuffle_bn(&self) -> Option<crate::step::ShuffleBn> {
        (self.moco.shuffle_bn == ShuffleBnMode::Split && self.moco.bn_sub_batches > 1).then_some(
            crate::step::ShuffleBn {
                sub_batches: self.moco.bn_sub_batches,
                seed: self.run.seed ^ 0x5348_5546_464c_4542,
            },
        )
    }

    pub fn loss_params(&self) -> LossParams {
        LossParams {
            kind: self.moco.loss,
            lambda: self.moco.lambda,
            tau: self.moco.tau,
        }
    }

    pub fn optim_params(&self) -> OptimParams {
        let o = &self.optim;
        OptimParams {
            kind: o.kind,
            momentum: o.momentum,
            weight_decay: o.weight_decay,
            nesterov: o.nesterov,
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_round_trips_and_validates() {
        let c = PretrainConfig::default_with(&[], None).unwrap();
        let text = c.resolved().to_toml().unwrap();
        let back = PretrainConfig::from_toml(&text, None, &[], None).unwrap();
        assert_eq!(back.hash().unwrap(), c.hash().unwrap());
        assert!(text.contains("arch = \"sew_resnet\""));
    }

    #[test]
    fn overrides_infer_types() {
        let c = PretrainConfig::default_with(
            &sets(&[
                "optim.lr=1",
                "moco.k=1024",
                "moco.symmetric=true",
                "moco.loss=infonce",
                "run.name=\"x y\"",
                "optim.grad_clip=2",
                "data.frames.t=2",
            ]),
            None,
        )
        .unwrap();
        assert_eq!(c.optim.lr, 1.0);
        assert_eq!(c.moco.k, 1024);
        assert!(c.moco.symmetric);
        assert_eq!(c.moco.loss, LossKind::InfoNce);
        assert_eq!(c.run.name, "x y");
        assert_eq!(c.optim.grad_clip, Some(2.0));
        assert_eq!(c.data.frames.t, 2);
        // Names and hashes: a different name keeps the hash, a different lr does not.
        let d = PretrainConfig::default_with(
            &sets(&[
                "optim.lr=1",
                "moco.k=1024",
                "moco.symmetric=true",
                "moco.loss=infonce",
                "run.name=other",
                "optim.grad_clip=2.0",
                "data.frames.t=2",
            ]),
            None,
        )
        .unwrap();
        assert_eq!(c.hash().unwrap(), d.hash().unwrap());
        let e = PretrainConfig::default_with(&sets(&["optim.lr=0.5"]), None).unwrap();
        assert_ne!(c.hash().unwrap(), e.hash().unwrap());
    }

    #[test]
    fn precision_is_f32_by_default_and_bf16_needs_cuda() {
        let c = PretrainConfig::default_with(&[], None).unwrap();
        assert_eq!((c.run.precision, c.run.tf32), (Precision::F32, true));
        assert_eq!(c.run.precision.compute_dtype(), candle_core::DType::F32);
        let e = err_text(&["run.precision=\"bf16\""]);
        assert!(e.contains("run.precision") && e.contains("cuda"), "{e}");
        let e = err_text(&["run.precision=\"f16\""]);
        assert!(e.contains("precision"), "{e}");
        let g = PretrainConfig::default_with(
            &sets(&[
                "run.device=\"cuda\"",
                "run.precision=\"bf16\"",
                "run.tf32=false",
            ]),
            None,
        )
        .unwrap();
        assert_eq!(g.run.precision.compute_dtype(), candle_core::DType::BF16);
        assert!(!g.run.tf32);
        // Execution settings, like the device: the hash (resume check) ignores them.
        assert_eq!(g.hash().unwrap(), c.hash().unwrap());
        let text = g.resolved().to_toml().unwrap();
        assert!(text.contains("precision = \"bf16\""), "{text}");
    }

    fn err_text(overrides: &[&str]) -> String {
        PretrainConfig::default_with(&sets(overrides), None)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_the_key() {
        let e = err_text(&["moco.k=100"]);
        assert!(
            e.contains("moco.k") && e.contains("multiple of optim.batch_size"),
            "{e}"
        );
        let e = err_text(&["moco.kk=3"]);
        assert!(e.contains("kk"), "{e}");
        let e = err_text(&["optim.lr=fast"]);
        assert!(e.contains("lr") || e.contains("float"), "{e}");
        let e = err_text(&["moco.lambda=1.5"]);
        assert!(e.contains("moco.lambda") && e.contains("[0, 1]"), "{e}");
        let e = err_text(&["moco.loss=bogus"]);
        assert!(e.contains("bogus"), "{e}");
        let e = err_text(&["run.epochs=0"]);
        assert!(e.contains("run.epochs"), "{e}");
        let e = err_text(&["data.root="]);
        assert!(e.contains("data.root") && e.contains(DATA_ROOT_ENV), "{e}");
        let e = err_text(&["moco"]);
        assert!(e.contains("key=value"), "{e}");
        let e = err_text(&["moco.k.x=1"]);
        assert!(e.contains("not a table"), "{e}");
        let e = PretrainConfig::from_toml("[run]\nname = 3\n", None, &[], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("name"), "{e}");
        let e = PretrainConfig::from_toml("[bogus]\n", None, &[], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn a_queue_holding_own_keys_is_refused_unless_allowed() {
        let c = PretrainConfig::default_with(&sets(&["moco.k=1152"]), None).unwrap();
        // DVS128 Gesture: 1,176 training samples, batch 32: the limit is 1,144.
        let e = c.check_queue(1176).unwrap_err().to_string();
        assert!(
            e.contains("moco.k") && e.contains("1152") && e.contains("1176 - 32 = 1144"),
            "{e}"
        );
        assert!(c.check_queue(1200).is_ok());
        let c = PretrainConfig::default_with(
            &sets(&["moco.k=1152", "moco.allow_long_queue=true"]),
            None,
        )
        .unwrap();
        assert!(c.check_queue(1176).is_ok());
        let e = err_text(&["moco.bn_sub_batches=32"]);
        assert!(e.contains("moco.bn_sub_batches") && e.contains("16"), "{e}");
        let c = PretrainConfig::default_with(&sets(&["moco.shuffle_bn=off"]), None).unwrap();
        assert!(c.shuffle_bn().is_none());
        assert_eq!(
            PretrainConfig::default().shuffle_bn().unwrap().sub_batches,
            4
        );
    }

    #[test]
    fn root_comes_from_the_environment_when_unset() {
        let c = PretrainConfig::from_toml(
            "[data]\ndataset = \"synthetic\"\n",
            None,
            &[],
            Some("/data/x"),
        )
        .unwrap();
        assert_eq!(c.data.root, PathBuf::from("/data/x"));
        let c = PretrainConfig::from_toml("[data]\nroot = \"/a\"\n", None, &[], Some("/data/x"))
            .unwrap();
        assert_eq!(c.data.root, PathBuf::from("/a"));
        assert!(
            PretrainConfig::from_toml("[data]\ndataset = \"synthetic\"\n", None, &[], None)
                .is_err()
        );
    }
}
