//! Device check of the cuDNN convolutions (build with `--features cuda`; needs a CUDA device):
//!
//! ```text
//! cargo run --release --features cuda -p nmoco-conv --example gpu_conv_check -- [--time] [--candle] [--reps R] [--json FILE] [--cpu]
//! ```
//!
//! 1. **Agreement**: on shapes covering SEW-ResNet's convolutions (7×7/2 stem, 3×3 stride 1 and 2,
//!    1×1/2 downsample), groups, spike inputs, an input at a storage offset and `conv2d_bias`, the
//!    forward output and the gradients (input, weight, bias) of `nmoco_conv::conv2d` on the device
//!    (cuDNN) against the CPU twin (`nmoco_conv::conv2d` on the CPU, f32) on the same inputs, and
//!    the stand-alone `conv2d_grad_input` / `conv2d_grad_weight`, in three modes: f32 with TF32 off
//!    (relative error ≤ 2e-4), f32 with TF32 (≤ 1e-2) and bf16 (inputs rounded to bf16 on both
//!    sides, ≤ 3e-2). Errors are max |device − twin| / max |twin|. Also checks that an untracked
//!    input gets no gradient and costs no backward-data search, and that a repeated shape reuses
//!    its plan (no new plan, no new search).
//! 2. **Timing** (`--time`): per-op milliseconds (forward, backward-data, backward-filter; median
//!    of R runs after warm-up, each bracketed by device synchronisation) at the SEW-ResNet-18 layer
//!    shapes for T = 16, B = 32, 2×128×128 input (N = T·B = 512), in f32 + TF32, f32 and bf16,
//!    plus the per-step convolution total (query forward + backward, key forward); `--candle` adds
//!    candle's own path (`NMOCO_CUDA_CONV=candle`) in f32 for comparison.
//!
//! Prints one JSON line (`--json FILE` also writes it) and exits non-zero if any check fails.
//! `--cpu` runs the same harness with the CPU as the "device" and candle's `conv2d` as the twin
//! (a dry run on a machine without a GPU; timing shapes are then shrunk).

use std::fmt::Write as _;

use candle_core::{DType, Device, Result, Tensor, Var};
use nmoco_conv::{
    CudaConvBackend, conv2d, conv2d_bias, conv2d_grad_input, conv2d_grad_weight, conv2d_reference,
    cuda_conv_config, cudnn_stats, set_cuda_conv_config,
};
use nmoco_testkit::{flat, median_ms};

/// Spike-like (0/1, about 20 % ones) or uniform `[-1, 1)` test data from `seed`.
fn rand_vec(n: usize, seed: u64, spikes: bool) -> Vec<f32> {
    nmoco_testkit::rand_vec(n, 0.0, 1.0, seed)
        .into_iter()
        .map(|u| {
            if spikes {
                f32::from(u8::from(u < 0.2))
            } else {
                2.0 * u - 1.0
            }
        })
        .collect()
}

/// A convolution case: input dims, kernel dims, stride, padding, groups, spike input, offset, bias.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    x: [usize; 4],
    w: [usize; 4],
    stride: usize,
    pad: usize,
    groups: usize,
    spikes: bool,
    offset: bool,
    bias: bool,
}

const fn case(name: &'static str, x: [usize; 4], w: [usize; 4], stride: usize, pad: usize) -> Case {
    Case {
        name,
        x,
        w,
        stride,
        pad,
        groups: 1,
        spikes: false,
        offset: false,
        bias: false,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case("stem7x7s2", [4, 2, 32, 32], [16, 2, 7, 7], 2, 3),
        case("3x3s1", [4, 16, 16, 16], [16, 16, 3, 3], 1, 1),
        case("3x3s2", [4, 16, 16, 16], [32, 16, 3, 3], 2, 1),
        case("1x1s2", [4, 16, 16, 16], [32, 16, 1, 1], 2, 0),
        Case {
            groups: 2,
            ..case("groups2", [2, 8, 9, 9], [6, 4, 3, 3], 1, 1)
        },
        Case {
            spikes: true,
            ..case("spikes3x3", [8, 32, 12, 12], [64, 32, 3, 3], 1, 1)
        },
        Case {
            offset: true,
            ..case("offset3x3", [3, 8, 10, 10], [8, 8, 3, 3], 1, 1)
        },
        Case {
            bias: true,
            ..case("bias3x3", [2, 8, 10, 10], [12, 8, 3, 3], 1, 1)
        },
        case("wide3x3", [16, 64, 16, 16], [64, 64, 3, 3], 1, 1),
    ]
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    F32,
    Tf32,
    Bf16,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::F32 => "f32",
            Mode::Tf32 => "tf32",
            Mode::Bf16 => "bf16",
        }
    }
    fn dtype(self) -> DType {
        if self == Mode::Bf16 {
            DType::BF16
        } else {
            DType::F32
        }
    }
    fn tol(self) -> f32 {
        match self {
            Mode::F32 => 2e-4,
            Mode::Tf32 => 1e-2,
            Mode::Bf16 => 3e-2,
        }
    }
    fn apply(self) -> Result<()> {
        let mut c = cuda_conv_config()?;
        c.backend = CudaConvBackend::Cudnn;
        c.conv_tf32 = self == Mode::Tf32;
        set_cuda_conv_config(c);
        Ok(())
    }
}

/// max |a − b| / max |b| (b = twin); `inf` on a length mismatch or a non-finite value.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let mut e = 0f32;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        if !d.is_finite() {
            return f32::INFINITY;
        }
        e = e.max(d);
    }
    e / scale
}

/// Outputs of one run: y, dx, dw, db.
struct Outs {
    y: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
    db: Vec<f32>,
    /// Stand-alone `conv2d_grad_input` / `conv2d_grad_weight` with dy = r.
    gi: Vec<f32>,
    gw: Vec<f32>,
}

fn run_case(c: &Case, dev: &Device, dt: DType, twin: bool, inputs: &[Vec<f32>; 4]) -> Result<Outs> {
    let [xv, wv, rv, bv] = inputs;
    let xt = if c.offset {
        // The input sits one image into a larger buffer (a contiguous layout at an offset).
        let mut big = vec![0.5f32; c.x[1] * c.x[2] * c.x[3]];
        big.extend_from_slice(xv);
        let n = c.x[0] + 1;
        Tensor::from_vec(big, (n, c.x[1], c.x[2], c.x[3]), dev)?
            .to_dtype(dt)?
            .narrow(0, 1, c.x[0])?
    } else {
        Tensor::from_vec(xv.clone(), c.x.to_vec(), dev)?.to_dtype(dt)?
    };
    let x = Var::from_tensor(&xt)?;
    let w = Var::from_tensor(&Tensor::from_vec(wv.clone(), c.w.to_vec(), dev)?.to_dtype(dt)?)?;
    let b = Var::from_tensor(&Tensor::from_vec(bv.clone(), c.w[0], dev)?.to_dtype(dt)?)?;
    let use_ref = twin && TWIN_IS_REFERENCE.with(|r| *r.borrow());
    let conv = |x: &Tensor| -> Result<Tensor> {
        match (use_ref, c.bias) {
            (true, true) => conv2d_reference(x, &w, c.stride, c.pad, c.groups)?
                .broadcast_add(&b.reshape((1, c.w[0], 1, 1))?),
            (true, false) => conv2d_reference(x, &w, c.stride, c.pad, c.groups),
            (false, true) => conv2d_bias(x, &w, &b, c.stride, c.pad, c.groups),
            (false, false) => conv2d(x, &w, c.stride, c.pad, c.groups),
        }
    };
    let y = conv(x.as_tensor())?;
    let r = Tensor::from_vec(rv.clone(), y.dims().to_vec(), dev)?.to_dtype(dt)?;
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let get = |v: &Var| -> Result<Vec<f32>> {
        match grads.get(v) {
            Some(g) => flat(g),
            None => Ok(vec![]),
        }
    };
    let gi = conv2d_grad_input(&r, &w, &c.x, c.stride, c.pad, c.groups)?;
    let gw = conv2d_grad_weight(x.as_tensor(), &r, &c.w, c.stride, c.pad, c.groups)?;
    Ok(Outs {
        y: flat(&y)?,
        dx: get(&x)?,
        dw: get(&w)?,
        db: if c.bias { get(&b)? } else { vec![] },
        gi: flat(&gi)?,
        gw: flat(&gw)?,
    })
}

thread_local! {
    /// `--cpu`: the twin is candle's `conv2d` (the CPU fast path is then the "device").
    static TWIN_IS_REFERENCE: std::cell::RefCell<bool> = const { std::cell::RefCell::new(false) };
}

struct Check {
    json: String,
    ok: bool,
}

fn agreement(dev: &Device, modes: &[Mode]) -> Result<Check> {
    let mut json = String::from("[");
    let mut ok = true;
    for &mode in modes {
        mode.apply()?;
        for (ci, c) in cases().iter().enumerate() {
            let seed = 1000 * ci as u64;
            let mut y_dims = [c.x[0], c.w[0], 0, 0];
            y_dims[2] = (c.x[2] + 2 * c.pad - c.w[2]) / c.stride + 1;
            y_dims[3] = (c.x[3] + 2 * c.pad - c.w[3]) / c.stride + 1;
            let n = |d: &[usize]| d.iter().product::<usize>();
            let mut inputs = [
                rand_vec(n(&c.x), seed + 1, c.spikes),
                rand_vec(n(&c.w), seed + 2, false),
                rand_vec(n(&y_dims), seed + 3, false),
                rand_vec(c.w[0], seed + 4, false),
            ];
            if mode == Mode::Bf16 {
                // Both sides see the same bf16-rounded values.
                for v in inputs.iter_mut() {
                    *v = flat(
                        &Tensor::from_vec(v.clone(), v.len(), &Device::Cpu)?
                            .to_dtype(DType::BF16)?,
                    )?;
                }
            }
            let d = run_case(c, dev, mode.dtype(), false, &inputs)?;
            let t = run_case(c, &Device::Cpu, DType::F32, true, &inputs)?;
            let errs = [
                ("y", rel_err(&d.y, &t.y)),
                ("dx", rel_err(&d.dx, &t.dx)),
                ("dw", rel_err(&d.dw, &t.dw)),
                ("db", if c.bias { rel_err(&d.db, &t.db) } else { 0.0 }),
                ("grad_input", rel_err(&d.gi, &t.gi)),
                ("grad_weight", rel_err(&d.gw, &t.gw)),
            ];
            let pass = errs.iter().all(|(_, e)| *e <= mode.tol());
            ok &= pass;
            let _ = write!(
                json,
                "{}{{\"mode\":\"{}\",\"case\":\"{}\",\"pass\":{pass}",
                if json.len() > 1 { "," } else { "" },
                mode.name(),
                c.name
            );
            for (k, e) in errs {
                let _ = write!(
                    json,
                    ",\"{k}\":{:.3e}",
                    if e.is_finite() { e } else { 1e30 }
                );
            }
            json.push('}');
            eprintln!(
                "CHECK {:4} {:10} {}  {}",
                mode.name(),
                c.name,
                if pass { "ok  " } else { "FAIL" },
                errs.iter()
                    .map(|(k, e)| format!("{k} {e:.1e}"))
                    .collect::<Vec<_>>()
                    .join("  ")
            );
        }
    }
    json.push(']');
    Ok(Check { json, ok })
}

/// An untracked input gets no gradient and (on CUDA) no backward-data search; a repeated shape
/// adds no plan and no search.
fn selection_and_cache(dev: &Device) -> Result<Check> {
    Mode::Tf32.apply()?;
    let x = Tensor::from_vec(rand_vec(2 * 5 * 11 * 11, 7, true), (2, 5, 11, 11), dev)?;
    let w = Var::from_tensor(&Tensor::from_vec(
        rand_vec(7 * 5 * 3 * 3, 8, false),
        (7, 5, 3, 3),
        dev,
    )?)?;
    let s0 = cudnn_stats();
    let y = conv2d(&x, &w, 1, 1, 1)?;
    let grads = y.sqr()?.sum_all()?.backward()?;
    let s1 = cudnn_stats();
    let no_dx = grads.get(&x).is_none() && grads.get(&w).is_some();
    // Fresh shape: forward + backward-filter searched, backward-data not.
    let searches = s1.searches - s0.searches;
    let y2 = conv2d(&x, &w, 1, 1, 1)?;
    let _ = y2.sqr()?.sum_all()?.backward()?;
    let s2 = cudnn_stats();
    let cached = s2.plans == s1.plans && s2.searches == s1.searches;
    let (search_ok, cache_ok) = if dev.is_cuda() {
        (searches == 2 && s1.plans == s0.plans + 1, cached)
    } else {
        (searches == 0, cached)
    };
    let ok = no_dx && search_ok && cache_ok;
    eprintln!(
        "CHECK untracked input: no dx {no_dx}, searches {searches} ({}), repeated shape cached {cache_ok}",
        if search_ok { "ok" } else { "FAIL" }
    );
    Ok(Check {
        json: format!(
            "{{\"untracked_input_no_grad\":{no_dx},\"searches_fresh_shape\":{searches},\"search_ok\":{search_ok},\"cache_ok\":{cache_ok},\"plans\":{},\"searches\":{},\"workspace_bytes\":{}}}",
            s2.plans, s2.searches, s2.workspace_bytes
        ),
        ok,
    })
}

/// (name, x dims for N = T·B, kernel dims, stride, padding, count per network).
type Layer = (&'static str, [usize; 4], [usize; 4], usize, usize, usize);

/// SEW-ResNet-18's convolutions.
fn sew18_layers(n: usize, hw: usize) -> Vec<Layer> {
    let s = |d: usize| hw / d;
    vec![
        ("stem", [n, 2, hw, hw], [64, 2, 7, 7], 2, 3, 1),
        ("l1_3x3", [n, 64, s(4), s(4)], [64, 64, 3, 3], 1, 1, 4),
        ("l2_3x3s2", [n, 64, s(4), s(4)], [128, 64, 3, 3], 2, 1, 1),
        ("l2_3x3", [n, 128, s(8), s(8)], [128, 128, 3, 3], 1, 1, 3),
        ("l2_down", [n, 64, s(4), s(4)], [128, 64, 1, 1], 2, 0, 1),
        ("l3_3x3s2", [n, 128, s(8), s(8)], [256, 128, 3, 3], 2, 1, 1),
        ("l3_3x3", [n, 256, s(16), s(16)], [256, 256, 3, 3], 1, 1, 3),
        ("l3_down", [n, 128, s(8), s(8)], [256, 128, 1, 1], 2, 0, 1),
        (
            "l4_3x3s2",
            [n, 256, s(16), s(16)],
            [512, 256, 3, 3],
            2,
            1,
            1,
        ),
        ("l4_3x3", [n, 512, s(32), s(32)], [512, 512, 3, 3], 1, 1, 3),
        ("l4_down", [n, 256, s(16), s(16)], [512, 256, 1, 1], 2, 0, 1),
    ]
}

fn timing(dev: &Device, reps: usize, candle: bool) -> Result<String> {
    let (n, hw) = if dev.is_cuda() { (512, 128) } else { (2, 32) };
    let mut runs: Vec<(&str, DType, bool, CudaConvBackend)> = vec![
        ("tf32", DType::F32, true, CudaConvBackend::Cudnn),
        ("f32", DType::F32, false, CudaConvBackend::Cudnn),
        ("bf16", DType::BF16, false, CudaConvBackend::Cudnn),
    ];
    if !dev.is_cuda() {
        runs.truncate(2); // candle has no bf16 convolution on the CPU
    }
    if candle {
        runs.push(("candle_f32", DType::F32, false, CudaConvBackend::Candle));
    }
    let mut json = String::from("[");
    for (label, dt, tf32, backend) in runs {
        let mut c = cuda_conv_config()?;
        c.backend = backend;
        c.conv_tf32 = tf32;
        set_cuda_conv_config(c);
        let mut step = 0.0;
        for (name, xd, wd, stride, pad, count) in sew18_layers(n, hw) {
            let x = Tensor::from_vec(
                rand_vec(xd.iter().product(), 11, name != "stem"),
                xd.to_vec(),
                dev,
            )?
            .to_dtype(dt)?;
            let w = Tensor::from_vec(rand_vec(wd.iter().product(), 12, false), wd.to_vec(), dev)?
                .to_dtype(dt)?;
            let y = conv2d(&x, &w, stride, pad, 1)?;
            let dy = Tensor::from_vec(rand_vec(y.elem_count(), 13, false), y.dims().to_vec(), dev)?
                .to_dtype(dt)?;
            drop(y);
            let fwd = median_ms(dev, 2, reps, || conv2d(&x, &w, stride, pad, 1))?;
            let bwd_data = if name == "stem" {
                0.0 // the network input gets no gradient
            } else {
                median_ms(dev, 2, reps, || {
                    conv2d_grad_input(&dy, &w, &xd, stride, pad, 1)
                })?
            };
            let bwd_filter = median_ms(dev, 2, reps, || {
                conv2d_grad_weight(&x, &dy, &wd, stride, pad, 1)
            })?;
            // Query forward + backward, key forward.
            step += count as f64 * (2.0 * fwd + bwd_data + bwd_filter);
            let _ = write!(
                json,
                "{}{{\"run\":\"{label}\",\"layer\":\"{name}\",\"x\":{:?},\"w\":{:?},\"fwd_ms\":{fwd:.3},\"bwd_data_ms\":{bwd_data:.3},\"bwd_filter_ms\":{bwd_filter:.3}}}",
                if json.len() > 1 { "," } else { "" },
                xd,
                wd
            );
            eprintln!(
                "TIME {label:10} {name:9} fwd {fwd:8.3} ms  bwd-data {bwd_data:8.3} ms  bwd-filter {bwd_filter:8.3} ms"
            );
        }
        eprintln!("TIME {label:10} per-step convolutions (query fwd+bwd, key fwd): {step:.1} ms");
        let _ = write!(json, ",{{\"run\":\"{label}\",\"step_conv_ms\":{step:.2}}}");
    }
    json.push(']');
    Ok(json)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    let val = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let cpu = has("--cpu");
    let reps = val("--reps")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10usize);
    let result = (|| -> Result<(String, bool)> {
        let dev = if cpu {
            Device::Cpu
        } else {
            Device::new_cuda(0)?
        };
        TWIN_IS_REFERENCE.with(|r| *r.borrow_mut() = cpu);
        // candle has no bf16 convolution on the CPU: the dry run checks f32 only.
        let modes: &[Mode] = if cpu {
            &[Mode::F32]
        } else {
            &[Mode::F32, Mode::Tf32, Mode::Bf16]
        };
        let agree = agreement(&dev, modes)?;
        let sel = selection_and_cache(&dev)?;
        let time = if has("--time") {
            timing(&dev, reps, has("--candle"))?
        } else {
            "null".into()
        };
        let ok = agree.ok && sel.ok;
        Ok((
            format!(
                "{{\"check\":\"gpu_conv_check\",\"device\":\"{}\",\"ok\":{ok},\"selection\":{},\"agreement\":{},\"timing\":{time}}}",
                if cpu { "cpu" } else { "cuda:0" },
                sel.json,
                agree.json
            ),
            ok,
        ))
    })();
    match result {
        Ok((line, ok)) => {
            println!("{line}");
            if let Some(p) = val("--json")
                && let Err(e) = std::fs::write(&p, format!("{line}\n"))
            {
                eprintln!("cannot write {p}: {e}");
                std::process::exit(2);
            }
            if !ok {
                eprintln!("gpu_conv_check: MISMATCH");
                std::process::exit(1);
            }
        }
        Err(e) => {
            println!(
                "{{\"check\":\"gpu_conv_check\",\"ok\":false,\"error\":{:?}}}",
                e.to_string()
            );
            std::process::exit(1);
        }
    }
}
