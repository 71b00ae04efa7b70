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

mod config;
mod loss;

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use nmoco_data::{Dataset, Loader, LoaderConfig, Views};
use nmoco_models::{Backbone, BackboneConfig, Classifier, is_buffer};
use nmoco_optim::Optimizer;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::accuracy::{Metrics, evaluate};

pub use config::{AugmentPolicy, FinetuneConfig};
pub use loss::{mixup_batch, mixup_targets, smoothed_cross_entropy, soft_cross_entropy};

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
        crate::pretrained::load_into(&varmap, w)?;
    }
    let mut opt = Optimizer::new(trainable(&varmap)?, cfg.optim_params());
    let LabelledParts {
        fit: train,
        val,
        used: train_used,
    } = labelled_parts(train, cfg)?;
    let val_used = val.as_ref().map_or(0, |v| v.len());
    let run = Run {
        backbone: &backbone,
        classifier: &classifier,
        cfg,
        classes,
        steps_per_epoch: train.len().div_ceil(cfg.batch_size),
        aug: cfg.augment_policy.augment_config(&train.config().augment),
        device,
    };
    let mut epoch_loss = Vec::new();
    let mut track = Selection::default();
    let mut step = 0;
    for epoch in 0..cfg.epochs + cfg.cooldown_epochs {
        let mean = run.train_epoch(&mut opt, &train, epoch, &mut step, progress)?;
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
        progress(FinetuneProgress::Epoch {
            epochs_done: epoch + 1,
            loss_mean: mean,
            val_top1: v,
            test_top1: t.top1,
        });
        track.record(epoch + 1, v, t);
    }
    let Selection {
        test_top1,
        val_top1,
        selected: Some((_, selected_epoch, test_selected)),
        max: Some((test_max_top1, test_max_epoch)),
        last: Some(test_last),
    } = track
    else {
        return Err(Error::Config {
            key: "finetune.epochs",
            message: "no epoch ran".into(),
        });
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

/// The trainable variables of `varmap` (BN running statistics left out), sorted by name.
fn trainable(varmap: &VarMap) -> Result<Vec<(String, candle_core::Var)>, Error> {
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
    Ok(params)
}

/// The labelled samples, split.
struct LabelledParts {
    /// The part trained on.
    fit: Arc<Dataset>,
    /// The validation part, if any.
    val: Option<Arc<Dataset>>,
    /// Labelled samples in all.
    used: usize,
}

/// The labelled samples (`label_fraction` of `train`, stratified) split into the part trained on
/// and the validation part (`val_fraction` of them).
fn labelled_parts(train: Arc<Dataset>, cfg: &FinetuneConfig) -> Result<LabelledParts, Error> {
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
    if cfg.val_fraction > 0.0 {
        let (fit, val) =
            crate::linear::stratified_split(train.labels(), cfg.val_fraction, cfg.seed ^ 0x76);
        if !(val.is_empty() || fit.is_empty()) {
            return Ok(LabelledParts {
                fit: Arc::new(train.subset(&fit)?),
                val: Some(Arc::new(train.subset(&val)?)),
                used: train_used,
            });
        }
    }
    Ok(LabelledParts {
        fit: train,
        val: None,
        used: train_used,
    })
}

/// Per-epoch test and validation figures and the epochs they select.
#[derive(Default)]
struct Selection {
    test_top1: Vec<f64>,
    val_top1: Vec<f64>,
    /// (score, epoch, test metrics) of the selected epoch.
    selected: Option<(f64, usize, Metrics)>,
    /// (test top-1, epoch) of the best test epoch.
    max: Option<(f64, usize)>,
    last: Option<Metrics>,
}

impl Selection {
    /// Record epoch `e` (1-based) with its validation top-1 `v` and test metrics `t`.
    fn record(&mut self, e: usize, v: Option<f64>, t: Metrics) {
        self.test_top1.push(t.top1);
        if let Some(v) = v {
            self.val_top1.push(v);
        }
        if self.max.is_none_or(|(m, _)| t.top1 > m) {
            self.max = Some((t.top1, e));
        }
        // Without a validation split, the selection is the last epoch.
        let score = v.unwrap_or(e as f64);
        if self.selected.as_ref().is_none_or(|(s, _, _)| score > *s) {
            self.selected = Some((score, e, t.clone()));
        }
        self.last = Some(t);
    }
}

/// What every training epoch of one fine-tuning run shares.
struct Run<'a> {
    backbone: &'a Backbone,
    classifier: &'a Classifier,
    cfg: &'a FinetuneConfig,
    classes: usize,
    steps_per_epoch: usize,
    aug: nmoco_frames::AugmentConfig,
    device: &'a Device,
}

impl Run<'_> {
    /// One epoch over `train` (0-based `epoch`; `step` counts the steps of the whole run); the
    /// mean training loss.
    fn train_epoch(
        &self,
        opt: &mut Optimizer,
        train: &Arc<Dataset>,
        epoch: usize,
        step: &mut usize,
        progress: Progress<'_>,
    ) -> Result<f64, Error> {
        let (cfg, classes, device) = (self.cfg, self.classes, self.device);
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
        for (i, batch) in Loader::new(train.clone(), &lc, &self.aug, device).enumerate() {
            let batch = batch?;
            let loss = if cfg.mixup_alpha > 0.0 {
                use rand::SeedableRng;
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                    cfg.seed ^ 0x6d69_7875_7000_0000 ^ (*step as u64),
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
                let logits = self.classifier.forward(&self.backbone.forward(&x, true)?)?;
                soft_cross_entropy(&logits, &targets)?
            } else {
                let feats = self.backbone.forward(&batch.x, true)?;
                let logits = self.classifier.forward(&feats)?;
                smoothed_cross_entropy(&logits, &batch.labels, cfg.label_smoothing)?
            };
            let lv = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !lv.is_finite() {
                return Err(Error::NonFinite {
                    what: "fine-tuning loss",
                });
            }
            let grads = loss.backward()?;
            opt.step(
                &grads,
                cfg.lr_at(*step, self.steps_per_epoch),
                cfg.grad_clip,
            )?;
            *step += 1;
            sum += lv;
            count += 1;
            progress(FinetuneProgress::Step {
                epoch,
                step: i + 1,
                steps_per_epoch: self.steps_per_epoch,
                loss: lv,
            });
        }
        Ok(sum / count.max(1) as f64)
    }
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
