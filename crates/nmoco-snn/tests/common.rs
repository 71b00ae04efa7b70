//! Helpers shared by the integration tests: the workspace's parity-test helpers
//! (`nmoco_snn::testing`) in the forms these tests use.
#![allow(dead_code, unused_imports)]

use candle_core::Tensor;
use nmoco_snn::NeuronConfig;
pub use nmoco_snn::testing::{rand_tensor, rel_err};

/// Every neuron variant: kind x reset x decay_input x detach x surrogate.
pub fn all_configs() -> Vec<NeuronConfig> {
    NeuronConfig::all_variants()
}

/// All elements of `t` as f32 (panics on a candle error: test code).
pub fn flat(t: &Tensor) -> Vec<f32> {
    nmoco_snn::testing::flat(t).expect("tensor to vec")
}
