//! Helpers shared by the integration tests.
#![allow(dead_code)]

use candle_core::{Device, Result, Tensor};
use nmoco_snn::{NeuronConfig, NeuronKind, Surrogate};

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
    let mut out = Vec::new();
    for kind in [NeuronKind::If, NeuronKind::Lif, NeuronKind::Plif] {
        for v_reset in [Some(0.0), Some(-0.25), None] {
            for decay_input in [true, false] {
                if kind == NeuronKind::If && !decay_input {
                    continue;
                }
                for detach_reset in [true, false] {
                    for surrogate in Surrogate::ALL {
                        out.push(NeuronConfig {
                            kind,
                            tau: if kind == NeuronKind::Plif { 3.0 } else { 2.0 },
                            v_threshold: 1.0,
                            v_reset,
                            decay_input,
                            detach_reset,
                            surrogate,
                            ..NeuronConfig::default()
                        });
                    }
                }
            }
        }
    }
    out
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
