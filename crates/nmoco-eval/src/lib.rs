//! Evaluation of pre-trained encoders: linear probe, kNN, fine-tuning, baselines.
//!
//! Work in progress: see ARCHITECTURE.md for what this crate will hold.
