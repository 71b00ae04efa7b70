//! The frame-level TrivialAugment-Wide policy.

use rand::Rng;

use crate::Frames;

use super::{AugmentConfig, OUTSIDE, cutout_rect, remap_planes};

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
pub(super) fn draw_trivial<R: Rng + ?Sized>(rng: &mut R, bins: usize) -> (TrivialOp, usize) {
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
