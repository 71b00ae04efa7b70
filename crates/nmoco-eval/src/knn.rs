//! Weighted k-nearest-neighbour classification on cosine similarity (InstDisc-style votes:
//! each of the k nearest training samples adds `exp(sim / t)` to its class).

use candle_core::Device;

use crate::Error;
use crate::features::Features;

/// kNN classifier settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnnConfig {
    pub k: usize,
    /// Vote temperature.
    pub t: f32,
}

impl Default for KnnConfig {
    fn default() -> Self {
        Self { k: 20, t: 0.07 }
    }
}

/// Class scores `[queries.n, classes]` (row-major) for each query: the sum of
/// `exp(cos(query, neighbour) / t)` over the k most similar bank rows of each class.
pub fn knn_scores(
    bank: &Features,
    bank_labels: &[usize],
    queries: &Features,
    classes: usize,
    cfg: &KnnConfig,
) -> Result<Vec<f32>, Error> {
    if bank.d != queries.d {
        return Err(Error::Shape {
            what: "knn query features",
            expected: format!("dimension {}", bank.d),
            found: format!("dimension {}", queries.d),
        });
    }
    if bank_labels.len() != bank.n {
        return Err(Error::Shape {
            what: "knn bank labels",
            expected: format!("{}", bank.n),
            found: format!("{}", bank_labels.len()),
        });
    }
    if cfg.k == 0 || cfg.t.is_nan() || cfg.t <= 0.0 {
        return Err(Error::Config {
            key: "knn",
            message: format!("k must be >= 1 and t > 0, got k = {}, t = {}", cfg.k, cfg.t),
        });
    }
    let dev = Device::Cpu;
    let bank_t = bank.l2_normalized().to_tensor(&dev)?;
    let k = cfg.k.min(bank.n);
    let mut out = vec![0f32; queries.n * classes];
    const CHUNK: usize = 512;
    let qn = queries.l2_normalized();
    for start in (0..queries.n).step_by(CHUNK) {
        let end = (start + CHUNK).min(queries.n);
        let idx: Vec<usize> = (start..end).collect();
        let q = qn.select(&idx).to_tensor(&dev)?;
        let sims = q.matmul(&bank_t.t()?)?.to_vec2::<f32>()?;
        for (r, row) in sims.iter().enumerate() {
            let nearest = crate::accuracy::top_k(row, k);
            let scores = &mut out[(start + r) * classes..(start + r + 1) * classes];
            for j in nearest {
                let label = bank_labels[j];
                if label >= classes {
                    return Err(Error::LabelOutOfRange {
                        index: j,
                        label,
                        classes,
                    });
                }
                scores[label] += (row[j] / cfg.t).exp();
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_neighbours_vote_by_similarity() {
        // Bank: two clusters along x (class 0) and y (class 1).
        let bank = Features::new(vec![1.0, 0.1, 1.0, -0.1, 0.1, 1.0, -0.1, 1.0], 4, 2).unwrap();
        let labels = [0, 0, 1, 1];
        let q = Features::new(vec![2.0, 0.0, 0.0, 3.0, 1.0, 0.9], 3, 2).unwrap();
        let cfg = KnnConfig { k: 2, t: 0.1 };
        let s = knn_scores(&bank, &labels, &q, 2, &cfg).unwrap();
        assert!(s[0] > 0.0 && s[1] == 0.0);
        assert!(s[3] > 0.0 && s[2] == 0.0);
        // Third query is slightly closer to class 0 (x component larger).
        assert!(s[4] > s[5]);
        // Hand check: cos([2,0],[1,0.1]) = 1/sqrt(1.01); both neighbours have it.
        let c = 1.0f32 / 1.01f32.sqrt();
        assert!((s[0] - 2.0 * (c / 0.1).exp()).abs() / s[0] < 1e-5);
    }

    /// The predicted class (highest score, ties to the lower class) of each query.
    fn predict(
        bank: &[f32],
        labels: &[usize],
        q: &[f32],
        classes: usize,
        k: usize,
        t: f32,
    ) -> Vec<usize> {
        let bank = Features::new(bank.to_vec(), labels.len(), 2).unwrap();
        let q = Features::new(q.to_vec(), q.len() / 2, 2).unwrap();
        let s = knn_scores(&bank, labels, &q, classes, &KnnConfig { k, t }).unwrap();
        s.chunks(classes)
            .map(|row| crate::accuracy::top_k(row, 1)[0])
            .collect()
    }

    #[test]
    fn nearest_neighbours_vote_with_weights() {
        let bank = [1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9, -1.0, 0.0];
        let labels = [0, 0, 1, 1, 2];
        let q = [1.0, 0.05, 0.05, 1.0, -1.0, 0.1];
        let p = predict(&bank, &labels, &q, 3, 2, 0.1);
        assert_eq!(p, vec![0, 1, 2]);
        let scores = {
            let b = Features::new(bank.to_vec(), 5, 2).unwrap();
            let qf = Features::new(q.to_vec(), 3, 2).unwrap();
            knn_scores(&b, &labels, &qf, 3, &KnnConfig { k: 2, t: 0.1 }).unwrap()
        };
        let m = crate::accuracy::evaluate(&scores, 3, &[0, 1, 1]).unwrap();
        assert!((m.top1 - 2.0 / 3.0).abs() < 1e-12);
        // With k = 5 and a low temperature the single closest neighbour still dominates.
        assert_eq!(predict(&bank, &labels, &q[4..6], 3, 5, 0.01), vec![2]);
        // With k = 3 and a high temperature the two class-0 neighbours outvote the closest one.
        let bank = [0.0, 1.0, 0.6, 0.8, 0.8, 0.6];
        assert_eq!(predict(&bank, &[1, 0, 0], &[0.0, 1.0], 2, 3, 1e3), vec![0]);
        assert_eq!(predict(&bank, &[1, 0, 0], &[0.0, 1.0], 2, 1, 1e3), vec![1]);
    }

    #[test]
    fn rejects_bad_inputs() {
        let bank = Features::new(vec![1.0, 0.0], 1, 2).unwrap();
        let q = Features::new(vec![1.0, 0.0, 0.0], 1, 3).unwrap();
        assert!(knn_scores(&bank, &[0], &q, 1, &KnnConfig::default()).is_err());
        let q = Features::new(vec![1.0, 0.0], 1, 2).unwrap();
        let bad = KnnConfig { k: 0, t: 0.1 };
        assert!(matches!(
            knn_scores(&bank, &[0], &q, 1, &bad),
            Err(Error::Config { .. })
        ));
    }
}
