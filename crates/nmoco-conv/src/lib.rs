//! Fast CPU convolution and batch-norm custom ops for candle (forward and backward).
//!
//! Work in progress: see ARCHITECTURE.md for what this crate will hold.
