//! Synthetic event-camera dataset generator written in the DVS128 Gesture layout.
//!
//! Work in progress: see ARCHITECTURE.md for what this crate will hold.
