//! The fine-tuning recipe: optimizer, schedule (warm-up from `warmup_lr`, cosine to `min_lr`,
//! cool-down), label smoothing, mixup, augmentation policy, label fraction and validation part.

use nmoco_frames::AugmentConfig;
use nmoco_optim::{OptimKeys, OptimKind, OptimParams, WarmupCosine};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Settings of fine-tuning and supervised training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimKind,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    pub warmup_epochs: f64,
    pub label_smoothing: f64,
    /// Fraction of the training labels kept (stratified, seeded); 1.0 = all.
    pub label_fraction: f64,
    /// Train on augmented views (see `augment_policy`).
    pub augment: bool,
    pub grad_clip: Option<f64>,
    pub seed: u64,
    /// Which augmentations `augment` applies.
    pub augment_policy: AugmentPolicy,
    /// Learning rate at the start of the warm-up (rises linearly to `lr`).
    pub warmup_lr: f64,
    /// Learning rate at the end of the cosine decay and during the cool-down.
    pub min_lr: f64,
    /// Epochs at `min_lr` after `epochs` (Spikformer: 10).
    pub cooldown_epochs: usize,
    /// Mixup Beta(α, α) parameter; 0 = no mixup.
    pub mixup_alpha: f64,
    /// Probability that a batch is mixed (when `mixup_alpha > 0`).
    pub mixup_prob: f64,
    /// Fraction of each class of the labelled training samples held out for selecting the
    /// epoch (stratified, seeded); 0 = none (the last epoch is the selected one).
    pub val_fraction: f64,
}

/// The augmentation of fine-tuning batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AugmentPolicy {
    /// The dataset config's `augment` table (the pre-training augmentations).
    #[default]
    Data,
    /// The published fine-tuning recipes: horizontal flip with probability 0.5 (only where
    /// the dataset's `augment.hflip` allows it), then TrivialAugment-Wide over frames with the
    /// dataset config's `ta_*` ranges.
    FlipTrivialAugment,
}

/// The `[finetune]` keys that [`OptimParams::check`] validates (β1, β2 and ε are not settable:
/// the defaults).
const OPTIM_KEYS: OptimKeys = OptimKeys {
    lr: "finetune.lr",
    momentum: "finetune.momentum",
    weight_decay: "finetune.weight_decay",
    nesterov: "finetune.nesterov",
    beta1: "finetune.beta1",
    beta2: "finetune.beta2",
    eps: "finetune.eps",
    grad_clip: "finetune.grad_clip",
};

impl AugmentPolicy {
    /// The augmentation of training batches under this policy, from the dataset config's.
    pub fn augment_config(self, data: &AugmentConfig) -> AugmentConfig {
        match self {
            AugmentPolicy::Data => data.clone(),
            AugmentPolicy::FlipTrivialAugment => AugmentConfig {
                hflip: data.hflip,
                hflip_p: 0.5,
                trivial_augment: true,
                ta_bins: data.ta_bins,
                ta_shear: data.ta_shear,
                ta_translate_frac: data.ta_translate_frac,
                ta_rotate_deg: data.ta_rotate_deg,
                ta_cutout_frac: data.ta_cutout_frac,
                ..AugmentConfig::none()
            },
        }
    }
}

impl Default for FinetuneConfig {
    /// SEW-ResNet's recipe (method.md): SGD lr 0.01, momentum 0.9, cosine.
    fn default() -> Self {
        let p = OptimParams::default();
        Self {
            epochs: 10,
            batch_size: 32,
            optimizer: p.kind,
            lr: 0.01,
            momentum: p.momentum,
            weight_decay: p.weight_decay,
            nesterov: p.nesterov,
            warmup_epochs: 0.0,
            label_smoothing: 0.0,
            label_fraction: 1.0,
            augment: true,
            grad_clip: None,
            seed: 0,
            augment_policy: AugmentPolicy::Data,
            warmup_lr: 0.0,
            min_lr: 0.0,
            cooldown_epochs: 0,
            mixup_alpha: 0.0,
            mixup_prob: 1.0,
            val_fraction: 0.1,
        }
    }
}

impl FinetuneConfig {
    /// Spikformer's recipe (method.md): AdamW lr 1e-3, wd 0.06, warm-up, label smoothing 0.1.
    pub fn spikformer() -> Self {
        Self {
            optimizer: OptimKind::AdamW,
            lr: 1e-3,
            weight_decay: 0.06,
            warmup_epochs: 1.0,
            label_smoothing: 0.1,
            ..Self::default()
        }
    }

    /// The synthetic default's recipe. The tiny SEW-ResNet on 420 samples barely trains with
    /// the SEW recipe above in 10 epochs (13 % from scratch, chance 10 %); AdamW lr 2e-3,
    /// weight decay 0.01 and 2 warm-up epochs train it (docs/results.md). `nmoco finetune`
    /// sets `epochs` to the pre-training's (the same budget); 60 is the longer reference run.
    /// Both the fine-tuned and the from-scratch run get the same budget.
    pub fn synthetic() -> Self {
        Self {
            epochs: 60,
            optimizer: OptimKind::AdamW,
            lr: 2e-3,
            weight_decay: 0.01,
            warmup_epochs: 2.0,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key: &'static str, message: String| Err(Error::Config { key, message });
        if self.epochs == 0 {
            return bad("finetune.epochs", "must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("finetune.batch_size", "must be at least 1".into());
        }
        if self.label_fraction.is_nan() || self.label_fraction <= 0.0 || self.label_fraction > 1.0 {
            return bad(
                "finetune.label_fraction",
                format!("must be in (0, 1], got {}", self.label_fraction),
            );
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(
                "finetune.label_smoothing",
                format!("must be in [0, 1), got {}", self.label_smoothing),
            );
        }
        self.optim_params()
            .check(self.lr, self.grad_clip, &OPTIM_KEYS)
            .or_else(|e| bad(e.key, format!("must be {}, got {}", e.allowed, e.value)))?;
        for (key, v) in [
            ("finetune.warmup_lr", self.warmup_lr),
            ("finetune.min_lr", self.min_lr),
            ("finetune.mixup_alpha", self.mixup_alpha),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(key, format!("must be a finite number >= 0, got {v}"));
            }
        }
        if !(0.0..=1.0).contains(&self.mixup_prob) {
            return bad(
                "finetune.mixup_prob",
                format!("must be in [0, 1], got {}", self.mixup_prob),
            );
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad(
                "finetune.val_fraction",
                format!("must be in [0, 1), got {}", self.val_fraction),
            );
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            return bad(
                "finetune.warmup_epochs",
                format!("must be a finite number >= 0, got {}", self.warmup_epochs),
            );
        }
        Ok(())
    }

    /// The optimizer's hyper-parameters (AdamW's β1, β2, ε: [`OptimParams::default`]'s).
    pub fn optim_params(&self) -> OptimParams {
        OptimParams {
            kind: self.optimizer,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
            ..OptimParams::default()
        }
    }

    /// Learning rate at `step` (0-based) with `steps_per_epoch` steps per epoch: linear warm-up
    /// from `warmup_lr` to `lr` over `warmup_epochs`, cosine from `lr` to `min_lr` until the
    /// end of `epochs`, then `min_lr` for the `cooldown_epochs`.
    pub fn lr_at(&self, step: usize, steps_per_epoch: usize) -> f64 {
        let main = self.epochs * steps_per_epoch;
        if step >= main {
            return self.min_lr;
        }
        WarmupCosine {
            peak: self.lr,
            warmup_from: self.warmup_lr,
            floor: self.min_lr,
            warmup_steps: (self.warmup_epochs * steps_per_epoch as f64).round() as usize,
            cosine_end: main,
        }
        .at(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimizer_settings_are_validated_under_their_keys() {
        let key = |cfg: FinetuneConfig| match cfg.validate() {
            Err(Error::Config { key, message }) => Some((key, message)),
            _ => None,
        };
        assert_eq!(key(FinetuneConfig::default()), None);
        assert_eq!(key(FinetuneConfig::spikformer()), None);
        let (k, m) = key(FinetuneConfig {
            lr: 0.0,
            ..FinetuneConfig::default()
        })
        .unwrap();
        assert_eq!(
            (k, m.as_str()),
            ("finetune.lr", "must be a finite number > 0, got 0")
        );
        let bad = [
            (
                "finetune.momentum",
                FinetuneConfig {
                    momentum: 1.0,
                    ..Default::default()
                },
            ),
            (
                "finetune.weight_decay",
                FinetuneConfig {
                    weight_decay: -1.0,
                    ..Default::default()
                },
            ),
            (
                "finetune.nesterov",
                FinetuneConfig {
                    momentum: 0.0,
                    nesterov: true,
                    ..Default::default()
                },
            ),
            (
                "finetune.grad_clip",
                FinetuneConfig {
                    grad_clip: Some(0.0),
                    ..Default::default()
                },
            ),
        ];
        for (want, cfg) in bad {
            assert_eq!(key(cfg).map(|(k, _)| k), Some(want));
        }
    }

    #[test]
    fn the_recipe_schedule_warms_up_decays_and_cools_down() {
        let cfg = FinetuneConfig {
            epochs: 96,
            cooldown_epochs: 10,
            warmup_epochs: 10.0,
            lr: 1e-3,
            warmup_lr: 1e-5,
            min_lr: 1e-5,
            ..FinetuneConfig::spikformer()
        };
        let spe = 10;
        assert!((cfg.lr_at(0, spe) - (1e-5 + (1e-3 - 1e-5) / 100.0)).abs() < 1e-12);
        assert!((cfg.lr_at(99, spe) - 1e-3).abs() < 1e-12);
        assert!(cfg.lr_at(500, spe) < 1e-3 && cfg.lr_at(500, spe) > 1e-5);
        assert!((cfg.lr_at(959, spe) - 1e-5).abs() < 1e-6);
        for s in 960..1060 {
            assert_eq!(cfg.lr_at(s, spe), 1e-5);
        }
        // With warmup_lr = min_lr = 0 and no cool-down it is nmoco_optim's schedule.
        let plain = FinetuneConfig {
            epochs: 5,
            warmup_epochs: 1.0,
            ..FinetuneConfig::default()
        };
        for s in 0..50 {
            assert_eq!(plain.lr_at(s, 10), nmoco_optim::lr_at(plain.lr, s, 50, 10));
        }
    }
}
