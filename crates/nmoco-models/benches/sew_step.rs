//! Whole-network benchmark: one training step (forward, cross-entropy, backward, SGD) of the
//! `sewnet.py` anchor network (`BackboneConfig::sew_anchor()` + Linear(64 → 10)) at the anchor
//! shape `[T=8, B=16, 2, 64, 64]`, plus a per-layer-kind profile.
//!
//! `cargo bench -p nmoco-models --bench sew_step` prints JSON lines. Environment knobs:
//! `SEW_REPS` (timed steps, default 3), `SEW_WARMUP` (default 1), `SEW_T`, `SEW_B`, `SEW_HW`
//! (default 8, 16, 64), `SEW_PROFILE=0` to skip the per-layer profile, `SEW_NEURON=reference`
//! for the plain-op neuron, `SEW_FUSE_BN=0` for batch norm and LIF as separate ops.
//!
//! The profile rebuilds every layer of the network standalone at its exact input shape and
//! times its forward and its backward (of `sum(y · g)` for a fixed random `g`) separately, so the
//! per-kind totals add up to roughly one step; the difference is the glue (adds, pooling,
//! head, loss, SGD update, graph bookkeeping). The cost of the probe loss itself (`sum(y · g)`
//! and its backward on a plain variable of the same shape) is measured beside each layer,
//! subtracted from the layer's backward and reported as `probe_loss`.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use nmoco_alloc::bench::{cpu_s, env_usize, peak_rss_mb};
use nmoco_models::{
    Backbone, BackboneConfig, BatchNorm, Classifier, Conv2d, NeuronConfig, Spiking, count_params,
    is_buffer,
};

/// mimalloc keeps freed pages for reuse: candle allocates (and zero-fills) a fresh buffer for
/// every op output and gradient, and with glibc's allocator every large one is a fresh `mmap`
/// whose page faults cost more than the op (docs/benchmarks.md, "allocator"); `main` calls
/// `nmoco_alloc::configure` so that it also keeps freed memory between steps.
#[global_allocator]
static GLOBAL: nmoco_alloc::MiMalloc = nmoco_alloc::MiMalloc;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn neuron_cfg() -> NeuronConfig {
    let mut n = NeuronConfig::default();
    if std::env::var("SEW_NEURON").as_deref() == Ok("reference") {
        n.implementation = nmoco_snn::NeuronImpl::Reference;
    }
    n
}

struct Step {
    net: Backbone,
    head: Classifier,
    sgd: candle_nn::SGD,
    n_params: usize,
}

fn build(dev: &Device) -> Result<Step> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, dev);
    let mut cfg = BackboneConfig::sew_anchor();
    if let BackboneConfig::SewResnet(c) = &mut cfg {
        c.neuron = neuron_cfg();
    }
    let net = Backbone::new(&cfg, vb.pp("backbone"))?;
    let head = Classifier::new(net.feature_dim(), 10, vb.pp("head"))?;
    let params: Vec<Var> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?;
        data.iter()
            .filter(|(n, _)| !is_buffer(n))
            .map(|(_, v)| v.clone())
            .collect()
    };
    let sgd = candle_nn::SGD::new(params, 0.1)?;
    Ok(Step {
        net,
        head,
        sgd,
        n_params: count_params(&varmap),
    })
}

/// Per-kind profile: each layer of the anchor net standalone at its input shape.
fn profile(
    t: usize,
    b: usize,
    hw: usize,
    dev: &Device,
) -> Result<BTreeMap<String, (f64, f64, f64)>> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, dev);
    let n = t * b;
    // (c_in, c_out, stride, input size) of the 10 convs of sewnet.py.
    let mut convs = vec![(2usize, 32usize, 1usize, hw)];
    convs.extend(std::iter::repeat_n((32, 32, 1, hw), 4));
    convs.push((32, 64, 2, hw));
    convs.extend(std::iter::repeat_n((64, 64, 1, hw / 2), 4));
    let sn = Spiking::new(&neuron_cfg(), vb.pp("sn"))?;
    let mut out: BTreeMap<String, (f64, f64, f64)> = BTreeMap::new();
    let mut add = |k: &str, f: f64, bw: f64, c: f64| {
        let e = out.entry(k.to_string()).or_insert((0.0, 0.0, 0.0));
        e.0 += f;
        e.1 += bw;
        e.2 += c;
    };
    for (i, &(ci, co, s, h)) in convs.iter().enumerate() {
        let conv = Conv2d::new(ci, co, 3, s, 1, vb.pp(format!("c{i}")))?;
        let bn = BatchNorm::new(co, vb.pp(format!("b{i}")))?;
        let x = Var::from_tensor(
            &(Tensor::rand(0f32, 1., (n, ci, h, h), dev)?
                .ge(0.8)?
                .to_dtype(DType::F32)?),
        )?;
        // conv
        let c0 = cpu_s();
        let t0 = Instant::now();
        let y = conv.forward(x.as_tensor())?;
        let f = t0.elapsed().as_secs_f64();
        let g = y.rand_like(-1.0, 1.0)?;
        let t0 = Instant::now();
        let _ = (&y * &g)?.sum_all()?.backward()?;
        let (bw, c) = (t0.elapsed().as_secs_f64(), cpu_s() - c0);
        // The probe loss `sum(y·g)` and its backward on a plain variable of the output's shape:
        // subtracted from every layer's backward below, reported as `probe_loss`.
        let base = Var::from_tensor(&y.detach())?;
        let cb = cpu_s();
        let t0 = Instant::now();
        let _ = (base.as_tensor() * &g)?.sum_all()?.backward()?;
        let (lb, lc) = (t0.elapsed().as_secs_f64(), cpu_s() - cb);
        add("probe_loss", 0.0, 3.0 * lb, 3.0 * lc);
        add("conv2d", f, bw - lb, c - lc);
        // batch norm (train)
        let yv = Var::from_tensor(&y.detach())?;
        let c0 = cpu_s();
        let t0 = Instant::now();
        let z = bn.forward(yv.as_tensor(), true)?;
        let f = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let _ = (&z * &g)?.sum_all()?.backward()?;
        add(
            "batch_norm",
            f,
            t0.elapsed().as_secs_f64() - lb,
            cpu_s() - c0 - lc,
        );
        // neuron
        let zv = Var::from_tensor(&z.detach())?;
        let c0 = cpu_s();
        let t0 = Instant::now();
        let sp = sn.forward_folded(zv.as_tensor(), t)?;
        let f = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let _ = (&sp * &g)?.sum_all()?.backward()?;
        add("lif", f, t0.elapsed().as_secs_f64() - lb, cpu_s() - c0 - lc);
    }
    Ok(out)
}

fn main() -> Result<()> {
    nmoco_alloc::configure();
    let dev = Device::Cpu;
    if std::env::var("SEW_FUSE_BN").as_deref() == Ok("0") {
        nmoco_models::set_bn_lif_fusion(false);
    }
    let reps = env_usize("SEW_REPS", 3).max(1);
    let warmup = env_usize("SEW_WARMUP", 1);
    let (t, b, hw) = (
        env_usize("SEW_T", 8),
        env_usize("SEW_B", 16),
        env_usize("SEW_HW", 64),
    );
    let mut step = build(&dev)?;
    let x = Tensor::rand(0f32, 1., (t, b, 2, hw, hw), &dev)?
        .ge(0.9)?
        .to_dtype(DType::F32)?;
    let labels: Vec<u32> = (0..b as u32).map(|i| i % 10).collect();
    let labels = Tensor::new(labels.as_slice(), &dev)?;

    // Forward only (train-mode BN, graph built as it always is for variables).
    let mut fwd = Vec::new();
    for _ in 0..2 {
        let t0 = Instant::now();
        let f = step.net.forward(&x, true)?;
        let _ = step.head.forward(&f)?.sum_all()?.to_scalar::<f32>()?;
        fwd.push(t0.elapsed().as_secs_f64());
    }
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let mut loss_v = f32::NAN;
    for i in 0..warmup + reps {
        let c0 = cpu_s();
        let t0 = Instant::now();
        let logits = step.head.forward(&step.net.forward(&x, true)?)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        step.sgd.backward_step(&loss)?;
        loss_v = loss.to_scalar::<f32>()?;
        let dt = t0.elapsed().as_secs_f64();
        if i >= warmup {
            times.push(dt);
            cpu.push(cpu_s() - c0);
        }
    }
    let all: Vec<f64> = times.iter().map(|&v| r3(v)).collect();
    let step_s = median(&mut times);
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into());
    println!(
        "{{\"bench\":\"sew_step\",\"impl\":\"nmoco candle cpu\",\"neuron\":\"{}\",\"input\":[{t},{b},2,{hw},{hw}],\"params\":{},\"fwd_s\":{},\"step_s\":{},\"step_cpu_s\":{},\"samples_per_s\":{},\"step_all_s\":{:?},\"loss\":{},\"peak_rss_mb\":{},\"reps\":{reps},\"warmup\":{warmup},\"rayon_threads\":\"{threads}\"}}",
        if neuron_cfg().implementation == nmoco_snn::NeuronImpl::Reference {
            "reference"
        } else {
            "fused"
        },
        step.n_params,
        r3(median(&mut fwd)),
        r3(step_s),
        r3(median(&mut cpu)),
        r3(b as f64 / step_s),
        all,
        (loss_v * 1e4).round() / 1e4,
        peak_rss_mb().round(),
    );
    if env_usize("SEW_PROFILE", 1) != 0 {
        // One warm-up pass, then the measured one.
        let _ = profile(t, b, hw, &dev)?;
        let p = profile(t, b, hw, &dev)?;
        let total: f64 = p
            .iter()
            .filter(|(k, _)| k.as_str() != "probe_loss")
            .map(|(_, (f, bw, _))| f + bw)
            .sum();
        let mut parts = Vec::new();
        for (k, (f, bw, c)) in &p {
            parts.push(format!(
                "\"{k}\":{{\"fwd_s\":{},\"bwd_s\":{},\"cpu_s\":{},\"share_of_step\":{}}}",
                r3(*f),
                r3(*bw),
                r3(*c),
                r3((f + bw) / step_s)
            ));
        }
        println!(
            "{{\"bench\":\"sew_step_profile\",\"layers_total_s\":{},\"step_s\":{},\"other_s\":{},{}}}",
            r3(total),
            r3(step_s),
            r3(step_s - total),
            parts.join(",")
        );
    }
    Ok(())
}
