//! The kNN monitor: cosine similarity of normalised features, top-k neighbours from a labelled
//! memory bank, votes weighted by `exp(sim / t)` (Wu et al. 2018, as in the MoCo/InstDisc code).

/// Classify `queries` (`nq × d`, row-major, L2-normalised) against `bank` (`nb × d`, normalised)
/// with labels `bank_labels`; returns the predicted class of each query.
pub fn knn_predict(
    queries: &[f32],
    bank: &[f32],
    bank_labels: &[u32],
    dim: usize,
    num_classes: usize,
    k: usize,
    t: f64,
) -> Vec<u32> {
    let nb = bank_labels.len();
    let k = k.min(nb).max(1);
    let mut out = Vec::with_capacity(queries.len() / dim.max(1));
    let mut sims: Vec<(f32, u32)> = Vec::with_capacity(nb);
    for q in queries.chunks(dim.max(1)) {
        sims.clear();
        for (b, &l) in bank.chunks(dim.max(1)).zip(bank_labels) {
            sims.push((q.iter().zip(b).map(|(x, y)| x * y).sum(), l));
        }
        // Highest similarity first; ties broken by label for determinism.
        sims.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut votes = vec![0f64; num_classes.max(1)];
        for &(s, l) in sims.iter().take(k) {
            if let Some(v) = votes.get_mut(l as usize) {
                *v += (s as f64 / t).exp();
            }
        }
        let mut best = 0usize;
        for c in 1..votes.len() {
            if votes[c] > votes[best] {
                best = c;
            }
        }
        out.push(best as u32);
    }
    out
}

/// Fraction of `pred` equal to `labels`.
pub fn accuracy(pred: &[u32], labels: &[u32]) -> f64 {
    if pred.is_empty() {
        return 0.0;
    }
    pred.iter().zip(labels).filter(|(a, b)| a == b).count() as f64 / pred.len() as f64
}

/// L2-normalise each row of a row-major matrix in place.
pub fn normalize_rows(x: &mut [f32], dim: usize) {
    for r in x.chunks_mut(dim.max(1)) {
        let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        r.iter_mut().for_each(|v| *v /= n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_neighbours_vote_with_weights() {
        let mut bank = vec![1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9, -1.0, 0.0];
        normalize_rows(&mut bank, 2);
        let labels = [0, 0, 1, 1, 2];
        let mut q = vec![1.0, 0.05, 0.05, 1.0, -1.0, 0.1];
        normalize_rows(&mut q, 2);
        let p = knn_predict(&q, &bank, &labels, 2, 3, 2, 0.1);
        assert_eq!(p, vec![0, 1, 2]);
        assert!((accuracy(&p, &[0, 1, 1]) - 2.0 / 3.0).abs() < 1e-12);
        // With k = 5 and a low temperature the single closest neighbour still dominates.
        let p = knn_predict(&q[4..6], &bank, &labels, 2, 3, 5, 0.01);
        assert_eq!(p, vec![2]);
        // With k = 3 and a high temperature the two class-0 neighbours outvote the closest one.
        let p = knn_predict(
            &[0.0, 1.0],
            &[0.0, 1.0, 0.6, 0.8, 0.8, 0.6],
            &[1, 0, 0],
            2,
            2,
            3,
            1e3,
        );
        assert_eq!(p, vec![0]);
        let p = knn_predict(
            &[0.0, 1.0],
            &[0.0, 1.0, 0.6, 0.8, 0.8, 0.6],
            &[1, 0, 0],
            2,
            2,
            1,
            1e3,
        );
        assert_eq!(p, vec![1]);
    }
}
