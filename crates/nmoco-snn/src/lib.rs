//! Spiking neurons (IF, LIF, PLIF) with fused surrogate-gradient ops for candle, CPU and CUDA.
//!
//! - [`NeuronConfig`] describes a neuron: kind, `tau`, threshold, hard (`v_reset = Some(v)`) or
//!   soft (`None`) reset, `decay_input`, `detach_reset`, [`Surrogate`], and the implementation
//!   ([`NeuronImpl::Fused`] or the plain-ops [`NeuronImpl::Reference`]; never a silent fallback).
//! - [`MultiStepNeuron`] runs `[T, ...]` sequences (membrane reset every call);
//!   [`SingleStepNeuron`] streams one step at a time.
//! - [`lif_multistep`] / [`plif_multistep`] are the fused ops (one custom op for the whole
//!   forward time loop, one for BPTT); [`lif_multistep_ref`] / [`plif_multistep_ref`] their
//!   plain-candle twins.
//! - [`seq_fold`] / [`seq_unfold`] / [`SeqToAnn`] fold time into the batch for stateless layers.
//!
//! The forward pass is exactly the Heaviside step `[h - v_th >= 0]`; the backward pass uses the
//! surrogate's derivative. CPU kernels take f32; the CUDA kernels (feature `cuda`, compiled at
//! run time with NVRTC from `kernels/*.cu`) take f32, f16 and bf16.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use nmoco_snn::{lif_multistep, NeuronConfig};
//! let x = Tensor::new(&[[1.5f32, 2.5], [1.5, 0.1], [1.5, 0.0]], &Device::Cpu)?; // [T=3, N=2]
//! let s = lif_multistep(&x, &NeuronConfig::default())?; // LIF, tau 2, v_th 1, hard reset to 0
//! assert_eq!(s.to_vec2::<f32>()?, vec![vec![0.0, 1.0], vec![1.0, 0.0], vec![0.0, 0.0]]);
//! # Ok::<(), candle_core::Error>(())
//! ```

mod config;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
pub mod cuda_variants;
mod error;
mod layers;
mod neuron;
pub mod nvrtc;
mod ops;
mod reference;
mod surrogate;
#[cfg(feature = "testing")]
pub mod testing;

/// A zeroed `f32` buffer as the CPU ops allocate their outputs (huge-page advised on Linux).
pub fn alloc_output(n: usize) -> Vec<f32> {
    cpu::alloc_out(n)
}

pub use config::{NeuronConfig, NeuronImpl, NeuronKind};
#[cfg(feature = "cuda")]
pub use cuda::{
    PoolMemory as CudaPoolMemory, pool_memory as cuda_pool_memory, precompile as cuda_precompile,
    retain_pool_memory as cuda_retain_pool_memory,
};
pub use error::SnnError;
pub use layers::{SeqToAnn, seq_apply, seq_fold, seq_unfold};
pub use neuron::{MultiStepNeuron, SingleStepNeuron};
pub use ops::{
    bn_batch_stats, bn_lif_multistep, bn_lif_multistep_stats, lif_multistep, lif_multistep_bwd,
    max_pool_3x3_s2, max_pool_3x3_s2_ref, plif_multistep, sew_iand, sew_iand_fused, sew_iand_ref,
};
pub use reference::{lif_multistep_ref, plif_multistep_ref, spike_ref};
pub use surrogate::Surrogate;
