//! Fine-tuning (initialise from a pre-trained backbone, train everything with labels) and its
//! baseline, supervised training from scratch with the same budget (the same function with no
//! weights). Optionally on a stratified, seeded 1 % or 10 % of the training labels.
//!
//! The published recipes need: a warm-up from `warmup_lr`, cosine decay to `min_lr`, then
//! `cooldown_epochs` at `min_lr` (timm's scheduler as Spikformer uses it); label smoothing;
//! mixup with soft targets (`mixup_alpha`, applied with probability `mixup_prob`, mixing each
//! sample with the batch in reverse order as timm does); and the augmentation policy
//! `flip_trivial_augment` (random horizontal flip where the dataset allows it, then
//! TrivialAugment-Wide over frames, `nmoco_frames::trivial_augment`).
//!
//! Model selection never looks at test: a stratified, seeded validation part of the labelled
//! training samples (`val_fraction`) is held out, the epoch with the best validation accuracy
//! is the selected one, and three test figures are reported: the last epoch's, the selected
//! epoch's, and the best over all epochs (what the literature's tables report; labelled so).

use std::path::Path;
use std::sync::Arc;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use nmoco_data::{Dataset, Loader, LoaderConfig, Views};
use nmoco_models::{Backbone, BackboneConfig, Classifier, is_buffer};
use nmoco_optim::{OptimKeys, OptimKind, OptimParams, Optimizer};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::metrics::{Metrics, evaluate};

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
        let warm = (self.warmup_epochs * steps_per_epoch as f64).round() as usize;
        if step < warm {
            return self.warmup_lr + (self.lr - self.warmup_lr) * (step + 1) as f64 / warm as f64;
        }
        let span = main.saturating_sub(warm).max(1);
        let p = ((step - warm) as f64 / span as f64).min(1.0);
        self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
    }
}

/// Result of one fine-tuning or supervised run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneOutcome {
    /// Test metrics of the last epoch.
    pub test: Metrics,
    /// Test metrics at the epoch chosen on the validation split (the last epoch when there is
    /// none).
    pub test_selected: Metrics,
    /// The chosen epoch (1-based).
    pub selected_epoch: usize,
    /// Highest test top-1 over all epochs and its epoch (1-based): the figure the literature's
    /// tables report, not a selection without the test set.
    pub test_max_top1: f64,
    pub test_max_epoch: usize,
    /// Test top-1 after every epoch.
    pub test_top1_per_epoch: Vec<f64>,
    /// Validation top-1 after every epoch (empty without a validation split).
    pub val_top1_per_epoch: Vec<f64>,
    /// Labelled training samples used (after the label fraction), validation included.
    pub train_used: usize,
    /// Of those, held out for validation.
    pub val_used: usize,
    /// Mean training loss per epoch.
    pub epoch_loss: Vec<f64>,
}

/// Smoothed one-hot targets (`1 − ε + ε/C` on the label, `ε/C` elsewhere) mixed as
/// `λ·y_i + (1 − λ)·y_{partner[i]}`: rows of `[B, C]`, each summing to one.
pub fn mixup_targets(
    labels: &[usize],
    classes: usize,
    smoothing: f64,
    lambda: f64,
    partner: &[usize],
) -> Vec<f32> {
    let off = smoothing / classes as f64;
    let on = 1.0 - smoothing + off;
    let mut out = vec![0f32; labels.len() * classes];
    for (i, row) in out.chunks_exact_mut(classes).enumerate() {
        let mut r = vec![off; classes];
        r[labels[i]] += lambda * (on - off);
        r[labels[partner[i]]] += (1.0 - lambda) * (on - off);
        for (o, v) in row.iter_mut().zip(r) {
            *o = v as f32;
        }
    }
    out
}

/// Cross-entropy against soft targets `[B, C]`: `mean_b(−Σ_c y_bc · log p_bc)`.
pub fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor, Error> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    Ok((logp * targets)?.sum(D::Minus1)?.mean_all()?.neg()?)
}

/// Mixup of a batch `[T, B, ...]`: with probability `prob`, `λ ~ Beta(α, α)` and sample `i`
/// mixed with sample `B − 1 − i` (timm's batch mode). Returns the inputs, λ and the partners
/// (`λ = 1` and each sample its own partner when the batch is not mixed).
pub fn mixup_batch<R: rand::Rng + ?Sized>(
    x: &Tensor,
    alpha: f64,
    prob: f64,
    rng: &mut R,
) -> Result<(Tensor, f64, Vec<usize>), Error> {
    use rand_distr::Distribution;
    let b = x.dim(1)?;
    let fire = alpha > 0.0 && b > 1 && rng.random::<f64>() < prob;
    if !fire {
        return Ok((x.clone(), 1.0, (0..b).collect()));
    }
    let lambda = rand_distr::Beta::new(alpha, alpha)
        .map_err(|e| Error::Config {
            key: "finetune.mixup_alpha",
            message: e.to_string(),
        })?
        .sample(rng);
    let partner: Vec<usize> = (0..b).rev().collect();
    let idx: Vec<u32> = partner.iter().map(|&i| i as u32).collect();
    let flipped = x.index_select(&Tensor::new(idx.as_slice(), x.device())?, 1)?;
    let mixed = ((x * lambda)? + (flipped * (1.0 - lambda))?)?;
    Ok((mixed, lambda, partner))
}

/// What [`finetune`] reports as it goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FinetuneProgress {
    /// After every step: `epoch` counts from 0, `step` (within the epoch) from 1.
    Step {
        epoch: usize,
        step: usize,
        steps_per_epoch: usize,
        loss: f64,
    },
    /// After every epoch's evaluation; `epochs_done` counts from 1, as the outcome's
    /// `selected_epoch` does.
    Epoch {
        epochs_done: usize,
        loss_mean: f64,
        val_top1: Option<f64>,
        test_top1: f64,
    },
}

/// Receives [`FinetuneProgress`].
pub type Progress<'a> = &'a (dyn Fn(FinetuneProgress) + Sync);

/// Cross-entropy with label smoothing ε: `(1−ε)·NLL + ε·mean_c(−log p_c)`.
pub fn smoothed_cross_entropy(logits: &Tensor, labels: &Tensor, eps: f64) -> Result<Tensor, Error> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = candle_nn::loss::nll(&logp, labels)?;
    if eps == 0.0 {
        return Ok(nll);
    }
    let uniform = logp.mean(D::Minus1)?.mean_all()?.neg()?;
    Ok(((nll * (1.0 - eps))? + (uniform * eps)?)?)
}

/// Train `backbone_cfg` + a linear classifier on `train` with labels, starting from `weights`
/// (`None` = the seeded random initialisation: supervised from scratch), then evaluate on
/// `test`.
pub fn finetune(
    backbone_cfg: &BackboneConfig,
    weights: Option<&Path>,
    train: Arc<Dataset>,
    test: Arc<Dataset>,
    cfg: &FinetuneConfig,
    device: &Device,
    progress: Progress<'_>,
) -> Result<FinetuneOutcome, Error> {
    cfg.validate()?;
    let classes = train.num_classes();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let backbone = Backbone::new(backbone_cfg, vb.pp("backbone"))?;
    let classifier = Classifier::new(backbone.feature_dim(), classes, vb.pp("classifier"))?;
    nmoco_models::seeded_init_with(&varmap, cfg.seed, backbone_cfg.conv_init())?;
    if let Some(w) = weights {
        crate::checkpoint::load_into(&varmap, w)?;
    }
    let mut params: Vec<(String, candle_core::Var)> = varmap
        .data()
        .lock()
        .map_err(|_| Error::Config {
            key: "varmap",
            message: "poisoned lock".into(),
        })?
        .iter()
        .filter(|(n, _)| !is_buffer(n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut opt = Optimizer::new(params, cfg.optim_params());
    let train = if cfg.label_fraction < 1.0 {
        // The stratified split's held-out part has the requested fraction of each class.
        let (_, keep) =
            crate::linear::stratified_split(train.labels(), cfg.label_fraction, cfg.seed);
        Arc::new(train.subset(&keep)?)
    } else {
        train
    };
    let train_used = train.len();
    // The validation part is carved from the labelled samples, so that a label fraction
    // bounds every label used.
    let (train, val) = if cfg.val_fraction > 0.0 {
        let (fit, val) =
            crate::linear::stratified_split(train.labels(), cfg.val_fraction, cfg.seed ^ 0x76);
        if val.is_empty() || fit.is_empty() {
            (train, None)
        } else {
            (
                Arc::new(train.subset(&fit)?),
                Some(Arc::new(train.subset(&val)?)),
            )
        }
    } else {
        (train, None)
    };
    let val_used = val.as_ref().map_or(0, |v| v.len());
    let steps_per_epoch = train.len().div_ceil(cfg.batch_size);
    let epochs_total = cfg.epochs + cfg.cooldown_epochs;
    let data_aug = train.config().augment.clone();
    let aug = match cfg.augment_policy {
        AugmentPolicy::Data => data_aug,
        AugmentPolicy::FlipTrivialAugment => nmoco_frames::AugmentConfig {
            hflip: data_aug.hflip,
            hflip_p: 0.5,
            trivial_augment: true,
            ta_bins: data_aug.ta_bins,
            ta_shear: data_aug.ta_shear,
            ta_translate_frac: data_aug.ta_translate_frac,
            ta_rotate_deg: data_aug.ta_rotate_deg,
            ta_cutout_frac: data_aug.ta_cutout_frac,
            ..nmoco_frames::AugmentConfig::none()
        },
    };
    let mut epoch_loss = Vec::new();
    let (mut test_top1, mut val_top1) = (Vec::new(), Vec::new());
    let mut selected: Option<(f64, usize, Metrics)> = None;
    let mut max: Option<(f64, usize)> = None;
    let mut last = None;
    let mut step = 0;
    for epoch in 0..epochs_total {
        let lc = LoaderConfig {
            batch_size: cfg.batch_size,
            shuffle: true,
            drop_last: false,
            seed: cfg.seed,
            epoch: epoch as u64,
            views: if cfg.augment {
                Views::Augmented
            } else {
                Views::Plain
            },
            ..Default::default()
        };
        let (mut sum, mut count) = (0.0, 0usize);
        for (i, batch) in Loader::new(train.clone(), &lc, &aug, device).enumerate() {
            let batch = batch?;
            let loss = if cfg.mixup_alpha > 0.0 {
                use rand::SeedableRng;
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                    cfg.seed ^ 0x6d69_7875_7000_0000 ^ (step as u64),
                );
                let (x, lambda, partner) =
                    mixup_batch(&batch.x, cfg.mixup_alpha, cfg.mixup_prob, &mut rng)?;
                let labels: Vec<usize> = batch
                    .labels
                    .to_device(&Device::Cpu)?
                    .to_vec1::<u32>()?
                    .into_iter()
                    .map(|l| l as usize)
                    .collect();
                let targets =
                    mixup_targets(&labels, classes, cfg.label_smoothing, lambda, &partner);
                let targets = Tensor::from_vec(targets, (labels.len(), classes), device)?;
                let logits = classifier.forward(&backbone.forward(&x, true)?)?;
                soft_cross_entropy(&logits, &targets)?
            } else {
                let feats = backbone.forward(&batch.x, true)?;
                let logits = classifier.forward(&feats)?;
                smoothed_cross_entropy(&logits, &batch.labels, cfg.label_smoothing)?
            };
            let lv = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !lv.is_finite() {
                return Err(Error::NonFinite {
                    what: "fine-tuning loss",
                });
            }
            let grads = loss.backward()?;
            opt.step(&grads, cfg.lr_at(step, steps_per_epoch), cfg.grad_clip)?;
            step += 1;
            sum += lv;
            count += 1;
            progress(FinetuneProgress::Step {
                epoch,
                step: i + 1,
                steps_per_epoch,
                loss: lv,
            });
        }
        let mean = sum / count.max(1) as f64;
        epoch_loss.push(mean);
        // Evaluation after every epoch: validation (selection) and test (reported only).
        let v = match &val {
            Some(v) => {
                Some(classify(&backbone, &classifier, v.clone(), cfg.batch_size, device)?.top1)
            }
            None => None,
        };
        let t = classify(&backbone, &classifier, test.clone(), cfg.batch_size, device)?;
        tracing::info!(
            epoch,
            loss = mean,
            val_top1 = v,
            test_top1 = t.top1,
            "fine-tuning epoch"
        );
        let e = epoch + 1;
        progress(FinetuneProgress::Epoch {
            epochs_done: e,
            loss_mean: mean,
            val_top1: v,
            test_top1: t.top1,
        });
        test_top1.push(t.top1);
        if let Some(v) = v {
            val_top1.push(v);
        }
        if max.is_none_or(|(m, _)| t.top1 > m) {
            max = Some((t.top1, e));
        }
        // Without a validation split, the selection is the last epoch.
        let score = v.unwrap_or(e as f64);
        if selected.as_ref().is_none_or(|(s, _, _)| score > *s) {
            selected = Some((score, e, t.clone()));
        }
        last = Some(t);
    }
    let (test_last, (_, selected_epoch, test_selected), (test_max_top1, test_max_epoch)) =
        match (last, selected, max) {
            (Some(l), Some(s), Some(m)) => (l, s, m),
            _ => {
                return Err(Error::Config {
                    key: "finetune.epochs",
                    message: "no epoch ran".into(),
                });
            }
        };
    Ok(FinetuneOutcome {
        test: test_last,
        test_selected,
        selected_epoch,
        test_max_top1,
        test_max_epoch,
        test_top1_per_epoch: test_top1,
        val_top1_per_epoch: val_top1,
        train_used,
        val_used,
        epoch_loss,
    })
}

/// Evaluate a backbone + classifier on every sample of `ds`.
pub fn classify(
    backbone: &Backbone,
    classifier: &Classifier,
    ds: Arc<Dataset>,
    batch_size: usize,
    device: &Device,
) -> Result<Metrics, Error> {
    let classes = ds.num_classes();
    let labels = ds.labels().to_vec();
    let mut scores = vec![0f32; labels.len() * classes];
    let lc = LoaderConfig {
        batch_size,
        shuffle: false,
        views: Views::Plain,
        ..Default::default()
    };
    let aug = ds.config().augment.clone();
    for batch in Loader::new(ds, &lc, &aug, device) {
        let batch = batch?;
        let logits = classifier
            .forward(&backbone.forward(&batch.x, false)?)?
            .to_device(&Device::Cpu)?
            .to_vec2::<f32>()?;
        for (row, &i) in logits.iter().zip(&batch.indices) {
            scores[i * classes..(i + 1) * classes].copy_from_slice(row);
        }
    }
    evaluate(&scores, classes, &labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn mixup_soft_targets_sum_to_one() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let (t, b, classes) = (2, 6, 5);
        let x = Tensor::arange(0f32, (t * b * 3) as f32, &Device::Cpu)
            .unwrap()
            .reshape((t, b, 3))
            .unwrap();
        let labels = [0, 1, 2, 3, 4, 0];
        let mut mixed = 0;
        for _ in 0..40 {
            let (xm, lambda, partner) = mixup_batch(&x, 0.5, 0.5, &mut rng).unwrap();
            assert!((0.0..=1.0).contains(&lambda));
            if lambda < 1.0 {
                mixed += 1;
                assert_eq!(partner, vec![5, 4, 3, 2, 1, 0]);
                // x_mixed[:, i] = λ x[:, i] + (1 − λ) x[:, B−1−i].
                let a = x.to_vec3::<f32>().unwrap();
                let m = xm.to_vec3::<f32>().unwrap();
                let want = lambda as f32 * a[1][2][1] + (1.0 - lambda as f32) * a[1][3][1];
                assert!((m[1][2][1] - want).abs() < 1e-4);
            } else {
                assert_eq!(partner, (0..b).collect::<Vec<_>>());
            }
            for smoothing in [0.0, 0.1] {
                let y = mixup_targets(&labels, classes, smoothing, lambda, &partner);
                for (i, row) in y.chunks_exact(classes).enumerate() {
                    let sum: f32 = row.iter().sum();
                    assert!((sum - 1.0).abs() < 1e-6, "row {i} sums to {sum}");
                    assert!(row.iter().all(|v| *v >= 0.0));
                }
            }
        }
        // Probability 0.5: some batches mixed, some not.
        assert!(mixed > 5 && mixed < 35, "{mixed} of 40 mixed");
        // Unmixed targets with smoothing ε: 1 − ε + ε/C on the label.
        let y = mixup_targets(&[2], 5, 0.1, 1.0, &[0]);
        assert!((y[2] - 0.92).abs() < 1e-6 && (y[0] - 0.02).abs() < 1e-6);
        // Soft cross-entropy with one-hot smoothed targets equals the smoothed cross-entropy.
        let logits = Tensor::new(&[[0.3f32, -1.0, 2.0, 0.1, 0.0]], &Device::Cpu).unwrap();
        let soft = Tensor::from_vec(y, (1, 5), &Device::Cpu).unwrap();
        let a = soft_cross_entropy(&logits, &soft)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let lab = Tensor::new(&[2u32], &Device::Cpu).unwrap();
        let b = smoothed_cross_entropy(&logits, &lab, 0.1)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }

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
