//! The fused ops against their plain-candle reference twins: values and gradients.

mod bn;
mod conv;
mod robustness;

use candle_core::{Device, Result, Tensor};

/// Deterministic pseudo-random values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(dims: &[usize], seed: u64) -> Result<Tensor> {
    Tensor::from_vec(values(dims.iter().product(), seed), dims, &Device::Cpu)
}

/// Binary spikes with roughly `density` ones.
fn spikes(dims: &[usize], seed: u64, density: f32) -> Result<Tensor> {
    let v = values(dims.iter().product(), seed)
        .into_iter()
        .map(|u| {
            if (u + 1.0) / 2.0 < density {
                1.0f32
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu)
}

/// Max |a - b| relative to the reference's magnitude.
fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) -> Result<()> {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes differ");
    let a = a.flatten_all()?.to_vec1::<f32>()?;
    let b = b.flatten_all()?.to_vec1::<f32>()?;
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-3);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}: element {i}: {x} vs {y} (scale {scale})"
        );
    }
    Ok(())
}
