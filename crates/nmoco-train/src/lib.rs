//! NeuroMoCo pre-training: momentum encoder, queue, MixInfoNCE, optimizers, checkpoints.
//!
//! Work in progress: see ARCHITECTURE.md for what this crate will hold.
