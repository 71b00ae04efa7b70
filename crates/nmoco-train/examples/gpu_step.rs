//! One NeuroMoCo pre-training step at the paper's shape, for the GPU benchmark
//! (`cargo xtask bench gpu-step`, `scripts/gpu/bench.sh`) and the CUDA-vs-CPU check.
//!
//! The step is [`nmoco_train::train_step_with`], what the trainer runs between log steps: query
//! forward + backward on one view, key forward on the other, MixInfoNCE against the queue, SGD,
//! the momentum update and the enqueue, with no read-back inside the step. The model, loss and
//! optimizer come from `configs/dvs128gesture_sew18.toml` or `configs/dvs128gesture_spikformer.toml`
//! (T = 16, 2×128×128, batch 32, K = 1024 unless overridden). Input: two fixed batches of two
//! views of `rand > 0.9` frames, made on the device before timing and cycled, as the anchor
//! `gpu_moco_step.py` does.
//!
//! ```text
//! gpu_step [--model sew18|spikformer] [--precision f32|bf16] [--tf32 1|0] [--device cuda|cpu]
//!          [--t 16] [--size 128] [--batch 32] [--k 1024] [--warmup 5] [--steps 20] [--phases 0]
//! gpu_step --compare-cpu 20 [--model ...] [--t 4] [--size 64] [--batch 8] [--k 256]
//! ```
//!
//! Prints one JSON line: median step time with a synchronisation after each step (`step_ms`),
//! the mean over the same number of back-to-back steps synchronised once (`step_ms_pipelined`),
//! samples/s from the pipelined figure, the memory pool's high-water marks and the device's used
//! memory (MiB), and with `--phases N` two per-phase profiles (medians over N steps each; phases
//! `data_to_device` (the two views copied from host memory, which the timed steps above skip),
//! `query_forward`, `key_forward`, `loss`, `backward`, `optimizer`, `momentum`, `enqueue`):
//! - `phases_ms`: a synchronisation after every phase, host clock (each phase alone; they add
//!   up to more than a pipelined step);
//! - `phases_event_ms`: no synchronisation inside the step; CUDA events recorded on the stream
//!   at each phase end give the device time per phase (`phase_clock` `cuda-events`; on the CPU
//!   the host clock, `host`), and `phases_host_ms` the host time spent issuing each phase.
//!
//! `--compare-cpu N` runs N steps on CUDA (f32, TF32 off) and on the CPU from identical weights,
//! queue and batches and prints each step's two losses; it exits with an error when one pair
//! differs by more than `--tol` (default 1e-3) relative.

use std::collections::BTreeMap;
use std::error::Error;
use std::time::Instant;

use candle_core::{Device, Tensor};
use nmoco_train::{
    EncoderPair, MocoEncoder, Optimizer, Phase, PhaseTimer, PretrainConfig, Queue, StepConfig,
    StepSync, train_step_marked, train_step_with,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Res<T> = std::result::Result<T, Box<dyn Error>>;

#[derive(Clone)]
struct Args {
    model: String,
    precision: String,
    tf32: bool,
    device: String,
    t: usize,
    size: usize,
    batch: usize,
    k: usize,
    warmup: usize,
    steps: usize,
    phases: usize,
    compare_cpu: usize,
    tol: f64,
}

fn parse() -> Res<Args> {
    let mut a = Args {
        model: "sew18".into(),
        precision: "f32".into(),
        tf32: true,
        device: "cuda".into(),
        t: 16,
        size: 128,
        batch: 32,
        k: 1024,
        warmup: 5,
        steps: 20,
        phases: 0,
        compare_cpu: 0,
        tol: 1e-3,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let compare = argv.iter().any(|s| s == "--compare-cpu");
    if compare {
        (a.t, a.size, a.batch, a.k) = (4, 64, 8, 256);
    }
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| -> Res<usize> {
            v.parse::<usize>()
                .map_err(|e| format!("{flag} {v}: {e}").into())
        };
        match flag.as_str() {
            "--model" => a.model = v,
            "--precision" => a.precision = v,
            "--tf32" => a.tf32 = v != "0" && v != "false",
            "--device" => a.device = v,
            "--t" => a.t = num(&v)?,
            "--size" => a.size = num(&v)?,
            "--batch" => a.batch = num(&v)?,
            "--k" => a.k = num(&v)?,
            "--warmup" => a.warmup = num(&v)?,
            "--steps" => a.steps = num(&v)?.max(1),
            "--phases" => a.phases = num(&v)?,
            "--compare-cpu" => a.compare_cpu = num(&v)?.max(1),
            "--tol" => a.tol = v.parse().map_err(|e| format!("--tol {v}: {e}"))?,
            _ => return Err(format!("unknown argument {flag}").into()),
        }
    }
    Ok(a)
}

/// The config the pretrain command would run for this model, at the requested shape.
fn config(a: &Args, device: &str, precision: &str) -> Res<PretrainConfig> {
    let file = match a.model.as_str() {
        "sew18" => "dvs128gesture_sew18.toml",
        "spikformer" => "dvs128gesture_spikformer.toml",
        m => return Err(format!("--model {m}: expected sew18 or spikformer").into()),
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(file);
    let path = if path.is_file() {
        path
    } else {
        std::path::PathBuf::from("configs").join(file)
    };
    let sets: Vec<String> = vec![
        "data.root=\"unused\"".into(),
        format!("data.frames.t={}", a.t),
        format!("data.frames.height={}", a.size),
        format!("data.frames.width={}", a.size),
        format!("optim.batch_size={}", a.batch),
        format!("moco.k={}", a.k),
        format!("run.device=\"{device}\""),
        format!("run.precision=\"{precision}\""),
        format!("run.tf32={}", a.tf32),
    ];
    Ok(PretrainConfig::load(&path, &sets, None)?)
}

struct Setup {
    pair: EncoderPair<MocoEncoder>,
    opt: Optimizer,
    queue: Queue,
    step: StepConfig,
    params: usize,
    lr: f64,
    m: f64,
}

fn setup(cfg: &PretrainConfig, dev: &Device) -> Res<Setup> {
    let backbone = cfg.model.backbone();
    let (hh, ho) = (cfg.model.head_hidden, cfg.model.head_out);
    let compute = cfg.run.precision.compute_dtype();
    let pair = EncoderPair::new(dev, cfg.run.seed, |vb| {
        MocoEncoder::new(&backbone, hh, ho, vb)?.with_compute_dtype(compute)
    })?;
    let trainable = pair.trainable();
    let params = trainable.iter().map(|(_, v)| v.elem_count()).sum();
    let opt = Optimizer::new(trainable, cfg.optim_params());
    let queue = Queue::random(cfg.moco.k, ho, cfg.run.seed).to_device(dev)?;
    nmoco_train::trainer::set_tf32(dev, cfg.run.tf32)?;
    Ok(Setup {
        pair,
        opt,
        queue,
        step: StepConfig {
            loss: cfg.loss_params(),
            symmetric: cfg.moco.symmetric,
            grad_clip: cfg.optim.grad_clip,
            shuffle_bn: cfg.shuffle_bn(),
        },
        params,
        lr: cfg.optim.lr,
        m: cfg.moco.m,
    })
}

/// Two batches of two views of `rand > 0.9` frames `[T, B, 2, H, W]` (host data).
fn host_views(a: &Args, seed: u64) -> Vec<(Vec<f32>, Vec<f32>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = a.t * a.batch * 2 * a.size * a.size;
    let mut view = || -> Vec<f32> {
        (0..n)
            .map(|_| if rng.random::<f32>() > 0.9 { 1.0 } else { 0.0 })
            .collect()
    };
    (0..2).map(|_| (view(), view())).collect()
}

fn to_dev(a: &Args, v: &[f32], dev: &Device) -> Res<Tensor> {
    Ok(Tensor::from_slice(
        v,
        (a.t, a.batch, 2, a.size, a.size),
        dev,
    )?)
}

fn open(device: &str) -> Res<Device> {
    match device {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            let dev = Device::new_cuda(0)?;
            #[cfg(feature = "cuda")]
            nmoco_snn::cuda_retain_pool_memory(&dev)?;
            Ok(dev)
        }
        d => Err(format!("--device {d}: expected cuda or cpu").into()),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Peak pool memory and device memory in MiB, as a JSON object (empty without CUDA).
fn memory_json(dev: &Device) -> Res<String> {
    #[cfg(feature = "cuda")]
    if let Some(m) = nmoco_snn::cuda_pool_memory(dev, false)? {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        return Ok(format!(
            "{{\"pool_used_high\":{:.0},\"pool_reserved_high\":{:.0},\"device_used\":{:.0},\"device_total\":{:.0}}}",
            mib(m.used_high),
            mib(m.reserved_high),
            mib(m.device_used),
            mib(m.device_total)
        ));
    }
    let _ = dev;
    Ok("{}".into())
}

/// Medians per phase over the profiled steps: (device or synchronised wall time, host time).
type Profile = Vec<(Phase, f64, f64)>;

/// `n` steps, each one from the host batch: the two views copied to the device
/// ([`Phase::DataToDevice`]), then [`train_step_marked`] with [`StepSync::NONE`], timed per phase
/// by a [`PhaseTimer`]. `synced`: a device synchronisation before every mark (the host clock then
/// measures each phase alone); otherwise nothing waits inside the step and the device figures
/// come from CUDA events (the host clock on the CPU). Returns the medians and the timer's clock.
// The marker closure returns the library's `Result`, as `train_step_marked` requires.
#[allow(clippy::result_large_err)]
fn phase_profile(
    s: &mut Setup,
    a: &Args,
    host: &[(Vec<f32>, Vec<f32>)],
    dev: &Device,
    n: usize,
    synced: bool,
) -> Res<(Profile, &'static str)> {
    let mut timer = PhaseTimer::new(dev)?;
    let mut all: BTreeMap<Phase, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for p in 0..n {
        let (q, k) = &host[p % host.len()];
        if synced {
            dev.synchronize()?;
        }
        timer.start()?;
        let (xq, xk) = (to_dev(a, q, dev)?, to_dev(a, k, dev)?);
        let mut mark = |phase: Phase| {
            if synced {
                dev.synchronize()?;
            }
            timer.mark(phase)
        };
        mark(Phase::DataToDevice)?;
        train_step_marked(
            &s.pair,
            &mut s.opt,
            &mut s.queue,
            &xq,
            &xk,
            s.lr,
            s.m,
            &s.step,
            StepSync::NONE,
            &mut mark,
        )?;
        let t = timer.finish()?;
        for ((phase, d), (_, h)) in t.device_ms.iter().zip(&t.host_ms) {
            let e = all.entry(*phase).or_default();
            e.0.push(*d);
            e.1.push(*h);
        }
    }
    let profile = all
        .into_iter()
        .map(|(p, (mut d, mut h))| (p, median(&mut d), median(&mut h)))
        .collect();
    Ok((profile, timer.clock()))
}

/// `{"phase":ms,...}` from a profile's first (`device`) or second figure.
fn phases_json(p: &Profile, device: bool) -> String {
    let body: Vec<String> = p
        .iter()
        .map(|(ph, d, h)| format!("\"{}\":{:.3}", ph.name(), if device { d } else { h }))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn bench(a: &Args) -> Res<()> {
    let dev = open(&a.device)?;
    let cfg = config(a, &a.device, &a.precision)?;
    let mut s = setup(&cfg, &dev)?;
    let views: Vec<(Tensor, Tensor)> = host_views(a, 0)
        .iter()
        .map(|(q, k)| Ok((to_dev(a, q, &dev)?, to_dev(a, k, &dev)?)))
        .collect::<Res<_>>()?;
    let mut i = 0usize;
    let mut step = |s: &mut Setup| -> Res<Tensor> {
        let (xq, xk) = &views[i % views.len()];
        i += 1;
        let r = train_step_with(
            &s.pair,
            &mut s.opt,
            &mut s.queue,
            xq,
            xk,
            s.lr,
            s.m,
            &s.step,
            StepSync::NONE,
        )?;
        Ok(r.loss)
    };
    for _ in 0..a.warmup {
        step(&mut s)?;
    }
    dev.synchronize()?;
    let mut times = Vec::with_capacity(a.steps);
    for _ in 0..a.steps {
        let t0 = Instant::now();
        step(&mut s)?;
        dev.synchronize()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let t0 = Instant::now();
    let mut last = None;
    for _ in 0..a.steps {
        last = Some(step(&mut s)?);
    }
    dev.synchronize()?;
    let pipelined = t0.elapsed().as_secs_f64() * 1e3 / a.steps as f64;
    let loss = match last {
        Some(l) => l.to_scalar::<f32>()?,
        None => f32::NAN,
    };
    let host = host_views(a, 0);
    let (synced, _) = phase_profile(&mut s, a, &host, &dev, a.phases, true)?;
    let (events, clock) = phase_profile(&mut s, a, &host, &dev, a.phases, false)?;
    let step_ms = median(&mut times);
    println!(
        "{{\"bench\":\"gpu_step\",\"impl\":\"nmoco candle {}\",\"model\":\"{}\",\"precision\":\"{}\",\"tf32\":{},\"input\":[{},{},2,{},{}],\"k\":{},\"params\":{},\"step_ms\":{:.3},\"step_ms_pipelined\":{:.3},\"samples_per_s\":{:.2},\"peak_gpu_mem_mib\":{},\"loss\":{:.4},\"warmup\":{},\"steps\":{},\"phases_ms\":{},\"phase_clock\":\"{clock}\",\"phases_event_ms\":{},\"phases_host_ms\":{}}}",
        a.device,
        a.model,
        a.precision,
        a.tf32,
        a.t,
        a.batch,
        a.size,
        a.size,
        a.k,
        s.params,
        step_ms,
        pipelined,
        a.batch as f64 / (pipelined / 1e3),
        memory_json(&dev)?,
        loss,
        a.warmup,
        a.steps,
        phases_json(&synced, false),
        phases_json(&events, true),
        phases_json(&events, false),
    );
    Ok(())
}

/// N steps on CUDA and on the CPU from the same weights, queue and batches (f32, TF32 off).
fn compare(a: &Args) -> Res<()> {
    let mut a2 = a.clone();
    a2.tf32 = false;
    a2.precision = "f32".into();
    let gpu = open("cuda")?;
    let mut sg = setup(&config(&a2, "cuda", "f32")?, &gpu)?;
    let mut sc = setup(&config(&a2, "cpu", "f32")?, &Device::Cpu)?;
    let host = host_views(&a2, 1);
    let mut worst = 0f64;
    for i in 0..a.compare_cpu {
        let (q, k) = &host[i % host.len()];
        let mut losses = [0f32; 2];
        for (j, (s, dev)) in [(&mut sg, &gpu), (&mut sc, &Device::Cpu)]
            .into_iter()
            .enumerate()
        {
            let r = train_step_with(
                &s.pair,
                &mut s.opt,
                &mut s.queue,
                &to_dev(&a2, q, dev)?,
                &to_dev(&a2, k, dev)?,
                s.lr,
                s.m,
                &s.step,
                StepSync::ALL,
            )?;
            losses[j] = r.loss_value.unwrap_or(f32::NAN);
        }
        let rel = f64::from((losses[0] - losses[1]).abs()) / f64::from(losses[1].abs()).max(1e-12);
        worst = worst.max(if rel.is_nan() { f64::INFINITY } else { rel });
        println!(
            "{{\"check\":\"cuda_vs_cpu_step\",\"model\":\"{}\",\"step\":{},\"loss_cuda\":{:.6},\"loss_cpu\":{:.6},\"rel\":{:.3e}}}",
            a.model,
            i + 1,
            losses[0],
            losses[1],
            rel
        );
    }
    let ok = worst <= a.tol;
    println!(
        "CHECK cuda_vs_cpu_{} steps={} worst_rel={worst:.3e} tol={:.0e} {}",
        a.model,
        a.compare_cpu,
        a.tol,
        if ok { "PASS" } else { "FAIL" }
    );
    if !ok {
        return Err(format!("CUDA and CPU losses differ by {worst:.3e} relative").into());
    }
    Ok(())
}

fn main() -> Res<()> {
    let a = parse()?;
    if a.compare_cpu > 0 {
        compare(&a)
    } else {
        bench(&a)
    }
}
