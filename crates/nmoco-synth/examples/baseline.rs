//! How hard is the default synthetic set for encoders that learn nothing? Simulates the default
//! dataset in memory, cuts the labelled segments, integrates each into `T × 2 × 32 × 32` count
//! frames (equal event count per frame, as the training default does) and fits a ridge
//! classifier (one-vs-all least squares) on the train users, reporting test-user accuracy for:
//!
//! - `pixels, time-resolved`: the frames themselves (a linear probe on the input);
//! - `pixels, time-summed`: the frames summed over time (what a frame-pooling encoder sees);
//! - `random ReLU features (time-resolved / time-summed)`: a random one-layer encoder.
//!
//! `cargo run --release -p nmoco-synth --example baseline [SEED]`

use nmoco_synth::{SynthConfig, simulate_recording};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

const T: usize = 8;
const S: usize = 32;

/// Equal-count frames, `log1p` of counts, L2-normalised.
fn frames(t: &[i64], x: &[u16], y: &[u16], on: &[bool], scale: usize) -> Vec<f64> {
    let n = t.len();
    let mut f = vec![0.0f64; T * 2 * S * S];
    let di = (n / T).max(1);
    for i in 0..n {
        let ti = (i / di).min(T - 1);
        let c = usize::from(on[i]);
        let (xs, ys) = (usize::from(x[i]) / scale, usize::from(y[i]) / scale);
        f[((ti * 2 + c) * S + ys.min(S - 1)) * S + xs.min(S - 1)] += 1.0;
    }
    for v in &mut f {
        *v = v.ln_1p();
    }
    normalise(f)
}

fn normalise(mut f: Vec<f64>) -> Vec<f64> {
    let norm = f.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
    for v in &mut f {
        *v /= norm;
    }
    f
}

fn time_sum(f: &[f64]) -> Vec<f64> {
    let plane = 2 * S * S;
    let mut out = vec![0.0; plane];
    for ti in 0..T {
        for j in 0..plane {
            out[j] += f[ti * plane + j];
        }
    }
    normalise(out)
}

fn random_features(xs: &[Vec<f64>], dim: usize, seed: u64) -> Vec<Vec<f64>> {
    let d_in = xs[0].len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let w: Vec<f64> = (0..dim * d_in)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    xs.par_iter()
        .map(|x| {
            let f: Vec<f64> = (0..dim)
                .map(|k| {
                    let row = &w[k * d_in..(k + 1) * d_in];
                    row.iter().zip(x).map(|(a, b)| a * b).sum::<f64>().max(0.0)
                })
                .collect();
            normalise(f)
        })
        .collect()
}

/// Solve `A x = b` for symmetric positive definite `A` (n × n, row-major) by Cholesky.
fn cholesky_solve(a: &[f64], n: usize, rhs: &mut [Vec<f64>]) {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                l[i * n + i] = (a[i * n + i] - s).max(1e-12).sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    for b in rhs.iter_mut() {
        for i in 0..n {
            let s: f64 = (0..i).map(|k| l[i * n + k] * b[k]).sum();
            b[i] = (b[i] - s) / l[i * n + i];
        }
        for i in (0..n).rev() {
            let s: f64 = (i + 1..n).map(|k| l[k * n + i] * b[k]).sum();
            b[i] = (b[i] - s) / l[i * n + i];
        }
    }
}

/// Kernel ridge regression with a linear kernel onto one-hot labels; test accuracy.
fn ridge_accuracy(
    train: &[Vec<f64>],
    ytr: &[usize],
    test: &[Vec<f64>],
    yte: &[usize],
    k: usize,
) -> f64 {
    let n = train.len();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    let mut gram = vec![0.0; n * n];
    let rows: Vec<Vec<f64>> = (0..n)
        .into_par_iter()
        .map(|i| (0..n).map(|j| dot(&train[i], &train[j])).collect())
        .collect();
    for i in 0..n {
        gram[i * n..(i + 1) * n].copy_from_slice(&rows[i]);
    }
    let lambda = 1e-2 * (0..n).map(|i| gram[i * n + i]).sum::<f64>() / n as f64;
    for i in 0..n {
        gram[i * n + i] += lambda;
    }
    let mut alpha: Vec<Vec<f64>> = (0..k)
        .map(|c| {
            ytr.iter()
                .map(|&y| if y == c { 1.0 } else { 0.0 })
                .collect()
        })
        .collect();
    cholesky_solve(&gram, n, &mut alpha);
    let correct = test
        .par_iter()
        .zip(yte)
        .filter(|(x, y)| {
            let kx: Vec<f64> = train.iter().map(|t| dot(t, x)).collect();
            let scores: Vec<f64> = alpha.iter().map(|a| dot(a, &kx)).collect();
            let best = (0..k)
                .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
                .unwrap_or(0);
            best == **y
        })
        .count();
    correct as f64 / test.len() as f64
}

fn main() -> Result<(), nmoco_synth::Error> {
    let seed = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let cfg = SynthConfig {
        seed,
        ..SynthConfig::default()
    };
    let scale = usize::from(cfg.sensor.width) / S;
    let jobs: Vec<(usize, usize)> = (1..=cfg.users)
        .flat_map(|u| (0..cfg.lightings.len()).map(move |l| (u, l)))
        .collect();
    let samples: Vec<(bool, usize, Vec<f64>)> = jobs
        .par_iter()
        .map(|&(u, l)| {
            let rec = simulate_recording(&cfg, u, l)?;
            let e = &rec.events;
            Ok(rec
                .segments
                .iter()
                .map(|s| {
                    let a = e.t.partition_point(|&v| v < s.start_us);
                    let b = e.t.partition_point(|&v| v < s.end_us);
                    let f = frames(&e.t[a..b], &e.x[a..b], &e.y[a..b], &e.on[a..b], scale);
                    (u <= cfg.train_users, s.class, f)
                })
                .collect::<Vec<_>>())
        })
        .collect::<Result<Vec<_>, nmoco_synth::Error>>()?
        .into_iter()
        .flatten()
        .collect();
    let split = |train: bool| -> (Vec<Vec<f64>>, Vec<usize>) {
        samples
            .iter()
            .filter(|s| s.0 == train)
            .map(|s| (s.2.clone(), s.1))
            .unzip()
    };
    let (xtr, ytr) = split(true);
    let (xte, yte) = split(false);
    let k = cfg.classes;
    println!(
        "{} train / {} test samples, {k} classes, chance {:.1} %",
        xtr.len(),
        xte.len(),
        100.0 / k as f64
    );
    let sum = |xs: &[Vec<f64>]| xs.iter().map(|x| time_sum(x)).collect::<Vec<_>>();
    let (str_, ste) = (sum(&xtr), sum(&xte));
    let report = |name: &str, a: f64| println!("{name:<42} {:5.1} %", 100.0 * a);
    report(
        "pixels, time-resolved (linear probe)",
        ridge_accuracy(&xtr, &ytr, &xte, &yte, k),
    );
    report(
        "pixels, time-summed",
        ridge_accuracy(&str_, &ytr, &ste, &yte, k),
    );
    let all: Vec<Vec<f64>> = xtr.iter().chain(&xte).cloned().collect();
    let rf = random_features(&all, 1024, 1);
    let (rtr, rte) = rf.split_at(xtr.len());
    report(
        "random ReLU features (1024), time-resolved",
        ridge_accuracy(rtr, &ytr, rte, &yte, k),
    );
    let alls: Vec<Vec<f64>> = str_.iter().chain(&ste).cloned().collect();
    let rfs = random_features(&alls, 1024, 1);
    let (rtr, rte) = rfs.split_at(xtr.len());
    report(
        "random ReLU features (1024), time-summed",
        ridge_accuracy(rtr, &ytr, rte, &yte, k),
    );
    Ok(())
}
