//! Spike inputs: run-time density thresholds, the transposed layouts and the
//! scatter kernels that replace im2col + gemm for sparse (image, group) blocks.

use std::sync::atomic::{AtomicU32, Ordering};

use super::ConvGeom;

/// Largest input densities (fraction of non-zeros per image and group) for which
/// the forward and the weight-gradient convolutions use the sparse scatter
/// kernels instead of im2col + gemm. `0.0` disables a sparse path, `1.0` forces it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SparseThresholds {
    /// Threshold of the forward product.
    pub forward: f32,
    /// Threshold of the weight-gradient product.
    pub weight_grad: f32,
}

/// Defaults from the crossovers measured on the 3×3 32→32 benchmark shape
/// (docs/benchmarks.md): forward break-even near 10 % density, weight gradient
/// near 15 %; each default sits a little below its crossover.
pub const DEFAULT_SPARSE_THRESHOLDS: SparseThresholds = SparseThresholds {
    forward: 0.08,
    weight_grad: 0.12,
};

static SPARSE_FORWARD: AtomicU32 = AtomicU32::new(0x3da3_d70a); // 0.08f32
static SPARSE_WEIGHT: AtomicU32 = AtomicU32::new(0x3df5_c28f); // 0.12f32

fn clamp_density(d: f32) -> f32 {
    if d.is_nan() { 0.0 } else { d.clamp(0.0, 1.0) }
}

/// Sets the process-wide sparse-path thresholds (values are clamped to [0, 1];
/// NaN disables). Meant for tuning and benchmarks.
pub fn set_sparse_thresholds(t: SparseThresholds) {
    SPARSE_FORWARD.store(clamp_density(t.forward).to_bits(), Ordering::Relaxed);
    SPARSE_WEIGHT.store(clamp_density(t.weight_grad).to_bits(), Ordering::Relaxed);
}

/// The current sparse-path thresholds (see [`set_sparse_thresholds`]).
pub fn sparse_thresholds() -> SparseThresholds {
    SparseThresholds {
        forward: f32::from_bits(SPARSE_FORWARD.load(Ordering::Relaxed)),
        weight_grad: f32::from_bits(SPARSE_WEIGHT.load(Ordering::Relaxed)),
    }
}

/// Whether `src` has at most `max_density · len` non-zeros.
pub(super) fn is_sparse(src: &[f32], max_density: f32) -> bool {
    if max_density <= 0.0 {
        return false;
    }
    if max_density >= 1.0 {
        return true;
    }
    let limit = (f64::from(max_density) * src.len() as f64) as usize;
    let mut nnz = 0usize;
    for chunk in src.chunks(4096) {
        nnz += chunk.iter().map(|&v| usize::from(v != 0.0)).sum::<usize>();
        if nnz > limit {
            return false;
        }
    }
    true
}

/// `[groups·og, kdim]` -> per group `[kdim, og]`.
pub(super) fn transpose_groups(g: &ConvGeom, wt: &[f32]) -> Vec<f32> {
    let (og, kdim) = (g.og(), g.kdim());
    let mut out = vec![0.0f32; wt.len()];
    for grp in 0..g.groups {
        let base = grp * og * kdim;
        for o in 0..og {
            for r in 0..kdim {
                out[base + r * og + o] = wt[base + o * kdim + r];
            }
        }
    }
    out
}

/// `block[o·p + i] = yt[i·og + o] (+ bias[o])`.
pub(super) fn untranspose(
    yt: &[f32],
    og: usize,
    p: usize,
    bias: Option<&[f32]>,
    block: &mut [f32],
) {
    const B: usize = 64;
    for i0 in (0..p).step_by(B) {
        let i1 = (i0 + B).min(p);
        for o in 0..og {
            let add = bias.map_or(0.0, |b| b[o]);
            let row = &mut block[o * p + i0..o * p + i1];
            for (k, d) in row.iter_mut().enumerate() {
                *d = yt[(i0 + k) * og + o] + add;
            }
        }
    }
}

/// `dst[i·og + o] = src[o·p + i]` for one (image, group) output gradient.
pub(super) fn transpose_into(src: &[f32], og: usize, p: usize, dst: &mut [f32]) {
    const B: usize = 64;
    for i0 in (0..p).step_by(B) {
        let i1 = (i0 + B).min(p);
        for o in 0..og {
            let row = &src[o * p + i0..o * p + i1];
            for (k, &v) in row.iter().enumerate() {
                dst[(i0 + k) * og + o] = v;
            }
        }
    }
}

/// Calls `f(r, pixel, v)` for every non-zero input value `v` of one
/// (image, group) and every kernel tap `r` that maps it to output `pixel`.
///
/// Output `(oy, ox)` gets input `(oy·s + ky - pad, ox·s + kx - pad)`, so for an
/// input row `iy` the valid `ky` are `≡ iy + pad (mod s)` with
/// `0 <= (iy + pad - ky)/s < oh`; the ranges are computed once per row and per
/// non-zero, with no division in the tap loops.
#[inline(always)]
pub(super) fn for_each_tap(g: &ConvGeom, src: &[f32], mut f: impl FnMut(usize, usize, f32)) {
    let (h, w, s, pad) = (g.h, g.w, g.stride, g.pad);
    let (kh, kw, oh, ow) = (g.kh, g.kw, g.oh, g.ow);
    // Taps k with 0 <= (i + pad - k)/s < o and k ≡ i + pad (mod s): (first, count).
    let taps = |i: usize, k: usize, o: usize| -> (usize, usize) {
        let ip = i + pad;
        let first = ip % s;
        // Need (ip - k)/s <= o - 1, i.e. k >= ip - (o-1)·s.
        let lo = ip.saturating_sub((o - 1) * s);
        let start = if lo <= first {
            first
        } else {
            first + (lo - first).div_ceil(s) * s
        };
        let last = ip.min(k - 1);
        if start > last {
            (start, 0)
        } else {
            (start, (last - start) / s + 1)
        }
    };
    // Per input column: first tap, tap count, and the output column of the first tap.
    let col_taps: Vec<(usize, usize, usize)> = (0..w)
        .map(|ix| {
            let (k0, n) = taps(ix, kw, ow);
            (k0, n, if n > 0 { (ix + pad - k0) / s } else { 0 })
        })
        .collect();
    for ci in 0..g.cg() {
        let plane = &src[ci * h * w..(ci + 1) * h * w];
        for iy in 0..h {
            let (ky0, nky) = taps(iy, kh, oh);
            if nky == 0 {
                continue;
            }
            let oy0 = (iy + pad - ky0) / s;
            let line = &plane[iy * w..(iy + 1) * w];
            for (ix, &v) in line.iter().enumerate() {
                if v == 0.0 {
                    continue;
                }
                let (kx0, nkx, ox0) = col_taps[ix];
                for j in 0..nky {
                    let ky = ky0 + j * s;
                    let oy = oy0 - j;
                    let rbase = (ci * kh + ky) * kw;
                    for i in 0..nkx {
                        f(rbase + kx0 + i * s, oy * ow + ox0 - i, v);
                    }
                }
            }
        }
    }
}

/// `a[..] += v · b[..]`.
#[inline(always)]
pub(super) fn axpy(v: f32, b: &[f32], a: &mut [f32]) {
    // Fixed-width chunks unroll into whole SIMD registers.
    let mut ca = a.chunks_exact_mut(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..16 {
            x[l] += v * y[l];
        }
    }
    for (x, &y) in ca.into_remainder().iter_mut().zip(cb.remainder()) {
        *x += v * y;
    }
}

/// Sparse forward of one (image, group): `yt[pixel·og + o]` (transposed output)
/// accumulates `v · w[o, r]` for every non-zero input and tap.
pub(super) fn sparse_forward(g: &ConvGeom, src: &[f32], wt_g: &[f32], yt: &mut [f32]) {
    let og = g.og();
    yt.fill(0.0);
    for_each_tap(g, src, |r, pix, v| {
        axpy(
            v,
            &wt_g[r * og..(r + 1) * og],
            &mut yt[pix * og..(pix + 1) * og],
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_threshold_bits_match_the_constants() {
        assert_eq!(
            f32::from_bits(0x3da3_d70a),
            DEFAULT_SPARSE_THRESHOLDS.forward
        );
        assert_eq!(
            f32::from_bits(0x3df5_c28f),
            DEFAULT_SPARSE_THRESHOLDS.weight_grad
        );
    }
}
