//! `cargo bench -p nmoco-snn --bench lif`: multi-step LIF at T = 16, N = 2 Mi neurons (the
//! anchor's shape: tau 2, v_th 1, hard reset to 0, detach_reset, ATan(2), f32, CPU).
//!
//! Every benchmark's throughput is the bytes it must move, so criterion's GiB/s column compares
//! directly with the plain copy measured in the same run:
//! - `copy`: read T*N f32 + write T*N f32 (rayon, 2 threads like the kernels) = 8 B/element,
//!   into a reused buffer; `copy_fresh_alloc`: the same into a new allocation each time (what
//!   every op's output pays: page faults and the kernel zeroing fresh pages);
//! - `fused_fwd`: read x, write spikes = 8 B/element;
//! - `fused_fwd_bwd_direct`: forward, then the backward op on (x, dL/ds): read x, read dL/ds,
//!   write dL/dx = 12 B/element more, 20 B/element in all (the membrane is recomputed, not
//!   stored);
//! - `fused_fwd_bwd_autograd`: the same through candle's autograd with loss = sum(s * g), as
//!   the anchor does (candle adds the mul, the sum and their backward: counted at 20 B/element
//!   too, so its "GiB/s" understates the real traffic);
//! - `reference_fwd_bwd`: the plain-candle-ops twin through autograd (same 20 B/element).

use candle_core::{Device, Tensor, Var};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nmoco_snn::{NeuronConfig, lif_multistep, lif_multistep_bwd, lif_multistep_ref};
use rayon::prelude::*;

/// mimalloc keeps freed pages for reuse: candle allocates (and zero-fills) a fresh buffer for
/// every op output and gradient, and with glibc's allocator every large one is a fresh `mmap`
/// whose page faults cost more than the op (docs/benchmarks.md, "allocator"); `main` calls
/// `nmoco_alloc::configure` so that it also keeps freed memory between steps.
#[global_allocator]
static GLOBAL: nmoco_alloc::MiMalloc = nmoco_alloc::MiMalloc;

const T: usize = 16;
const N: usize = 2 * 1024 * 1024;

fn inputs() -> candle_core::Result<(Tensor, Tensor)> {
    let dev = Device::Cpu;
    let x = (Tensor::rand(0f32, 1f32, (T, N), &dev)? * 2.0)?;
    let g = Tensor::rand(0f32, 1f32, (T, N), &dev)?;
    Ok((x, g))
}

fn bench(c: &mut Criterion) {
    nmoco_alloc::configure();
    let (x, g) = inputs().expect("inputs");
    let cfg = NeuronConfig::default();
    let elems = (T * N) as u64;
    let mut group = c.benchmark_group("lif_T16_N2M");
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_secs(1));
    group.measurement_time(std::time::Duration::from_secs(6));

    let src: Vec<f32> = x.flatten_all().and_then(|t| t.to_vec1()).expect("x");
    let mut dst = vec![0f32; src.len()];
    group.throughput(Throughput::Bytes(8 * elems));
    group.bench_function("copy", |b| {
        b.iter(|| {
            dst.par_chunks_mut(1 << 16)
                .zip(src.par_chunks(1 << 16))
                .for_each(|(d, s)| d.copy_from_slice(s));
        })
    });
    drop(dst);
    // The same copy into a freshly allocated output, as every op's output is (page faults).
    group.bench_function("copy_fresh_alloc", |b| {
        b.iter(|| {
            let mut d = vec![0f32; src.len()];
            d.par_chunks_mut(1 << 16)
                .zip(src.par_chunks(1 << 16))
                .for_each(|(d, s)| d.copy_from_slice(s));
            d
        })
    });
    group.bench_function("copy_fresh_alloc_hugepages", |b| {
        b.iter(|| {
            let mut d = nmoco_snn::alloc_output(src.len());
            d.par_chunks_mut(1 << 16)
                .zip(src.par_chunks(1 << 16))
                .for_each(|(d, s)| d.copy_from_slice(s));
            d
        })
    });
    drop(src);

    group.throughput(Throughput::Bytes(8 * elems));
    group.bench_function("fused_fwd", |b| {
        b.iter(|| lif_multistep(&x, &cfg).expect("fwd"))
    });

    group.throughput(Throughput::Bytes(20 * elems));
    group.bench_function("fused_fwd_bwd_direct", |b| {
        b.iter(|| {
            let s = lif_multistep(&x, &cfg).expect("fwd");
            let gx = lif_multistep_bwd(&x, &g, &cfg).expect("bwd");
            (s, gx)
        })
    });

    let xv = Var::from_tensor(&x).expect("var");
    group.bench_function("fused_fwd_bwd_autograd", |b| {
        b.iter(|| {
            let s = lif_multistep(xv.as_tensor(), &cfg).expect("fwd");
            let loss = (s * &g).and_then(|t| t.sum_all()).expect("loss");
            let grads = loss.backward().expect("bwd");
            grads.get(xv.as_tensor()).cloned()
        })
    });

    group.bench_function("reference_fwd_bwd", |b| {
        b.iter(|| {
            let s = lif_multistep_ref(xv.as_tensor(), &cfg).expect("fwd");
            let loss = (s * &g).and_then(|t| t.sum_all()).expect("loss");
            let grads = loss.backward().expect("bwd");
            grads.get(xv.as_tensor()).cloned()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
