//! Generator configuration and its validation.

use nmoco_events::SensorSize;

use crate::Error;
use crate::scene::{CameraParams, MAX_CLASSES};

/// One lighting condition: it scales the object contrast and sets the sensor's threshold and
/// noise (nuisances the representation should ignore). The name goes into the file names
/// (`userNN_<name>.aedat`).
#[derive(Debug, Clone, PartialEq)]
pub struct Lighting {
    pub name: String,
    /// Factor on the object's log contrast.
    pub contrast: f64,
    /// Mean contrast threshold, log units.
    pub threshold: f64,
    /// Per-pixel threshold standard deviation.
    pub threshold_sigma: f64,
    /// Background activity per pixel, Hz.
    pub noise_hz: f64,
}

impl Lighting {
    fn new(name: &str, contrast: f64, threshold: f64, threshold_sigma: f64, noise_hz: f64) -> Self {
        Lighting {
            name: name.to_string(),
            contrast,
            threshold,
            threshold_sigma,
            noise_hz,
        }
    }

    /// The three default conditions: `bright`, `office`, `dim` (lower contrast, higher
    /// threshold, more mismatch and noise as the light drops).
    pub fn defaults() -> Vec<Lighting> {
        vec![
            Lighting::new("bright", 1.0, 0.15, 0.02, 0.05),
            Lighting::new("office", 0.8, 0.17, 0.03, 0.15),
            Lighting::new("dim", 0.6, 0.20, 0.04, 0.4),
        ]
    }
}

/// What to generate. Recordings are `users × lightings`; each holds every class
/// `per_class` times in random order.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Number of classes K (2..=12); labels in the CSVs are 1..=K.
    pub classes: usize,
    /// Samples of each class per recording.
    pub per_class: usize,
    /// Number of users (`user01` ..); the first `train_users` form the train split.
    pub users: usize,
    pub train_users: usize,
    pub lightings: Vec<Lighting>,
    pub sensor: SensorSize,
    /// Range of a labelled motion segment, µs (drawn uniformly).
    pub segment_us: (i64, i64),
    /// Range of the unlabelled gap before each segment, µs. The previous object stays still
    /// for the first 30 % of the gap, disappears, the next object appears at 60 %, and its
    /// motion starts at the end of the gap.
    pub gap_us: (i64, i64),
    /// Time between renders, µs (at most 1000, i.e. at least 1 kHz).
    pub render_step_us: i64,
    pub refractory_us: i64,
    pub hot_pixels: usize,
    pub hot_pixel_hz: f64,
    /// Background texture strength, log units.
    pub background_texture: f64,
    pub seed: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            classes: 10,
            per_class: 2,
            users: 9,
            train_users: 7,
            lightings: Lighting::defaults(),
            sensor: SensorSize {
                width: 128,
                height: 128,
            },
            segment_us: (300_000, 600_000),
            gap_us: (100_000, 250_000),
            render_step_us: 1000,
            refractory_us: 250,
            hot_pixels: 4,
            hot_pixel_hz: 100.0,
            background_texture: 0.1,
            seed: 0,
        }
    }
}

fn invalid(field: &'static str, value: impl ToString, reason: &'static str) -> Error {
    Error::InvalidConfig {
        field,
        value: value.to_string(),
        reason,
    }
}

impl SynthConfig {
    /// Check every field; the generator relies on this.
    pub fn validate(&self) -> Result<(), Error> {
        if !(2..=MAX_CLASSES).contains(&self.classes) {
            return Err(invalid("classes", self.classes, "must be in 2..=12"));
        }
        if self.per_class == 0 || self.per_class > 100 {
            return Err(invalid("per_class", self.per_class, "must be in 1..=100"));
        }
        if self.users < 2 || self.users > 99 {
            return Err(invalid("users", self.users, "must be in 2..=99"));
        }
        if self.train_users == 0 || self.train_users >= self.users {
            return Err(invalid(
                "train_users",
                self.train_users,
                "must be at least 1 and less than users",
            ));
        }
        if self.lightings.is_empty() {
            return Err(invalid("lightings", 0, "needs at least one lighting"));
        }
        for (i, l) in self.lightings.iter().enumerate() {
            let ok_name = !l.name.is_empty()
                && l.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok_name {
                return Err(invalid(
                    "lightings.name",
                    &l.name,
                    "must be non-empty [a-z0-9_]",
                ));
            }
            if self.lightings[..i].iter().any(|o| o.name == l.name) {
                return Err(invalid("lightings.name", &l.name, "names must be distinct"));
            }
            if !(l.contrast.is_finite() && l.contrast > 0.0 && l.contrast <= 5.0) {
                return Err(invalid(
                    "lightings.contrast",
                    l.contrast,
                    "must be in (0, 5]",
                ));
            }
            if !(l.threshold.is_finite() && l.threshold >= 0.05 && l.threshold <= 2.0) {
                return Err(invalid(
                    "lightings.threshold",
                    l.threshold,
                    "must be in [0.05, 2]",
                ));
            }
            if !(l.threshold_sigma.is_finite() && (0.0..=1.0).contains(&l.threshold_sigma)) {
                return Err(invalid(
                    "lightings.threshold_sigma",
                    l.threshold_sigma,
                    "must be in [0, 1]",
                ));
            }
            if !(l.noise_hz.is_finite() && (0.0..=1000.0).contains(&l.noise_hz)) {
                return Err(invalid(
                    "lightings.noise_hz",
                    l.noise_hz,
                    "must be in [0, 1000]",
                ));
            }
        }
        let (w, h) = (self.sensor.width, self.sensor.height);
        if !(32..=1024).contains(&w) || !(32..=1024).contains(&h) {
            return Err(invalid(
                "sensor",
                format!("{w}x{h}"),
                "width and height must be in 32..=1024",
            ));
        }
        let (s0, s1) = self.segment_us;
        if s0 < 50_000 || s1 < s0 || s1 > 10_000_000 {
            return Err(invalid(
                "segment_us",
                format!("{s0}..{s1}"),
                "must satisfy 50000 <= min <= max <= 10000000",
            ));
        }
        let (g0, g1) = self.gap_us;
        if g0 < 10_000 || g1 < g0 || g1 > 10_000_000 {
            return Err(invalid(
                "gap_us",
                format!("{g0}..{g1}"),
                "must satisfy 10000 <= min <= max <= 10000000",
            ));
        }
        if !(1..=1000).contains(&self.render_step_us) {
            return Err(invalid(
                "render_step_us",
                self.render_step_us,
                "must be in 1..=1000 (at least 1 kHz)",
            ));
        }
        if !(0..=100_000).contains(&self.refractory_us) {
            return Err(invalid(
                "refractory_us",
                self.refractory_us,
                "must be in 0..=100000",
            ));
        }
        if self.hot_pixels > 1000 {
            return Err(invalid(
                "hot_pixels",
                self.hot_pixels,
                "must be at most 1000",
            ));
        }
        if !(self.hot_pixel_hz.is_finite() && (0.0..=10_000.0).contains(&self.hot_pixel_hz)) {
            return Err(invalid(
                "hot_pixel_hz",
                self.hot_pixel_hz,
                "must be in [0, 10000]",
            ));
        }
        if !(self.background_texture.is_finite() && (0.0..=2.0).contains(&self.background_texture))
        {
            return Err(invalid(
                "background_texture",
                self.background_texture,
                "must be in [0, 2]",
            ));
        }
        Ok(())
    }

    /// Camera parameters of a recording under `lighting`.
    pub fn camera(&self, lighting: &Lighting) -> CameraParams {
        CameraParams {
            threshold: lighting.threshold,
            threshold_sigma: lighting.threshold_sigma,
            refractory_us: self.refractory_us,
            noise_hz: lighting.noise_hz,
            hot_pixels: self.hot_pixels,
            hot_pixel_hz: self.hot_pixel_hz,
            render_step_us: self.render_step_us,
        }
    }

    /// Number of samples per recording.
    pub fn samples_per_recording(&self) -> usize {
        self.classes * self.per_class
    }
}
