//! Batching into candle tensors on a background thread.
//!
//! Determinism: the sample order of an epoch is [`epoch_order`]`(n, seed, epoch, shuffle)`,
//! and view `v` of sample `i` in epoch `e` is augmented with
//! `ChaCha8Rng::seed_from_u64(`[`sample_seed`]`(seed, e, i, v))`. Neither depends on thread
//! timing, the number of workers, or how many batches were consumed before.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use nmoco_frames::{AugmentConfig, Frames, augment};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::dataset::Dataset;
use crate::error::Error;

/// Which views a batch carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Views {
    /// The cached frames as they are (evaluation, linear probe features).
    #[default]
    Plain,
    /// One augmented view in `x` (supervised training, fine-tuning).
    Augmented,
    /// Two independent augmented views in `x` (view 0) and `x2` (view 1) (contrastive
    /// pre-training).
    TwoViews,
}

/// A batch: frames as `[T, B, 2, H, W]` f32, labels as u32 `[B]`.
#[derive(Debug, Clone)]
pub struct Batch {
    pub x: Tensor,
    /// The second view when [`Views::TwoViews`].
    pub x2: Option<Tensor>,
    pub labels: Tensor,
    /// Sample indices (into the dataset split) of the batch, in batch order.
    pub indices: Vec<usize>,
}

/// How a [`Loader`] walks a dataset for one epoch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub shuffle: bool,
    /// Drop the last, smaller batch.
    pub drop_last: bool,
    pub seed: u64,
    pub epoch: u64,
    pub views: Views,
    /// Batches prepared ahead of the consumer (channel capacity, at least 1). Default 2.
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            shuffle: true,
            drop_last: false,
            seed: 0,
            epoch: 0,
            views: Views::Plain,
            prefetch: 2,
        }
    }
}

/// SplitMix64 finaliser: a bijective 64-bit mix.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The augmentation seed of view `view` of sample `index` in epoch `epoch`.
pub fn sample_seed(seed: u64, epoch: u64, index: u64, view: u64) -> u64 {
    mix64(mix64(mix64(mix64(seed) ^ epoch) ^ index) ^ view)
}

/// The sample order of an epoch: `0..n`, or its Fisher–Yates shuffle driven by
/// `ChaCha8Rng::seed_from_u64(mix(seed, epoch))` (stream 1, so it never coincides with an
/// augmentation stream).
pub fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle && n > 1 {
        let mut rng = ChaCha8Rng::seed_from_u64(mix64(mix64(seed) ^ epoch));
        rng.set_stream(1);
        for i in (1..n).rev() {
            let j = rng.random_range(0..=i as u64) as usize;
            order.swap(i, j);
        }
    }
    order
}

/// Number of batches of an epoch.
pub fn num_batches(n: usize, batch_size: usize, drop_last: bool) -> usize {
    let bs = batch_size.max(1);
    if drop_last { n / bs } else { n.div_ceil(bs) }
}

/// Iterates over the batches of one epoch, built on a background thread (bounded channel of
/// `prefetch` batches; samples of a batch are loaded and augmented in parallel with rayon).
/// Dropping the loader stops the thread.
pub struct Loader {
    rx: Option<Receiver<Result<Batch, Error>>>,
    handle: Option<JoinHandle<()>>,
    num_batches: usize,
    produced: usize,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("num_batches", &self.num_batches)
            .field("produced", &self.produced)
            .finish()
    }
}

impl Loader {
    /// Start the background thread for epoch `cfg.epoch`. `aug` is used by
    /// [`Views::Augmented`] and [`Views::TwoViews`]; tensors are created on `device`.
    pub fn new(
        ds: Arc<Dataset>,
        cfg: &LoaderConfig,
        aug: &AugmentConfig,
        device: &Device,
    ) -> Loader {
        let order = epoch_order(ds.len(), cfg.seed, cfg.epoch, cfg.shuffle);
        let bs = cfg.batch_size.max(1);
        let nb = num_batches(order.len(), bs, cfg.drop_last);
        let (tx, rx) = sync_channel(cfg.prefetch.max(1));
        let job = Job {
            ds,
            order,
            bs,
            nb,
            cfg: cfg.clone(),
            aug: aug.clone(),
            device: device.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("nmoco-loader".into())
            .spawn(move || job.run(tx))
            .ok();
        if handle.is_none() {
            tracing::error!("could not spawn the loader thread");
        }
        Loader {
            rx: Some(rx),
            handle,
            num_batches: nb,
            produced: 0,
        }
    }

    /// Number of batches this epoch yields.
    pub fn num_batches(&self) -> usize {
        self.num_batches
    }
}

impl Iterator for Loader {
    type Item = Result<Batch, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.produced >= self.num_batches {
            return None;
        }
        let rx = self.rx.as_ref()?;
        match rx.recv() {
            Ok(Ok(b)) => {
                self.produced += 1;
                Some(Ok(b))
            }
            Ok(Err(e)) => {
                self.produced = self.num_batches;
                Some(Err(e))
            }
            Err(_) => {
                self.produced = self.num_batches;
                Some(Err(Error::LoaderStopped))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.num_batches - self.produced.min(self.num_batches);
        (0, Some(left))
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Dropping the receiver makes the producer's next send fail, which ends its loop.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Job {
    ds: Arc<Dataset>,
    order: Vec<usize>,
    bs: usize,
    nb: usize,
    cfg: LoaderConfig,
    aug: AugmentConfig,
    device: Device,
}

impl Job {
    fn run(self, tx: SyncSender<Result<Batch, Error>>) {
        for b in 0..self.nb {
            let lo = b * self.bs;
            let hi = (lo + self.bs).min(self.order.len());
            let idx = &self.order[lo..hi];
            let res = match self.ds.pool() {
                Some(p) => p.install(|| self.batch(idx)),
                None => self.batch(idx),
            };
            let failed = res.is_err();
            if tx.send(res).is_err() || failed {
                return;
            }
        }
    }

    fn batch(&self, idx: &[usize]) -> Result<Batch, Error> {
        let views = match self.cfg.views {
            Views::Plain => 0u64,
            Views::Augmented => 1,
            Views::TwoViews => 2,
        };
        let loaded: Vec<(Vec<Frames>, usize)> = idx
            .par_iter()
            .map(|&i| -> Result<(Vec<Frames>, usize), Error> {
                let (f, label) = self.ds.get(i)?;
                let (t, _, h, w) = self.ds.frame_shape();
                if (f.t, f.h, f.w) != (t, h, w) {
                    return Err(Error::ShapeMismatch {
                        index: i,
                        expected: (t, 2, h, w),
                        got: (f.t, 2, f.h, f.w),
                    });
                }
                let out = if views == 0 {
                    vec![f]
                } else {
                    (0..views)
                        .map(|v| {
                            let s = sample_seed(self.cfg.seed, self.cfg.epoch, i as u64, v);
                            augment(&f, &self.aug, &mut ChaCha8Rng::seed_from_u64(s))
                        })
                        .collect()
                };
                Ok((out, label))
            })
            .collect::<Result<_, _>>()?;
        let (t, _, h, w) = self.ds.frame_shape();
        let b = idx.len();
        let stack = |view: usize| -> Result<Tensor, Error> {
            let plane = 2 * h * w;
            let mut buf = vec![0f32; t * b * plane];
            for (bi, (fs, _)) in loaded.iter().enumerate() {
                let f = &fs[view];
                for ti in 0..t {
                    let dst = (ti * b + bi) * plane;
                    buf[dst..dst + plane].copy_from_slice(f.frame(ti));
                }
            }
            Ok(Tensor::from_vec(buf, (t, b, 2, h, w), &self.device)?)
        };
        let x = stack(0)?;
        let x2 = if views == 2 { Some(stack(1)?) } else { None };
        let labels: Vec<u32> = loaded.iter().map(|(_, l)| *l as u32).collect();
        let labels = Tensor::from_vec(labels, b, &self.device)?;
        Ok(Batch {
            x,
            x2,
            labels,
            indices: idx.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_a_pure_permutation_of_seed_and_epoch() {
        let a = epoch_order(100, 7, 3, true);
        assert_eq!(a, epoch_order(100, 7, 3, true));
        assert_ne!(a, epoch_order(100, 7, 4, true));
        assert_ne!(a, epoch_order(100, 8, 3, true));
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_eq!(epoch_order(5, 7, 3, false), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn seeds_differ_per_coordinate() {
        let base = sample_seed(1, 2, 3, 0);
        assert_ne!(base, sample_seed(1, 2, 3, 1));
        assert_ne!(base, sample_seed(1, 2, 4, 0));
        assert_ne!(base, sample_seed(1, 3, 3, 0));
        assert_ne!(base, sample_seed(2, 2, 3, 0));
        assert_eq!(base, sample_seed(1, 2, 3, 0));
    }

    #[test]
    fn batch_counts() {
        assert_eq!(num_batches(10, 3, false), 4);
        assert_eq!(num_batches(10, 3, true), 3);
        assert_eq!(num_batches(0, 3, false), 0);
    }
}
