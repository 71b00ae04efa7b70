//! The linear probe's classifier: multinomial logistic regression with L2 weight decay on
//! standardized features, fitted by full-batch L-BFGS, with the weight decay (and whether the
//! augmented views of the training samples join the training set) chosen by stratified, seeded
//! k-fold cross-validation on the training features.

use candle_core::{D, DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::features::Features;

/// Linear-probe settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinearConfig {
    /// Candidate L2 weight decays; the best in cross-validation is refitted on all of train.
    pub weight_decays: Vec<f64>,
    /// Folds of the stratified cross-validation that chooses among the candidates (the mean
    /// validation top-1 over folds decides); 1 = one held-out split of `val_fraction`.
    pub folds: usize,
    /// With `folds = 1`: fraction of each class's training samples held out for the choice.
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
            folds: 5,
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

/// How the weight decay (and the use of augmented views) was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// `(weight_decay, validation top-1)` for each candidate trained on the plain features
    /// (mean over folds).
    pub val_top1: Vec<(f64, f64)>,
    /// The same with the augmented views of the training part added (empty without views).
    pub val_top1_augmented: Vec<(f64, f64)>,
    pub chosen: f64,
    /// Whether the chosen classifier trains on the augmented views too.
    pub augmented: bool,
    /// Folds the choice was made on (0: no choice, too few samples or one candidate).
    pub folds: usize,
    /// Samples in the training and the validation part of the first fold.
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

/// The rows `idx` of `x`, then (with `with_views`) the same rows of every augmented view, and
/// their labels.
fn training_rows(
    x: &Features,
    views: &[Features],
    labels: &[usize],
    idx: &[usize],
    with_views: bool,
) -> (Features, Vec<usize>) {
    let mut f = x.select(idx);
    let mut l: Vec<usize> = idx.iter().map(|&i| labels[i]).collect();
    if with_views {
        let one = l.clone();
        for v in views {
            f.data.extend_from_slice(&v.select(idx).data);
            f.n += idx.len();
            l.extend_from_slice(&one);
        }
    }
    (f, l)
}

/// Choose the weight decay, and whether the augmented `views` of the training samples join
/// the training set, by stratified k-fold cross-validation (`cfg.folds`; one held-out split
/// of `cfg.val_fraction` when 1): each candidate is fitted on a fold's training part (its
/// plain rows, plus those rows of every view for the augmented candidates) and scored on the
/// fold's held-out plain rows. The best mean validation top-1 wins (ties: plain over
/// augmented, then the larger weight decay); it is then fitted on all of `x` (and the views).
/// `views[v]` row `i` is an augmented view of sample `i` of `x`.
pub fn fit_with_selection(
    x: &Features,
    views: &[Features],
    labels: &[usize],
    classes: usize,
    cfg: &LinearConfig,
) -> Result<(LinearModel, Selection), Error> {
    if cfg.weight_decays.is_empty() {
        return Err(Error::Config {
            key: "probe.linear.weight_decays",
            message: "needs at least one candidate".into(),
        });
    }
    if cfg.folds == 0 {
        return Err(Error::Config {
            key: "probe.linear.folds",
            message: "must be at least 1 (1 = one held-out split of val_fraction)".into(),
        });
    }
    if !(0.0..1.0).contains(&cfg.val_fraction) {
        return Err(Error::Config {
            key: "probe.linear.val_fraction",
            message: format!("must be in [0, 1), got {}", cfg.val_fraction),
        });
    }
    if let Some(v) = views.iter().find(|v| v.n != x.n || v.d != x.d) {
        return Err(Error::Shape {
            what: "augmented-view features",
            expected: format!("{} rows of dimension {}", x.n, x.d),
            found: format!("{} rows of dimension {}", v.n, v.d),
        });
    }
    let splits: Vec<(Vec<usize>, Vec<usize>)> = if cfg.folds == 1 {
        vec![stratified_split(labels, cfg.val_fraction, cfg.seed)]
    } else {
        let fold = nmoco_data::split::stratified_folds(labels, cfg.folds, cfg.seed);
        (0..cfg.folds)
            .map(|f| {
                let (va, tr): (Vec<usize>, Vec<usize>) = (0..x.n).partition(|&i| fold[i] == f);
                (tr, va)
            })
            .collect()
    };
    let splits: Vec<_> = splits
        .into_iter()
        .filter(|(tr, va)| !tr.is_empty() && !va.is_empty())
        .collect();
    let with_views: &[bool] = if views.is_empty() {
        &[false]
    } else {
        &[false, true]
    };
    let (mut val_top1, mut val_top1_augmented) = (Vec::new(), Vec::new());
    let one_candidate = cfg.weight_decays.len() == 1 && views.is_empty();
    let (chosen, augmented) = if one_candidate || splits.is_empty() {
        (cfg.weight_decays[0], !views.is_empty())
    } else {
        // acc[a][w]: summed validation top-1 of candidate (views a, weight decay w).
        let mut acc = vec![vec![0f64; cfg.weight_decays.len()]; with_views.len()];
        for (tr, va) in &splits {
            let xva = x.select(va);
            let lva: Vec<usize> = va.iter().map(|&i| labels[i]).collect();
            for (a, &aug) in with_views.iter().enumerate() {
                let (xtr, ltr) = training_rows(x, views, labels, tr, aug);
                for (w, &wd) in cfg.weight_decays.iter().enumerate() {
                    let m = fit(&xtr, &ltr, classes, wd, cfg)?;
                    acc[a][w] += crate::accuracy::evaluate(&m.scores(&xva)?, classes, &lva)?.top1;
                }
            }
        }
        let k = splits.len() as f64;
        let mut best = (f64::NEG_INFINITY, false, cfg.weight_decays[0]);
        for (a, &aug) in with_views.iter().enumerate() {
            for (w, &wd) in cfg.weight_decays.iter().enumerate() {
                let mean = acc[a][w] / k;
                tracing::debug!(
                    weight_decay = wd,
                    augmented = aug,
                    val_top1 = mean,
                    "probe candidate"
                );
                if aug {
                    val_top1_augmented.push((wd, mean));
                } else {
                    val_top1.push((wd, mean));
                }
                // Ties go to the simpler model: no views, then the larger weight decay.
                let better = mean > best.0
                    || (mean == best.0 && (!aug && best.1 || (aug == best.1 && wd > best.2)));
                if better {
                    best = (mean, aug, wd);
                }
            }
        }
        (best.2, best.1)
    };
    let all: Vec<usize> = (0..x.n).collect();
    let (xall, lall) = training_rows(x, views, labels, &all, augmented);
    let model = fit(&xall, &lall, classes, chosen, cfg)?;
    let (train_size, val_size) = splits.first().map_or((x.n, 0), |(t, v)| (t.len(), v.len()));
    Ok((
        model,
        Selection {
            val_top1,
            val_top1_augmented,
            chosen,
            augmented,
            folds: if one_candidate { 0 } else { splits.len() },
            train_size,
            val_size,
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
        let (m, sel) = fit_with_selection(&x, &[], &y, 4, &cfg).unwrap();
        let acc = crate::accuracy::evaluate(&m.scores(&x).unwrap(), 4, &y)
            .unwrap()
            .top1;
        assert!(acc > 0.99, "train accuracy {acc}");
        assert_eq!(sel.val_top1.len(), cfg.weight_decays.len());
        assert!(sel.val_top1_augmented.is_empty() && !sel.augmented);
        assert_eq!(sel.folds, 5);
        assert_eq!(sel.train_size + sel.val_size, 120);
        assert_eq!(sel.val_size, 24);
        // One held-out split of val_fraction with folds = 1.
        let one = LinearConfig {
            folds: 1,
            ..LinearConfig::default()
        };
        let (_, sel) = fit_with_selection(&x, &[], &y, 4, &one).unwrap();
        assert_eq!((sel.folds, sel.train_size, sel.val_size), (1, 96, 24));
    }

    #[test]
    fn augmented_views_are_chosen_on_validation_only_when_they_help() {
        // Few, noisy samples: views of the same samples with fresh noise (what augmentation
        // gives a classifier) help; views of pure noise, labelled as their sample, do not.
        let (x, y) = blobs(4, 3, 6, 1.2, 11);
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let (clean, _) = blobs(4, 3, 6, 0.0, 11);
        let helpful: Vec<Features> = (0..6)
            .map(|_| {
                let data = clean
                    .data
                    .iter()
                    .map(|v| v + 1.2 * rng.random_range(-1.0f32..1.0))
                    .collect();
                Features::new(data, x.n, x.d).unwrap()
            })
            .collect();
        let noise: Vec<Features> = (0..6)
            .map(|_| {
                let data = (0..x.n * x.d)
                    .map(|_| rng.random_range(-50.0f32..50.0))
                    .collect();
                Features::new(data, x.n, x.d).unwrap()
            })
            .collect();
        let cfg = LinearConfig::default();
        let (_, sel) = fit_with_selection(&x, &noise, &y, 3, &cfg).unwrap();
        assert!(!sel.augmented, "{sel:?}");
        assert_eq!(sel.val_top1_augmented.len(), cfg.weight_decays.len());
        let (m, sel) = fit_with_selection(&x, &helpful, &y, 3, &cfg).unwrap();
        let best = |v: &[(f64, f64)]| v.iter().map(|c| c.1).fold(0.0, f64::max);
        assert_eq!(
            sel.augmented,
            best(&sel.val_top1_augmented) > best(&sel.val_top1),
            "{sel:?}"
        );
        assert_eq!(m.d, 6);
        // Views that do not match the features are refused.
        let short = vec![Features::new(vec![0.0; 6], 1, 6).unwrap()];
        assert!(matches!(
            fit_with_selection(&x, &short, &y, 3, &cfg),
            Err(Error::Shape { .. })
        ));
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
            fit_with_selection(&x, &[], &y, 2, &cfg),
            Err(Error::Config {
                key: "probe.linear.weight_decays",
                ..
            })
        ));
        let cfg = LinearConfig {
            folds: 0,
            ..Default::default()
        };
        assert!(matches!(
            fit_with_selection(&x, &[], &y, 2, &cfg),
            Err(Error::Config {
                key: "probe.linear.folds",
                ..
            })
        ));
    }
}
