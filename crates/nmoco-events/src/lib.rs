//! Event-camera file decoders and writers with no ML dependency.
//!
//! Formats: N-MNIST / N-Caltech101 40-bit binary, AEDAT 2.0 (jAER), AEDAT 3.1 (cAER, DVS128
//! Gesture) and AEDAT 4.0 (iniVation DV). Decoded events are a struct of arrays, [`Events`].

mod events;

pub use events::{Event, Events, Recording, SensorSize, Skipped};
