//! Seeded augmentations on frames and on events, and the two-view helper for contrastive
//! pre-training.
//!
//! Frame-level order ([`augment`]): random resized crop → horizontal flip → translation (roll)
//! → rotation → cutout → drop → temporal shift → TrivialAugment-Wide over frames
//! ([`trivial_augment`], when `trivial_augment` is on). Event-level order ([`augment_events`]): events
//! outside the sensor are removed → drop → temporal jitter → random resized crop → horizontal
//! flip → translation (roll) → rotation → cutout. Each transform fires with its own probability;
//! the random draws of a transform are made only when it fires, so the result is a pure function
//! of the config, the input and the RNG state.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Error, Frames};

mod events;
mod trivial;

pub use events::{augment_events, two_views_events};
use trivial::draw_trivial;
pub use trivial::{TrivialOp, trivial_augment};

/// Probabilities and ranges of every augmentation. Serde: all fields optional (defaults
/// below), unknown fields rejected. Probabilities outside `[0, 1]` behave as clamped;
/// [`AugmentConfig::validate`] reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Allow horizontal flips at all (turn off where left/right changes the class, e.g.
    /// DVS128 Gesture's left/right arm gestures). Default `true`.
    pub hflip: bool,
    /// Probability of a horizontal flip when `hflip`. Default 0.5.
    pub hflip_p: f64,
    /// Probability of a random resized crop. Default 0.5.
    pub crop_p: f64,
    /// Range of the crop's area as a fraction of the canvas. Default `[0.35, 1.0]`.
    pub crop_scale: [f64; 2],
    /// Range of the crop's aspect ratio (width / height), sampled log-uniformly.
    /// Default `[3/4, 4/3]`.
    pub crop_ratio: [f64; 2],
    /// Probability of a random translation with wrap-around (`torch.roll`). Default 0.5.
    pub translate_p: f64,
    /// Largest shift in pixels along each axis (uniform in `[-px, px]`). Default 8.
    pub translate_px: usize,
    /// Probability of a small rotation about the centre (nearest neighbour, zero fill).
    /// Default 0.3.
    pub rotate_p: f64,
    /// Largest rotation in degrees (uniform in `[-deg, deg]`). Default 15.
    pub rotate_deg: f64,
    /// Probability of a cutout (a square zeroed in every frame and channel). Default 0.5.
    pub cutout_p: f64,
    /// Cutout side as a fraction of `min(H, W)`; the centre is uniform over the canvas and the
    /// square is clipped at the borders (DeVries & Taylor). Default 0.25.
    pub cutout_frac: f64,
    /// Probability of dropping: on events, each event is removed with probability
    /// `drop_rate`; on frames, each element (pixel of one frame and channel) is zeroed with
    /// probability `drop_rate`. Default 0.3.
    pub drop_p: f64,
    /// See `drop_p`. Default 0.1.
    pub drop_rate: f64,
    /// Probability of a temporal shift of the frames by `s` uniform in
    /// `[-time_shift_max, time_shift_max]` frames, zero-filled (frames only). Default 0.3.
    pub time_shift_p: f64,
    /// Default 1.
    pub time_shift_max: usize,
    /// Per-event timestamp jitter, uniform in `[-time_jitter_us, time_jitter_us]` µs, after
    /// which events are stably re-sorted by time (events only; always applied when > 0).
    /// Default 0 (off).
    pub time_jitter_us: i64,
    /// Apply [`trivial_augment`] last (frames only): one operation drawn uniformly from
    /// [`TrivialOp::ALL`] with one of `ta_bins` magnitudes, the same for every frame and
    /// channel of the sample (the fine-tuning recipes' SNNAugmentWide-like policy).
    /// Default `false`.
    pub trivial_augment: bool,
    /// Number of magnitude bins (TrivialAugment-Wide: 31). Default 31.
    pub ta_bins: usize,
    /// Largest shear factor (ShearX / ShearY). Default 0.3.
    pub ta_shear: f64,
    /// Largest translation as a fraction of the frame width / height. Default 0.1.
    pub ta_translate_frac: f64,
    /// Largest rotation in degrees. Default 30.
    pub ta_rotate_deg: f64,
    /// Largest cutout side as a fraction of `min(H, W)`. Default 0.25.
    pub ta_cutout_frac: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            hflip: true,
            hflip_p: 0.5,
            crop_p: 0.5,
            crop_scale: [0.35, 1.0],
            crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
            translate_p: 0.5,
            translate_px: 8,
            rotate_p: 0.3,
            rotate_deg: 15.0,
            cutout_p: 0.5,
            cutout_frac: 0.25,
            drop_p: 0.3,
            drop_rate: 0.1,
            time_shift_p: 0.3,
            time_shift_max: 1,
            time_jitter_us: 0,
            trivial_augment: false,
            ta_bins: 31,
            ta_shear: 0.3,
            ta_translate_frac: 0.1,
            ta_rotate_deg: 30.0,
            ta_cutout_frac: 0.25,
        }
    }
}

impl AugmentConfig {
    /// Every transform off: [`augment`] returns its input unchanged.
    pub fn none() -> Self {
        Self {
            hflip: false,
            hflip_p: 0.0,
            crop_p: 0.0,
            translate_p: 0.0,
            ..Self::default().geometric_only()
        }
    }

    /// Only this config's random resized crop, horizontal flip and translation: rotation,
    /// cutout, drop, temporal shift and jitter and TrivialAugment off (the linear probe's
    /// augmented views).
    pub fn geometric_only(&self) -> Self {
        Self {
            rotate_p: 0.0,
            cutout_p: 0.0,
            drop_p: 0.0,
            time_shift_p: 0.0,
            time_jitter_us: 0,
            trivial_augment: false,
            ..self.clone()
        }
    }

    /// Checks that probabilities and rates are in `[0, 1]` and ranges are ordered and finite.
    pub fn validate(&self) -> Result<(), Error> {
        let probs = [
            ("hflip_p", self.hflip_p),
            ("crop_p", self.crop_p),
            ("translate_p", self.translate_p),
            ("rotate_p", self.rotate_p),
            ("cutout_p", self.cutout_p),
            ("drop_p", self.drop_p),
            ("drop_rate", self.drop_rate),
            ("time_shift_p", self.time_shift_p),
            ("cutout_frac", self.cutout_frac),
            ("ta_translate_frac", self.ta_translate_frac),
            ("ta_cutout_frac", self.ta_cutout_frac),
        ];
        for (field, v) in probs {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::InvalidConfig {
                    field,
                    value: v.to_string(),
                    reason: "must be within [0, 1]",
                });
            }
        }
        let ranges = [
            ("crop_scale", self.crop_scale),
            ("crop_ratio", self.crop_ratio),
        ];
        for (field, [lo, hi]) in ranges {
            if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi) {
                return Err(Error::InvalidConfig {
                    field,
                    value: format!("[{lo}, {hi}]"),
                    reason: "must be finite, positive and ordered",
                });
            }
        }
        if !(self.rotate_deg.is_finite() && self.rotate_deg >= 0.0) {
            return Err(Error::InvalidConfig {
                field: "rotate_deg",
                value: self.rotate_deg.to_string(),
                reason: "must be finite and non-negative",
            });
        }
        if !(self.ta_shear.is_finite() && self.ta_shear >= 0.0) {
            return Err(Error::InvalidConfig {
                field: "ta_shear",
                value: self.ta_shear.to_string(),
                reason: "must be finite and non-negative",
            });
        }
        if !(self.ta_rotate_deg.is_finite() && self.ta_rotate_deg >= 0.0) {
            return Err(Error::InvalidConfig {
                field: "ta_rotate_deg",
                value: self.ta_rotate_deg.to_string(),
                reason: "must be finite and non-negative",
            });
        }
        if self.ta_bins < 2 {
            return Err(Error::InvalidConfig {
                field: "ta_bins",
                value: self.ta_bins.to_string(),
                reason: "must be at least 2",
            });
        }
        if self.time_jitter_us < 0 {
            return Err(Error::InvalidConfig {
                field: "time_jitter_us",
                value: self.time_jitter_us.to_string(),
                reason: "must be non-negative",
            });
        }
        Ok(())
    }
}

/// `true` with probability `p` (NaN or `p <= 0` never, `p >= 1` always).
fn chance<R: Rng + ?Sized>(rng: &mut R, p: f64) -> bool {
    p > 0.0 && rng.random::<f64>() < p
}

/// Uniform in `[lo, hi)` (or `lo` when the range is empty).
fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo).max(0.0) * rng.random::<f64>()
}

/// Uniform integer in `[-m, m]`.
fn shift<R: Rng + ?Sized>(rng: &mut R, m: usize) -> i64 {
    let m = m.min(i64::MAX as usize / 2) as i64;
    rng.random_range(-m..=m)
}

/// A crop rectangle `(x0, y0, cw, ch)` inside `w × h`, torchvision `RandomResizedCrop` style:
/// up to 10 tries of (area, log-ratio), falling back to the whole canvas.
fn crop_rect<R: Rng + ?Sized>(
    rng: &mut R,
    cfg: &AugmentConfig,
    w: usize,
    h: usize,
) -> (usize, usize, usize, usize) {
    let area = (w * h) as f64;
    let [s0, s1] = cfg.crop_scale;
    let [r0, r1] = cfg.crop_ratio;
    if r0 > 0.0 && r1 > 0.0 {
        for _ in 0..10 {
            let a = area * uniform(rng, s0, s1);
            let r = uniform(rng, r0.ln(), r1.ln()).exp();
            let cw = (a * r).sqrt().round();
            let ch = (a / r).sqrt().round();
            if cw >= 1.0 && ch >= 1.0 && cw <= w as f64 && ch <= h as f64 {
                let (cw, ch) = (cw as usize, ch as usize);
                let x0 = rng.random_range(0..=w - cw);
                let y0 = rng.random_range(0..=h - ch);
                return (x0, y0, cw, ch);
            }
        }
    }
    (0, 0, w, h)
}

/// Applies the frame-level augmentations of `cfg` to `frames` (see the module docs for the
/// order). Frames whose `data` length disagrees with their shape are returned unchanged.
pub fn augment<R: Rng + ?Sized>(frames: &Frames, cfg: &AugmentConfig, rng: &mut R) -> Frames {
    let mut f = frames.clone();
    if !f.is_consistent() || f.h == 0 || f.w == 0 || f.t == 0 {
        tracing::warn!(
            len = f.data.len(),
            t = f.t,
            h = f.h,
            w = f.w,
            "augment: frames shape does not match data, left unchanged"
        );
        return f;
    }
    let (h, w) = (f.h, f.w);
    if chance(rng, cfg.crop_p) {
        let (x0, y0, cw, ch) = crop_rect(rng, cfg, w, h);
        let map: Vec<usize> = (0..h)
            .flat_map(|y| (0..w).map(move |x| (y0 + y * ch / h) * w + x0 + x * cw / w))
            .collect();
        remap_planes(&mut f, &map);
    }
    if cfg.hflip && chance(rng, cfg.hflip_p) {
        hflip_frames(&mut f);
    }
    if chance(rng, cfg.translate_p) {
        let dx = shift(rng, cfg.translate_px);
        let dy = shift(rng, cfg.translate_px);
        roll_frames(&mut f, dx, dy);
    }
    if chance(rng, cfg.rotate_p) {
        let theta = uniform(rng, -cfg.rotate_deg, cfg.rotate_deg).to_radians();
        let (s, c) = theta.sin_cos();
        let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
        let map: Vec<usize> = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| {
                // Inverse rotation of the destination pixel.
                let (dxp, dyp) = (x as f64 - cx, y as f64 - cy);
                let sx = (c * dxp + s * dyp + cx).round();
                let sy = (-s * dxp + c * dyp + cy).round();
                if sx >= 0.0 && sy >= 0.0 && sx < w as f64 && sy < h as f64 {
                    sy as usize * w + sx as usize
                } else {
                    OUTSIDE
                }
            })
            .collect();
        remap_planes(&mut f, &map);
    }
    if chance(rng, cfg.cutout_p) {
        let (x0, x1, y0, y1) = cutout_rect(rng, cfg.cutout_frac, w, h);
        for plane in f.data.chunks_exact_mut(h * w) {
            for y in y0..y1 {
                plane[y * w + x0..y * w + x1]
                    .iter_mut()
                    .for_each(|v| *v = 0.0);
            }
        }
    }
    if chance(rng, cfg.drop_p) {
        let data = &mut f.data;
        bernoulli_positions(rng, data.len(), cfg.drop_rate, |i| data[i] = 0.0);
    }
    if chance(rng, cfg.time_shift_p) {
        // out[ti] = in[ti − s], zero where ti − s is outside [0, T).
        let s = shift(rng, cfg.time_shift_max.min(f.t));
        let fsz = 2 * h * w;
        let k = s.unsigned_abs() as usize;
        let n = f.data.len();
        if k >= f.t {
            f.data.fill(0.0);
        } else if s > 0 {
            f.data.copy_within(0..n - k * fsz, k * fsz);
            f.data[..k * fsz].fill(0.0);
        } else if s < 0 {
            f.data.copy_within(k * fsz..n, 0);
            f.data[n - k * fsz..].fill(0.0);
        }
    }
    if cfg.trivial_augment {
        let (op, bin) = draw_trivial(rng, cfg.ta_bins);
        let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
        trivial_augment(&mut f, cfg, op, bin, sign, rng);
    }
    f
}

/// Cutout rectangle `[x0, x1) × [y0, y1)`, clipped to the canvas.
fn cutout_rect<R: Rng + ?Sized>(
    rng: &mut R,
    frac: f64,
    w: usize,
    h: usize,
) -> (usize, usize, usize, usize) {
    let side = ((frac.clamp(0.0, 1.0) * w.min(h) as f64).round() as usize).max(1);
    let cx = rng.random_range(0..w);
    let cy = rng.random_range(0..h);
    let x0 = cx.saturating_sub(side / 2);
    let y0 = cy.saturating_sub(side / 2);
    (x0, (x0 + side).min(w), y0, (y0 + side).min(h))
}

/// Marks a destination pixel with no source in [`remap_planes`].
const OUTSIDE: usize = usize::MAX;

/// Calls `f(i)` for each `i < n` independently with probability `rate` (all of them for
/// `rate >= 1`, none for `rate <= 0` or NaN), drawing geometric gaps so the cost is
/// proportional to the number of hits, not to `n`.
fn bernoulli_positions<R: Rng + ?Sized>(
    rng: &mut R,
    n: usize,
    rate: f64,
    mut f: impl FnMut(usize),
) {
    if rate.is_nan() || rate <= 0.0 {
        return;
    }
    if rate >= 1.0 {
        (0..n).for_each(f);
        return;
    }
    let ln_q = (1.0 - rate).ln();
    if ln_q == 0.0 {
        return; // rate below f64 resolution
    }
    let mut i = 0usize;
    while i < n {
        // Failures before the next success: floor(ln(U) / ln(1 − rate)), U in (0, 1].
        let u = 1.0 - rng.random::<f64>();
        let gap = (u.ln() / ln_q).floor();
        if gap >= (n - i) as f64 {
            break;
        }
        i += gap as usize;
        f(i);
        i += 1;
    }
}

/// Rewrites every `H × W` plane as `dst[p] = src[map[p]]` (0 where `map[p] == OUTSIDE`).
fn remap_planes(f: &mut Frames, map: &[usize]) {
    map_planes(f, |src, dst| {
        for (d, &m) in dst.iter_mut().zip(map) {
            *d = if m == OUTSIDE { 0.0 } else { src[m] };
        }
    });
}

/// Rewrites every `H × W` plane with `op(src_plane, dst_plane)`.
fn map_planes(f: &mut Frames, mut op: impl FnMut(&[f32], &mut [f32])) {
    let hw = f.h * f.w;
    let mut buf = vec![0.0f32; hw];
    for plane in f.data.chunks_exact_mut(hw) {
        op(plane, &mut buf);
        plane.copy_from_slice(&buf);
    }
}

/// Mirrors every row: `x → W − 1 − x`.
pub(crate) fn hflip_frames(f: &mut Frames) {
    let w = f.w;
    for row in f.data.chunks_exact_mut(w) {
        row.reverse();
    }
}

/// `torch.roll` by `(dy, dx)` over the last two dimensions: `out[y][x] = in[y−dy][x−dx]`
/// (indices modulo H and W).
pub(crate) fn roll_frames(f: &mut Frames, dx: i64, dy: i64) {
    let (h, w) = (f.h, f.w);
    let sx = dx.rem_euclid(w as i64) as usize;
    let sy = dy.rem_euclid(h as i64) as usize;
    map_planes(f, |src, dst| {
        for y in 0..h {
            let srow = &src[((y + h - sy) % h) * w..][..w];
            let drow = &mut dst[y * w..(y + 1) * w];
            drow[sx..].copy_from_slice(&srow[..w - sx]);
            drow[..sx].copy_from_slice(&srow[w - sx..]);
        }
    });
}

/// Two independent augmentations of one sample: view `v ∈ {0, 1}` uses
/// `ChaCha8Rng::seed_from_u64(seed)` on stream `v`, so each view depends only on
/// `(frames, cfg, seed, v)`.
pub fn two_views(frames: &Frames, cfg: &AugmentConfig, seed: u64) -> (Frames, Frames) {
    let view = |v: u64| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(v);
        augment(frames, cfg, &mut rng)
    };
    (view(0), view(1))
}
