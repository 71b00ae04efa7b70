//! conv2d 3×3 32→32 pad 1 at [128, 32, 64, 64] (the anchor shape of
//! /work/shared/anchors/conv_bench.py) and batch norm on the same tensor:
//! nmoco-conv against candle's own ops.
//!
//! `cargo bench -p nmoco-conv --bench conv` runs everything; the candle
//! comparisons are slow (seconds per iteration), filter them out with
//! `-- nmoco` if only our figures are wanted.

use std::hint::black_box;
use std::time::Duration;

use candle_core::{DType, Device, Result, Tensor, Var};
use criterion::{Criterion, criterion_group, criterion_main};

/// mimalloc keeps freed pages for reuse: candle allocates (and zero-fills) a fresh buffer for
/// every op output and gradient, and with glibc's allocator every large one is a fresh `mmap`
/// whose page faults cost more than the op (docs/benchmarks.md, "allocator"); `main` calls
/// `nmoco_alloc::configure` so that it also keeps freed memory between steps.
#[global_allocator]
static GLOBAL: nmoco_alloc::MiMalloc = nmoco_alloc::MiMalloc;

const B: usize = 128;
const C: usize = 32;
const H: usize = 64;
const W: usize = 64;

struct Inputs {
    x: Var,
    k: Var,
    g: Tensor,
    gamma: Var,
    beta: Var,
}

fn inputs() -> Result<Inputs> {
    let dev = Device::Cpu;
    Ok(Inputs {
        x: Var::randn(0f32, 1.0, (B, C, H, W), &dev)?,
        k: Var::from_tensor(&(Tensor::randn(0f32, 1.0, (C, C, 3, 3), &dev)? * 0.05)?)?,
        g: Tensor::randn(0f32, 1.0, (B, C, H, W), &dev)?,
        gamma: Var::ones(C, DType::F32, &dev)?,
        beta: Var::zeros(C, DType::F32, &dev)?,
    })
}

/// Binary spikes with the given density, in [B, C, H, W].
fn spikes(density: f64) -> Result<Tensor> {
    Tensor::rand(0f32, 1.0, (B, C, H, W), &Device::Cpu)?
        .lt(density)?
        .to_dtype(DType::F32)
}

fn fwd_bwd(
    conv: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    x: &Var,
    k: &Var,
    g: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let y = conv(x.as_tensor(), k.as_tensor())?;
    let grads = (y * g)?.sum_all()?.backward()?;
    let dx = grads.get(x).cloned();
    let dk = grads.get(k).cloned();
    match (dx, dk) {
        (Some(dx), Some(dk)) => Ok((dx, dk)),
        _ => Err(candle_core::Error::Msg("missing gradient".into())),
    }
}

fn ours(x: &Tensor, k: &Tensor) -> Result<Tensor> {
    nmoco_conv::conv2d(x, k, 1, 1, 1)
}

fn theirs(x: &Tensor, k: &Tensor) -> Result<Tensor> {
    nmoco_conv::conv2d_reference(x, k, 1, 1, 1)
}

fn bench_conv(c: &mut Criterion) {
    nmoco_alloc::configure();
    let inp = inputs().expect("inputs");
    let mut grp = c.benchmark_group("conv3x3_128x32x64x64");
    grp.sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    grp.bench_function("nmoco/fwd", |b| {
        b.iter(|| black_box(ours(inp.x.as_tensor(), inp.k.as_tensor()).expect("fwd")))
    });
    grp.bench_function("nmoco/fwd_bwd", |b| {
        b.iter(|| black_box(fwd_bwd(ours, &inp.x, &inp.k, &inp.g).expect("fwd_bwd")))
    });
    // What candle's autograd adds around any conv: the loss (y·g).sum() and the
    // gradient bookkeeping (zeros + add per gradient) for a Var of the output's shape.
    grp.bench_function("autograd_overhead", |b| {
        b.iter(|| {
            let grads = (inp.x.as_tensor() * &inp.g)
                .and_then(|t| t.sum_all())
                .and_then(|t| t.backward())
                .expect("backward");
            black_box(grads.get(&inp.x).cloned())
        })
    });
    grp.bench_function("nmoco/grad_input", |b| {
        b.iter(|| {
            black_box(
                nmoco_conv::conv2d_grad_input(&inp.g, inp.k.as_tensor(), &[B, C, H, W], 1, 1, 1)
                    .expect("grad input"),
            )
        })
    });
    grp.bench_function("nmoco/grad_weight", |b| {
        b.iter(|| {
            black_box(
                nmoco_conv::conv2d_grad_weight(inp.x.as_tensor(), &inp.g, &[C, C, 3, 3], 1, 1, 1)
                    .expect("grad weight"),
            )
        })
    });
    grp.finish();

    // Sparse scatter path against dense im2col + gemm on binary spike inputs.
    let mut grp = c.benchmark_group("conv3x3_spikes_128x32x64x64");
    grp.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for density in [0.05, 0.1, 0.25] {
        let s = spikes(density).expect("spikes");
        let pct = (density * 100.0).round() as u32;
        for (path, threshold) in [("dense", 0.0f32), ("sparse", 1.0)] {
            grp.bench_function(format!("nmoco/fwd_{path}_{pct}pct"), |b| {
                nmoco_conv::set_sparse_thresholds(nmoco_conv::SparseThresholds {
                    forward: threshold,
                    weight_grad: threshold,
                });
                b.iter(|| black_box(ours(&s, inp.k.as_tensor()).expect("fwd")))
            });
            grp.bench_function(format!("nmoco/grad_weight_{path}_{pct}pct"), |b| {
                nmoco_conv::set_sparse_thresholds(nmoco_conv::SparseThresholds {
                    forward: threshold,
                    weight_grad: threshold,
                });
                b.iter(|| {
                    black_box(
                        nmoco_conv::conv2d_grad_weight(&s, &inp.g, &[C, C, 3, 3], 1, 1, 1)
                            .expect("grad weight"),
                    )
                })
            });
        }
    }
    nmoco_conv::set_sparse_thresholds(nmoco_conv::DEFAULT_SPARSE_THRESHOLDS);
    grp.finish();

    let mut grp = c.benchmark_group("conv3x3_128x32x64x64_candle");
    grp.sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    grp.bench_function("candle/fwd", |b| {
        b.iter(|| black_box(theirs(inp.x.as_tensor(), inp.k.as_tensor()).expect("fwd")))
    });
    grp.bench_function("candle/fwd_bwd", |b| {
        b.iter(|| black_box(fwd_bwd(theirs, &inp.x, &inp.k, &inp.g).expect("fwd_bwd")))
    });
    grp.finish();
}

fn bn_fwd_bwd(inp: &Inputs, fused: bool) -> Result<Tensor> {
    let (x, gamma, beta) = (
        inp.x.as_tensor(),
        inp.gamma.as_tensor(),
        inp.beta.as_tensor(),
    );
    let (y, _, _) = if fused {
        nmoco_conv::batch_norm_train(x, gamma, beta, 1e-5)?
    } else {
        nmoco_conv::batch_norm_train_reference(x, gamma, beta, 1e-5)?
    };
    let grads = (y * &inp.g)?.sum_all()?.backward()?;
    grads
        .get(&inp.x)
        .cloned()
        .ok_or_else(|| candle_core::Error::Msg("missing gradient".into()))
}

fn bench_bn(c: &mut Criterion) {
    nmoco_alloc::configure();
    let inp = inputs().expect("inputs");
    let mut grp = c.benchmark_group("bn_train_128x32x64x64");
    grp.sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6));
    grp.bench_function("nmoco/fwd", |b| {
        b.iter(|| {
            black_box(
                nmoco_conv::batch_norm_train(
                    inp.x.as_tensor(),
                    inp.gamma.as_tensor(),
                    inp.beta.as_tensor(),
                    1e-5,
                )
                .expect("bn"),
            )
        })
    });
    grp.bench_function("nmoco/fwd_bwd", |b| {
        b.iter(|| black_box(bn_fwd_bwd(&inp, true).expect("bn")))
    });
    grp.bench_function("plain/fwd_bwd", |b| {
        b.iter(|| black_box(bn_fwd_bwd(&inp, false).expect("bn")))
    });
    grp.finish();
}

criterion_group!(benches, bench_conv, bench_bn);
criterion_main!(benches);
