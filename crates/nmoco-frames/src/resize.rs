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

/// Count-preserving area resampler from `sh × sw` to `dh × dw` planes (weights computed once,
/// reused for every plane).
pub(crate) struct AreaResampler {
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    wx: Vec<Vec<(usize, f32)>>,
    wy: Vec<Vec<(usize, f32)>>,
    tmp: Vec<f32>,
}

impl AreaResampler {
    pub(crate) fn new(sh: usize, sw: usize, dh: usize, dw: usize) -> Self {
        let ok = sh > 0 && sw > 0 && dh > 0 && dw > 0;
        Self {
            sh,
            sw,
            dh,
            dw,
            wx: if ok { axis_weights(sw, dw) } else { Vec::new() },
            wy: if ok { axis_weights(sh, dh) } else { Vec::new() },
            tmp: vec![0.0; sh * dw],
        }
    }

    /// Resamples `src` (`sh × sw`, row-major) into `dst` (`dh × dw`), overwriting it, by exact
    /// area weighting: each source pixel spreads its value over the destination pixels in
    /// proportion to how much of its footprint falls into each. The sum is preserved (up to f32
    /// rounding). For integer factors `k` this is `k × k` sum pooling, i.e. `k²` times torch's
    /// `F.interpolate(mode='area')`. Empty shapes (any dimension 0) leave `dst` zeroed.
    ///
    /// Panics if `src.len() != sh·sw` or `dst.len() != dh·dw` (internal contract).
    pub(crate) fn apply(&mut self, src: &[f32], dst: &mut [f32]) {
        assert_eq!(src.len(), self.sh * self.sw, "src length");
        assert_eq!(dst.len(), self.dh * self.dw, "dst length");
        dst.fill(0.0);
        if self.wx.is_empty() || self.wy.is_empty() {
            return;
        }
        let (sw, dw) = (self.sw, self.dw);
        // Horizontal pass: sh × dw.
        for (srow, trow) in src.chunks_exact(sw).zip(self.tmp.chunks_exact_mut(dw)) {
            for (t, ws) in trow.iter_mut().zip(&self.wx) {
                *t = ws.iter().map(|&(i, w)| srow[i] * w).sum();
            }
        }
        // Vertical pass.
        for (drow, ws) in dst.chunks_exact_mut(dw).zip(&self.wy) {
            for &(i, w) in ws {
                let trow = &self.tmp[i * dw..(i + 1) * dw];
                for (d, &t) in drow.iter_mut().zip(trow) {
                    *d += t * w;
                }
            }
        }
    }
}
