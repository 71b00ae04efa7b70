//! The kNN monitor: frozen backbone features of a labelled bank and of queries, and the
//! batch-norm re-estimation used before training.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use nmoco_data::Dataset;

use crate::encoder::Encoder;
use crate::error::Result;
use nmoco_eval::features::time_mean_features;
use nmoco_eval::knn::{KnnConfig, knn_scores};

/// Evenly spaced indices: `n` of `0..len` (all when `n == 0` or `n >= len`).
pub fn spaced(len: usize, n: usize) -> Vec<usize> {
    if n == 0 || n >= len {
        return (0..len).collect();
    }
    (0..n).map(|i| i * len / n).collect()
}

/// The kNN monitor's data: a labelled memory bank and queries. During training both come from
/// the train split (queries = a stratified, seeded validation part of it, bank = the rest);
/// the test split is used once, after the last epoch.
#[derive(Debug)]
pub struct KnnMonitor {
    pub bank_set: Arc<Dataset>,
    pub query_set: Arc<Dataset>,
    pub bank: Vec<usize>,
    pub queries: Vec<usize>,
    pub k: usize,
    pub t: f64,
    pub batch: usize,
    pub num_classes: usize,
}

/// The monitor's (bank, validation) indices into the train split: a stratified split with
/// `val_fraction` of each class in validation, seeded by `seed`.
pub fn monitor_split(train: &Dataset, val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    nmoco_data::split::stratified_split(train.labels(), val_fraction, seed ^ 0x0076_616c)
}

/// Re-estimate the BN running statistics of `enc` from `passes` train-mode passes over
/// `indices` of `ds` (seeded order, batches of `batch`): each statistic becomes the plain
/// average of its per-batch values (PyTorch's `momentum = None`), so one pass gives converged
/// statistics however far the initial ones (0 / 1) are from the data's. Returns the statistics
/// before, for [`restore_buffers`].
pub fn calibrate_bn<E: Encoder>(
    enc: &E,
    vars: &candle_nn::VarMap,
    ds: &Dataset,
    indices: &[usize],
    batch: usize,
    passes: usize,
    device: &Device,
) -> Result<Vec<(candle_core::Var, Tensor)>> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let saved = crate::momentum::sorted_vars(vars)
        .into_iter()
        .filter(|(n, _)| nmoco_models::is_buffer(n))
        .map(|(_, v)| {
            let t = v.as_detached_tensor().copy()?;
            Ok((v, t))
        })
        .collect::<Result<Vec<_>>>()?;
    let batch = batch.max(2);
    // BN's update is r ← 0.9·r + 0.1·s: from r = 0, one forward leaves 0.1·s.
    let mut sums: Vec<Option<Tensor>> = vec![None; saved.len()];
    let mut batches = 0usize;
    for pass in 0..passes.max(1) {
        let mut order = indices.to_vec();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
            0x00b7_ca11 + pass as u64,
        ));
        for chunk in order.chunks(batch).filter(|c| c.len() >= 2) {
            let mut xs = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let (f, _) = ds.get(i)?;
                xs.push(Tensor::from_vec(f.data, (f.t, 2, f.h, f.w), device)?);
            }
            let x = Tensor::stack(&xs, 1)?;
            for (v, _) in &saved {
                v.set(&v.as_detached_tensor().zeros_like()?)?;
            }
            enc.features(&x, true)?;
            for ((v, _), sum) in saved.iter().zip(sums.iter_mut()) {
                let s = (v.as_detached_tensor() * 10.0)?;
                *sum = Some(match sum.take() {
                    Some(acc) => (acc + s)?,
                    None => s,
                });
            }
            batches += 1;
        }
    }
    for ((v, init), sum) in saved.iter().zip(sums) {
        match sum {
            Some(s) => v.set(&(s / batches as f64)?)?,
            None => v.set(init)?,
        }
    }
    Ok(saved)
}

/// Put back BN statistics saved by [`calibrate_bn`].
pub fn restore_buffers(saved: &[(candle_core::Var, Tensor)]) -> Result<()> {
    for (v, t) in saved {
        v.set(t)?;
    }
    Ok(())
}

impl KnnMonitor {
    /// Top-1 accuracy of the kNN classifier on the encoder's backbone features (features and
    /// classifier: `nmoco_eval`'s, the ones the kNN protocol uses).
    pub fn evaluate<E: Encoder>(&self, enc: &E, device: &Device) -> Result<f64> {
        let forward = |x: &Tensor| enc.features(x, false);
        let features = |set: &Dataset, indices: &[usize]| {
            let subset = Arc::new(set.subset(indices)?);
            time_mean_features(&forward, subset, self.batch, device, &|_, _| {})
        };
        let bank = features(&self.bank_set, &self.bank)?;
        let queries = features(&self.query_set, &self.queries)?;
        let knn = KnnConfig {
            k: self.k,
            t: self.t as f32,
        };
        let scores = knn_scores(
            &bank.features,
            &bank.labels,
            &queries.features,
            self.num_classes,
            &knn,
        )?;
        Ok(nmoco_eval::evaluate(&scores, self.num_classes, &queries.labels)?.top1)
    }
}
