//! InfoNCE and MixInfoNCE over time-resolved embeddings.
//!
//! The MixInfoNCE formula is **our reconstruction** (see `docs/training.md` and the project's
//! method notes): the paper names the loss and says it fuses mean-based contrastive cues across
//! time, but publishes no formula.
//!
//! With `ℓ(u, v; Q) = −log(exp(u·v/τ) / (exp(u·v/τ) + Σ_n exp(u·n/τ)))`, averaged over the batch:
//! - `infonce`: `ℓ(q̄, k̄; Q)`
//! - `mix`: `λ·ℓ(q̄, k̄; Q) + (1−λ)·(1/T)·Σ_t ℓ(q_t, k_t; Q)`
//! - `mix_mean_key`: `λ·ℓ(q̄, k̄; Q) + (1−λ)·(1/T)·Σ_t ℓ(q_t, k̄; Q)`
//!
//! where `q_t`, `k_t` are the L2-normalised per-step embeddings and `q̄`, `k̄` the normalised
//! means of the normalised per-step embeddings.

use candle_core::{D, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which contrastive loss to use (config `moco.loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Plain InfoNCE on the time-mean embeddings.
    #[serde(rename = "infonce")]
    InfoNce,
    /// MixInfoNCE (our reconstruction): mean term plus per-step terms against per-step keys.
    #[default]
    Mix,
    /// Alternative reading: per-step queries against the time-mean key.
    MixMeanKey,
}

/// Parameters of the loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossParams {
    pub kind: LossKind,
    /// Weight of the time-mean term, in [0, 1].
    pub lambda: f64,
    /// Temperature τ > 0.
    pub tau: f64,
}

/// The loss value and the normalised time-mean keys (to enqueue).
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// Scalar loss (with gradient towards `q`).
    pub loss: Tensor,
    /// Normalised time-mean keys `k̄`, `[B, C]`, detached.
    pub key_mean: Tensor,
}

/// L2-normalise along the last dimension (with a small floor on the norm).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let n = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&n)?)
}

/// `ℓ(u, v; Q)` averaged over rows: `u`, `v` are `[N, C]`, `queue` is `[K, C]`.
pub fn info_nce(u: &Tensor, v: &Tensor, queue: &Tensor, tau: f64) -> Result<Tensor> {
    let pos = (u * v)?.sum_keepdim(D::Minus1)?; // [N, 1]
    let neg = u.matmul(&queue.t()?)?; // [N, K]
    let logits = (Tensor::cat(&[&pos, &neg], 1)? / tau)?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let pos_shifted = shifted.narrow(1, 0, 1)?;
    Ok((lse - pos_shifted)?.mean_all()?)
}

/// The NeuroMoCo loss for query embeddings `q` and key embeddings `k`, both `[T, B, C]`
/// (raw projection-head outputs; they are normalised here), against the `queue` `[K, C]` of
/// normalised keys. `k` is detached: no gradient flows into the key side.
pub fn moco_loss(q: &Tensor, k: &Tensor, queue: &Tensor, p: &LossParams) -> Result<LossOutput> {
    let (t, b, c) = match q.dims() {
        [t, b, c] => (*t, *b, *c),
        d => {
            return Err(Error::Shape {
                what: "query embeddings",
                expected: "[T, B, C]".into(),
                got: d.to_vec(),
            });
        }
    };
    if k.dims() != q.dims() {
        return Err(Error::Shape {
            what: "key embeddings",
            expected: format!("{:?} (as the queries)", q.dims()),
            got: k.dims().to_vec(),
        });
    }
    if queue.rank() != 2 || queue.dim(1)? != c {
        return Err(Error::Shape {
            what: "queue",
            expected: format!("[K, {c}]"),
            got: queue.dims().to_vec(),
        });
    }
    let k = k.detach();
    let q_t = l2_normalize(q)?;
    let k_t = l2_normalize(&k)?;
    let q_bar = l2_normalize(&q_t.mean(0)?)?;
    let k_bar = l2_normalize(&k_t.mean(0)?)?.detach();
    let mean_term = info_nce(&q_bar, &k_bar, queue, p.tau)?;
    let loss = match p.kind {
        LossKind::InfoNce => mean_term,
        LossKind::Mix | LossKind::MixMeanKey => {
            let qs = q_t.reshape((t * b, c))?;
            let ks = match p.kind {
                LossKind::Mix => k_t.reshape((t * b, c))?,
                _ => k_bar.unsqueeze(0)?.expand((t, b, c))?.reshape((t * b, c))?,
            };
            let step_term = info_nce(&qs, &ks, queue, p.tau)?;
            ((mean_term * p.lambda)? + (step_term * (1.0 - p.lambda))?)?
        }
    };
    Ok(LossOutput {
        loss,
        key_mean: k_bar,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn rand_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn norm(v: &[f64]) -> Vec<f64> {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        v.iter().map(|x| x / n).collect()
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn ell(u: &[f64], v: &[f64], queue: &[Vec<f64>], tau: f64) -> f64 {
        let pos = (dot(u, v) / tau).exp();
        let neg: f64 = queue.iter().map(|n| (dot(u, n) / tau).exp()).sum();
        -(pos / (pos + neg)).ln()
    }

    /// Direct scalar evaluation of the formulas in the module docs.
    fn scalar_loss(
        q: &[f32],
        k: &[f32],
        queue: &[f32],
        dims: (usize, usize, usize, usize),
        p: &LossParams,
    ) -> f64 {
        let (t, b, c, kk) = dims;
        let at = |x: &[f32], ti: usize, bi: usize| -> Vec<f64> {
            norm(
                &(0..c)
                    .map(|ci| x[(ti * b + bi) * c + ci] as f64)
                    .collect::<Vec<_>>(),
            )
        };
        let qn: Vec<Vec<f64>> = (0..kk)
            .map(|i| (0..c).map(|ci| queue[i * c + ci] as f64).collect())
            .collect();
        let mut mean_term = 0.0;
        let mut step_term = 0.0;
        for bi in 0..b {
            let mut qbar = vec![0.0; c];
            let mut kbar = vec![0.0; c];
            for ti in 0..t {
                let (qt, kt) = (at(q, ti, bi), at(k, ti, bi));
                for ci in 0..c {
                    qbar[ci] += qt[ci] / t as f64;
                    kbar[ci] += kt[ci] / t as f64;
                }
            }
            let (qbar, kbar) = (norm(&qbar), norm(&kbar));
            mean_term += ell(&qbar, &kbar, &qn, p.tau) / b as f64;
            for ti in 0..t {
                let qt = at(q, ti, bi);
                let key = match p.kind {
                    LossKind::MixMeanKey => kbar.clone(),
                    _ => at(k, ti, bi),
                };
                step_term += ell(&qt, &key, &qn, p.tau) / (b * t) as f64;
            }
        }
        match p.kind {
            LossKind::InfoNce => mean_term,
            _ => p.lambda * mean_term + (1.0 - p.lambda) * step_term,
        }
    }

    fn setup(seed: u64, t: usize, b: usize, c: usize, kk: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let q = rand_vec(&mut rng, t * b * c);
        let k = rand_vec(&mut rng, t * b * c);
        let mut queue = rand_vec(&mut rng, kk * c);
        for row in queue.chunks_mut(c) {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= n);
        }
        (q, k, queue)
    }

    #[test]
    fn matches_a_direct_scalar_computation_for_every_kind() {
        let dev = Device::Cpu;
        let (t, b, c, kk) = (3, 4, 5, 8);
        for (seed, kind, lambda, tau) in [
            (1, LossKind::InfoNce, 0.5, 0.2),
            (2, LossKind::Mix, 0.5, 0.2),
            (3, LossKind::Mix, 0.3, 0.07),
            (4, LossKind::MixMeanKey, 0.5, 0.2),
            (5, LossKind::MixMeanKey, 0.0, 0.5),
        ] {
            let (q, k, queue) = setup(seed, t, b, c, kk);
            let p = LossParams { kind, lambda, tau };
            let qt = Tensor::from_vec(q.clone(), (t, b, c), &dev).unwrap();
            let kt = Tensor::from_vec(k.clone(), (t, b, c), &dev).unwrap();
            let qu = Tensor::from_vec(queue.clone(), (kk, c), &dev).unwrap();
            let got = moco_loss(&qt, &kt, &qu, &p)
                .unwrap()
                .loss
                .to_scalar::<f32>()
                .unwrap() as f64;
            let want = scalar_loss(&q, &k, &queue, (t, b, c, kk), &p);
            assert!(
                (got - want).abs() < 1e-4 * want.abs().max(1.0),
                "{kind:?} λ={lambda}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn lambda_one_equals_plain_infonce() {
        let dev = Device::Cpu;
        let (q, k, queue) = setup(9, 4, 3, 6, 6);
        let qt = Tensor::from_vec(q, (4, 3, 6), &dev).unwrap();
        let kt = Tensor::from_vec(k, (4, 3, 6), &dev).unwrap();
        let qu = Tensor::from_vec(queue, (6, 6), &dev).unwrap();
        let base = moco_loss(
            &qt,
            &kt,
            &qu,
            &LossParams {
                kind: LossKind::InfoNce,
                lambda: 0.5,
                tau: 0.2,
            },
        )
        .unwrap()
        .loss
        .to_scalar::<f32>()
        .unwrap();
        for kind in [LossKind::Mix, LossKind::MixMeanKey] {
            let l = moco_loss(
                &qt,
                &kt,
                &qu,
                &LossParams {
                    kind,
                    lambda: 1.0,
                    tau: 0.2,
                },
            )
            .unwrap()
            .loss
            .to_scalar::<f32>()
            .unwrap();
            assert!((l - base).abs() < 1e-6, "{kind:?}: {l} vs {base}");
        }
        // And λ < 1 really differs, so the comparison above is not vacuous.
        let l = moco_loss(
            &qt,
            &kt,
            &qu,
            &LossParams {
                kind: LossKind::Mix,
                lambda: 0.5,
                tau: 0.2,
            },
        )
        .unwrap()
        .loss
        .to_scalar::<f32>()
        .unwrap();
        assert!((l - base).abs() > 1e-4);
    }

    #[test]
    fn gradient_reaches_queries_only() {
        let dev = Device::Cpu;
        let (q, k, queue) = setup(11, 2, 3, 4, 6);
        let qv = Var::from_tensor(&Tensor::from_vec(q, (2, 3, 4), &dev).unwrap()).unwrap();
        let kv = Var::from_tensor(&Tensor::from_vec(k, (2, 3, 4), &dev).unwrap()).unwrap();
        let qu = Var::from_tensor(&Tensor::from_vec(queue, (6, 4), &dev).unwrap()).unwrap();
        let out = moco_loss(
            qv.as_tensor(),
            kv.as_tensor(),
            qu.as_tensor(),
            &LossParams {
                kind: LossKind::Mix,
                lambda: 0.5,
                tau: 0.2,
            },
        )
        .unwrap();
        let grads = out.loss.backward().unwrap();
        let gq = grads.get(qv.as_tensor()).expect("query gradient");
        assert!(
            gq.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
        assert!(
            grads.get(kv.as_tensor()).is_none(),
            "keys must get no gradient"
        );
        // The queue is passed as a plain tensor in training; even as a Var the loss only
        // depends on it through the logits, so its gradient is allowed here but keys' is not.
        let _ = qu;
    }

    #[test]
    fn rejects_mismatched_shapes() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((2, 3, 4), candle_core::DType::F32, &dev).unwrap();
        let k = Tensor::zeros((2, 3, 5), candle_core::DType::F32, &dev).unwrap();
        let qu = Tensor::zeros((6, 4), candle_core::DType::F32, &dev).unwrap();
        let p = LossParams {
            kind: LossKind::Mix,
            lambda: 0.5,
            tau: 0.2,
        };
        assert!(matches!(
            moco_loss(&q, &k, &qu, &p),
            Err(Error::Shape {
                what: "key embeddings",
                ..
            })
        ));
        let k = Tensor::zeros((2, 3, 4), candle_core::DType::F32, &dev).unwrap();
        let qu = Tensor::zeros((6, 5), candle_core::DType::F32, &dev).unwrap();
        assert!(matches!(
            moco_loss(&q, &k, &qu, &p),
            Err(Error::Shape { what: "queue", .. })
        ));
    }
}
