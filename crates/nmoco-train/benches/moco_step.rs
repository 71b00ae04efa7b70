//! One NeuroMoCo training step at the shape of the anchor `moco_step.py` (issue 7):
//! the `sewnet.py` encoder (`BackboneConfig::sew_anchor()`, 64 features) with a projection head
//! 64 → 64 → 128, two views of `[T=8, B=16, 2, 64, 64]` spikes (10 % dense) made inside the timed
//! step by a random horizontal flip and a random translation of ±8 px per sample (wrapping, as
//! `torch.roll`), queue K = 4096, InfoNCE at τ = 0.2 (`MOCO_LOSS=mix` for MixInfoNCE),
//! SGD lr 0.03, momentum 0.9, weight decay 1e-4, then the EMA update (m = 0.99) and the enqueue:
//! [`nmoco_train::train_step_with`] with the read-backs the trainer makes on the CPU between log
//! steps (the loss, checked before the update; no gradient norm). The key encoder's forward
//! builds no autograd graph.
//!
//! `cargo bench -p nmoco-train --bench moco_step` prints one JSON line. Knobs: `MOCO_REPS`
//! (default 5), `MOCO_WARMUP` (1), `MOCO_LOSS` (`infonce` | `mix`).
//!
//! Differences from the anchor, stated: our projection head has a batch norm after its first
//! layer (MoCo v2 as configured by `nmoco-models::ProjectionHead`; ~0.1 % of the FLOPs), and the
//! per-step projections are averaged over T inside the loss rather than the features before
//! the head (same cost order).

use std::time::Instant;

use candle_core::{Device, Result, Tensor};
use nmoco_alloc::bench::{env_usize, peak_rss_mb};
use nmoco_models::BackboneConfig;
use nmoco_train::{
    EncoderPair, LossKind, LossParams, MocoEncoder, OptimKind, OptimParams, Optimizer, Queue,
    StepConfig, StepSync, train_step_with,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// mimalloc, as the `nmoco` binary uses (see docs/benchmarks.md, "allocator").
#[global_allocator]
static GLOBAL: nmoco_alloc::MiMalloc = nmoco_alloc::MiMalloc;

const T: usize = 8;
const B: usize = 16;
const HW: usize = 64;
const DIM: usize = 128;
const K: usize = 4096;

/// A view of `x` (`[T, B, 2, H, W]`): per sample a random h-flip and a wrapping shift of ±8 px.
fn augment(x: &[f32], rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    let plane = HW * HW;
    for b in 0..B {
        let flip = rng.random_bool(0.5);
        let dy = rng.random_range(-8i64..=8);
        let dx = rng.random_range(-8i64..=8);
        for t in 0..T {
            for c in 0..2 {
                let base = ((t * B + b) * 2 + c) * plane;
                let (src, dst) = (&x[base..base + plane], &mut out[base..base + plane]);
                for y in 0..HW {
                    let yd = (y as i64 + dy).rem_euclid(HW as i64) as usize;
                    for xx in 0..HW {
                        let xs = if flip { HW - 1 - xx } else { xx };
                        let xd = (xx as i64 + dx).rem_euclid(HW as i64) as usize;
                        dst[yd * HW + xd] = src[y * HW + xs];
                    }
                }
            }
        }
    }
    out
}

fn err(e: nmoco_train::Error) -> candle_core::Error {
    candle_core::Error::msg(e.to_string())
}

fn main() -> Result<()> {
    nmoco_alloc::configure();
    let dev = Device::Cpu;
    let reps = env_usize("MOCO_REPS", 5).max(1);
    let warmup = env_usize("MOCO_WARMUP", 1);
    let kind = match std::env::var("MOCO_LOSS").as_deref() {
        Ok("mix") => LossKind::Mix,
        _ => LossKind::InfoNce,
    };
    let cfg = BackboneConfig::sew_anchor();
    let pair = EncoderPair::new(&dev, 0, |vb| MocoEncoder::new(&cfg, 64, DIM, vb)).map_err(err)?;
    let trainable = pair.trainable();
    let n_params: usize = trainable.iter().map(|(_, v)| v.elem_count()).sum();
    let mut opt = Optimizer::new(
        trainable,
        OptimParams {
            kind: OptimKind::Sgd,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: false,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
    );
    let mut queue = Queue::random(K, DIM, 0);
    let step_cfg = StepConfig {
        loss: LossParams {
            kind,
            lambda: 0.5,
            tau: 0.2,
        },
        symmetric: false,
        grad_clip: None,
        // Whole-batch key BN: the figures in docs/benchmarks.md were measured so.
        shuffle_bn: None,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let x: Vec<f32> = (0..T * B * 2 * HW * HW)
        .map(|_| if rng.random::<f32>() > 0.9 { 1.0 } else { 0.0 })
        .collect();
    let shape = (T, B, 2, HW, HW);
    let mut times = Vec::new();
    let mut loss = f32::NAN;
    for i in 0..warmup + reps {
        let t0 = Instant::now();
        let xq = Tensor::from_vec(augment(&x, &mut rng), shape, &dev)?;
        let xk = Tensor::from_vec(augment(&x, &mut rng), shape, &dev)?;
        let sync = StepSync {
            read_loss: true,
            grad_norm: false,
        };
        let out = train_step_with(
            &pair, &mut opt, &mut queue, &xq, &xk, 0.03, 0.99, &step_cfg, sync,
        )
        .map_err(err)?;
        loss = out.loss_value.unwrap_or(f32::NAN);
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let all: Vec<f64> = times.iter().map(|v| (v * 1e3).round() / 1e3).collect();
    times.sort_by(f64::total_cmp);
    let step_s = times[times.len() / 2];
    println!(
        "{{\"bench\":\"moco_step\",\"impl\":\"nmoco candle cpu\",\"loss_kind\":\"{kind:?}\",\"input\":[{T},{B},2,{HW},{HW}],\"k\":{K},\"params\":{n_params},\"step_s\":{:.3},\"samples_per_s\":{:.3},\"step_all_s\":{all:?},\"loss\":{loss:.4},\"peak_rss_mb\":{:.0},\"reps\":{reps},\"warmup\":{warmup}}}",
        step_s,
        B as f64 / step_s,
        peak_rss_mb()
    );
    Ok(())
}
