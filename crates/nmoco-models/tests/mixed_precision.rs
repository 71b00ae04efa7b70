//! Mixed precision on the CPU: the same backbone computing in a 16-bit float (f32 variables cast
//! at use, batch norm in f32) stays close to the f32 computation, and gradients reach every f32
//! variable in f32. candle's CPU matmul has no bf16, so the CPU runs the identical plumbing in
//! f16; bf16 itself is compared on the GPU (`gpu_check`).

use candle_core::{DType, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use nmoco_models::{Backbone, BackboneConfig, seeded_init};

mod common;

use common::{DEV, tiny_spikformer};
use nmoco_testkit::Lcg;

/// Binary event-like frames with about 30 % ones.
fn frames(dims: &[usize], seed: u64) -> Result<Tensor> {
    let mut rng = Lcg::from_state(seed.wrapping_mul(Lcg::A) | 1);
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            if (rng.next_u64() >> 40) % 10 < 3 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(v, dims, &DEV)
}

fn build(cfg: &BackboneConfig, dtype: DType) -> Result<(VarMap, Backbone)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &DEV);
    let net = Backbone::new(cfg, vb)?.with_compute_dtype(dtype)?;
    seeded_init(&varmap, 3)?;
    Ok((varmap, net))
}

fn rel_l2(a: &Tensor, b: &Tensor) -> Result<f32> {
    let d = (a - b)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
    let n = b.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt().max(1e-12);
    Ok(d / n)
}

/// Forward (train mode) and the gradients of `Σ y·g` in f32 and in bf16 from the same weights.
fn check(cfg: &BackboneConfig, dims: &[usize], half: DType, max_rel: f32) -> Result<()> {
    let x = frames(dims, 7)?;
    let (vm32, net32) = build(cfg, DType::F32)?;
    let (vm16, net16) = build(cfg, half)?;
    let y32 = net32.forward(&x, true)?;
    let y16 = net16.forward(&x, true)?;
    assert_eq!(y32.dtype(), DType::F32);
    assert_eq!(y16.dtype(), half);
    let y16f = y16.to_dtype(DType::F32)?;
    let r = rel_l2(&y16f, &y32)?;
    assert!(
        r < max_rel,
        "{half:?}: features differ by {r} (relative L2)"
    );
    // Batch-norm running statistics stay f32 and move the same way: the first batch norm sees
    // the same input up to rounding; deeper ones also see a few spikes flipped by it.
    let vars16 = vm16.data().lock().unwrap().clone();
    let vars32 = vm32.data().lock().unwrap().clone();
    let mut stats = vec![];
    for (name, v) in &vars16 {
        assert_eq!(v.dtype(), DType::F32, "{name} must stay f32");
        if name.ends_with("running_mean") {
            stats.push(rel_l2(v.as_tensor(), vars32[name].as_tensor())?);
        }
    }
    stats.sort_by(f32::total_cmp);
    eprintln!("{half:?}: running-mean relative L2, sorted: {stats:?}");
    assert!(!stats.is_empty() && stats[0] < 0.01, "{stats:?}");
    assert!(stats.iter().all(|&r| r < 0.3), "{stats:?}");
    // Gradients of the same linear functional reach every f32 variable, in f32, close to the
    // f32 computation's.
    let g = frames(y32.dims(), 9)?;
    let grads32 = (&y32 * &g)?.sum_all()?.backward()?;
    let grads16 = (y16f * &g)?.sum_all()?.backward()?;
    let (mut dot, mut n32, mut n16) = (0f64, 0f64, 0f64);
    for (name, v) in &vars16 {
        if name.contains("running_") {
            continue;
        }
        let v32: &Var = &vars32[name];
        let (Some(a), Some(b)) = (grads16.get(v.as_tensor()), grads32.get(v32.as_tensor())) else {
            panic!("{name}: no gradient in bf16 or f32");
        };
        assert_eq!(a.dtype(), DType::F32, "{name}: gradient dtype");
        dot += f64::from((a * b)?.sum_all()?.to_scalar::<f32>()?);
        n16 += f64::from(a.sqr()?.sum_all()?.to_scalar::<f32>()?);
        n32 += f64::from(b.sqr()?.sum_all()?.to_scalar::<f32>()?);
    }
    let cos = dot / (n16.sqrt() * n32.sqrt()).max(1e-30);
    eprintln!("{half:?}: gradient cosine {cos}");
    assert!(cos > 0.9, "{half:?}: gradient cosine {cos}");
    Ok(())
}

#[test]
fn sew_in_half_precision_tracks_f32() -> Result<()> {
    check(
        &BackboneConfig::sew_small(),
        &[2, 2, 2, 16, 16],
        DType::F16,
        0.5,
    )
}

#[test]
fn spikformer_in_half_precision_tracks_f32() -> Result<()> {
    check(&tiny_spikformer(), &[2, 2, 2, 16, 16], DType::F16, 0.5)
}

#[test]
fn only_float_compute_dtypes_are_accepted() -> Result<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &DEV);
    let net = Backbone::new(&BackboneConfig::sew_small(), vb)?;
    assert!(net.with_compute_dtype(DType::U8).is_err());
    Ok(())
}
