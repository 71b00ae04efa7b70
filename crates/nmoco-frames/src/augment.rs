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

use nmoco_events::{Events, SensorSize};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Error, Frames};

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
            rotate_p: 0.0,
            cutout_p: 0.0,
            drop_p: 0.0,
            time_shift_p: 0.0,
            time_jitter_us: 0,
            trivial_augment: false,
            ..Self::default()
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

/// The operations of the frame-level TrivialAugment-Wide policy. TrivialAugment (Müller &
/// Hutter, 2021) applies one operation per sample, drawn uniformly, at a magnitude drawn
/// uniformly from `num_bins` bins spanning `[0, max]` (31 bins in the "Wide" variant), with a
/// random sign for signed operations. Its geometric operations are kept (identity, shear,
/// translation, rotation) and cutout is added, as in Spikformer's SNNAugmentWide; its
/// photometric operations (brightness, colour, contrast, sharpness, posterize, solarize,
/// auto-contrast, equalize) are left out: event counts have no intensity or colour to change.
/// The magnitude ranges are narrower than TrivialAugment-Wide's image ranges (shear 0.99,
/// translation 32 px, rotation 135°) and configurable (`ta_*` in [`AugmentConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrivialOp {
    Identity,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
    Rotate,
    Cutout,
}

impl TrivialOp {
    /// Every operation, in the order the uniform draw indexes them.
    pub const ALL: [TrivialOp; 7] = [
        TrivialOp::Identity,
        TrivialOp::ShearX,
        TrivialOp::ShearY,
        TrivialOp::TranslateX,
        TrivialOp::TranslateY,
        TrivialOp::Rotate,
        TrivialOp::Cutout,
    ];
}

/// One uniform draw of (operation, magnitude bin in `0..bins`).
fn draw_trivial<R: Rng + ?Sized>(rng: &mut R, bins: usize) -> (TrivialOp, usize) {
    let op = TrivialOp::ALL[rng.random_range(0..TrivialOp::ALL.len())];
    (op, rng.random_range(0..bins.max(1)))
}

/// The magnitude of bin `bin` of `bins` evenly spaced over `[0, max]`.
pub fn trivial_magnitude(max: f64, bin: usize, bins: usize) -> f64 {
    if bins <= 1 {
        return 0.0;
    }
    max * bin.min(bins - 1) as f64 / (bins - 1) as f64
}

/// Apply `op` at magnitude bin `bin` with sign `sign` (±1) to every frame and channel of `f`:
/// an affine map about the centre with nearest-neighbour sampling and zero fill (shear,
/// translation, rotation), or a zeroed square at a uniform position (cutout, side = the
/// magnitude; `rng` draws its centre).
pub fn trivial_augment<R: Rng + ?Sized>(
    f: &mut Frames,
    cfg: &AugmentConfig,
    op: TrivialOp,
    bin: usize,
    sign: f64,
    rng: &mut R,
) {
    let (h, w) = (f.h, f.w);
    if h == 0 || w == 0 || !f.is_consistent() {
        return;
    }
    let bins = cfg.ta_bins;
    let m = |max: f64| sign * trivial_magnitude(max, bin, bins);
    // Inverse map of a destination pixel (centred coordinates) to its source.
    let inverse: Box<dyn Fn(f64, f64) -> (f64, f64)> = match op {
        TrivialOp::Identity => return,
        TrivialOp::Cutout => {
            let frac = trivial_magnitude(cfg.ta_cutout_frac, bin, bins);
            if frac <= 0.0 {
                return;
            }
            let (x0, x1, y0, y1) = cutout_rect(rng, frac, w, h);
            for plane in f.data.chunks_exact_mut(h * w) {
                for y in y0..y1 {
                    plane[y * w + x0..y * w + x1].fill(0.0);
                }
            }
            return;
        }
        TrivialOp::ShearX => {
            let s = m(cfg.ta_shear);
            Box::new(move |x, y| (x - s * y, y))
        }
        TrivialOp::ShearY => {
            let s = m(cfg.ta_shear);
            Box::new(move |x, y| (x, y - s * x))
        }
        TrivialOp::TranslateX => {
            let d = (m(cfg.ta_translate_frac) * w as f64).round();
            Box::new(move |x, y| (x - d, y))
        }
        TrivialOp::TranslateY => {
            let d = (m(cfg.ta_translate_frac) * h as f64).round();
            Box::new(move |x, y| (x, y - d))
        }
        TrivialOp::Rotate => {
            let (sn, c) = m(cfg.ta_rotate_deg).to_radians().sin_cos();
            Box::new(move |x, y| (c * x + sn * y, -sn * x + c * y))
        }
    };
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let map: Vec<usize> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| {
            let (sx, sy) = inverse(x as f64 - cx, y as f64 - cy);
            let (sx, sy) = ((sx + cx).round(), (sy + cy).round());
            if sx >= 0.0 && sy >= 0.0 && sx < w as f64 && sy < h as f64 {
                sy as usize * w + sx as usize
            } else {
                OUTSIDE
            }
        })
        .collect();
    remap_planes(f, &map);
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

/// Event-level counterpart of [`two_views`] (same seeding rule), built on [`augment_events`].
pub fn two_views_events(
    ev: &Events,
    sensor: SensorSize,
    cfg: &AugmentConfig,
    seed: u64,
) -> (Events, Events) {
    let view = |v: u64| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(v);
        augment_events(ev, sensor, cfg, &mut rng)
    };
    (view(0), view(1))
}

/// Applies the event-level augmentations of `cfg` (see the module docs for the order). The
/// output keeps file order except after `time_jitter_us > 0`, which re-sorts stably by time.
/// Events outside `sensor` (and inconsistent trailing columns) are removed first; every output
/// event is inside `sensor`. Crop rescales the crop window back to the full sensor
/// (`x' = floor((x − x0)·W / cw)`), rotation rounds to the nearest pixel and removes events
/// rotated off the sensor, cutout removes the events inside its square.
pub fn augment_events<R: Rng + ?Sized>(
    ev: &Events,
    sensor: SensorSize,
    cfg: &AugmentConfig,
    rng: &mut R,
) -> Events {
    let (w, h) = (sensor.width as usize, sensor.height as usize);
    let n = ev.t.len().min(ev.x.len()).min(ev.y.len()).min(ev.on.len());
    let mut out = Events::with_capacity(n);
    for i in 0..n {
        if (ev.x[i] as usize) < w && (ev.y[i] as usize) < h {
            out.t.push(ev.t[i]);
            out.x.push(ev.x[i]);
            out.y.push(ev.y[i]);
            out.on.push(ev.on[i]);
        }
    }
    if w == 0 || h == 0 {
        return out;
    }
    if chance(rng, cfg.drop_p) {
        let mut keep = vec![true; out.t.len()];
        bernoulli_positions(rng, keep.len(), cfg.drop_rate, |i| keep[i] = false);
        out = filter(&out, |i, x, y| keep[i].then_some((x, y)));
    }
    if cfg.time_jitter_us > 0 {
        let j = cfg.time_jitter_us;
        for t in out.t.iter_mut() {
            *t = t.saturating_add(rng.random_range(-j..=j));
        }
        let mut idx: Vec<usize> = (0..out.t.len()).collect();
        idx.sort_by_key(|&i| out.t[i]);
        out = Events {
            t: idx.iter().map(|&i| out.t[i]).collect(),
            x: idx.iter().map(|&i| out.x[i]).collect(),
            y: idx.iter().map(|&i| out.y[i]).collect(),
            on: idx.iter().map(|&i| out.on[i]).collect(),
        };
    }
    if chance(rng, cfg.crop_p) {
        let (x0, y0, cw, ch) = crop_rect(rng, cfg, w, h);
        out = filter(&out, |_, x, y| {
            let (x, y) = (x as usize, y as usize);
            (x >= x0 && x < x0 + cw && y >= y0 && y < y0 + ch)
                .then(|| (((x - x0) * w / cw) as u16, ((y - y0) * h / ch) as u16))
        });
    }
    if cfg.hflip && chance(rng, cfg.hflip_p) {
        for x in out.x.iter_mut() {
            *x = (w - 1 - *x as usize) as u16;
        }
    }
    if chance(rng, cfg.translate_p) {
        let dx = shift(rng, cfg.translate_px).rem_euclid(w as i64) as usize;
        let dy = shift(rng, cfg.translate_px).rem_euclid(h as i64) as usize;
        for x in out.x.iter_mut() {
            *x = ((*x as usize + dx) % w) as u16;
        }
        for y in out.y.iter_mut() {
            *y = ((*y as usize + dy) % h) as u16;
        }
    }
    if chance(rng, cfg.rotate_p) {
        let theta = uniform(rng, -cfg.rotate_deg, cfg.rotate_deg).to_radians();
        let (s, c) = theta.sin_cos();
        let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
        out = filter(&out, |_, x, y| {
            // Forward rotation (the inverse of the frame-level sampling map).
            let (dx, dy) = (x as f64 - cx, y as f64 - cy);
            let nx = (c * dx - s * dy + cx).round();
            let ny = (s * dx + c * dy + cy).round();
            (nx >= 0.0 && ny >= 0.0 && nx < w as f64 && ny < h as f64)
                .then_some((nx as u16, ny as u16))
        });
    }
    if chance(rng, cfg.cutout_p) {
        let (x0, x1, y0, y1) = cutout_rect(rng, cfg.cutout_frac, w, h);
        out = filter(&out, |_, x, y| {
            let (xu, yu) = (x as usize, y as usize);
            (!(xu >= x0 && xu < x1 && yu >= y0 && yu < y1)).then_some((x, y))
        });
    }
    out
}

/// Keeps event `i` with new coordinates when `f(i, x, y)` returns them.
fn filter(ev: &Events, mut f: impl FnMut(usize, u16, u16) -> Option<(u16, u16)>) -> Events {
    let mut out = Events::with_capacity(ev.t.len());
    for i in 0..ev.t.len() {
        if let Some((x, y)) = f(i, ev.x[i], ev.y[i]) {
            out.t.push(ev.t[i]);
            out.x.push(x);
            out.y.push(y);
            out.on.push(ev.on[i]);
        }
    }
    out
}
