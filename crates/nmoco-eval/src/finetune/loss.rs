//! The fine-tuning losses: cross-entropy with label smoothing, and mixup with soft targets
//! (timm's batch mode).

use candle_core::{D, Tensor};

use crate::Error;

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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
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
}
