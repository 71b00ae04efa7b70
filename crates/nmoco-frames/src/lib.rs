//! Event-to-frame integration (equal count, equal time, fixed window) and event/frame augmentations; no ML dependency.
//!
//! Work in progress: see ARCHITECTURE.md for what this crate will hold.
