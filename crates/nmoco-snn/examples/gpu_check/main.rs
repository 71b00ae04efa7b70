//! GPU check of the fused neuron kernels (feature `cuda`; needs a CUDA device):
//!
//! ```text
//! cargo run --release --features cuda -p nmoco-snn --example gpu_check -- [--json FILE] [--n N] [--reps R] [--cpu]
//! ```
//!
//! 1. **Agreement**, for every neuron variant ([`NeuronConfig::all_variants`]) on several shapes
//!    (short, long, large magnitudes, many neurons; fixed-`T` and any-`T` kernels): spikes,
//!    `dL/dx` and PLIF's `dL/dw` of the fused CUDA op against (a) the reference twin on the GPU,
//!    (b) the fused CPU op, and (c) for f16/bf16, the fused f32 CUDA op on the same rounded input.
//!    Every input is fresh pseudo-random data (never zeros); outputs are compared element by
//!    element, so an unwritten element (uninitialised memory) fails the check.
//! 2. **Benchmark** at `T = 16`, `N = 16 Mi` (default LIF, f32 and bf16): median of `R` timed
//!    runs after warm-up, each bracketed by device synchronisation; bandwidth = the bytes the op
//!    must move / time, against a device-to-device copy measured in the same run.
//!
//! 3. **Two neurons per thread** (`vec.rs`): for every variant, f32/f16/bf16, the
//!    two-neuron kernels (`nmoco_neuron_fwd_v2` / `_bwd_v2`) against the one-neuron kernels
//!    (spikes and `dL/dx` bit for bit, PLIF's `dL/dw` to rounding) and the reference twin, on even
//!    `N`; odd `N` and misaligned buffers must fall back to one neuron per thread (checked through
//!    the launch counters). The benchmark times both instantiations in f32 and bf16.
//!
//! 4. **SEW IAND connect** (`connect.rs`): the fused op against its twin and the CPU op.
//! 5. **Fused training BN + IF/LIF** (`bn_lif.rs`): against its op-chain twin; timing.
//!
//! Then the max-pool 3×3/2 with its saved argmax (`nmoco_snn::max_pool_3x3_s2`): values and
//! gradients against its reference twin on the device, the CPU op, and (f16/bf16) the f32 op.
//!
//! Exits non-zero if any agreement check fails. Prints a table last; `--json` writes all figures.
//! `--cpu` runs the same harness with the CPU as the "device" (f32 only; a dry run of the script
//! on a machine without a GPU, used by CI's build of the examples).

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};
use nmoco_snn::cuda_variants::{VecPolicy, set_static_t, set_vec_policy};
use nmoco_snn::testing::{NeuronRun as Run, flat, median_ms, rand_vec, run_neuron};
use nmoco_snn::{NeuronConfig, NeuronKind, lif_multistep, lif_multistep_bwd, lif_multistep_ref};

mod bn_lif;
mod connect;
mod vec;

/// mimalloc keeps freed pages for reuse: candle allocates (and zero-fills) a fresh buffer for
/// every op output and gradient, and with glibc's allocator every large one is a fresh `mmap`
/// whose page faults cost more than the op (docs/benchmarks.md, "allocator"); `main` calls
/// `nmoco_alloc::configure` so that it also keeps freed memory between steps.
#[global_allocator]
static GLOBAL: nmoco_alloc::MiMalloc = nmoco_alloc::MiMalloc;

/// A test shape: dims, input range, gradient tolerance.
type Shape = (&'static [usize], f32, f32, f64);

/// The PLIF variant checked on the extra shapes.
fn plif_one() -> NeuronConfig {
    NeuronConfig {
        kind: NeuronKind::Plif,
        tau: 3.0,
        ..NeuronConfig::default()
    }
}

/// Forward and backward through the fused op or the reference twin (see [`run_neuron`]).
fn run(
    cfg: &NeuronConfig,
    x: &Tensor,
    g: &Tensor,
    dev: &Device,
    dtype: DType,
    fused: bool,
) -> Result<Run> {
    run_neuron(cfg, x, g, dev, dtype, fused, dtype)
}

/// The relative L2 error `‖a − b‖ / ‖b‖` (infinite when `a` holds a non-finite value).
fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        num += (f64::from(*x) - f64::from(*y)).powi(2);
        den += f64::from(*y).powi(2);
    }
    if a.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    (num / den.max(1e-30)).sqrt()
}

/// One comparison: spike mismatches, gradient relative error, and whether it passes.
#[derive(Default)]
struct Cmp {
    checks: usize,
    failed: Vec<String>,
    worst_gx: f64,
    worst_gw: f64,
    spike_flips: usize,
    elements: usize,
}

impl Cmp {
    fn compare(&mut self, what: &str, a: &Run, b: &Run, tol: f64) {
        self.checks += 1;
        self.elements += a.spikes.len();
        let flips = a
            .spikes
            .iter()
            .zip(&b.spikes)
            .filter(|(x, y)| x != y)
            .count();
        let bad_values = a.spikes.iter().any(|v| *v != 0.0 && *v != 1.0);
        self.spike_flips += flips;
        let e = rel_l2(&a.gx, &b.gx);
        let ew = match (a.gw, b.gw) {
            (Some(x), Some(y)) => f64::from((x - y).abs() / y.abs().max(1.0)),
            _ => 0.0,
        };
        // A spike that flips at the threshold (h - v_th within rounding of 0, e.g. from a fused
        // multiply-add) changes that neuron's later steps; allow one in 100 000 elements and
        // loosen the gradient tolerance for that comparison only.
        let frac = flips as f64 / a.spikes.len().max(1) as f64;
        let tol = if flips > 0 { tol.max(2e-2) } else { tol };
        let ok = !bad_values && frac <= 1e-5 && e <= tol && ew <= tol && e.is_finite();
        if flips == 0 {
            self.worst_gx = self.worst_gx.max(e);
            self.worst_gw = self.worst_gw.max(ew);
        }
        if !ok {
            self.failed.push(format!(
                "{what}: spike flips {flips}/{} non-binary {bad_values} gx rel err {e:.2e} gw rel err {ew:.2e} (tol {tol:.0e})",
                a.spikes.len()
            ));
        }
    }
}

struct Bench {
    name: String,
    ms: f64,
    bytes: f64,
}

/// Command-line options (see the module docs).
struct Args {
    n_bench: usize,
    reps: usize,
    json_path: Option<String>,
    on_cpu: bool,
}

fn parse_args() -> Args {
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1).cloned())
    };
    Args {
        n_bench: arg("--n")
            .and_then(|s| s.parse().ok())
            .unwrap_or(16 * 1024 * 1024),
        reps: arg("--reps").and_then(|s| s.parse().ok()).unwrap_or(20),
        json_path: arg("--json"),
        on_cpu: args.iter().any(|a| a == "--cpu"),
    }
}

fn main() -> Result<()> {
    nmoco_alloc::configure();
    let args = parse_args();
    let dev = if args.on_cpu {
        Device::Cpu
    } else {
        Device::new_cuda(0)?
    };
    // ---- 1. agreement ----
    let mut failures = agreement(&dev, args.on_cpu)?;
    failures += large_tensor(&dev)?;
    failures += vec::vectorised(&dev, args.on_cpu)?;
    failures += connect::iand(&dev, args.on_cpu)?;
    failures += max_pool(&dev)?;
    failures += bn_lif::check(&dev, args.on_cpu, args.reps)?;
    // ---- 2. benchmark ----
    let (t, n) = (16usize, args.n_bench);
    let (benches, rate) = benchmark(&dev, t, n, args.reps, args.on_cpu)?;
    report(&benches, t, n, failures, rate, args.json_path.as_deref())?;
    if failures > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Every neuron variant on several shapes: fused CUDA against the reference twin on the device,
/// the fused CPU op, the any-`T` kernel and (f16/bf16) the f32 op. Returns the failure count.
fn agreement(dev: &Device, on_cpu: bool) -> Result<usize> {
    let cpu = Device::Cpu;
    let t0 = Instant::now();
    // Every variant on three shapes (fixed-T kernels at T = 16, the any-T kernel at T = 96, large
    // magnitudes); the default LIF and one PLIF variant also on T = 1, 4, 8 and many neurons.
    let all_shapes: [Shape; 3] = [
        (&[16, 2, 1000], -1.0, 3.0, 1e-5),
        (&[96, 41], -1.0, 2.5, 1e-4),
        (&[16, 777], -40.0, 60.0, 1e-4),
    ];
    let extra_shapes: [Shape; 3] = [
        (&[8, 3, 37], -1.0, 3.0, 1e-5),
        (&[1, 513], -1.0, 3.0, 1e-5),
        (&[4, 70_001], -1.0, 3.0, 1e-5),
    ];
    let variants = NeuronConfig::all_variants();
    let mut jobs: Vec<(NeuronConfig, Shape)> = Vec::new();
    for cfg in &variants {
        for sh in all_shapes {
            jobs.push((cfg.clone(), sh));
        }
    }
    for cfg in [NeuronConfig::default(), plif_one()] {
        for sh in extra_shapes {
            jobs.push((cfg.clone(), sh));
        }
    }
    #[cfg(feature = "cuda")]
    if !on_cpu {
        let tc = Instant::now();
        let mut n = nmoco_snn::cuda_precompile(dev, &variants, &[16, 96], &[DType::F32])?;
        set_static_t(false);
        n += nmoco_snn::cuda_precompile(dev, &variants, &[16], &[DType::F32])?;
        set_static_t(true);
        n += nmoco_snn::cuda_precompile(dev, &variants, &[16], &[DType::F16, DType::BF16])?;
        println!(
            "CHECK {n} kernel modules compiled in {:.1} s",
            tc.elapsed().as_secs_f64()
        );
    }
    let mut vs_ref = Cmp::default();
    let mut vs_cpu = Cmp::default();
    let mut any_t = Cmp::default();
    let mut half = Cmp::default();
    let mut seed = 1u64;
    for (cfg, (shape, lo, hi, tol)) in &jobs {
        let (cfg, shape, lo, hi, tol) = (cfg, *shape, *lo, *hi, *tol);
        seed += 2;
        let n: usize = shape.iter().product();
        let x = Tensor::from_vec(rand_vec(n, lo, hi, seed), shape, &cpu)?;
        let g = Tensor::from_vec(rand_vec(n, -1.0, 1.0, seed + 1), shape, &cpu)?;
        let what = format!("{cfg:?} {shape:?}");
        let gf = run(cfg, &x, &g, dev, DType::F32, true)?;
        let gr = run(cfg, &x, &g, dev, DType::F32, false)?;
        let cf = run(cfg, &x, &g, &cpu, DType::F32, true)?;
        vs_ref.compare(
            &format!("cuda fused vs cuda reference, {what}"),
            &gf,
            &gr,
            tol,
        );
        vs_cpu.compare(&format!("cuda fused vs cpu fused, {what}"), &gf, &cf, tol);
        if on_cpu || shape[0] != 16 {
            continue;
        }
        set_static_t(false);
        let gd = run(cfg, &x, &g, dev, DType::F32, true);
        set_static_t(true);
        any_t.compare(&format!("any-T vs fixed-T kernel, {what}"), &gd?, &gf, tol);
        // f16/bf16 storage: the same function as f32 on the rounded input, outputs rounded.
        for dt in [DType::F16, DType::BF16] {
            let xr = x.to_dtype(dt)?.to_dtype(DType::F32)?;
            let gr32 = g.to_dtype(dt)?.to_dtype(DType::F32)?;
            let base = run_neuron(cfg, &xr, &gr32, dev, DType::F32, true, dt)?;
            let lowp = run(cfg, &xr, &gr32, dev, dt, true)?;
            half.compare(
                &format!("cuda fused {dt:?} vs f32, {what}"),
                &lowp,
                &base,
                1e-2,
            );
        }
    }
    let check_s = t0.elapsed().as_secs_f64();
    let groups = [
        ("fused CUDA vs reference twin on CUDA (f32)", &vs_ref),
        ("fused CUDA vs fused CPU (f32)", &vs_cpu),
        ("any-T kernel vs fixed-T kernel (f32, T <= 16)", &any_t),
        ("fused CUDA f16/bf16 vs f32 on the rounded input", &half),
    ];
    let mut failures = 0;
    for (name, c) in &groups {
        println!(
            "CHECK {name}: {} comparisons, {} elements, {} spike flips, worst rel err dL/dx {:.2e} dL/dw {:.2e}, {} failed",
            c.checks,
            c.elements,
            c.spike_flips,
            c.worst_gx,
            c.worst_gw,
            c.failed.len()
        );
        for f in c.failed.iter().take(10) {
            println!("  FAIL {f}");
        }
        failures += c.failed.len();
    }
    println!(
        "CHECK {} variants x {} shapes + 2 x {} more in {check_s:.1} s",
        variants.len(),
        all_shapes.len(),
        extra_shapes.len()
    );
    Ok(failures)
}

/// A large tensor, CPU vs GPU, spikes and gradients. Returns the failure count.
fn large_tensor(dev: &Device) -> Result<usize> {
    let cpu = Device::Cpu;
    let (t, n) = (16usize, 1usize << 22);
    let x = Tensor::from_vec(rand_vec(t * n, 0.0, 2.0, 99), (t, n), &cpu)?;
    let g = Tensor::from_vec(rand_vec(t * n, -1.0, 1.0, 98), (t, n), &cpu)?;
    let cfg = NeuronConfig::default();
    let gf = run(&cfg, &x, &g, dev, DType::F32, true)?;
    let cf = run(&cfg, &x, &g, &cpu, DType::F32, true)?;
    let mut big = Cmp::default();
    big.compare("cuda vs cpu at [16, 4Mi]", &gf, &cf, 1e-5);
    let rate = gf.spikes.iter().sum::<f32>() / gf.spikes.len() as f32;
    println!(
        "CHECK cuda vs cpu at [16, 4Mi] (default LIF): spike rate {rate:.4}, flips {}, rel err dL/dx {:.2e}, {}",
        big.spike_flips,
        big.worst_gx,
        if big.failed.is_empty() {
            "ok"
        } else {
            "FAILED"
        }
    );
    for f in &big.failed {
        println!("  FAIL {f}");
    }
    Ok(big.failed.len())
}

/// Max-pool 3x3/2 with the saved argmax: the fused op on the device against (a) its reference
/// twin on the device and (b) the fused CPU op, values and gradients; f32, and for f16/bf16
/// against the f32 op on the same rounded input (maxima and argmax are exact, so both must
/// agree to the gradient's rounding). Returns the failure count.
fn max_pool(dev: &Device) -> Result<usize> {
    let cpu = Device::Cpu;
    let mut pool_fail = Vec::new();
    let mut worst = 0f64;
    let shapes = [
        (4usize, 8usize, 64usize, 64usize),
        (2, 3, 33, 17),
        (1, 2, 1, 1),
    ];
    let pool_run = |x: &Tensor, g: &Tensor, fused: bool| -> Result<(Vec<f32>, Vec<f32>)> {
        let xv = Var::from_tensor(x)?;
        let y = if fused {
            nmoco_snn::max_pool_3x3_s2(xv.as_tensor())?
        } else {
            nmoco_snn::max_pool_3x3_s2_ref(xv.as_tensor())?
        };
        let grads = (&y * g.to_dtype(y.dtype())?)?.sum_all()?.backward()?;
        let dx = grads
            .get(xv.as_tensor())
            .ok_or_else(|| candle_core::Error::msg("max-pool: no gradient"))?;
        Ok((
            flat(&y.to_dtype(DType::F32)?)?,
            flat(&dx.to_dtype(DType::F32)?)?,
        ))
    };
    for (i, &(b, c, h, w)) in shapes.iter().enumerate() {
        let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
        // Spike-like input (ties everywhere) and continuous input.
        for binary in [true, false] {
            let xs: Vec<f32> = rand_vec(b * c * h * w, 0.0, 1.0, 500 + i as u64)
                .into_iter()
                .map(|u| {
                    if binary {
                        f32::from(u8::from(u < 0.3))
                    } else {
                        4.0 * u - 2.0
                    }
                })
                .collect();
            let gs = rand_vec(b * c * ho * wo, -1.0, 1.0, 600 + i as u64);
            let xc = Tensor::from_vec(xs, (b, c, h, w), &cpu)?;
            let gc = Tensor::from_vec(gs, (b, c, ho, wo), &cpu)?;
            let (cy, cg) = pool_run(&xc, &gc, true)?;
            for dt in [DType::F32, DType::F16, DType::BF16] {
                let xd = xc.to_dtype(dt)?.to_device(dev)?;
                let gd = gc.to_dtype(dt)?.to_device(dev)?;
                let (fy, fg) = pool_run(&xd, &gd, true)?;
                let (ry, rg) = pool_run(&xd, &gd, false)?;
                // f32 reference on the same rounded input.
                let x32 = xd.to_dtype(DType::F32)?;
                let g32 = gd.to_dtype(DType::F32)?;
                let (y32, g32v) = pool_run(&x32, &g32, true)?;
                let tol = if dt == DType::F32 { 1e-6 } else { 1e-2 };
                let name = format!("maxpool {dt:?} {:?} binary={binary}", (b, c, h, w));
                let mut cmp = |what: &str, a: &[f32], r: &[f32], tol: f64, exact: bool| {
                    let e = rel_l2(a, r);
                    worst = worst.max(e);
                    if a.len() != r.len() || (exact && a != r) || e > tol {
                        pool_fail.push(format!("{name} {what}: rel err {e:.2e}"));
                    }
                };
                cmp("values vs twin", &fy, &ry, 0.0, true);
                cmp("dx vs twin", &fg, &rg, tol, false);
                cmp("values vs f32", &fy, &y32, 0.0, true);
                cmp("dx vs f32", &fg, &g32v, tol, false);
                if dt == DType::F32 {
                    cmp("values vs cpu", &fy, &cy, 0.0, true);
                    cmp("dx vs cpu", &fg, &cg, 1e-6, false);
                }
            }
        }
    }
    println!(
        "CHECK maxpool 3x3/2 argmax (f32, f16, bf16; vs twin, vs cpu, vs f32): worst rel err {worst:.2e}, {}",
        if pool_fail.is_empty() { "ok" } else { "FAILED" }
    );
    for f in &pool_fail {
        println!("  FAIL {f}");
    }
    Ok(pool_fail.len())
}

/// The benchmark at `[t, n]` (default LIF): the timings and the spike rate of the output.
fn benchmark(
    dev: &Device,
    t: usize,
    n: usize,
    reps: usize,
    on_cpu: bool,
) -> Result<(Vec<Bench>, f32)> {
    let e = (t * n) as f64;
    let cfg = NeuronConfig::default();
    let mut benches: Vec<Bench> = Vec::new();
    let x = (Tensor::rand(0f32, 1f32, (t, n), dev)? * 2.0)?;
    let g = Tensor::rand(0f32, 1f32, (t, n), dev)?;
    let mut push = |name: &str, bytes_per_elem: f64, ms: f64| {
        println!("BENCH {name}: {ms:.3} ms");
        benches.push(Bench {
            name: name.to_string(),
            ms,
            bytes: bytes_per_elem * e,
        });
    };
    let fwd = |x: &Tensor| lif_multistep(x, &cfg).map(|_| ());
    let fwd_bwd = |x: &Tensor, g: &Tensor| {
        lif_multistep(x, &cfg)?;
        lif_multistep_bwd(x, g, &cfg).map(|_| ())
    };
    // Forward + backward through candle's autograd, with the loss sum(s * g).
    let autograd = |xv: &Var, step: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>| {
        let grads = (step(xv.as_tensor())? * &g)?.sum_all()?.backward()?;
        grads
            .get(xv.as_tensor())
            .map(|_| ())
            .ok_or_else(|| candle_core::Error::msg("no grad"))
    };
    // First with the driver's default pool behaviour (freed memory released at every sync),
    // then with the pool keeping it, as the trainer runs.
    let ms = median_ms(dev, 3, reps, || x.copy().map(|_| ()))?;
    push("copy_dtod_f32_pool_release", 8.0, ms);
    let ms = median_ms(dev, 3, reps, || fwd(&x))?;
    push("fused_fwd_f32_pool_release", 8.0, ms);
    #[cfg(feature = "cuda")]
    println!(
        "BENCH pool retains freed memory: {}",
        nmoco_snn::cuda_retain_pool_memory(dev)?
    );
    let ms = median_ms(dev, 3, reps, || x.copy().map(|_| ()))?;
    push("copy_dtod_f32", 8.0, ms);
    let ms = median_ms(dev, 3, reps, || x.affine(1.0, 0.0).map(|_| ()))?;
    push("copy_kernel_f32 (affine)", 8.0, ms);
    let ms = median_ms(dev, 3, reps, || fwd(&x))?;
    push("fused_fwd_f32", 8.0, ms);
    let ms = median_ms(dev, 3, reps, || fwd_bwd(&x, &g))?;
    push("fused_fwd_bwd_f32", 20.0, ms);
    let ms = median_ms(dev, 3, reps, || lif_multistep_bwd(&x, &g, &cfg).map(|_| ()))?;
    push("fused_bwd_f32", 12.0, ms);
    set_static_t(false);
    let ms = median_ms(dev, 3, reps, || fwd(&x))?;
    push("fused_fwd_f32_anyT", 8.0, ms);
    let ms = median_ms(dev, 3, reps, || fwd_bwd(&x, &g))?;
    push("fused_fwd_bwd_f32_anyT", 20.0, ms);
    set_static_t(true);
    let xv = Var::from_tensor(&x)?;
    let ms = median_ms(dev, 3, reps, || autograd(&xv, &|x| lif_multistep(x, &cfg)))?;
    push("fused_fwd_bwd_f32_autograd", 20.0, ms);
    // What candle's autograd adds around the op: the loss sum(s * g) and its backward.
    let s_fixed = lif_multistep(&x, &cfg)?;
    let ms = median_ms(dev, 3, reps, || (&s_fixed * &g)?.sum_all().map(|_| ()))?;
    push("loss_mul_sum_only_f32", 8.0, ms);
    drop(s_fixed);
    let ms = median_ms(dev, 3, reps.min(5), || {
        autograd(&xv, &|x| lif_multistep_ref(x, &cfg))
    })?;
    push("reference_fwd_bwd_f32_autograd", 20.0, ms);
    drop(xv);
    if !on_cpu {
        // Two neurons per thread (8-byte accesses) in f32 too.
        set_vec_policy(VecPolicy::Always);
        let ms = median_ms(dev, 3, reps, || fwd(&x))?;
        push("fused_fwd_f32_v2", 8.0, ms);
        let ms = median_ms(dev, 3, reps, || fwd_bwd(&x, &g))?;
        push("fused_fwd_bwd_f32_v2", 20.0, ms);
        let xb = x.to_dtype(DType::BF16)?;
        let gb = g.to_dtype(DType::BF16)?;
        let ms = median_ms(dev, 3, reps, || xb.copy().map(|_| ()))?;
        push("copy_dtod_bf16", 4.0, ms);
        let ms = median_ms(dev, 3, reps, || xb.affine(1.0, 0.0).map(|_| ()))?;
        push("copy_kernel_bf16 (affine)", 4.0, ms);
        // bf16: two neurons per thread (4-byte accesses, the default) and one (2-byte).
        let ms = median_ms(dev, 3, reps, || fwd(&xb))?;
        push("fused_fwd_bf16_v2", 4.0, ms);
        let ms = median_ms(dev, 3, reps, || fwd_bwd(&xb, &gb))?;
        push("fused_fwd_bwd_bf16_v2", 10.0, ms);
        let ms = median_ms(dev, 3, reps, || {
            lif_multistep_bwd(&xb, &gb, &cfg).map(|_| ())
        })?;
        push("fused_bwd_bf16_v2", 6.0, ms);
        set_vec_policy(VecPolicy::Never);
        let ms = median_ms(dev, 3, reps, || fwd(&xb))?;
        push("fused_fwd_bf16", 4.0, ms);
        let ms = median_ms(dev, 3, reps, || fwd_bwd(&xb, &gb))?;
        push("fused_fwd_bwd_bf16", 10.0, ms);
        let ms = median_ms(dev, 3, reps, || {
            lif_multistep_bwd(&xb, &gb, &cfg).map(|_| ())
        })?;
        push("fused_bwd_bf16", 6.0, ms);
        set_vec_policy(VecPolicy::Half);
    }
    // The SEW IAND connect forward, fused (reads a, b, writes y: 12 B/element) and the twin's
    // two ops (`affine`, `mul`: 20 B/element moved, counted as the fused op's 12).
    let spikes = lif_multistep(&x, &cfg)?;
    let ms = median_ms(dev, 3, reps, || {
        nmoco_snn::sew_iand_fused(&x, &spikes).map(|_| ())
    })?;
    push("iand_fwd_f32", 12.0, ms);
    let ms = median_ms(dev, 3, reps, || {
        nmoco_snn::sew_iand_ref(&x, &spikes).map(|_| ())
    })?;
    push("iand_fwd_f32_twin", 12.0, ms);
    drop(spikes);
    // Sanity: a reduction over the bench output, so nothing above is optimised away or unwritten.
    let s = lif_multistep(&x, &cfg)?;
    let rate = s.mean_all()?.to_scalar::<f32>()?;
    let finite = lif_multistep_bwd(&x, &g, &cfg)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?
        .is_finite();
    println!("BENCH spike rate {rate:.4}, gradients finite: {finite}");

    Ok((benches, rate))
}

/// Prints the benchmark table (bandwidth against the best f32 copy) and writes the JSON file.
fn report(
    benches: &[Bench],
    t: usize,
    n: usize,
    failures: usize,
    rate: f32,
    json_path: Option<&str>,
) -> Result<()> {
    let e = (t * n) as f64;
    let copy_bw = benches
        .iter()
        .filter(|b| {
            b.name.starts_with("copy_") && b.name.contains("f32") && !b.name.contains("release")
        })
        .map(|b| b.bytes / b.ms / 1e6)
        .fold(0f64, f64::max);
    println!(
        "\n| T = {t}, N = {n} ({:.2} GiB per f32 tensor) | ms | GB/s | % of copy |",
        e * 4.0 / (1u64 << 30) as f64
    );
    println!("| --- | --- | --- | --- |");
    let mut json = Vec::new();
    for b in benches {
        let gbs = b.bytes / b.ms / 1e6;
        println!(
            "| {} | {:.3} | {:.0} | {:.0} % |",
            b.name,
            b.ms,
            gbs,
            100.0 * gbs / copy_bw
        );
        json.push(format!(
            "{{\"name\":\"{}\",\"ms\":{:.4},\"bytes\":{},\"gb_per_s\":{:.1}}}",
            b.name, b.ms, b.bytes, gbs
        ));
    }
    println!("\ncopy bandwidth (best f32 copy): {copy_bw:.0} GB/s; agreement failures: {failures}");
    if let Some(p) = json_path {
        let body = format!(
            "{{\"t\":{t},\"n\":{n},\"copy_gb_per_s\":{copy_bw:.1},\"failures\":{failures},\"spike_rate\":{rate},\"bench\":[{}]}}\n",
            json.join(",")
        );
        std::fs::write(p, body).map_err(|e| candle_core::Error::msg(format!("{p}: {e}")))?;
    }
    Ok(())
}
