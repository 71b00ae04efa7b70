//! [`Dataset`]: one split of an indexed root, backed by the frame cache.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nmoco_events::SensorSize;
use nmoco_frames::{Frames, Resize};
use rayon::prelude::*;

use crate::cache::Cache;
use crate::config::{DataConfig, Split};
use crate::error::Error;
use crate::index::{Index, Sample, index_root};
use crate::source::{self, Decoding};

/// The tracing target of cache-building progress events (fields `done`, `total`, `split`,
/// `dataset`): one `info` event when a build starts (`done = 0`) and one when it ends
/// (`done = total`), and `debug` events at every twentieth of the way in between. The CLI
/// turns them into a progress bar (its progress layer must accept `debug` on this target to
/// see the steps in between).
pub const PROGRESS_TARGET: &str = "nmoco_data::progress";

/// How [`Dataset::open_with`] treats the frame cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Build every missing entry now, in parallel (what [`Dataset::open`] does).
    #[default]
    Build,
    /// Use valid entries, compute missing ones on demand in [`Dataset::get`] and store them.
    Lazy,
    /// No cache at all: [`Dataset::get`] always decodes and integrates.
    Off,
}

/// One split of a dataset: indexed samples, their labels, and frames on demand.
#[derive(Debug)]
pub struct Dataset {
    cfg: DataConfig,
    split: Split,
    index: Arc<Index>,
    samples: Arc<Vec<Sample>>,
    decoding: Decoding,
    cache: Option<Cache>,
    pool: Option<Arc<rayon::ThreadPool>>,
    labels: Vec<usize>,
}

impl Dataset {
    /// Index `cfg.root`, take `split`, and build or validate the frame cache (all of the
    /// split's missing entries are computed in parallel before this returns).
    pub fn open(cfg: &DataConfig, split: Split) -> Result<Dataset, Error> {
        Self::open_with(cfg, split, CacheMode::Build)
    }

    /// [`Dataset::open`] with an explicit cache mode.
    pub fn open_with(cfg: &DataConfig, split: Split, mode: CacheMode) -> Result<Dataset, Error> {
        cfg.frames.validate().map_err(|e| Error::Config {
            field: "frames",
            reason: e.to_string(),
        })?;
        cfg.augment.validate().map_err(|e| Error::Config {
            field: "augment",
            reason: e.to_string(),
        })?;
        let index = Arc::new(index_root(&cfg.dataset, &cfg.root, &cfg.index_options())?);
        let decoding = Decoding::new(cfg);
        warn_on_canvas_mismatch(cfg, index.sensor);
        let pool = if cfg.workers > 0 {
            Some(Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(cfg.workers)
                    .thread_name(|i| format!("nmoco-data-{i}"))
                    .build()
                    .map_err(|e| Error::Config {
                        field: "workers",
                        reason: e.to_string(),
                    })?,
            ))
        } else {
            None
        };
        let shape = (cfg.frames.t, cfg.frames.height, cfg.frames.width);
        let cache = match mode {
            CacheMode::Off => None,
            _ => {
                let hashed = serde_json::json!({
                    "decoding": decoding.hash_value(),
                    "sensor": [index.sensor.width, index.sensor.height],
                    "frames": serde_json::to_value(&cfg.frames).map_err(|source| Error::Manifest {
                        path: cfg.cache_root(),
                        source,
                    })?,
                });
                Some(Cache::open(
                    &cfg.cache_root(),
                    cfg.dataset.name(),
                    hashed,
                    shape,
                )?)
            }
        };
        let samples = Arc::new(index.split(split).to_vec());
        let labels = samples.iter().map(|s| s.label).collect();
        let ds = Dataset {
            cfg: cfg.clone(),
            split,
            index,
            samples,
            decoding,
            cache,
            pool,
            labels,
        };
        if mode == CacheMode::Build {
            ds.build_cache()?;
        }
        Ok(ds)
    }

    fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// Compute and store every missing or implausibly sized cache entry of this split.
    fn build_cache(&self) -> Result<(), Error> {
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        let samples = self.samples();
        // Group the missing samples by source file so each file is decoded once.
        let mut groups: BTreeMap<&PathBuf, Vec<&Sample>> = BTreeMap::new();
        for s in samples {
            if !cache.looks_valid(s) {
                groups.entry(&s.path).or_default().push(s);
            }
        }
        let total: usize = groups.values().map(Vec::len).sum();
        if total == 0 {
            tracing::debug!(dir = %cache.dir.display(), split = %self.split, "frame cache complete");
            return Ok(());
        }
        tracing::info!(
            target: PROGRESS_TARGET,
            done = 0usize,
            total,
            split = self.split.name(),
            dataset = self.cfg.dataset.name(),
            dir = %cache.dir.display(),
            "building frame cache"
        );
        let started = std::time::Instant::now();
        let done = AtomicUsize::new(0);
        let step = (total / 20).max(1);
        let groups: Vec<(&PathBuf, Vec<&Sample>)> = groups.into_iter().collect();
        self.install(|| {
            groups
                .par_iter()
                .try_for_each(|(path, group)| -> Result<(), Error> {
                    let ev = self.decoding.read(path)?;
                    for s in group {
                        let f = self.integrate(&ev, s)?;
                        cache.write(s, &f)?;
                        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if d.is_multiple_of(step) && d < total {
                            tracing::debug!(
                                target: PROGRESS_TARGET,
                                done = d,
                                total,
                                split = self.split.name(),
                                dataset = self.cfg.dataset.name(),
                                "building frame cache"
                            );
                        }
                    }
                    Ok(())
                })
        })?;
        tracing::info!(
            target: PROGRESS_TARGET,
            done = total,
            total,
            split = self.split.name(),
            dataset = self.cfg.dataset.name(),
            seconds = format_args!("{:.1}", started.elapsed().as_secs_f64()),
            "frame cache built"
        );
        Ok(())
    }

    fn integrate(&self, file_events: &nmoco_events::Events, s: &Sample) -> Result<Frames, Error> {
        let ev = self.decoding.sample_events(file_events, s);
        source::integrate(&ev, self.index.sensor, &self.cfg.frames, &s.path)
    }

    /// Decode every distinct source file of this split (in parallel) and return the errors, so
    /// unreadable files are found before training starts.
    pub fn verify_sources(&self) -> Vec<Error> {
        let mut paths: Vec<&PathBuf> = self.samples().iter().map(|s| &s.path).collect();
        paths.sort();
        paths.dedup();
        self.install(|| {
            paths
                .par_iter()
                .filter_map(|p| self.decoding.read(p).err())
                .collect()
        })
    }

    /// Decode and integrate sample `i` from its source file, bypassing the cache.
    pub fn compute(&self, i: usize) -> Result<Frames, Error> {
        let s = self.sample(i)?;
        let ev = self.decoding.read(&s.path)?;
        self.integrate(&ev, s)
    }

    /// Frames and label of sample `i`. Cached frames are verified (size and checksum); a
    /// missing or corrupt entry is recomputed from the source file and rewritten.
    pub fn get(&self, i: usize) -> Result<(Frames, usize), Error> {
        let s = self.sample(i)?;
        let Some(cache) = &self.cache else {
            return Ok((self.compute(i)?, s.label));
        };
        match cache.read(s) {
            Ok(Some(f)) => return Ok((f, s.label)),
            Ok(None) => {}
            Err(e @ Error::CorruptCache { .. }) => {
                tracing::warn!(error = %e, "rebuilding corrupt frame cache entry");
            }
            Err(e) => return Err(e),
        }
        let f = self.compute(i)?;
        cache.write(s, &f)?;
        Ok((f, s.label))
    }

    /// A dataset holding only the samples at `keep` (positions in this split, in that order),
    /// e.g. for low-label fine-tuning. It shares the cache, class list and options; its sample
    /// `j` is this dataset's sample `keep[j]`.
    pub fn subset(&self, keep: &[usize]) -> Result<Dataset, Error> {
        let samples = keep
            .iter()
            .map(|&i| self.sample(i).cloned())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Dataset {
            cfg: self.cfg.clone(),
            split: self.split,
            index: self.index.clone(),
            labels: samples.iter().map(|s| s.label).collect(),
            samples: Arc::new(samples),
            decoding: self.decoding.clone(),
            cache: self.cache.clone(),
            pool: self.pool.clone(),
        })
    }

    /// The indexed sample `i` (file, label, segment).
    pub fn sample(&self, i: usize) -> Result<&Sample, Error> {
        let all = self.samples();
        all.get(i).ok_or(Error::IndexOutOfRange {
            index: i,
            len: all.len(),
        })
    }

    /// All samples of this split, in split order.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn num_classes(&self) -> usize {
        self.index.class_names.len()
    }

    pub fn class_names(&self) -> &[String] {
        &self.index.class_names
    }

    /// Label of every sample, in split order.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// `(T, 2, H, W)` of every sample's frames.
    pub fn frame_shape(&self) -> (usize, usize, usize, usize) {
        (
            self.cfg.frames.t,
            2,
            self.cfg.frames.height,
            self.cfg.frames.width,
        )
    }

    pub fn split(&self) -> Split {
        self.split
    }

    pub fn config(&self) -> &DataConfig {
        &self.cfg
    }

    /// The sensor size events are integrated from.
    pub fn sensor(&self) -> SensorSize {
        self.index.sensor
    }

    /// The cache folder in use, if any.
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.cache.as_ref().map(|c| c.dir.as_path())
    }

    pub(crate) fn pool(&self) -> Option<Arc<rayon::ThreadPool>> {
        self.pool.clone()
    }
}

fn warn_on_canvas_mismatch(cfg: &DataConfig, sensor: SensorSize) {
    let (h, w) = (cfg.frames.height, cfg.frames.width);
    if cfg.frames.resize == Resize::None
        && (h, w) != (sensor.height as usize, sensor.width as usize)
    {
        tracing::warn!(
            dataset = cfg.dataset.name(),
            sensor_h = sensor.height,
            sensor_w = sensor.width,
            frame_h = h,
            frame_w = w,
            "frames.resize is none and the frame size differs from the sensor: events are cropped or zero-padded (see DataConfig::for_dataset)"
        );
    }
    if crate::datasets::spec(&cfg.dataset).mirror_changes_class() && cfg.augment.hflip {
        tracing::warn!(
            dataset = ?cfg.dataset,
            "horizontal flips are on, but this dataset's left/right motions are different classes"
        );
    }
}
