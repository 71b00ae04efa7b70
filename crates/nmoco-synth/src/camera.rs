//! The event-camera model: per-pixel log-intensity change detection with threshold mismatch,
//! interpolated timestamps, a refractory period, background activity and hot pixels.

use nmoco_events::{Events, SensorSize};
use rand::Rng;
use rand::seq::index::sample;
use rand_distr::{Distribution, Normal, Poisson};

use crate::scene::{CameraParams, Object, ObjectState};

/// Smallest threshold a pixel can draw (guards against the tail of the mismatch normal).
const MIN_THRESHOLD: f64 = 0.05;

/// One simulated sensor. Events are collected as sort keys (`t`, pixel, polarity) and decoded
/// once at the end.
pub(crate) struct Camera {
    w: usize,
    h: usize,
    params: CameraParams,
    c_on: Vec<f64>,
    c_off: Vec<f64>,
    /// Background intensity (linear) and the current log intensity / reference per pixel.
    bg: Vec<f64>,
    bg_log: Vec<f64>,
    l_prev: Vec<f64>,
    l_ref: Vec<f64>,
    last_t: Vec<i64>,
    /// Bits used by the pixel index in a key.
    pix_bits: u32,
    keys: Vec<u64>,
    /// Signal events suppressed by the refractory period.
    pub(crate) refractory_drops: u64,
}

impl Camera {
    /// A sensor with fresh threshold mismatch, a fresh static background texture of strength
    /// `bg_texture` (log units) and random initial references.
    pub(crate) fn new<R: Rng + ?Sized>(
        sensor: SensorSize,
        params: CameraParams,
        bg_texture: f64,
        rng: &mut R,
    ) -> Camera {
        let w = usize::from(sensor.width);
        let h = usize::from(sensor.height);
        let n = w * h;
        let sigma = params.threshold_sigma.max(0.0);
        let draw = |rng: &mut R| {
            let z: f64 = match Normal::new(0.0, 1.0) {
                Ok(d) => d.sample(rng),
                Err(_) => 0.0,
            };
            (params.threshold + sigma * z).max(MIN_THRESHOLD)
        };
        let mut c_on = Vec::with_capacity(n);
        let mut c_off = Vec::with_capacity(n);
        for _ in 0..n {
            c_on.push(draw(rng));
            c_off.push(draw(rng));
        }
        // Background: a sum of three random low-frequency gratings, in log units.
        let mut waves = [(0.0f64, 0.0f64, 0.0f64); 3];
        for wv in &mut waves {
            let angle = rng.random::<f64>() * std::f64::consts::TAU;
            let cycles = 1.0 + 3.0 * rng.random::<f64>();
            let k = std::f64::consts::TAU * cycles / (w.max(h) as f64);
            *wv = (k * angle.cos(), k * angle.sin(), rng.random::<f64>() * 6.3);
        }
        let mut bg = Vec::with_capacity(n);
        let mut bg_log = Vec::with_capacity(n);
        let mut l_prev = Vec::with_capacity(n);
        let mut l_ref = Vec::with_capacity(n);
        for y in 0..h {
            for x in 0..w {
                let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
                let s: f64 = waves
                    .iter()
                    .map(|&(kx, ky, ph)| (kx * px + ky * py + ph).sin())
                    .sum::<f64>()
                    / 3.0;
                let l = bg_texture * s;
                bg.push(l.exp());
                bg_log.push(l);
                l_prev.push(l);
                let i = l_ref.len();
                let off = (rng.random::<f64>() - 0.5) * 0.5 * (c_on[i] + c_off[i]) * 0.5;
                l_ref.push(l + off);
            }
        }
        let pix_bits = usize::BITS - (n.max(2) - 1).leading_zeros();
        Camera {
            w,
            h,
            params,
            c_on,
            c_off,
            bg,
            bg_log,
            l_prev,
            l_ref,
            last_t: vec![i64::MIN / 2; n],
            pix_bits,
            keys: Vec::new(),
            refractory_drops: 0,
        }
    }

    /// Set the current image to `obj` in pose `s` without emitting events, and reset every
    /// reference to it (plus the usual random offset already drawn at construction).
    pub(crate) fn settle(&mut self, obj: &Object, s: &ObjectState) {
        let sc = s.theta.sin_cos();
        let (x0, x1, y0, y1) = obj.bbox(s, self.w, self.h);
        for y in y0..y1 {
            for x in x0..x1 {
                let i = y * self.w + x;
                let l = obj
                    .intensity(s, sc, x as f64 + 0.5, y as f64 + 0.5, self.bg[i])
                    .map_or(self.bg_log[i], f64::ln);
                let off = self.l_ref[i] - self.l_prev[i];
                self.l_prev[i] = l;
                self.l_ref[i] = l + off;
            }
        }
    }

    /// Render the scene at `t1` inside the union of the boxes of the previous and current
    /// poses, and emit the events of every pixel whose log intensity crossed a threshold since
    /// the render at `t0`, with timestamps interpolated linearly between the two renders.
    pub(crate) fn step(
        &mut self,
        t0: i64,
        t1: i64,
        prev: Option<(&Object, ObjectState)>,
        cur: Option<(&Object, ObjectState)>,
    ) {
        let boxes = [
            prev.map(|(o, s)| o.bbox(&s, self.w, self.h)),
            cur.map(|(o, s)| o.bbox(&s, self.w, self.h)),
        ];
        let mut region: Option<(usize, usize, usize, usize)> = None;
        for b in boxes.into_iter().flatten() {
            region = Some(match region {
                None => b,
                Some(r) => (r.0.min(b.0), r.1.max(b.1), r.2.min(b.2), r.3.max(b.3)),
            });
        }
        let Some((x0, x1, y0, y1)) = region else {
            return;
        };
        let sc = cur.map(|(_, s)| s.theta.sin_cos()).unwrap_or((0.0, 1.0));
        let dt = (t1 - t0) as f64;
        let refractory = self.params.refractory_us;
        for y in y0..y1 {
            for x in x0..x1 {
                let i = y * self.w + x;
                let l1 = match cur {
                    Some((o, s)) => o
                        .intensity(&s, sc, x as f64 + 0.5, y as f64 + 0.5, self.bg[i])
                        .map_or(self.bg_log[i], f64::ln),
                    None => self.bg_log[i],
                };
                let l0 = self.l_prev[i];
                if l1 == l0 {
                    continue;
                }
                self.l_prev[i] = l1;
                loop {
                    let d = l1 - self.l_ref[i];
                    let on = if d >= self.c_on[i] {
                        self.l_ref[i] += self.c_on[i];
                        true
                    } else if d <= -self.c_off[i] {
                        self.l_ref[i] -= self.c_off[i];
                        false
                    } else {
                        break;
                    };
                    let f = ((self.l_ref[i] - l0) / (l1 - l0)).clamp(0.0, 1.0);
                    let t = t0 + (f * dt).round() as i64;
                    if t - self.last_t[i] >= refractory {
                        self.last_t[i] = t;
                        self.push(t, i, on);
                    } else {
                        self.refractory_drops += 1;
                    }
                }
            }
        }
    }

    #[inline]
    fn push(&mut self, t: i64, pixel: usize, on: bool) {
        let key =
            ((t.max(0) as u64) << (self.pix_bits + 1)) | ((pixel as u64) << 1) | u64::from(on);
        self.keys.push(key);
    }

    /// Add background activity (uniform Poisson in time and space, random polarity) and hot
    /// pixels (a few pixels firing at a high Poisson rate, mostly one polarity) over
    /// `[0, duration_us)`. Returns the number of (noise, hot) events added before the
    /// refractory filter.
    pub(crate) fn add_noise<R: Rng + ?Sized>(
        &mut self,
        duration_us: i64,
        rng: &mut R,
    ) -> (u64, u64) {
        let n_pix = self.w * self.h;
        let secs = duration_us.max(0) as f64 * 1e-6;
        let poisson = |lambda: f64, rng: &mut R| -> u64 {
            if lambda > 0.0 && lambda.is_finite() {
                Poisson::new(lambda)
                    .map(|d| d.sample(rng) as u64)
                    .unwrap_or(0)
            } else {
                0
            }
        };
        let n_noise = poisson(self.params.noise_hz.max(0.0) * n_pix as f64 * secs, rng);
        for _ in 0..n_noise {
            let t = rng.random_range(0..duration_us.max(1));
            let p = rng.random_range(0..n_pix);
            let on = rng.random::<bool>();
            self.push(t, p, on);
        }
        let n_hot = self.params.hot_pixels.min(n_pix);
        let mut hot_total = 0;
        for p in sample(rng, n_pix, n_hot).into_vec() {
            let p_on = if rng.random::<bool>() { 0.9 } else { 0.1 };
            let count = poisson(self.params.hot_pixel_hz.max(0.0) * secs, rng);
            for _ in 0..count {
                let t = rng.random_range(0..duration_us.max(1));
                let on = rng.random::<f64>() < p_on;
                self.push(t, p, on);
            }
            hot_total += count;
        }
        (n_noise, hot_total)
    }

    /// Sort all events by time (ties by pixel, then polarity), apply the refractory period to
    /// the merged stream of every pixel, and decode them.
    pub(crate) fn finish(mut self) -> Events {
        self.keys.sort_unstable();
        let refractory = self.params.refractory_us;
        let mut last = vec![i64::MIN / 2; self.w * self.h];
        let pix_mask = (1u64 << self.pix_bits) - 1;
        let mut ev = Events::with_capacity(self.keys.len());
        for &k in &self.keys {
            let t = (k >> (self.pix_bits + 1)) as i64;
            let p = ((k >> 1) & pix_mask) as usize;
            if t - last[p] < refractory {
                continue;
            }
            last[p] = t;
            ev.t.push(t);
            ev.x.push((p % self.w) as u16);
            ev.y.push((p / self.w) as u16);
            ev.on.push(k & 1 == 1);
        }
        ev
    }
}
