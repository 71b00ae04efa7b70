//! The fused training batch norm + IF/LIF op on the device (`bn_batch_stats` +
//! `bn_lif_multistep_stats`, kernels/bn_lif.cu) against its plain-candle twin on the same device
//! (`nmoco_conv::batch_norm_train_reference`, then `lif_multistep_ref`): batch statistics
//! (against f64 sums on the host), spikes and the gradients of `x`, `γ` and `β`, for every IF/LIF
//! variant, f32 and bf16 (the twin runs in f32 on the bf16-rounded input), on shapes with one
//! and many reduction chunks per channel, `S = 1` (token layout), odd sizes and a large channel
//! offset (the statistics must not cancel). Then a timing of the fused op against the twin's
//! batch norm chain followed by the fused neuron, at a SEW-ResNet layer's size.

use candle_core::{DType, Device, Result, Tensor, Var};
use nmoco_snn::testing::{flat, median_ms, rand_vec};
use nmoco_snn::{NeuronConfig, NeuronKind, lif_multistep, lif_multistep_ref};

use super::rel_l2;

const EPS: f64 = 1e-5;

/// Spikes, `dL/dx`, `dL/dγ`, `dL/dβ` (f32 on the host), and the batch statistics used.
struct BnRun {
    spikes: Vec<f32>,
    gx: Vec<f32>,
    ggamma: Vec<f32>,
    gbeta: Vec<f32>,
    stats: Option<(Vec<f32>, Vec<f32>)>,
}

/// One forward + backward of `loss = Σ s·g`: the fused op (`fused`) with `x` in `dtype`, or the
/// twin in f32 on `x` rounded through `dtype`.
fn bn_run(
    x: &Tensor,
    g: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    t: usize,
    cfg: &NeuronConfig,
    dtype: DType,
    fused: bool,
) -> Result<BnRun> {
    let work = if fused { dtype } else { DType::F32 };
    let xv = Var::from_tensor(&x.to_dtype(dtype)?.to_dtype(work)?)?;
    let gv = Var::from_tensor(gamma)?;
    let bv = Var::from_tensor(beta)?;
    let (s, stats) = if fused {
        let (mean, var) = nmoco_snn::bn_batch_stats(xv.as_tensor())?;
        let s = nmoco_snn::bn_lif_multistep_stats(
            xv.as_tensor(),
            t,
            gv.as_tensor(),
            bv.as_tensor(),
            &mean,
            &var,
            EPS,
            cfg,
        )?;
        (s, Some((flat(&mean)?, flat(&var)?)))
    } else {
        let (y, _, _) = nmoco_conv::batch_norm_train_reference(
            xv.as_tensor(),
            gv.as_tensor(),
            bv.as_tensor(),
            EPS,
        )?;
        let rest = y.elem_count() / t;
        (
            lif_multistep_ref(&y.reshape((t, rest))?, cfg)?.reshape(y.shape())?,
            None,
        )
    };
    let grads = (&s * g.to_dtype(s.dtype())?)?.sum_all()?.backward()?;
    let get = |v: &Var| -> Result<Vec<f32>> {
        flat(
            grads
                .get(v.as_tensor())
                .ok_or_else(|| candle_core::Error::msg("bn-lif: missing gradient"))?,
        )
    };
    Ok(BnRun {
        spikes: flat(&s)?,
        gx: get(&xv)?,
        ggamma: get(&gv)?,
        gbeta: get(&bv)?,
        stats,
    })
}

/// Mean and biased variance per channel of `x: [R, C, S]` in f64 on the host.
fn host_stats(x: &[f32], c: usize, s: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut sum, mut n) = (vec![0f64; c], vec![0f64; c]);
    for (i, &v) in x.iter().enumerate() {
        sum[(i / s) % c] += f64::from(v);
        n[(i / s) % c] += 1.0;
    }
    let mean: Vec<f64> = sum.iter().zip(&n).map(|(a, b)| a / b).collect();
    let mut sq = vec![0f64; c];
    for (i, &v) in x.iter().enumerate() {
        sq[(i / s) % c] += (f64::from(v) - mean[(i / s) % c]).powi(2);
    }
    (mean, sq.iter().zip(&n).map(|(a, b)| a / b).collect())
}

/// Runs the agreement checks, then (on a device) the timing; returns the failure count.
pub fn check(dev: &Device, on_cpu: bool, reps: usize) -> Result<usize> {
    // (t, b, c, h, w, channel offset): one chunk per channel with S = 256; odd sizes; S = 1
    // (Spikformer's token layout); a large offset; many chunks per channel (M = 131072).
    let shapes = [
        (4usize, 2usize, 8usize, 16usize, 16usize, 0f32),
        (5, 3, 7, 5, 3, 0.0),
        (4, 16, 64, 1, 1, 0.0),
        (2, 4, 5, 9, 9, 100.0),
        (16, 8, 16, 32, 32, 3.0),
    ];
    let dtypes: &[DType] = if on_cpu {
        &[DType::F32]
    } else {
        &[DType::F32, DType::BF16]
    };
    let mut fails = Vec::new();
    let (mut worst_stats, mut worst_g, mut flips, mut elems) = (0f64, 0f64, 0usize, 0usize);
    for (i, &(t, b, c, h, w, offset)) in shapes.iter().enumerate() {
        let n = t * b * c * h * w;
        let s = h * w;
        let seed = 900 + 10 * i as u64;
        let mut xs = rand_vec(n, -1.0, 3.0, seed);
        for (j, v) in xs.iter_mut().enumerate() {
            let ch = ((j / s) % c) as f32;
            *v = *v * (0.5 + 0.1 * ch) + ch * 0.3 + offset;
        }
        let cpu = Device::Cpu;
        let x = Tensor::from_vec(xs, (t * b, c, h, w), &cpu)?.to_device(dev)?;
        let g = Tensor::from_vec(rand_vec(n, -1.0, 1.0, seed + 1), (t * b, c, h, w), &cpu)?
            .to_device(dev)?;
        let gamma = Tensor::from_vec(rand_vec(c, 0.3, 2.0, seed + 2), c, &cpu)?.to_device(dev)?;
        let beta = Tensor::from_vec(rand_vec(c, -0.5, 0.8, seed + 3), c, &cpu)?.to_device(dev)?;
        // The large shape with the default LIF only (it holds most of the elements).
        let variants: Vec<NeuronConfig> = NeuronConfig::all_variants()
            .into_iter()
            .filter(|v| v.kind != NeuronKind::Plif)
            .take(if n > 1 << 20 { 1 } else { usize::MAX })
            .collect();
        for &dt in dtypes {
            let rounded = flat(&x.to_dtype(dt)?)?;
            let (hm, hv) = host_stats(&rounded, c, s);
            for cfg in &variants {
                let f = bn_run(&x, &g, &gamma, &beta, t, cfg, dt, true)?;
                let r = bn_run(&x, &g, &gamma, &beta, t, cfg, dt, false)?;
                let name = format!("bn-lif {dt:?} {:?} {:?}", (t, b, c, h, w), cfg.kind);
                if let Some((m, v)) = &f.stats {
                    let em = m
                        .iter()
                        .zip(&hm)
                        .map(|(a, e)| (f64::from(*a) - e).abs() / e.abs().max(1.0))
                        .fold(0f64, f64::max);
                    let ev = v
                        .iter()
                        .zip(&hv)
                        .map(|(a, e)| (f64::from(*a) - e).abs() / e.abs().max(1e-6))
                        .fold(0f64, f64::max);
                    worst_stats = worst_stats.max(em.max(ev));
                    if em > 1e-6 || ev > 1e-4 {
                        fails.push(format!("{name} statistics: mean {em:.2e}, var {ev:.2e}"));
                    }
                }
                let fl = f
                    .spikes
                    .iter()
                    .zip(&r.spikes)
                    .filter(|(a, b)| a != b)
                    .count();
                flips += fl;
                elems += f.spikes.len();
                if f.spikes.len() != r.spikes.len() || fl * 1000 > f.spikes.len() {
                    fails.push(format!("{name}: {fl} of {} spikes differ", f.spikes.len()));
                }
                // Spikes that flip at the threshold change their neighbours' gradients too.
                let tol = if fl == 0 && dt == DType::F32 {
                    1e-3
                } else {
                    2e-2
                };
                for (what, a, e) in [
                    ("dx", &f.gx, &r.gx),
                    ("dgamma", &f.ggamma, &r.ggamma),
                    ("dbeta", &f.gbeta, &r.gbeta),
                ] {
                    let err = rel_l2(a, e);
                    worst_g = worst_g.max(err);
                    if a.len() != e.len() || err > tol {
                        fails.push(format!("{name} {what}: rel err {err:.2e} (tol {tol:.0e})"));
                    }
                }
            }
        }
    }
    println!(
        "CHECK fused batch norm + IF/LIF (f32{}; vs BN chain + reference neuron): statistics rel err {worst_stats:.2e}, gradients rel err {worst_g:.2e}, {flips} of {elems} spikes differ, {}",
        if on_cpu { "" } else { ", bf16" },
        if fails.is_empty() { "ok" } else { "FAILED" }
    );
    for f in &fails {
        println!("  FAIL {f}");
    }
    bench(dev, reps, on_cpu)?;
    Ok(fails.len())
}

/// Fused batch norm + LIF (statistics, forward, backward) against the unfused chain the model
/// runs without it (candle's batch norm ops, then the fused neuron), at `T = 16`, `B = 8`,
/// `C = 64`, 32×32; f32 and bf16. Prints `BENCH` lines; nothing on the CPU.
fn bench(dev: &Device, reps: usize, on_cpu: bool) -> Result<()> {
    if on_cpu {
        return Ok(());
    }
    let (t, b, c, h, w) = (16usize, 8usize, 64usize, 32usize, 32usize);
    let cfg = NeuronConfig::default();
    let x0 = Tensor::rand(-1f32, 3f32, (t * b, c, h, w), dev)?;
    let g0 = Tensor::rand(-1f32, 1f32, (t * b, c, h, w), dev)?;
    let gamma = Var::from_tensor(&Tensor::ones(c, DType::F32, dev)?)?;
    let beta = Var::from_tensor(&Tensor::zeros(c, DType::F32, dev)?)?;
    for dt in [DType::F32, DType::BF16] {
        let xv = Var::from_tensor(&x0.to_dtype(dt)?)?;
        let g = g0.to_dtype(dt)?;
        let step = |fused: bool| -> Result<()> {
            let x = xv.as_tensor();
            let s = if fused {
                let (m, v) = nmoco_snn::bn_batch_stats(x)?;
                nmoco_snn::bn_lif_multistep_stats(
                    x,
                    t,
                    gamma.as_tensor(),
                    beta.as_tensor(),
                    &m,
                    &v,
                    EPS,
                    &cfg,
                )?
            } else {
                let (y, _, _) = nmoco_conv::batch_norm_train_reference(
                    &x.to_dtype(DType::F32)?,
                    gamma.as_tensor(),
                    beta.as_tensor(),
                    EPS,
                )?;
                let y = y.to_dtype(dt)?;
                lif_multistep(&y.reshape((t, y.elem_count() / t))?, &cfg)?
            };
            let grads = (s.flatten_all()? * g.flatten_all()?)?
                .sum_all()?
                .backward()?;
            grads
                .get(xv.as_tensor())
                .map(|_| ())
                .ok_or_else(|| candle_core::Error::msg("no grad"))
        };
        let fused = median_ms(dev, 2, reps, || step(true))?;
        let chain = median_ms(dev, 2, reps.min(10), || step(false))?;
        println!(
            "BENCH bn+lif fwd+bwd {dt:?} {:?}: fused {fused:.3} ms, BN op chain + fused neuron {chain:.3} ms",
            (t, b, c, h, w)
        );
    }
    Ok(())
}
