//! The fused training batch norm + IF/LIF op (`BatchNorm::forward_train_spiking` →
//! `nmoco_snn::bn_lif_multistep`) against its unfused twin (`BatchNorm::forward` then the
//! neuron) and against the plain-candle reference twins, for values, gradients (x, γ, β) and the
//! running statistics.

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use nmoco_models::{BatchNorm, NeuronConfig, Spiking};
use nmoco_snn::{NeuronImpl, NeuronKind};

const DEV: Device = Device::Cpu;

fn rnd(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    nmoco_testkit::rand_vec(n, lo, hi, seed)
}

struct Run {
    spikes: Tensor,
    gx: Tensor,
    ggamma: Tensor,
    gbeta: Tensor,
    running: (Vec<f32>, Vec<f32>),
}

/// BN (γ, β set from `seed`) then the neuron over `x: [t·b, c, h, w]`, loss `Σ s·g`.
fn run(
    x: &Tensor,
    g: &Tensor,
    t: usize,
    cfg: &NeuronConfig,
    fused: bool,
    seed: u64,
) -> Result<Run> {
    let c = x.dims()[1];
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &DEV);
    let bn = BatchNorm::new(c, vb.pp("bn"))?;
    let sn = Spiking::new(cfg, vb.pp("sn"))?;
    {
        let data = varmap.data().lock().expect("varmap");
        data["bn.weight"].set(&Tensor::from_vec(rnd(seed, c, 0.3, 2.0), c, &DEV)?)?;
        data["bn.bias"].set(&Tensor::from_vec(rnd(seed + 1, c, -0.5, 0.8), c, &DEV)?)?;
    }
    let (gamma, beta) = {
        let data = varmap.data().lock().expect("varmap");
        (data["bn.weight"].clone(), data["bn.bias"].clone())
    };
    let xv = Var::from_tensor(x)?;
    let spikes = if fused {
        bn.forward_train_spiking(xv.as_tensor(), &sn, t)?
    } else {
        sn.forward_folded(&bn.forward(xv.as_tensor(), true)?, t)?
    };
    let grads = (spikes.clone() * g)?.sum_all()?.backward()?;
    let get = |v: &Tensor| -> Result<Tensor> {
        grads
            .get(v)
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg("missing gradient".into()))
    };
    Ok(Run {
        gx: get(xv.as_tensor())?,
        ggamma: get(gamma.as_tensor())?,
        gbeta: get(beta.as_tensor())?,
        running: (
            bn.running_mean().as_tensor().to_vec1()?,
            bn.running_var().as_tensor().to_vec1()?,
        ),
        spikes,
    })
}

/// max |a − b| / (max |b| + 1e-6).
fn rel(a: &Tensor, b: &Tensor) -> Result<f32> {
    let d = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    let m = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    Ok(d / (m + 1e-6))
}

fn inputs(t: usize, b: usize, c: usize, h: usize, w: usize, seed: u64) -> Result<(Tensor, Tensor)> {
    let n = t * b * c * h * w;
    // Per-channel offsets and scales so that the batch statistics matter.
    let mut v = rnd(seed, n, -1.0, 3.0);
    for (i, x) in v.iter_mut().enumerate() {
        let ch = (i / (h * w)) % c;
        *x = *x * (0.5 + ch as f32) + ch as f32;
    }
    let x = Tensor::from_vec(v, (t * b, c, h, w), &DEV)?;
    let g = Tensor::from_vec(rnd(seed + 7, n, -1.0, 1.0), (t * b, c, h, w), &DEV)?;
    Ok((x, g))
}

#[test]
fn fused_bn_lif_equals_bn_then_lif_for_every_variant() -> Result<()> {
    // Odd sizes: channel segments straddle the kernels' neuron blocks and rows.
    let (t, b, c, h, w) = (5, 3, 7, 5, 3);
    let (x, g) = inputs(t, b, c, h, w, 11)?;
    let mut n = 0;
    for cfg in NeuronConfig::all_variants() {
        if cfg.kind == NeuronKind::Plif {
            continue;
        }
        let f = run(&x, &g, t, &cfg, true, 3)?;
        let u = run(&x, &g, t, &cfg, false, 3)?;
        // The neuron sees bit-identical inputs, so the spikes are identical.
        let sf = f.spikes.flatten_all()?.to_vec1::<f32>()?;
        let su = u.spikes.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(sf, su, "{cfg:?}");
        assert!(sf.contains(&1.0) && sf.contains(&0.0), "{cfg:?}");
        assert_eq!(f.running, u.running, "{cfg:?}");
        // Gradients: the same formulas, summed in another order.
        for (what, a, b) in [
            ("gamma", &f.ggamma, &u.ggamma),
            ("beta", &f.gbeta, &u.gbeta),
            ("x", &f.gx, &u.gx),
        ] {
            let r = rel(a, b)?;
            assert!(r < 1e-5, "{cfg:?} d{what}: relative difference {r}");
        }
        n += 1;
    }
    assert_eq!(n, 72);
    Ok(())
}

#[test]
fn fused_bn_lif_matches_the_reference_twins() -> Result<()> {
    // Larger than the CPU kernels' blocks (16384 neurons per row here).
    let (t, b, c, h, w) = (4, 4, 16, 16, 16);
    let (x, g) = inputs(t, b, c, h, w, 5)?;
    let cfg = NeuronConfig::default();
    let mut reference = cfg.clone();
    reference.implementation = NeuronImpl::Reference;
    let f = run(&x, &g, t, &cfg, true, 9)?;
    // `Reference` neurons are never fused: BN (fused op) then the plain-ops neuron twin.
    let r = run(&x, &g, t, &reference, true, 9)?;
    let sf = f.spikes.flatten_all()?.to_vec1::<f32>()?;
    let sr = r.spikes.flatten_all()?.to_vec1::<f32>()?;
    let flips = sf.iter().zip(&sr).filter(|(a, b)| a != b).count();
    assert_eq!(flips, 0, "spikes differ from the reference twin");
    for (what, a, b) in [
        ("x", &f.gx, &r.gx),
        ("gamma", &f.ggamma, &r.ggamma),
        ("beta", &f.gbeta, &r.gbeta),
    ] {
        let d = rel(a, b)?;
        assert!(d < 1e-4, "d{what}: relative difference {d}");
    }
    Ok(())
}

#[test]
fn fused_bn_lif_rejects_bad_shapes_and_plif() -> Result<()> {
    let x = Tensor::zeros((6, 2, 3, 3), DType::F32, &DEV)?;
    let gamma = Tensor::ones(2, DType::F32, &DEV)?;
    let beta = Tensor::zeros(2, DType::F32, &DEV)?;
    let cfg = NeuronConfig::default();
    // 6 is not a multiple of t = 4.
    assert!(nmoco_snn::bn_lif_multistep(&x, 4, &gamma, &beta, &[0.0; 2], &[1.0; 2], &cfg).is_err());
    // Statistics of the wrong length.
    assert!(nmoco_snn::bn_lif_multistep(&x, 3, &gamma, &beta, &[0.0; 3], &[1.0; 3], &cfg).is_err());
    let mut plif = cfg.clone();
    plif.kind = NeuronKind::Plif;
    assert!(
        nmoco_snn::bn_lif_multistep(&x, 3, &gamma, &beta, &[0.0; 2], &[1.0; 2], &plif).is_err()
    );
    assert!(nmoco_snn::bn_lif_multistep(&x, 3, &gamma, &beta, &[0.0; 2], &[1.0; 2], &cfg).is_ok());
    Ok(())
}

/// `bn_lif_multistep_stats` (statistics as tensors: the entry point the model uses, which keeps
/// them on the device on CUDA) equals `bn_lif_multistep` with host statistics bit for bit on
/// the CPU, values and gradients; `bn_batch_stats` is `nmoco_conv::batch_stats` there.
#[test]
fn stats_entry_point_equals_host_entry_point_on_cpu() -> Result<()> {
    let (t, b, c, h, w) = (3, 2, 5, 4, 3);
    let (x, g) = inputs(t, b, c, h, w, 21)?;
    let gamma = Var::from_vec(rnd(4, c, 0.3, 2.0), c, &DEV)?;
    let beta = Var::from_vec(rnd(5, c, -0.5, 0.8), c, &DEV)?;
    let eps = 1e-5;
    let (mean, var) = nmoco_snn::bn_batch_stats(&x)?;
    let (cm, cv) = nmoco_conv::batch_stats(&x)?;
    assert_eq!(mean.to_vec1::<f32>()?, cm.to_vec1::<f32>()?);
    assert_eq!(var.to_vec1::<f32>()?, cv.to_vec1::<f32>()?);
    let invstd: Vec<f64> = var
        .to_vec1::<f32>()?
        .iter()
        .map(|&v| 1.0 / (f64::from(v) + eps).sqrt())
        .collect();
    let mut runs = Vec::new();
    for host in [true, false] {
        let cfg = NeuronConfig::default();
        let xv = Var::from_tensor(&x)?;
        let s = if host {
            let m = mean.to_vec1::<f32>()?;
            nmoco_snn::bn_lif_multistep(xv.as_tensor(), t, &gamma, &beta, &m, &invstd, &cfg)?
        } else {
            nmoco_snn::bn_lif_multistep_stats(
                xv.as_tensor(),
                t,
                &gamma,
                &beta,
                &mean,
                &var,
                eps,
                &cfg,
            )?
        };
        let grads = (&s * &g)?.sum_all()?.backward()?;
        let mut out = vec![s.flatten_all()?.to_vec1::<f32>()?];
        for v in [xv.as_tensor(), gamma.as_tensor(), beta.as_tensor()] {
            let gv = grads
                .get(v)
                .ok_or_else(|| candle_core::Error::Msg("missing gradient".into()))?;
            out.push(gv.flatten_all()?.to_vec1::<f32>()?);
        }
        runs.push(out);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0][0].contains(&1.0) && runs[0][0].contains(&0.0));
    // Bad statistics, PLIF and a bf16 input on the CPU are errors, not panics.
    let short = Tensor::zeros(c - 1, DType::F32, &DEV)?;
    let cfg = NeuronConfig::default();
    let stats = |x: &Tensor, m: &Tensor, v: &Tensor, cfg: &NeuronConfig| {
        nmoco_snn::bn_lif_multistep_stats(x, t, &gamma, &beta, m, v, eps, cfg)
    };
    assert!(stats(&x, &short, &var, &cfg).is_err());
    assert!(stats(&x, &mean, &short, &cfg).is_err());
    let mut plif = cfg.clone();
    plif.kind = NeuronKind::Plif;
    assert!(stats(&x, &mean, &var, &plif).is_err());
    assert!(stats(&x.to_dtype(DType::BF16)?, &mean, &var, &cfg).is_err());
    Ok(())
}
