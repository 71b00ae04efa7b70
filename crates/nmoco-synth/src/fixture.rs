//! Small generated sets for the tests and benchmarks of the crates above (one definition,
//! used as a dev-dependency): two users, the first for train and the second for test, one
//! lighting, so both splits exist with the fewest recordings.

use std::path::Path;

use nmoco_events::SensorSize;

use crate::{Error, Lighting, Summary, SynthConfig, generate};

/// Two users (one train, one test), the first default lighting, `classes` motion classes with
/// `per_class` segments each per recording; everything else at its default (128×128 sensor).
pub fn config(classes: usize, per_class: usize, seed: u64) -> SynthConfig {
    SynthConfig {
        classes,
        per_class,
        users: 2,
        train_users: 1,
        lightings: Lighting::defaults()[..1].to_vec(),
        seed,
        ..Default::default()
    }
}

/// [`config`] on a 32×32 sensor with 50–60 ms segments and 10–12 ms gaps: a set that a test
/// decodes, caches and trains on in well under a second per epoch.
pub fn tiny_config(classes: usize, per_class: usize, seed: u64) -> SynthConfig {
    SynthConfig {
        sensor: SensorSize {
            width: 32,
            height: 32,
        },
        segment_us: (50_000, 60_000),
        gap_us: (10_000, 12_000),
        ..config(classes, per_class, seed)
    }
}

/// Write [`tiny_config`]`(classes, per_class, seed)` into `dir`.
pub fn tiny(dir: &Path, classes: usize, per_class: usize, seed: u64) -> Result<Summary, Error> {
    generate(&tiny_config(classes, per_class, seed), dir)
}
