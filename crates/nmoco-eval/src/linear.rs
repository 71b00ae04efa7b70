//! The linear probe's classifier: multinomial logistic regression with L2 weight decay on
//! standardized features, fitted by full-batch L-BFGS, with the weight decay chosen on a
//! validation split carved (stratified, seeded) from the training features.

use candle_core::{D, DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::features::Features;

/// Linear-probe settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinearConfig {
    /// Candidate L2 weight decays; the best on the validation split is refitted on all of train.
    pub weight_decays: Vec<f64>,
    /// Fraction of each class's training samples held out for choosing the weight decay.
    pub val_fraction: f64,
    pub max_iter: usize,
    /// Stop when the gradient's max-norm falls below this.
    pub tol: f64,
    pub seed: u64,
}

impl Default for LinearConfig {
    fn default() -> Self {
        Self {
            weight_decays: vec![1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
            val_fraction: 0.2,
            max_iter: 300,
            tol: 1e-5,
            seed: 0,
        }
    }
}

/// A fitted linear classifier on standardized features.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearModel {
    /// `[classes, d]`, row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub classes: usize,
    pub d: usize,
    /// Standardization statistics of the training features.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub weight_decay: f64,
}

/// How the weight decay was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// `(weight_decay, validation top-1)` for each candidate.
    pub val_top1: Vec<(f64, f64)>,
    pub chosen: f64,
    pub train_size: usize,
    pub val_size: usize,
}

impl LinearModel {
    /// Scores (logits) `[n, classes]`, row-major.
    pub fn scores(&self, x: &Features) -> Result<Vec<f32>, Error> {
        if x.d != self.d {
            return Err(Error::Shape {
                what: "probe features",
                expected: format!("dimension {}", self.d),
                found: format!("dimension {}", x.d),
            });
        }
        let z = x.standardized(&self.mean, &self.std);
        let dev = Device::Cpu;
        let xt = z.to_tensor(&dev)?;
        let w = Tensor::from_slice(&self.weight, (self.classes, self.d), &dev)?;
        let b = Tensor::from_slice(&self.bias, self.classes, &dev)?;
        let logits = xt.matmul(&w.t()?)?.broadcast_add(&b)?;
        Ok(logits.flatten_all()?.to_vec1::<f32>()?)
    }
}

pub use nmoco_data::split::stratified_split;

/// Choose the weight decay on a validation split, then fit on all of `x`.
pub fn fit_with_selection(
    x: &Features,
    labels: &[usize],
    classes: usize,
    cfg: &LinearConfig,
) -> Result<(LinearModel, Selection), Error> {
    if cfg.weight_decays.is_empty() {
        return Err(Error::Config {
            key: "probe.weight_decays",
            message: "needs at least one candidate".into(),
        });
    }
    if !(0.0..1.0).contains(&cfg.val_fraction) {
        return Err(Error::Config {
            key: "probe.val_fraction",
            message: format!("must be in [0, 1), got {}", cfg.val_fraction),
        });
    }
    let (tr, va) = stratified_split(labels, cfg.val_fraction, cfg.seed);
    let mut val_top1 = Vec::new();
    let chosen = if cfg.weight_decays.len() == 1 || va.is_empty() || tr.is_empty() {
        cfg.weight_decays[0]
    } else {
        let xtr = x.select(&tr);
        let ltr: Vec<usize> = tr.iter().map(|&i| labels[i]).collect();
        let xva = x.select(&va);
        let lva: Vec<usize> = va.iter().map(|&i| labels[i]).collect();
        let mut best = (f64::NEG_INFINITY, cfg.weight_decays[0]);
        for &wd in &cfg.weight_decays {
            let m = fit(&xtr, &ltr, classes, wd, cfg)?;
            let acc = crate::accuracy::evaluate(&m.scores(&xva)?, classes, &lva)?.top1;
            tracing::debug!(weight_decay = wd, val_top1 = acc, "probe candidate");
            val_top1.push((wd, acc));
            // Ties go to the larger weight decay (the simpler model).
            if acc > best.0 || (acc == best.0 && wd > best.1) {
                best = (acc, wd);
            }
        }
        best.1
    };
    let model = fit(x, labels, classes, chosen, cfg)?;
    Ok((
        model,
        Selection {
            val_top1,
            chosen,
            train_size: tr.len(),
            val_size: va.len(),
        },
    ))
}

/// Fit the classifier with a fixed weight decay.
pub fn fit(
    x: &Features,
    labels: &[usize],
    classes: usize,
    weight_decay: f64,
    cfg: &LinearConfig,
) -> Result<LinearModel, Error> {
    if labels.len() != x.n || x.n == 0 {
        return Err(Error::Shape {
            what: "probe labels",
            expected: format!("{} (one per feature row, at least one)", x.n),
            found: format!("{}", labels.len()),
        });
    }
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
        return Err(Error::LabelOutOfRange {
            index: i,
            label: l,
            classes,
        });
    }
    let (mean, std) = x.column_stats();
    let z = x.standardized(&mean, &std);
    let dev = Device::Cpu;
    let xt = z.to_tensor(&dev)?;
    let mut onehot = vec![0f32; x.n * classes];
    for (i, &l) in labels.iter().enumerate() {
        onehot[i * classes + l] = 1.0;
    }
    let y = Tensor::from_vec(onehot, (x.n, classes), &dev)?;
    let d = x.d;
    let objective = |p: &[f64]| -> Result<(f64, Vec<f64>), Error> {
        loss_and_grad(&xt, &y, p, classes, d, weight_decay)
    };
    let p0 = vec![0f64; classes * d + classes];
    let p = lbfgs(objective, p0, cfg.max_iter, cfg.tol)?;
    Ok(LinearModel {
        weight: p[..classes * d].iter().map(|&v| v as f32).collect(),
        bias: p[classes * d..].iter().map(|&v| v as f32).collect(),
        classes,
        d,
        mean,
        std,
        weight_decay,
    })
}

/// Mean cross-entropy plus `wd/2 * |W|^2` (bias not decayed), and its gradient.
fn loss_and_grad(
    x: &Tensor,
    y: &Tensor,
    p: &[f64],
    classes: usize,
    d: usize,
    wd: f64,
) -> Result<(f64, Vec<f64>), Error> {
    let dev = x.device();
    let n = x.dim(0)? as f64;
    let wv: Vec<f32> = p[..classes * d].iter().map(|&v| v as f32).collect();
    let bv: Vec<f32> = p[classes * d..].iter().map(|&v| v as f32).collect();
    let w = Tensor::from_vec(wv, (classes, d), dev)?;
    let b = Tensor::from_vec(bv, classes, dev)?;
    let logits = x.matmul(&w.t()?)?.broadcast_add(&b)?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let ce = (logp
        .mul(y)?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?)
        / -n;
    let g = (logp.exp()? - y)?; // softmax - onehot, [n, classes]
    let gw = (g.t()?.matmul(x)? / n)?.flatten_all()?.to_vec1::<f32>()?;
    let gb = (g.sum(0)? / n)?.to_vec1::<f32>()?;
    let wsq: f64 = p[..classes * d].iter().map(|v| v * v).sum();
    let loss = ce + 0.5 * wd * wsq;
    let mut grad = Vec::with_capacity(p.len());
    for (i, &gv) in gw.iter().enumerate() {
        grad.push(gv as f64 + wd * p[i]);
    }
    grad.extend(gb.iter().map(|&v| v as f64));
    Ok((loss, grad))
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Limited-memory BFGS (memory 10) with a backtracking Armijo line search.
fn lbfgs<F>(mut f: F, mut x: Vec<f64>, max_iter: usize, tol: f64) -> Result<Vec<f64>, Error>
where
    F: FnMut(&[f64]) -> Result<(f64, Vec<f64>), Error>,
{
    const M: usize = 10;
    let (mut fx, mut g) = f(&x)?;
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    for _ in 0..max_iter {
        let gmax = g.iter().fold(0f64, |m, v| m.max(v.abs()));
        if !fx.is_finite() {
            return Err(Error::NonFinite {
                what: "linear probe loss",
            });
        }
        if gmax < tol {
            break;
        }
        // Two-loop recursion: direction = -H g.
        let mut q = g.clone();
        let mut alpha = vec![0f64; s_hist.len()];
        for i in (0..s_hist.len()).rev() {
            let rho = 1.0 / dot(&y_hist[i], &s_hist[i]);
            alpha[i] = rho * dot(&s_hist[i], &q);
            q.iter_mut()
                .zip(&y_hist[i])
                .for_each(|(qv, yv)| *qv -= alpha[i] * yv);
        }
        if let (Some(s), Some(y)) = (s_hist.last(), y_hist.last()) {
            let gamma = dot(s, y) / dot(y, y);
            q.iter_mut().for_each(|v| *v *= gamma);
        }
        for i in 0..s_hist.len() {
            let rho = 1.0 / dot(&y_hist[i], &s_hist[i]);
            let beta = rho * dot(&y_hist[i], &q);
            q.iter_mut()
                .zip(&s_hist[i])
                .for_each(|(qv, sv)| *qv += (alpha[i] - beta) * sv);
        }
        let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&dir, &g);
        if slope >= 0.0 {
            // Not a descent direction: restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            dir = g.iter().map(|v| -v).collect();
            slope = dot(&dir, &g);
        }
        let mut step = if s_hist.is_empty() {
            1.0 / gmax.max(1.0)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..40 {
            let xn: Vec<f64> = x.iter().zip(&dir).map(|(a, b)| a + step * b).collect();
            let (fn_, gn) = f(&xn)?;
            if fn_.is_finite() && fn_ <= fx + 1e-4 * step * slope {
                accepted = Some((xn, fn_, gn));
                break;
            }
            step *= 0.5;
        }
        let Some((xn, fn_, gn)) = accepted else {
            break; // No progress possible at this precision.
        };
        let s: Vec<f64> = xn.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gn.iter().zip(&g).map(|(a, b)| a - b).collect();
        if dot(&s, &y) > 1e-12 {
            if s_hist.len() == M {
                s_hist.remove(0);
                y_hist.remove(0);
            }
            s_hist.push(s);
            y_hist.push(y);
        }
        let done = (fx - fn_).abs() <= 1e-12 * fx.abs().max(1.0);
        x = xn;
        fx = fn_;
        g = gn;
        if done {
            break;
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn blobs(
        n_per: usize,
        classes: usize,
        d: usize,
        spread: f32,
        seed: u64,
    ) -> (Features, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let centres: Vec<Vec<f32>> = (0..classes)
            .map(|_| (0..d).map(|_| rng.random_range(-2.0..2.0)).collect())
            .collect();
        let mut data = Vec::new();
        let mut labels = Vec::new();
        for c in 0..classes {
            for _ in 0..n_per {
                for j in 0..d {
                    data.push(centres[c][j] + spread * rng.random_range(-1.0f32..1.0));
                }
                labels.push(c);
            }
        }
        (Features::new(data, n_per * classes, d).unwrap(), labels)
    }

    #[test]
    fn separable_blobs_are_learned() {
        let (x, y) = blobs(30, 4, 8, 0.3, 1);
        let cfg = LinearConfig::default();
        let (m, sel) = fit_with_selection(&x, &y, 4, &cfg).unwrap();
        let acc = crate::accuracy::evaluate(&m.scores(&x).unwrap(), 4, &y)
            .unwrap()
            .top1;
        assert!(acc > 0.99, "train accuracy {acc}");
        assert_eq!(sel.val_top1.len(), cfg.weight_decays.len());
        assert_eq!(sel.train_size + sel.val_size, 120);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (x, y) = blobs(5, 3, 4, 1.0, 2);
        let (m, s) = x.column_stats();
        let z = x.standardized(&m, &s);
        let dev = Device::Cpu;
        let xt = z.to_tensor(&dev).unwrap();
        let mut oh = vec![0f32; 15 * 3];
        for (i, &l) in y.iter().enumerate() {
            oh[i * 3 + l] = 1.0;
        }
        let yt = Tensor::from_vec(oh, (15, 3), &dev).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let p: Vec<f64> = (0..15).map(|_| rng.random_range(-0.5..0.5)).collect();
        let (_, g) = loss_and_grad(&xt, &yt, &p, 3, 4, 0.1).unwrap();
        for i in [0, 5, 11, 12, 14] {
            let h = 1e-3;
            let mut pp = p.clone();
            pp[i] += h;
            let mut pm = p.clone();
            pm[i] -= h;
            let fd = (loss_and_grad(&xt, &yt, &pp, 3, 4, 0.1).unwrap().0
                - loss_and_grad(&xt, &yt, &pm, 3, 4, 0.1).unwrap().0)
                / (2.0 * h);
            assert!((fd - g[i]).abs() < 2e-3, "param {i}: fd {fd} vs {}", g[i]);
        }
    }

    #[test]
    fn stronger_decay_shrinks_weights_and_split_is_stratified() {
        let (x, y) = blobs(10, 3, 5, 1.0, 4);
        let cfg = LinearConfig::default();
        let a = fit(&x, &y, 3, 1e-4, &cfg).unwrap();
        let b = fit(&x, &y, 3, 1.0, &cfg).unwrap();
        let n = |w: &[f32]| w.iter().map(|v| v * v).sum::<f32>();
        assert!(n(&b.weight) < n(&a.weight));
        let (tr, va) = stratified_split(&y, 0.2, 7);
        assert_eq!(va.len(), 6);
        for c in 0..3 {
            assert_eq!(va.iter().filter(|&&i| y[i] == c).count(), 2);
        }
        assert_eq!(stratified_split(&y, 0.2, 7), (tr, va));
    }

    #[test]
    fn errors_name_the_problem() {
        let (x, y) = blobs(3, 2, 2, 0.1, 5);
        assert!(matches!(
            fit(&x, &y[..3], 2, 0.0, &LinearConfig::default()),
            Err(Error::Shape { .. })
        ));
        assert!(matches!(
            fit(&x, &y, 1, 0.0, &LinearConfig::default()),
            Err(Error::LabelOutOfRange { .. })
        ));
        let cfg = LinearConfig {
            weight_decays: vec![],
            ..Default::default()
        };
        assert!(matches!(
            fit_with_selection(&x, &y, 2, &cfg),
            Err(Error::Config {
                key: "probe.weight_decays",
                ..
            })
        ));
    }
}
