//! Fine-tuning (initialise from a pre-trained backbone, train everything with labels) and its
//! baseline, supervised training from scratch with the same budget (the same function with no
//! weights). Optionally on a stratified, seeded 1 % or 10 % of the training labels.

use std::path::Path;
use std::sync::Arc;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use nmoco_data::{Dataset, Loader, LoaderConfig, Views};
use nmoco_models::{Backbone, BackboneConfig, Classifier, is_buffer};
use nmoco_optim::{OptimKind, OptimParams, Optimizer, lr_at};
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
    /// Train on augmented views (the dataset's `augment` settings).
    pub augment: bool,
    pub grad_clip: Option<f64>,
    pub seed: u64,
}

impl Default for FinetuneConfig {
    /// SEW-ResNet's recipe (method.md): SGD lr 0.01, momentum 0.9, cosine.
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 32,
            optimizer: OptimKind::Sgd,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: false,
            warmup_epochs: 0.0,
            label_smoothing: 0.0,
            label_fraction: 1.0,
            augment: true,
            grad_clip: None,
            seed: 0,
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
        if self.lr.is_nan() || self.lr <= 0.0 {
            return bad("finetune.lr", format!("must be > 0, got {}", self.lr));
        }
        Ok(())
    }
}

/// Result of one fine-tuning or supervised run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneOutcome {
    pub test: Metrics,
    /// Training samples actually used (after the label fraction).
    pub train_used: usize,
    /// Mean training loss per epoch.
    pub epoch_loss: Vec<f64>,
}

/// Called after every step with `(epoch, step in epoch, steps per epoch, loss)`.
pub type StepProgress<'a> = &'a (dyn Fn(usize, usize, usize, f64) + Sync);

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
    progress: StepProgress<'_>,
) -> Result<FinetuneOutcome, Error> {
    cfg.validate()?;
    let classes = train.num_classes();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let backbone = Backbone::new(backbone_cfg, vb.pp("backbone"))?;
    let classifier = Classifier::new(backbone.feature_dim(), classes, vb.pp("classifier"))?;
    nmoco_models::seeded_init(&varmap, cfg.seed)?;
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
    let mut opt = Optimizer::new(
        params,
        OptimParams {
            kind: cfg.optimizer,
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
            nesterov: cfg.nesterov,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
    );
    let train = if cfg.label_fraction < 1.0 {
        // The stratified split's held-out part has the requested fraction of each class.
        let (_, keep) =
            crate::linear::stratified_split(train.labels(), cfg.label_fraction, cfg.seed);
        Arc::new(train.subset(&keep)?)
    } else {
        train
    };
    let train_used = train.len();
    let steps_per_epoch = train_used.div_ceil(cfg.batch_size);
    let total = steps_per_epoch * cfg.epochs;
    let warmup = (cfg.warmup_epochs * steps_per_epoch as f64).round() as usize;
    let aug = train.config().augment.clone();
    let mut epoch_loss = Vec::new();
    let mut step = 0;
    for epoch in 0..cfg.epochs {
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
            let feats = backbone.forward(&batch.x, true)?;
            let logits = classifier.forward(&feats)?;
            let loss = smoothed_cross_entropy(&logits, &batch.labels, cfg.label_smoothing)?;
            let lv = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !lv.is_finite() {
                return Err(Error::NonFinite {
                    what: "fine-tuning loss",
                });
            }
            let grads = loss.backward()?;
            opt.step(&grads, lr_at(cfg.lr, step, total, warmup), cfg.grad_clip)?;
            step += 1;
            sum += lv;
            count += 1;
            progress(epoch, i + 1, steps_per_epoch, lv);
        }
        let mean = sum / count.max(1) as f64;
        tracing::info!(epoch, loss = mean, "fine-tuning epoch");
        epoch_loss.push(mean);
    }
    let test_metrics = classify(&backbone, &classifier, test, cfg.batch_size, device)?;
    Ok(FinetuneOutcome {
        test: test_metrics,
        train_used,
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
