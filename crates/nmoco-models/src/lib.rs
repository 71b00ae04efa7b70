//! Spiking backbones (SEW-ResNet, Spikformer) and projection heads on candle.
//!
//! Work in progress: see ARCHITECTURE.md for what this crate will hold.
