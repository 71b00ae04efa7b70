//! Helpers shared by the integration tests.
#![allow(dead_code)]

use candle_core::{Device, Result, Tensor};
use nmoco_snn::NeuronConfig;

/// Deterministic pseudo-random values in `[lo, hi)` (xorshift; tests stay hermetic).
pub fn rand_vec(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * u
        })
        .collect()
}

pub fn rand_tensor(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_vec(rand_vec(n, lo, hi, seed), shape, &Device::Cpu)
}

/// Every neuron variant: kind x reset x decay_input x detach x surrogate.
pub fn all_configs() -> Vec<NeuronConfig> {
    NeuronConfig::all_variants()
}

pub fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(candle_core::DType::F32))
        .and_then(|t| t.to_vec1())
        .expect("tensor to vec")
}

/// Largest |a - b| relative to max(1, max |b|).
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}
