//! Dataset loaders (CIFAR10-DVS, DVS128 Gesture, N-Caltech101, N-MNIST, synthetic), splits, frame cache, two-view batching.
//!
//! Work in progress: see ARCHITECTURE.md for what this crate will hold.
