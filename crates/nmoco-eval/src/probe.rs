//! The linear-probe and kNN protocols on frozen time-mean backbone features.
//!
//! Features are extracted once per (weights, dataset config, split) and cached as safetensors
//! next to the checkpoint (`features-<key>.safetensors`, key = SHA-256 of the weights' bytes,
//! the backbone config and the data config), so re-running a probe with other classifier
//! settings costs no forward pass.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use nmoco_data::{DataConfig, Dataset, Loader, LoaderConfig, Split, Views};
use nmoco_models::{Backbone, BackboneConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::accuracy::{Metrics, evaluate};
use crate::features::{Features, time_mean_features};
pub use crate::features::{Progress, SplitFeatures};
use crate::knn::{KnnConfig, knn_scores};
use crate::linear::{LinearConfig, Selection, fit_with_selection};

/// Settings of the probe protocols.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    pub linear: LinearConfig,
    pub knn: KnnConfig,
    /// Batch size of the feature-extraction forward passes.
    pub batch_size: usize,
    /// Train-mode passes over the training split that estimate a randomly initialised
    /// backbone's BN running statistics before its features are extracted ([`calibrate_bn`]).
    pub bn_calibration_passes: usize,
    /// Fraction of the training labels the classifiers see (stratified, seeded by `seed`);
    /// 1.0 = all. Features are extracted for the whole split either way.
    pub label_fraction: f64,
    /// Seed of the label-fraction subset and of the augmented views.
    pub seed: u64,
    /// Augmented views of each labelled training sample whose features may join the linear
    /// classifier's training set; cross-validation decides whether they do
    /// ([`fit_with_selection`]). The views use the data config's geometric augmentations
    /// only ([`nmoco_frames::AugmentConfig::geometric_only`]: random resized crop, horizontal
    /// flip, translation; MoCo's linear classifier trains on random crops and flips). 0 = the
    /// plain features only.
    pub augmented_views: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            linear: LinearConfig::default(),
            knn: KnnConfig::default(),
            batch_size: 32,
            bn_calibration_passes: 3,
            label_fraction: 1.0,
            seed: 0,
            augmented_views: 8,
        }
    }
}

/// Results of the linear probe and kNN on one encoder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeOutcome {
    pub linear: Metrics,
    pub selection: Selection,
    pub knn: Metrics,
    pub train_size: usize,
    pub test_size: usize,
    pub feature_dim: usize,
}

/// Time-mean backbone features `[N, D]` of every sample of `ds`, in dataset order
/// ([`time_mean_features`] of the backbone's evaluation-mode forward).
pub fn extract_features(
    backbone: &Backbone,
    ds: Arc<Dataset>,
    batch_size: usize,
    device: &Device,
    progress: Progress<'_>,
) -> Result<SplitFeatures, Error> {
    let forward = |x: &Tensor| backbone.forward(x, false);
    let sf = time_mean_features(&forward, ds, batch_size, device, progress)?;
    let d = backbone.feature_dim();
    if sf.features.n == 0 {
        // No batch told the dimension: keep the backbone's.
        return Ok(SplitFeatures {
            features: Features::new(Vec::new(), 0, d)?,
            labels: sf.labels,
        });
    }
    Ok(sf)
}

/// Re-estimate the BN running statistics of a backbone from the data: `passes` train-mode
/// forward passes over `ds` (no parameter changes; BN momentum 0.1). A freshly initialised
/// backbone has running statistics 0/1, with which evaluation-mode forwards fire no spikes at all
/// and every feature is zero; the random-init baseline is calibrated this way before its features
/// are extracted, so that it is a real baseline rather than a constant.
pub fn calibrate_bn(
    backbone: &Backbone,
    ds: Arc<Dataset>,
    batch_size: usize,
    passes: usize,
    device: &Device,
) -> Result<(), Error> {
    let aug = ds.config().augment.clone();
    for pass in 0..passes {
        let cfg = LoaderConfig {
            batch_size: batch_size.max(1),
            shuffle: true,
            drop_last: false,
            seed: 0x00b7_ca11,
            epoch: pass as u64,
            views: Views::Plain,
            ..Default::default()
        };
        for batch in Loader::new(ds.clone(), &cfg, &aug, device) {
            let batch = batch?;
            // Only the running statistics change; the graph is dropped at once.
            backbone.forward(&batch.x.detach(), true)?;
        }
    }
    Ok(())
}

/// The cache key of a feature set: weights bytes (or the init seed and the number of BN
/// calibration passes), backbone and data config.
pub fn feature_key(
    weights: Option<&Path>,
    init_seed: u64,
    calibration_passes: usize,
    backbone: &BackboneConfig,
    data: &DataConfig,
    split: Split,
) -> Result<String, Error> {
    let mut h = Sha256::new();
    match weights {
        Some(w) => {
            let bytes = std::fs::read(w).map_err(|source| Error::Io {
                path: w.to_path_buf(),
                source,
            })?;
            h.update(&bytes);
        }
        None => h.update(format!(
            "random-init:{init_seed}:bn-passes:{calibration_passes}"
        )),
    }
    h.update(serde_json::to_string(backbone).unwrap_or_default());
    let mut d = data.clone();
    d.workers = 0;
    d.cache_dir = None;
    h.update(serde_json::to_string(&d).unwrap_or_default());
    h.update(split.name());
    let digest = h.finalize();
    Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// Load cached features if present and well-formed; `None` if absent or unreadable.
pub fn load_cached(path: &Path, expect_n: usize) -> Option<SplitFeatures> {
    let map = candle_core::safetensors::load(path, &Device::Cpu).ok()?;
    let f = Features::from_tensor(map.get("features")?).ok()?;
    let labels: Vec<usize> = map
        .get("labels")?
        .to_vec1::<u32>()
        .ok()?
        .into_iter()
        .map(|l| l as usize)
        .collect();
    (f.n == expect_n && labels.len() == expect_n).then_some(SplitFeatures {
        features: f,
        labels,
    })
}

/// Save features atomically (temporary file, then rename).
pub fn save_cached(path: &Path, sf: &SplitFeatures) -> Result<(), Error> {
    let dev = Device::Cpu;
    let labels: Vec<u32> = sf.labels.iter().map(|&l| l as u32).collect();
    let mut map = std::collections::HashMap::new();
    map.insert("features".to_string(), sf.features.to_tensor(&dev)?);
    map.insert(
        "labels".to_string(),
        Tensor::from_vec(labels, sf.labels.len(), &dev)?,
    );
    let tmp = path.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&map, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(())
}

/// Features of `split`, from the cache in `cache_dir` when present, else extracted and cached.
#[allow(clippy::too_many_arguments)]
pub fn features_cached(
    backbone: &Backbone,
    ds: Arc<Dataset>,
    key: &str,
    cache_dir: Option<&Path>,
    batch_size: usize,
    device: &Device,
    progress: Progress<'_>,
) -> Result<SplitFeatures, Error> {
    let path: Option<PathBuf> = cache_dir.map(|d| d.join(format!("features-{key}.safetensors")));
    if let Some(sf) = path.as_ref().and_then(|p| load_cached(p, ds.len())) {
        tracing::info!("using cached features");
        return Ok(sf);
    }
    let sf = extract_features(backbone, ds, batch_size, device, progress)?;
    if let Some(p) = &path {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        save_cached(p, &sf)?;
    }
    Ok(sf)
}

/// The positions in the training split whose labels the classifiers see: all of them, or a
/// stratified, seeded `label_fraction` of them (sorted).
pub fn labelled_subset(labels: &[usize], cfg: &ProbeConfig) -> Result<Vec<usize>, Error> {
    if !(cfg.label_fraction > 0.0 && cfg.label_fraction <= 1.0) {
        return Err(Error::Config {
            key: "probe.label_fraction",
            message: format!("must be in (0, 1], got {}", cfg.label_fraction),
        });
    }
    Ok(if cfg.label_fraction < 1.0 {
        crate::linear::stratified_split(labels, cfg.label_fraction, cfg.seed).1
    } else {
        (0..labels.len()).collect()
    })
}

/// Time-mean features of `cfg.augmented_views` augmented views of every sample of `ds` (the
/// data config's augmentation, [`nmoco_frames::AugmentConfig::geometric_only`]; seeded by
/// `cfg.seed` and the view's number), in dataset order: one [`Features`] per view. `ds` is the
/// labelled subset ([`labelled_subset`], e.g. through `Dataset::subset`).
pub fn augmented_features(
    backbone: &Backbone,
    ds: Arc<Dataset>,
    cfg: &ProbeConfig,
    device: &Device,
    progress: Progress<'_>,
) -> Result<Vec<Features>, Error> {
    let augment = ds.config().augment.geometric_only();
    let n = ds.len();
    let total = n * cfg.augmented_views;
    let forward = |x: &Tensor| backbone.forward(x, false);
    let seed = cfg.seed ^ 0x0a06_ed17_0b5e;
    (0..cfg.augmented_views)
        .map(|v| {
            let step = |done: usize, _: usize| progress(v * n + done, total);
            let sf = crate::features::augmented_time_mean_features(
                &forward,
                ds.clone(),
                cfg.batch_size,
                (&augment, seed, v as u64),
                device,
                &step,
            )?;
            if sf.features.n == 0 {
                return Features::new(Vec::new(), 0, backbone.feature_dim());
            }
            Ok(sf.features)
        })
        .collect()
}

/// Fit the linear probe on the labelled part of `train` ([`labelled_subset`]; `views`: the
/// augmented views of those samples, in that order, from [`augmented_features`], or none) and
/// evaluate it and the kNN classifier (plain features) on `test`.
pub fn probe(
    train: &SplitFeatures,
    views: &[Features],
    test: &SplitFeatures,
    classes: usize,
    cfg: &ProbeConfig,
) -> Result<ProbeOutcome, Error> {
    let keep = labelled_subset(&train.labels, cfg)?;
    let subset;
    let train = if keep.len() < train.labels.len() {
        subset = SplitFeatures {
            features: train.features.select(&keep),
            labels: keep.iter().map(|&i| train.labels[i]).collect(),
        };
        &subset
    } else {
        train
    };
    let (model, selection) =
        fit_with_selection(&train.features, views, &train.labels, classes, &cfg.linear)?;
    let linear = evaluate(&model.scores(&test.features)?, classes, &test.labels)?;
    let ks = knn_scores(
        &train.features,
        &train.labels,
        &test.features,
        classes,
        &cfg.knn,
    )?;
    let knn = evaluate(&ks, classes, &test.labels)?;
    Ok(ProbeOutcome {
        linear,
        selection,
        knn,
        train_size: train.labels.len(),
        test_size: test.labels.len(),
        feature_dim: train.features.d,
    })
}
