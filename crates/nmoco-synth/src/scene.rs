//! The scene: one textured object over a static background, and the motion patterns that
//! define the classes.
//!
//! Coordinates are image coordinates: x to the right, y downwards, pixel centres at
//! `(x + 0.5, y + 0.5)`. A positive angle therefore turns clockwise on screen.

use std::f64::consts::{PI, TAU};

use nmoco_events::SensorSize;
use rand::Rng;

/// The motion patterns, in class order (class index `i` has label `i + 1` in the CSVs).
pub const CLASS_NAMES: [&str; 12] = [
    "translate_right",
    "translate_left",
    "translate_up",
    "translate_down",
    "rotate_cw",
    "rotate_ccw",
    "expand",
    "contract",
    "oscillate_horizontal",
    "oscillate_vertical",
    "orbit_cw",
    "orbit_ccw",
];

/// The largest number of classes the generator defines.
pub const MAX_CLASSES: usize = CLASS_NAMES.len();

/// The first `k` class names (at most [`MAX_CLASSES`]).
pub fn class_names(k: usize) -> Vec<String> {
    CLASS_NAMES
        .iter()
        .take(k)
        .map(|s| (*s).to_string())
        .collect()
}

/// Object outline. Sizes are relative to the object radius `r` (the shape fits in about a
/// disc of radius `1.3 r`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    Disc,
    Ring,
    Square,
    Triangle,
    /// Two parallel bars.
    Bars,
}

impl Shape {
    pub const ALL: [Shape; 5] = [
        Shape::Disc,
        Shape::Ring,
        Shape::Square,
        Shape::Triangle,
        Shape::Bars,
    ];

    /// Signed distance (in object units, radius 1) from `(u, v)` to the outline; negative
    /// inside.
    fn sdf(self, u: f64, v: f64) -> f64 {
        match self {
            Shape::Disc => (u * u + v * v).sqrt() - 1.0,
            Shape::Ring => ((u * u + v * v).sqrt() - 0.7).abs() - 0.3,
            Shape::Square => sd_box(u, v, 0.8, 0.8),
            Shape::Triangle => sd_triangle(u, v),
            Shape::Bars => sd_box(u, v - 0.4, 1.0, 0.2).min(sd_box(u, v + 0.4, 1.0, 0.2)),
        }
    }
}

fn sd_box(u: f64, v: f64, hx: f64, hy: f64) -> f64 {
    let dx = u.abs() - hx;
    let dy = v.abs() - hy;
    let ox = dx.max(0.0);
    let oy = dy.max(0.0);
    (ox * ox + oy * oy).sqrt() + dx.max(dy).min(0.0)
}

/// Equilateral triangle with circumradius 1 and its centroid at the origin, one vertex pointing
/// up on screen (towards -v), the base at v = 0.5.
fn sd_triangle(u: f64, v: f64) -> f64 {
    let k = 3f64.sqrt();
    let half_side = k / 2.0;
    let mut px = u.abs() - half_side;
    let mut py = -v + half_side / k;
    if px + k * py > 0.0 {
        let nx = (px - k * py) / 2.0;
        let ny = (-k * px - py) / 2.0;
        px = nx;
        py = ny;
    }
    px -= px.clamp(-2.0 * half_side, 0.0);
    -(px * px + py * py).sqrt() * py.signum()
}

/// Texture pattern, in object coordinates (it moves, turns and scales with the object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextureKind {
    /// A sinusoidal grating.
    Grating,
    /// Two crossed gratings at right angles, summed.
    Plaid,
    /// A product of two gratings (a smooth checkerboard).
    Checker,
}

impl TextureKind {
    pub const ALL: [TextureKind; 3] = [
        TextureKind::Grating,
        TextureKind::Plaid,
        TextureKind::Checker,
    ];
}

/// Texture parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Texture {
    pub kind: TextureKind,
    /// Cycles per object radius.
    pub cycles: f64,
    /// Orientation of the pattern in the object frame, radians.
    pub orientation: f64,
    pub phase: f64,
    /// Relative intensity modulation, in `[0, 1)`: the object's intensity is multiplied by
    /// `1 + amplitude * pattern` with `pattern` in `[-1, 1]`.
    pub amplitude: f64,
}

impl Texture {
    fn value(&self, u: f64, v: f64) -> f64 {
        let (s, c) = self.orientation.sin_cos();
        let a = u * c + v * s;
        let b = -u * s + v * c;
        let w = TAU * self.cycles;
        let p = match self.kind {
            TextureKind::Grating => (w * a + self.phase).sin(),
            TextureKind::Plaid => 0.5 * ((w * a + self.phase).sin() + (w * b).sin()),
            TextureKind::Checker => (w * a + self.phase).sin() * (w * b).sin(),
        };
        self.amplitude * p
    }
}

/// Camera and noise parameters of one simulated sensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraParams {
    /// Mean contrast threshold (log-intensity units), the same for ON and OFF.
    pub threshold: f64,
    /// Per-pixel standard deviation of the thresholds (mismatch), drawn once per sensor.
    pub threshold_sigma: f64,
    /// Minimum time between two events of one pixel, µs.
    pub refractory_us: i64,
    /// Background-activity rate per pixel, Hz.
    pub noise_hz: f64,
    /// Number of hot pixels.
    pub hot_pixels: usize,
    /// Firing rate of each hot pixel, Hz.
    pub hot_pixel_hz: f64,
    /// Time between two renders, µs (1000 = 1 kHz).
    pub render_step_us: i64,
}

impl Default for CameraParams {
    fn default() -> Self {
        Self {
            threshold: 0.2,
            threshold_sigma: 0.03,
            refractory_us: 250,
            noise_hz: 0.1,
            hot_pixels: 4,
            hot_pixel_hz: 100.0,
            render_step_us: 1000,
        }
    }
}

/// Nuisance parameters of one sample. The unit parameters (`size`, `position`, `pace`,
/// `phase`) lie in `[0, 1]` and are mapped into a range that depends on the class, so that
/// every class draws them from the same distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleParams {
    pub sensor: SensorSize,
    /// Duration of the motion, µs.
    pub duration_us: i64,
    pub shape: Shape,
    pub texture: Texture,
    /// Object size: 0 = diameter 15 % of the frame, 1 = 45 % (at the moment of largest size
    /// that the class allows).
    pub size: f64,
    /// Where the trajectory sits inside the frame, per axis, within the range that keeps the
    /// object's centre inside.
    pub position: (f64, f64),
    /// Initial orientation of the object, radians.
    pub orientation: f64,
    /// Speed of the class's motion within its range: 0 = slowest, 1 = fastest.
    pub pace: f64,
    /// Phase of the periodic motions (oscillation, orbit) and direction of the small drift, in
    /// turns.
    pub phase: f64,
    /// Slow drift added to every motion, px/s (a nuisance: small against the class motions).
    pub drift: (f64, f64),
    /// `ln(I_object / I_background)`: its sign says whether the object is brighter or darker.
    pub log_contrast: f64,
    /// Background texture strength (log units) and its random seed.
    pub background_texture: f64,
    pub camera: CameraParams,
}

/// Ranges of the nuisance variables, as drawn by [`SampleParams::random`].
pub mod ranges {
    /// Object diameter as a fraction of the smaller sensor side.
    pub const DIAMETER: (f64, f64) = (0.15, 0.45);
    /// Magnitude of the log contrast between object and background (before the lighting's
    /// contrast factor).
    pub const LOG_CONTRAST: (f64, f64) = (0.35, 1.0);
    pub const TEXTURE_CYCLES: (f64, f64) = (0.6, 2.0);
    pub const TEXTURE_AMPLITUDE: (f64, f64) = (0.25, 0.5);
    /// Drift speed as a fraction of the smaller sensor side per second.
    pub const DRIFT: f64 = 0.08;
    /// Translation speed, sensor sides per second.
    pub const TRANSLATE_SPEED: (f64, f64) = (0.4, 1.2);
    /// Rotation speed, rad/s.
    pub const ROTATE_OMEGA: (f64, f64) = (3.0, 7.0);
    /// Growth rate of expansion/contraction, 1/s (radius ∝ exp(±rate·t)).
    pub const SCALE_RATE: (f64, f64) = (1.2, 2.2);
    /// Oscillation amplitude (sensor sides) and frequency (Hz).
    pub const OSC_AMPLITUDE: (f64, f64) = (0.05, 0.12);
    pub const OSC_FREQ: (f64, f64) = (1.5, 3.0);
    /// Orbit radius (sensor sides) and angular speed (rad/s).
    pub const ORBIT_RADIUS: (f64, f64) = (0.08, 0.18);
    pub const ORBIT_OMEGA: (f64, f64) = (4.0, 8.0);
}

fn lerp(t: f64, (a, b): (f64, f64)) -> f64 {
    a + (b - a) * t
}

impl SampleParams {
    /// Draw the nuisance parameters. `contrast` scales the object's log contrast (a lighting
    /// property); the camera parameters are copied.
    pub fn random<R: Rng + ?Sized>(
        sensor: SensorSize,
        duration_us: i64,
        contrast: f64,
        camera: CameraParams,
        rng: &mut R,
    ) -> SampleParams {
        let shape = Shape::ALL[rng.random_range(0..Shape::ALL.len())];
        let texture = Texture {
            kind: TextureKind::ALL[rng.random_range(0..TextureKind::ALL.len())],
            cycles: lerp(rng.random(), ranges::TEXTURE_CYCLES),
            orientation: rng.random::<f64>() * PI,
            phase: rng.random::<f64>() * TAU,
            amplitude: lerp(rng.random(), ranges::TEXTURE_AMPLITUDE),
        };
        let side = f64::from(sensor.width.min(sensor.height));
        let drift_speed = rng.random::<f64>() * ranges::DRIFT * side;
        let drift_dir = rng.random::<f64>() * TAU;
        let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
        let log_contrast = sign * contrast * lerp(rng.random(), ranges::LOG_CONTRAST);
        SampleParams {
            sensor,
            duration_us,
            shape,
            texture,
            size: rng.random(),
            position: (rng.random(), rng.random()),
            orientation: rng.random::<f64>() * TAU,
            pace: rng.random(),
            phase: rng.random(),
            drift: (drift_speed * drift_dir.cos(), drift_speed * drift_dir.sin()),
            log_contrast,
            background_texture: 0.1,
            camera,
        }
    }
}

/// Pose of the object at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectState {
    pub cx: f64,
    pub cy: f64,
    /// Orientation, radians (positive = clockwise on screen).
    pub theta: f64,
    /// Radius in pixels.
    pub r: f64,
}

/// The class's motion relative to the start pose.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Motion {
    Translate {
        vx: f64,
        vy: f64,
    },
    Rotate {
        omega: f64,
    },
    Scale {
        rate: f64,
    },
    Oscillate {
        ax: f64,
        ay: f64,
        freq: f64,
        phase: f64,
    },
    Orbit {
        radius: f64,
        omega: f64,
        phase: f64,
    },
}

impl Motion {
    /// Offset of the centre, added angle and radius factor at `t` seconds after the start.
    fn at(&self, t: f64) -> (f64, f64, f64, f64) {
        match *self {
            Motion::Translate { vx, vy } => (vx * t, vy * t, 0.0, 1.0),
            Motion::Rotate { omega } => (0.0, 0.0, omega * t, 1.0),
            Motion::Scale { rate } => (0.0, 0.0, 0.0, (rate * t).exp()),
            Motion::Oscillate {
                ax,
                ay,
                freq,
                phase,
            } => {
                let s = (TAU * freq * t + phase).sin() - phase.sin();
                (ax * s, ay * s, 0.0, 1.0)
            }
            Motion::Orbit {
                radius,
                omega,
                phase,
            } => {
                let a = omega * t + phase;
                (
                    radius * (a.cos() - phase.cos()),
                    radius * (a.sin() - phase.sin()),
                    0.0,
                    1.0,
                )
            }
        }
    }
}

/// A fully specified moving object: appearance plus trajectory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Object {
    shape: Shape,
    texture: Texture,
    /// Object intensity relative to the background level (before texture).
    gain: f64,
    start: ObjectState,
    motion: Motion,
    drift: (f64, f64),
    /// Motion duration, seconds; the pose is frozen outside `[0, duration]`.
    duration: f64,
}

impl Object {
    /// Build the object for `class` (0-based, `< MAX_CLASSES`) from the nuisance parameters.
    pub(crate) fn new(class: usize, p: &SampleParams) -> Object {
        let side = f64::from(p.sensor.width.min(p.sensor.height));
        let d = p.duration_us as f64 * 1e-6;
        let r_min = 0.5 * ranges::DIAMETER.0 * side;
        let r_max = 0.5 * ranges::DIAMETER.1 * side;
        let pace = p.pace.clamp(0.0, 1.0);
        let mut r0 = lerp(p.size.clamp(0.0, 1.0), (r_min, r_max));
        let phase = p.phase.clamp(0.0, 1.0) * TAU;
        let motion = match class {
            0..=3 => {
                let speed = lerp(pace, ranges::TRANSLATE_SPEED) * side;
                let (vx, vy) = match class {
                    0 => (speed, 0.0),
                    1 => (-speed, 0.0),
                    2 => (0.0, -speed),
                    _ => (0.0, speed),
                };
                Motion::Translate { vx, vy }
            }
            4 | 5 => {
                let omega = lerp(pace, ranges::ROTATE_OMEGA);
                Motion::Rotate {
                    omega: if class == 4 { omega } else { -omega },
                }
            }
            6 | 7 => {
                let rate = lerp(pace, ranges::SCALE_RATE);
                let factor = (rate * d).exp();
                // Keep the radius inside a widened size range over the whole motion (the
                // growth needs room: diameters from 9 % to 58 % of the frame).
                let (r_min, r_max) = (0.6 * r_min, 1.3 * r_max);
                let (lo, hi) = if class == 6 {
                    (r_min, (r_max / factor).max(r_min))
                } else {
                    ((r_min * factor).min(r_max), r_max)
                };
                r0 = lerp(p.size.clamp(0.0, 1.0), (lo, hi));
                Motion::Scale {
                    rate: if class == 6 { rate } else { -rate },
                }
            }
            8 | 9 => {
                let amp = lerp(pace, ranges::OSC_AMPLITUDE) * side;
                let freq = lerp(pace, ranges::OSC_FREQ);
                let (ax, ay) = if class == 8 { (amp, 0.0) } else { (0.0, amp) };
                Motion::Oscillate {
                    ax,
                    ay,
                    freq,
                    phase,
                }
            }
            _ => {
                let radius = lerp(pace, ranges::ORBIT_RADIUS) * side;
                let omega = lerp(pace, ranges::ORBIT_OMEGA);
                Motion::Orbit {
                    radius,
                    omega: if class == 10 { omega } else { -omega },
                    phase,
                }
            }
        };
        // Place the trajectory: sample the centre offsets, then put the start point so that
        // every centre stays at least `margin` inside the frame.
        let (w, h) = (f64::from(p.sensor.width), f64::from(p.sensor.height));
        let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for i in 0..=32 {
            let t = d * f64::from(i) / 32.0;
            let (ox, oy, _, _) = motion.at(t);
            let (ox, oy) = (ox + p.drift.0 * t, oy + p.drift.1 * t);
            x_lo = x_lo.min(ox);
            x_hi = x_hi.max(ox);
            y_lo = y_lo.min(oy);
            y_hi = y_hi.max(oy);
        }
        let margin = (0.6 * r0).min(0.15 * side);
        let place = |u: f64, lo: f64, hi: f64, extent: f64| {
            let a = margin - lo;
            let b = extent - margin - hi;
            if a <= b {
                lerp(u.clamp(0.0, 1.0), (a, b))
            } else {
                0.5 * (a + b)
            }
        };
        let cx = place(p.position.0, x_lo, x_hi, w);
        let cy = place(p.position.1, y_lo, y_hi, h);
        Object {
            shape: p.shape,
            texture: p.texture,
            gain: p.log_contrast.exp(),
            start: ObjectState {
                cx,
                cy,
                theta: p.orientation,
                r: r0,
            },
            motion,
            drift: p.drift,
            duration: d,
        }
    }

    /// Pose at `t` seconds after the motion start (frozen before 0 and after the end).
    pub fn state(&self, t: f64) -> ObjectState {
        let t = t.clamp(0.0, self.duration);
        let (ox, oy, dth, k) = self.motion.at(t);
        ObjectState {
            cx: self.start.cx + ox + self.drift.0 * t,
            cy: self.start.cy + oy + self.drift.1 * t,
            theta: self.start.theta + dth,
            r: self.start.r * k,
        }
    }

    /// Pixel bounding box `[x0, x1) × [y0, y1)` of the object in pose `s`, clipped to the
    /// sensor.
    pub(crate) fn bbox(&self, s: &ObjectState, w: usize, h: usize) -> (usize, usize, usize, usize) {
        let ext = 1.3 * s.r + 2.0;
        let clip = |v: f64, n: usize| v.clamp(0.0, n as f64) as usize;
        (
            clip((s.cx - ext).floor(), w),
            clip((s.cx + ext).ceil(), w),
            clip((s.cy - ext).floor(), h),
            clip((s.cy + ext).ceil(), h),
        )
    }

    /// Intensity at pixel centre `(px, py)` given the background intensity there, or `None`
    /// where the object does not cover the pixel at all (the background shows).
    #[inline]
    pub(crate) fn intensity(
        &self,
        s: &ObjectState,
        sin_cos: (f64, f64),
        px: f64,
        py: f64,
        bg: f64,
    ) -> Option<f64> {
        let dx = px - s.cx;
        let dy = py - s.cy;
        let inv_r = 1.0 / s.r;
        let (sn, cs) = sin_cos;
        // Rotate by -theta into the object frame.
        let u = (dx * cs + dy * sn) * inv_r;
        let v = (-dx * sn + dy * cs) * inv_r;
        let sd_px = self.shape.sdf(u, v) * s.r;
        if sd_px >= 0.5 {
            return None;
        }
        // Coverage of the pixel: a one-pixel linear ramp across the outline (antialiasing).
        let cover = (0.5 - sd_px).min(1.0);
        let obj = self.gain * (1.0 + self.texture.value(u, v));
        Some(bg * (1.0 - cover) + obj * cover)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triangle_sdf_signs() {
        assert!(sd_triangle(0.0, 0.0) < 0.0);
        assert!(sd_triangle(0.0, 2.0) > 0.0);
        assert!(sd_triangle(2.0, 0.0) > 0.0);
        // Vertex at (0, -1), base at v = 0.5.
        assert!(sd_triangle(0.0, -0.9) < 0.0);
        assert!(sd_triangle(0.0, -1.1) > 0.0);
        assert!(sd_triangle(0.0, 0.45) < 0.0);
        assert!(sd_triangle(0.0, 0.55) > 0.0);
    }
}
