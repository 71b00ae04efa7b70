//! Synthetic event-camera dataset generator written in the DVS128 Gesture layout.
//!
//! A small event-camera simulator: an animated scene (one textured object over a mildly
//! textured static background) is rendered at 1 kHz or more; every pixel keeps a reference log
//! intensity and emits ON/OFF events when the current log intensity moves a per-pixel contrast
//! threshold away from it (thresholds drawn with mismatch), with timestamps interpolated
//! linearly between renders and a refractory period; background activity and a few hot
//! pixels are added. Classes are motion patterns ([`CLASS_NAMES`]); shape, size, position,
//! speed, contrast, texture, drift and noise rate are nuisances drawn independently of the
//! class.
//!
//! [`generate`] writes `userNN_<lighting>.aedat` (AEDAT 3.1), `userNN_<lighting>_labels.csv`,
//! `trials_to_train.txt`, `trials_to_test.txt` and `gesture_mapping.csv`, exactly as DVS128
//! Gesture is laid out, so the real loader reads it. Output is a pure function of the
//! configuration (seed included): each recording has its own RNG seeded from
//! `(seed, user, lighting)`, so the thread count does not change a byte.
//!
//! ```
//! use nmoco_synth::{SampleParams, CameraParams, simulate_sample};
//! use nmoco_events::SensorSize;
//! use rand::SeedableRng;
//!
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
//! let sensor = SensorSize { width: 64, height: 64 };
//! let params = SampleParams::random(sensor, 100_000, 1.0, CameraParams::default(), &mut rng);
//! let events = simulate_sample(0, &params, &mut rng).unwrap();
//! assert!(events.t.windows(2).all(|w| w[0] <= w[1]));
//! ```

#![forbid(unsafe_code)]

mod camera;
mod config;
pub mod fixture;
mod generate;
mod scene;

use std::path::PathBuf;

pub use config::{Lighting, SynthConfig};
pub use generate::{
    LABELS_HEADER, Segment, SimRecording, Summary, count_in, generate, labels_csv, recording_seed,
    recording_stem, simulate_recording, simulate_sample,
};
pub use scene::{
    CLASS_NAMES, CameraParams, MAX_CLASSES, SampleParams, Shape, Texture, TextureKind, class_names,
    ranges,
};

/// Errors of the generator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid synthetic config: {field} = {value}: {reason}")]
    InvalidConfig {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("class index {class} out of range (there are {max} classes)")]
    ClassOutOfRange { class: usize, max: usize },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write events to {path}: {source}")]
    Events {
        path: PathBuf,
        source: nmoco_events::Error,
    },
}
