//! The two-neurons-per-thread kernels (`nmoco_neuron_fwd_v2` / `_bwd_v2`) against the
//! one-neuron kernels and the reference twin, for every neuron variant, f32/f16/bf16, even `N`
//! (where the two-neuron kernels run) and odd or misaligned `N` (where the launcher must fall
//! back to one neuron per thread).

use candle_core::{DType, Device, Result, Tensor, Var};
use nmoco_snn::cuda_variants::{VecPolicy, neuron_launch_counts, set_vec_policy};
use nmoco_snn::testing::{NeuronRun as Run, flat, rand_vec, run_neuron};
use nmoco_snn::{NeuronConfig, NeuronKind, lif_multistep, lif_multistep_bwd, plif_multistep};

use crate::Cmp;

/// Two runs that must be identical: spikes and `dL/dx` bit for bit; PLIF's `dL/dw` (a sum
/// reduced in another order) within `gw_tol` relative. `None` when they agree.
fn identical(a: &Run, b: &Run, gw_tol: f32) -> Option<String> {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let spikes = a
        .spikes
        .iter()
        .zip(&b.spikes)
        .filter(|(x, y)| x != y)
        .count();
    let gx = bits(&a.gx)
        .iter()
        .zip(bits(&b.gx))
        .filter(|(x, y)| **x != *y)
        .count();
    let gw = match (a.gw, b.gw) {
        (Some(x), Some(y)) => (x - y).abs() / y.abs().max(1e-3),
        (None, None) => 0.0,
        _ => f32::INFINITY,
    };
    let len_ok = a.spikes.len() == b.spikes.len() && a.gx.len() == b.gx.len();
    (!len_ok || spikes > 0 || gx > 0 || gw.is_nan() || gw > gw_tol).then(|| {
        format!(
            "lengths equal {len_ok}, {spikes} spikes and {gx} dL/dx elements differ, dL/dw rel {gw:.2e}"
        )
    })
}

/// `(v2, v1)` launch counts added by `f`.
fn launches<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, [u64; 2])> {
    let [a1, a2] = neuron_launch_counts();
    let r = f()?;
    let [b1, b2] = neuron_launch_counts();
    Ok((r, [b2 - a2, b1 - a1]))
}

/// `x` as a `[T, N]`-shaped tensor on `dev` whose storage starts one element into its buffer
/// (contiguous, but its device pointer is not aligned to two elements).
fn misaligned(x: &Tensor, dev: &Device, dtype: DType) -> Result<Tensor> {
    let flat = x.flatten_all()?.to_dtype(dtype)?;
    let pad = Tensor::zeros(1, dtype, &Device::Cpu)?;
    Tensor::cat(&[&pad, &flat], 0)?
        .to_device(dev)?
        .narrow(0, 1, flat.elem_count())?
        .reshape(x.shape())
}

/// Forward and backward with `x` and `g` passed to the kernels as they are (no copy into a
/// fresh buffer, which `run_neuron`'s `Var` would make): LIF through `lif_multistep` and
/// `lif_multistep_bwd` (spikes and `dL/dx`), PLIF through autograd with only `w` tracked
/// (spikes and `dL/dw`; the backward kernel still reads `x` where it lies).
fn direct(cfg: &NeuronConfig, x: &Tensor, g: &Tensor) -> Result<Run> {
    if cfg.kind == NeuronKind::Plif {
        let w = Tensor::new(cfg.plif_init_w(), x.device())?.to_dtype(x.dtype())?;
        let w = Var::from_tensor(&w)?;
        let s = plif_multistep(x, w.as_tensor(), cfg)?;
        let grads = (&s * g)?.sum_all()?.backward()?;
        let gw = grads
            .get(w.as_tensor())
            .ok_or_else(|| candle_core::Error::msg("no gradient for w"))?;
        Ok(Run {
            spikes: flat(&s)?,
            gx: Vec::new(),
            gw: Some(gw.to_dtype(DType::F32)?.to_scalar::<f32>()?),
        })
    } else {
        Ok(Run {
            spikes: flat(&lif_multistep(x, cfg)?)?,
            gx: flat(&lif_multistep_bwd(x, g, cfg)?)?,
            gw: None,
        })
    }
}

/// The check; returns the failure count. On the CPU (`--cpu`) the comparisons run (both
/// "instantiations" are the CPU kernel) but the launch counts are not checked.
pub fn vectorised(dev: &Device, on_cpu: bool) -> Result<usize> {
    let cpu = Device::Cpu;
    // (shape [T, ...], input range): N = 2000, 42, 778 (two neurons per thread) and 777 (one).
    let shapes: [(&[usize], f32, f32); 4] = [
        (&[16, 2, 1000], -1.0, 3.0),
        (&[96, 42], -1.0, 2.5),
        (&[16, 778], -40.0, 60.0),
        (&[16, 777], -1.0, 3.0),
    ];
    let dtypes: &[DType] = if on_cpu {
        &[DType::F32]
    } else {
        &[DType::F32, DType::F16, DType::BF16]
    };
    let variants = NeuronConfig::all_variants();
    #[cfg(feature = "cuda")]
    if !on_cpu {
        let half = [DType::F16, DType::BF16];
        let n = nmoco_snn::cuda_precompile(dev, &variants, &[96], &half)?;
        println!("CHECK vectorised: {n} more kernel modules compiled");
    }
    let mut same = Vec::new();
    let mut vs_twin = Cmp::default();
    let mut wrong_kernel = Vec::new();
    let mut seed = 10_001u64;
    let before = nmoco_snn::cuda_variants::vec_policy();
    for cfg in &variants {
        for &(shape, lo, hi) in &shapes {
            seed += 2;
            let n: usize = shape.iter().product();
            let x = Tensor::from_vec(rand_vec(n, lo, hi, seed), shape, &cpu)?;
            let g = Tensor::from_vec(rand_vec(n, -1.0, 1.0, seed + 1), shape, &cpu)?;
            let even = (n / shape[0]).is_multiple_of(2);
            for &dt in dtypes {
                let what = format!("{cfg:?} {dt:?} {shape:?}");
                // The same rounded input for every run of this dtype.
                let xr = x.to_dtype(dt)?.to_dtype(DType::F32)?;
                let gr = g.to_dtype(dt)?.to_dtype(DType::F32)?;
                set_vec_policy(VecPolicy::Never);
                let (one, [v2, _]) = launches(|| run_neuron(cfg, &xr, &gr, dev, dt, true, dt))?;
                if v2 != 0 {
                    wrong_kernel.push(format!("{what}: policy Never ran {v2} two-neuron launches"));
                }
                set_vec_policy(VecPolicy::Always);
                let (two, [v2, v1]) = launches(|| run_neuron(cfg, &xr, &gr, dev, dt, true, dt))?;
                let expect_v2 = if even { 2 } else { 0 };
                if !on_cpu && (v2 != expect_v2 || v1 != 2 - expect_v2) {
                    wrong_kernel.push(format!(
                        "{what}: {v2} two-neuron and {v1} one-neuron launches, expected {expect_v2} two-neuron"
                    ));
                }
                let gw_tol = if dt == DType::F32 { 1e-5 } else { 1e-2 };
                if let Some(e) = identical(&two, &one, gw_tol) {
                    same.push(format!("two-neuron vs one-neuron kernel, {what}: {e}"));
                }
                // Against the reference twin in f32 on the same rounded input (f16/bf16 outputs
                // rounded, as the f16/bf16 vs f32 check of `agreement`).
                let twin = run_neuron(cfg, &xr, &gr, dev, DType::F32, false, dt)?;
                let tol = if dt == DType::F32 { 1e-4 } else { 1e-2 };
                vs_twin.compare(
                    &format!("two-neuron kernel vs twin, {what}"),
                    &two,
                    &twin,
                    tol,
                );
            }
        }
    }
    // Buffers that start one element in: the launcher must fall back to one neuron per thread
    // for both launches, and give what the two-neuron kernels give on aligned copies.
    for cfg in [NeuronConfig::default(), crate::plif_one()] {
        for &dt in dtypes {
            let shape = [16usize, 1000];
            let x = Tensor::from_vec(rand_vec(16_000, -1.0, 3.0, 77), &shape, &cpu)?;
            let g = Tensor::from_vec(rand_vec(16_000, -1.0, 1.0, 78), &shape, &cpu)?;
            let (xm, gm) = (misaligned(&x, dev, dt)?, misaligned(&g, dev, dt)?);
            let what = format!("{cfg:?} {dt:?} misaligned [16, 1000]");
            set_vec_policy(VecPolicy::Always);
            let (mis, [v2, v1]) = launches(|| direct(&cfg, &xm, &gm))?;
            if !on_cpu && (v2 != 0 || v1 != 2) {
                wrong_kernel.push(format!(
                    "{what}: {v2} two-neuron and {v1} one-neuron launches, expected 0 and 2"
                ));
            }
            // Fresh buffers (offset 0) holding the same values.
            let fresh = |t: &Tensor| {
                Tensor::from_vec(flat(t)?, &shape, &cpu)?
                    .to_dtype(dt)?
                    .to_device(dev)
            };
            let (xa, ga) = (fresh(&xm)?, fresh(&gm)?);
            let (aligned, [v2, _]) = launches(|| direct(&cfg, &xa, &ga))?;
            if !on_cpu && v2 != 2 {
                wrong_kernel.push(format!(
                    "{what}: aligned copy ran {v2} two-neuron launches, expected 2"
                ));
            }
            let gw_tol = if dt == DType::F32 { 1e-5 } else { 1e-2 };
            if let Some(e) = identical(&mis, &aligned, gw_tol) {
                same.push(format!(
                    "misaligned (one-neuron) vs aligned (two-neuron), {what}: {e}"
                ));
            }
        }
    }
    set_vec_policy(before);
    println!(
        "CHECK two-neuron vs one-neuron kernels (f32/f16/bf16, even, odd and misaligned N): {} differ, {} launched the wrong kernel",
        same.len(),
        wrong_kernel.len()
    );
    println!(
        "CHECK two-neuron kernels vs reference twin: {} comparisons, {} spike flips, worst rel err dL/dx {:.2e} dL/dw {:.2e}, {} failed",
        vs_twin.checks,
        vs_twin.spike_flips,
        vs_twin.worst_gx,
        vs_twin.worst_gw,
        vs_twin.failed.len()
    );
    for f in same
        .iter()
        .chain(&wrong_kernel)
        .chain(&vs_twin.failed)
        .take(20)
    {
        println!("  FAIL {f}");
    }
    Ok(same.len() + wrong_kernel.len() + vs_twin.failed.len())
}
