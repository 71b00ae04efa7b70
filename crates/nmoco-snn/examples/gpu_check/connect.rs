//! The SEW IAND connect op (`nmoco_snn::sew_iand_fused`, `kernels/connect.cu`) against its
//! plain-ops twin on the device and the CPU op: values and both gradients, f32 (bit for bit:
//! every value is one f32 operation in both) and f16/bf16 (against the f32 op on the rounded
//! inputs, to the output's rounding).

use candle_core::{DType, Device, Result, Tensor, Var};
use nmoco_snn::testing::{flat, rand_vec};
use nmoco_snn::{sew_iand_fused, sew_iand_ref};

/// `(y, dL/da, dL/db)` of `sum(f(a, b) · g)` with `a`, `b`, `g` on `dev` in `dt`.
fn run(
    f: fn(&Tensor, &Tensor) -> Result<Tensor>,
    (a, b, g): (&Tensor, &Tensor, &Tensor),
    dev: &Device,
    dt: DType,
) -> Result<[Vec<f32>; 3]> {
    let av = Var::from_tensor(&a.to_dtype(dt)?.to_device(dev)?)?;
    let bv = Var::from_tensor(&b.to_dtype(dt)?.to_device(dev)?)?;
    let g = g.to_dtype(dt)?.to_device(dev)?;
    let y = f(av.as_tensor(), bv.as_tensor())?;
    let grads = (&y * &g)?.sum_all()?.backward()?;
    let get = |v: &Var| {
        grads
            .get(v.as_tensor())
            .ok_or_else(|| candle_core::Error::msg("iand: no gradient"))
    };
    Ok([flat(&y)?, flat(get(&av)?)?, flat(get(&bv)?)?])
}

/// The check; returns the failure count.
pub fn iand(dev: &Device, on_cpu: bool) -> Result<usize> {
    let cpu = Device::Cpu;
    let mut fails = Vec::new();
    let mut worst = 0f32;
    let shapes: [&[usize]; 3] = [&[4, 8, 64, 16, 16], &[3, 5, 7], &[1]];
    for (i, shape) in shapes.iter().enumerate() {
        let n: usize = shape.iter().product();
        let s = 900 + 10 * i as u64;
        for spikes in [true, false] {
            let a: Vec<f32> = rand_vec(n, -2.0, 2.0, s)
                .into_iter()
                .map(|v| {
                    if spikes {
                        f32::from(u8::from(v > 0.5))
                    } else {
                        v
                    }
                })
                .collect();
            let b: Vec<f32> = rand_vec(n, 0.0, 1.0, s + 1)
                .into_iter()
                .map(|v| {
                    if spikes {
                        f32::from(u8::from(v > 0.7))
                    } else {
                        2.0 * v
                    }
                })
                .collect();
            let a = Tensor::from_vec(a, *shape, &cpu)?;
            let b = Tensor::from_vec(b, *shape, &cpu)?;
            let g = Tensor::from_vec(rand_vec(n, -1.0, 1.0, s + 2), *shape, &cpu)?;
            let dts: &[DType] = if on_cpu {
                &[DType::F32]
            } else {
                &[DType::F32, DType::F16, DType::BF16]
            };
            for &dt in dts {
                let what = format!("iand {dt:?} {shape:?} spikes={spikes}");
                let fused = run(sew_iand_fused, (&a, &b, &g), dev, dt)?;
                // Reference: the twin in f32 on the inputs rounded to `dt`.
                let r = |t: &Tensor| t.to_dtype(dt)?.to_dtype(DType::F32);
                let (ar, br, gr) = (r(&a)?, r(&b)?, r(&g)?);
                let twin = run(sew_iand_ref, (&ar, &br, &gr), dev, DType::F32)?;
                let cpu_op = run(sew_iand_fused, (&ar, &br, &gr), &cpu, DType::F32)?;
                for (k, name) in ["y", "dL/da", "dL/db"].iter().enumerate() {
                    if dt == DType::F32 {
                        if fused[k] != twin[k] || fused[k] != cpu_op[k] {
                            fails.push(format!("{what} {name}: not bit-identical to twin / cpu"));
                        }
                    } else {
                        let e = nmoco_snn::testing::rel_err(&fused[k], &twin[k]);
                        worst = worst.max(e);
                        if e.is_nan() || e > 1e-2 || (spikes && k == 0 && fused[k] != twin[k]) {
                            fails.push(format!("{what} {name}: rel err {e:.2e}"));
                        }
                    }
                }
            }
        }
    }
    println!(
        "CHECK sew iand fused vs twin and cpu (f32 bit for bit; f16/bf16 worst rel err {worst:.2e}): {}",
        if fails.is_empty() { "ok" } else { "FAILED" }
    );
    for f in fails.iter().take(10) {
        println!("  FAIL {f}");
    }
    Ok(fails.len())
}
