//! Helpers shared by the integration tests (tiny inputs and configs); the random generators
//! are the workspace's (`nmoco_testkit`).
#![allow(dead_code)]

use candle_core::{Device, Result, Tensor};
use nmoco_models::{BackboneConfig, NeuronConfig, SpikformerConfig};
use nmoco_testkit::Lcg;

pub const DEV: Device = Device::Cpu;

/// Deterministic values in [0, 1) (candle's CPU RNG cannot be seeded).
pub fn lcg(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = Lcg::new(seed);
    (0..n).map(|_| rng.next_unit()).collect()
}

/// Binary event-like frames with about `p` ones.
pub fn frames(dims: &[usize], p: f32, seed: u64) -> Result<Tensor> {
    let n = dims.iter().product();
    let v: Vec<f32> = lcg(seed, n)
        .into_iter()
        .map(|u| if u < p { 1.0 } else { 0.0 })
        .collect();
    Tensor::from_vec(v, dims, &DEV)
}

/// A one-block Spikformer of width 32 (4 heads) on 2-channel input.
pub fn tiny_spikformer() -> BackboneConfig {
    BackboneConfig::Spikformer(SpikformerConfig {
        in_channels: 2,
        embed_dim: 32,
        depth: 1,
        heads: 4,
        mlp_ratio: 2,
        sps_pool: vec![false, false, true, true],
        attn_threshold: 0.5,
        attn_scale: 0.125,
        neuron: NeuronConfig::default(),
    })
}
