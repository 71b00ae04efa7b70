//! Frozen features: row-major `[n, d]` f32 matrices with their labels, and their extraction
//! (time-mean of an encoder's per-step features over a dataset), shared by the probes and the
//! trainer's kNN monitor.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use nmoco_data::{Dataset, Loader, LoaderConfig, Views};
use nmoco_frames::AugmentConfig;

use crate::Error;

/// A row-major `[n, d]` feature matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub data: Vec<f32>,
    pub n: usize,
    pub d: usize,
}

impl Features {
    pub fn new(data: Vec<f32>, n: usize, d: usize) -> Result<Self, Error> {
        if data.len() != n * d {
            return Err(Error::Shape {
                what: "features",
                expected: format!("{n} x {d}"),
                found: format!("{} values", data.len()),
            });
        }
        Ok(Self { data, n, d })
    }

    /// From a 2-D tensor `[n, d]` (any float dtype).
    pub fn from_tensor(t: &Tensor) -> Result<Self, Error> {
        let (n, d) = t.dims2()?;
        let data = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Self::new(data, n, d)
    }

    pub fn to_tensor(&self, device: &Device) -> Result<Tensor, Error> {
        Ok(Tensor::from_slice(&self.data, (self.n, self.d), device)?)
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.d..(i + 1) * self.d]
    }

    /// Rows `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Features {
        let mut data = Vec::with_capacity(idx.len() * self.d);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        Features {
            data,
            n: idx.len(),
            d: self.d,
        }
    }

    /// Per-column mean and standard deviation (population; a zero deviation becomes 1).
    pub fn column_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let mut mean = vec![0f64; self.d];
        let mut sq = vec![0f64; self.d];
        for i in 0..self.n {
            for (j, &v) in self.row(i).iter().enumerate() {
                mean[j] += v as f64;
                sq[j] += (v as f64) * (v as f64);
            }
        }
        let n = self.n.max(1) as f64;
        let mut m = vec![0f32; self.d];
        let mut s = vec![1f32; self.d];
        for j in 0..self.d {
            let mu = mean[j] / n;
            let var = (sq[j] / n - mu * mu).max(0.0);
            m[j] = mu as f32;
            let sd = var.sqrt();
            s[j] = if sd > 1e-8 { sd as f32 } else { 1.0 };
        }
        (m, s)
    }

    /// `(x - mean) / std` per column with the given statistics.
    pub fn standardized(&self, mean: &[f32], std: &[f32]) -> Features {
        let mut data = self.data.clone();
        for row in data.chunks_mut(self.d.max(1)) {
            for j in 0..self.d {
                row[j] = (row[j] - mean[j]) / std[j];
            }
        }
        Features { data, ..*self }
    }

    /// Each row scaled to unit L2 norm (zero rows stay zero).
    pub fn l2_normalized(&self) -> Features {
        let mut data = self.data.clone();
        for row in data.chunks_mut(self.d.max(1)) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v /= norm);
            }
        }
        Features { data, ..*self }
    }
}

/// Features and labels of one split.
#[derive(Debug, Clone)]
pub struct SplitFeatures {
    pub features: Features,
    pub labels: Vec<usize>,
}

/// Called as `(done, total)` samples while features are extracted.
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// Time-mean features `[N, D]` of every sample of `ds`, in dataset order: `forward` maps a batch
/// `[T, B, 2, H, W]` (the cached frames, no augmentation, batches of `batch_size` in order) to
/// per-step features `[T, B, D]`, run in evaluation mode by the caller; no graph is kept.
/// The linear probe, the kNN protocol and the trainer's kNN monitor all extract through this.
pub fn time_mean_features(
    forward: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    ds: Arc<Dataset>,
    batch_size: usize,
    device: &Device,
    progress: Progress<'_>,
) -> Result<SplitFeatures, Error> {
    time_mean_features_of(forward, ds, batch_size, None, device, progress)
}

/// [`time_mean_features`] of one augmented view of every sample: `augment` applied with the
/// loader's seeded draws (`seed`, `epoch`: the view's number), in dataset order.
pub fn augmented_time_mean_features(
    forward: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    ds: Arc<Dataset>,
    batch_size: usize,
    (augment, seed, epoch): (&AugmentConfig, u64, u64),
    device: &Device,
    progress: Progress<'_>,
) -> Result<SplitFeatures, Error> {
    time_mean_features_of(
        forward,
        ds,
        batch_size,
        Some((augment, seed, epoch)),
        device,
        progress,
    )
}

fn time_mean_features_of(
    forward: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    ds: Arc<Dataset>,
    batch_size: usize,
    view: Option<(&AugmentConfig, u64, u64)>,
    device: &Device,
    progress: Progress<'_>,
) -> Result<SplitFeatures, Error> {
    let n = ds.len();
    let labels = ds.labels().to_vec();
    let cfg = LoaderConfig {
        batch_size: batch_size.max(1),
        shuffle: false,
        drop_last: false,
        views: if view.is_some() {
            Views::Augmented
        } else {
            Views::Plain
        },
        seed: view.map_or(0, |v| v.1),
        epoch: view.map_or(0, |v| v.2),
        ..Default::default()
    };
    let aug = match view {
        Some((a, _, _)) => a.clone(),
        None => ds.config().augment.clone(),
    };
    let mut data = Vec::new();
    let mut d = 0;
    let mut done = 0;
    for batch in Loader::new(ds, &cfg, &aug, device) {
        let batch = batch?;
        let f = forward(&batch.x)?.detach().mean(0)?; // [B, D]
        let rows = f
            .to_dtype(candle_core::DType::F32)?
            .to_device(&Device::Cpu)?
            .to_vec2::<f32>()?;
        if done == 0 {
            d = f.dim(1)?;
            data = vec![0f32; n * d];
        }
        for (row, &i) in rows.iter().zip(&batch.indices) {
            data[i * d..(i + 1) * d].copy_from_slice(row);
        }
        done += batch.indices.len();
        progress(done, n);
    }
    Ok(SplitFeatures {
        features: Features::new(data, n, d)?,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardize_and_normalize() {
        let f = Features::new(vec![1.0, 2.0, 3.0, 2.0, 5.0, 2.0], 3, 2).unwrap();
        let (m, s) = f.column_stats();
        assert_eq!(m, vec![3.0, 2.0]);
        assert!((s[0] - (8.0f32 / 3.0).sqrt()).abs() < 1e-6);
        assert_eq!(s[1], 1.0, "constant column keeps unit scale");
        let z = f.standardized(&m, &s);
        assert_eq!(z.row(1), &[0.0, 0.0]);
        let u = Features::new(vec![3.0, 4.0, 0.0, 0.0], 2, 2)
            .unwrap()
            .l2_normalized();
        assert_eq!(u.data, vec![0.6, 0.8, 0.0, 0.0]);
        assert!(Features::new(vec![1.0], 1, 2).is_err());
        assert_eq!(f.select(&[2, 0]).data, vec![5.0, 2.0, 1.0, 2.0]);
    }
}
