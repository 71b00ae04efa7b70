//! Wall-clock and process CPU time (user + system, all threads, from
//! `/proc/self/stat`, Linux only) of the nmoco-conv ops at the benchmark shape
//! [128, 32, 64, 64] 3×3 32→32 pad 1. CPU time is what the ops cost when the
//! shared machine is busy and wall-clock figures are inflated.
//!
//! `cargo run --profile bench -p nmoco-conv --example cpu_time -- [conv|sparse|bn]`

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};
use nmoco_alloc::bench::cpu_s;
use nmoco_conv::SparseThresholds;

/// mimalloc keeps freed pages for reuse: candle allocates (and zero-fills) a fresh buffer for
/// every op output and gradient, and with glibc's allocator every large one is a fresh `mmap`
/// whose page faults cost more than the op (docs/benchmarks.md, "allocator"); `main` calls
/// `nmoco_alloc::configure` so that it also keeps freed memory between steps.
#[global_allocator]
static GLOBAL: nmoco_alloc::MiMalloc = nmoco_alloc::MiMalloc;

fn time<R>(name: &str, iters: usize, mut f: impl FnMut() -> Result<R>) -> Result<()> {
    std::hint::black_box(f()?);
    let c0 = cpu_s();
    let t0 = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(f()?);
    }
    let wall = t0.elapsed().as_secs_f64() * 1e3 / iters as f64;
    let cpu = (cpu_s() - c0) * 1e3 / iters as f64;
    if cpu.is_finite() {
        println!("{name:44} wall {wall:8.1} ms   cpu {cpu:8.1} ms");
    } else {
        println!("{name:44} wall {wall:8.1} ms   cpu n/a");
    }
    Ok(())
}

fn main() -> Result<()> {
    nmoco_alloc::configure();
    let dev = Device::Cpu;
    let what = std::env::args().nth(1).unwrap_or_else(|| "conv".into());
    let x = Var::randn(0f32, 1.0, (128, 32, 64, 64), &dev)?;
    let k = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (32, 32, 3, 3), &dev)? * 0.05)?)?;
    let g = Tensor::randn(0f32, 1.0, (128, 32, 64, 64), &dev)?;
    let it = 3;
    match what.as_str() {
        "conv" => {
            time("nmoco fwd", it, || nmoco_conv::conv2d(&x, &k, 1, 1, 1))?;
            time("nmoco grad_input", it, || {
                nmoco_conv::conv2d_grad_input(&g, &k, &[128, 32, 64, 64], 1, 1, 1)
            })?;
            time("nmoco grad_weight", it, || {
                nmoco_conv::conv2d_grad_weight(&x, &g, &[32, 32, 3, 3], 1, 1, 1)
            })?;
            time("nmoco fwd_bwd ((y*g).sum().backward())", it, || {
                let y = nmoco_conv::conv2d(&x, &k, 1, 1, 1)?;
                (y * &g)?.sum_all()?.backward()
            })?;
            time("autograd overhead ((x*g).sum().backward())", it, || {
                (x.as_tensor() * &g)?.sum_all()?.backward()
            })?;
            time("candle fwd", 1, || {
                nmoco_conv::conv2d_reference(&x, &k, 1, 1, 1)
            })?;
            time("candle fwd_bwd", 1, || {
                let y = nmoco_conv::conv2d_reference(&x, &k, 1, 1, 1)?;
                (y * &g)?.sum_all()?.backward()
            })?;
        }
        "sparse" => {
            for d in [0.05, 0.1, 0.15, 0.25] {
                let s = Tensor::rand(0f32, 1.0, (128, 32, 64, 64), &dev)?
                    .lt(d)?
                    .to_dtype(DType::F32)?;
                for (path, th) in [("dense", 0.0f32), ("sparse", 1.0)] {
                    nmoco_conv::set_sparse_thresholds(SparseThresholds {
                        forward: th,
                        weight_grad: th,
                    });
                    time(&format!("fwd {path} density {d}"), it, || {
                        nmoco_conv::conv2d(&s, &k, 1, 1, 1)
                    })?;
                    time(&format!("grad_weight {path} density {d}"), it, || {
                        nmoco_conv::conv2d_grad_weight(&s, &g, &[32, 32, 3, 3], 1, 1, 1)
                    })?;
                }
            }
            nmoco_conv::set_sparse_thresholds(nmoco_conv::DEFAULT_SPARSE_THRESHOLDS);
        }
        "bn" => {
            let gm = Var::ones(32, DType::F32, &dev)?;
            let bt = Var::zeros(32, DType::F32, &dev)?;
            time("nmoco bn fwd", it, || {
                nmoco_conv::batch_norm_train(&x, &gm, &bt, 1e-5)
            })?;
            time("nmoco bn fwd_bwd", it, || {
                let (y, _, _) = nmoco_conv::batch_norm_train(&x, &gm, &bt, 1e-5)?;
                (y * &g)?.sum_all()?.backward()
            })?;
            time("plain-op bn fwd_bwd", 1, || {
                let (y, _, _) = nmoco_conv::batch_norm_train_reference(&x, &gm, &bt, 1e-5)?;
                (y * &g)?.sum_all()?.backward()
            })?;
        }
        other => println!("unknown mode {other:?}: use conv, sparse or bn"),
    }
    Ok(())
}
