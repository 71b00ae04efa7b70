//! Spiking neurons (IF, LIF, PLIF) with fused surrogate-gradient ops for candle, CPU and CUDA.
//!
//! Work in progress: see ARCHITECTURE.md for what this crate will hold.
