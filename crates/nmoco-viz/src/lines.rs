//! Filled in by the crate that first needs it.
