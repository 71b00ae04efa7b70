//! The pre-training configuration: nested serde structs with defaults, `--set` overrides on the
//! TOML tree, and validation with errors that name the offending key.

use std::path::{Path, PathBuf};

use nmoco_data::{DataConfig, DatasetKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::loss::LossParams;
use nmoco_optim::OptimParams;

mod sections;

pub use sections::{
    CheckpointConfig, DeviceKind, MocoConfig, ModelConfig, MonitorConfig, OptimConfig, Precision,
    Preset, RunConfig, ShuffleBnMode,
};

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

impl From<nmoco_config::OverrideError> for ConfigError {
    fn from(e: nmoco_config::OverrideError) -> Self {
        ConfigError::Override {
            arg: e.arg,
            reason: e.reason,
        }
    }
}

pub(crate) fn invalid(
    key: &str,
    value: impl std::fmt::Display,
    allowed: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        allowed: allowed.into(),
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
            nmoco_config::apply_override(&mut tree, o)?;
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

    /// Check every value, section by section; the error names the key and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.run.validate()?;
        self.validate_data()?;
        self.model.validate()?;
        self.optim.validate(self.run.epochs)?;
        self.moco.validate(self.optim.batch_size)?;
        self.monitor.validate()?;
        self.checkpoint.validate()
    }

    /// `[data]`: a dataset root and valid frame settings.
    fn validate_data(&self) -> Result<(), ConfigError> {
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
        })
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
        self.optim.params()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::LossKind;

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
