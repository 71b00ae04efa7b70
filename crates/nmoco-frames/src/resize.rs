//! Count-preserving area resampling of one `H × W` plane.

/// Sparse 1-D weights: for each destination index, `(source index, weight)` pairs.
fn axis_weights(src: usize, dst: usize) -> Vec<Vec<(usize, f32)>> {
    // Destination pixel j covers source interval [j·s, (j+1)·s) with s = src/dst; the weight of
    // source pixel i is the length of [i, i+1) ∩ that interval, so each source pixel's weights
    // sum to 1 over all j (the total is preserved).
    let s = src as f64 / dst as f64;
    (0..dst)
        .map(|j| {
            let lo = j as f64 * s;
            let hi = (j + 1) as f64 * s;
            let first = lo.floor() as usize;
            let last = (hi.ceil() as usize).min(src);
            (first..last)
                .filter_map(|i| {
                    let ov = (hi.min(i as f64 + 1.0) - lo.max(i as f64)).max(0.0);
                    (ov > 1e-12).then_some((i, ov as f32))
                })
                .collect()
        })
        .collect()
}

/// Resamples `src` (`sh × sw`, row-major) into `dst` (`dh × dw`), overwriting it, by exact
/// area weighting: each source pixel spreads its value over the destination pixels in
/// proportion to how much of its footprint falls into each. The sum is preserved (up to f32
/// rounding). For integer factors `k` this is `k × k` sum pooling, i.e. `k²` times torch's
/// `F.interpolate(mode='area')`. Empty inputs (any dimension 0) leave `dst` zeroed.
///
/// Panics if `src.len() != sh·sw` or `dst.len() != dh·dw` (caller's contract).
pub(crate) fn area_resample(
    src: &[f32],
    sh: usize,
    sw: usize,
    dst: &mut [f32],
    dh: usize,
    dw: usize,
) {
    assert_eq!(src.len(), sh * sw, "src length");
    assert_eq!(dst.len(), dh * dw, "dst length");
    dst.iter_mut().for_each(|v| *v = 0.0);
    if sh == 0 || sw == 0 || dh == 0 || dw == 0 {
        return;
    }
    let wx = axis_weights(sw, dw);
    let wy = axis_weights(sh, dh);
    // Horizontal pass: sh × dw.
    let mut tmp = vec![0.0f32; sh * dw];
    for (srow, trow) in src.chunks_exact(sw).zip(tmp.chunks_exact_mut(dw)) {
        for (t, ws) in trow.iter_mut().zip(&wx) {
            *t = ws.iter().map(|&(i, w)| srow[i] * w).sum();
        }
    }
    // Vertical pass.
    for (drow, ws) in dst.chunks_exact_mut(dw).zip(&wy) {
        for &(i, w) in ws {
            let trow = &tmp[i * dw..(i + 1) * dw];
            for (d, &t) in drow.iter_mut().zip(trow) {
                *d += t * w;
            }
        }
    }
}
