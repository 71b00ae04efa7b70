//! Slice-level convolution kernels: im2col tiles, col2im, and the `gemm` calls.
//!
//! All tensors are contiguous NCHW `f32` slices. Work is split into items of
//! (image, group, tile of output rows) and spread over the rayon pool; every
//! thread keeps one reusable scratch buffer for its im2col tile.

use std::cell::RefCell;

use gemm::Parallelism;
use rayon::prelude::*;

/// Target number of output pixels per im2col tile (the tile is
/// `C_in/groups · KH · KW` rows by this many columns, kept small enough for L2).
const TILE_PIXELS: usize = 512;

/// Shape and hyper-parameters of one 2-D convolution (no dilation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.c_in / self.groups
    }
    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.c_out / self.groups
    }
    /// Rows of the im2col matrix of one group (`cg · KH · KW`).
    pub fn kdim(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    /// Whether the convolution is a plain matrix product (1×1, stride 1, no padding).
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
    /// Output rows per tile.
    fn rows_per_tile(&self) -> usize {
        (TILE_PIXELS / self.ow.max(1)).clamp(1, self.oh.max(1))
    }
    fn tiles(&self) -> usize {
        self.oh.div_ceil(self.rows_per_tile())
    }
    pub fn x_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }
    pub fn y_len(&self) -> usize {
        self.n * self.c_out * self.oh * self.ow
    }
    pub fn w_len(&self) -> usize {
        self.c_out * self.kdim()
    }
}

/// A raw pointer that may be shared across rayon tasks that write disjoint parts.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: every user writes only to regions no other task touches at the same time.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's reusable scratch buffer of at least `len` floats
/// (contents unspecified). Falls back to a fresh buffer if the scratch is busy.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => {
            let mut buf = vec![0.0; len];
            f(&mut buf)
        }
    })
}

/// Fills `col` (`kdim` rows × `(oy1-oy0)·ow` columns, row-major) with the
/// im2col tile of one image/group: `src` is the group's `cg` input channels.
fn im2col_tile(g: &ConvGeom, src: &[f32], oy0: usize, oy1: usize, col: &mut [f32]) {
    let (h, w, ow, s, pad) = (g.h, g.w, g.ow, g.stride, g.pad as isize);
    let t = (oy1 - oy0) * ow;
    let mut r = 0;
    for ci in 0..g.cg() {
        let plane = &src[ci * h * w..(ci + 1) * h * w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = &mut col[r * t..(r + 1) * t];
                r += 1;
                // Valid output columns: 0 <= ox*s + kx - pad < w.
                let kxo = kx as isize - pad;
                let ox_lo = if kxo >= 0 {
                    0
                } else {
                    ((-kxo) as usize).div_ceil(s)
                };
                let ox_hi = if (w as isize) - kxo <= 0 {
                    0
                } else {
                    (((w as isize - kxo) as usize).div_ceil(s)).min(ow)
                };
                let ox_lo = ox_lo.min(ox_hi);
                for (ti, oy) in (oy0..oy1).enumerate() {
                    let dst = &mut row[ti * ow..(ti + 1) * ow];
                    let iy = (oy * s) as isize + ky as isize - pad;
                    if iy < 0 || iy >= h as isize || ox_lo == ox_hi {
                        dst.fill(0.0);
                        continue;
                    }
                    let line = &plane[iy as usize * w..(iy as usize + 1) * w];
                    dst[..ox_lo].fill(0.0);
                    dst[ox_hi..].fill(0.0);
                    let ix0 = (ox_lo * s) as isize + kxo;
                    let ix0 = ix0 as usize;
                    if s == 1 {
                        dst[ox_lo..ox_hi].copy_from_slice(&line[ix0..ix0 + (ox_hi - ox_lo)]);
                    } else {
                        for (j, d) in dst[ox_lo..ox_hi].iter_mut().enumerate() {
                            *d = line[ix0 + j * s];
                        }
                    }
                }
            }
        }
    }
}

/// Adds the im2col tile `col` back into the image/group gradient `dst` (the
/// adjoint of [`im2col_tile`]).
fn col2im_tile(g: &ConvGeom, col: &[f32], oy0: usize, oy1: usize, dst: &mut [f32]) {
    let (h, w, ow, s, pad) = (g.h, g.w, g.ow, g.stride, g.pad as isize);
    let t = (oy1 - oy0) * ow;
    let mut r = 0;
    for ci in 0..g.cg() {
        let plane = &mut dst[ci * h * w..(ci + 1) * h * w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = &col[r * t..(r + 1) * t];
                r += 1;
                let kxo = kx as isize - pad;
                let ox_lo = if kxo >= 0 {
                    0
                } else {
                    ((-kxo) as usize).div_ceil(s)
                };
                let ox_hi = if (w as isize) - kxo <= 0 {
                    0
                } else {
                    (((w as isize - kxo) as usize).div_ceil(s)).min(ow)
                };
                if ox_lo >= ox_hi {
                    continue;
                }
                for (ti, oy) in (oy0..oy1).enumerate() {
                    let iy = (oy * s) as isize + ky as isize - pad;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let src = &row[ti * ow + ox_lo..ti * ow + ox_hi];
                    let line = &mut plane[iy as usize * w..(iy as usize + 1) * w];
                    let ix0 = ((ox_lo * s) as isize + kxo) as usize;
                    if s == 1 {
                        for (d, v) in line[ix0..ix0 + src.len()].iter_mut().zip(src) {
                            *d += *v;
                        }
                    } else {
                        for (j, v) in src.iter().enumerate() {
                            line[ix0 + j * s] += *v;
                        }
                    }
                }
            }
        }
    }
}

/// `dst[m×n] (=|+=) lhs[m×k] · rhs[k×n]` with explicit row/column strides, single-threaded.
///
/// # Safety
/// All pointers must be valid for the strided extents given.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const f32,
    rhs_rs: isize,
    rhs_cs: isize,
) {
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            accumulate,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// Work items (image, group, tile) of a convolution, in a fixed order.
fn items(g: &ConvGeom) -> impl IndexedParallelIterator<Item = (usize, usize, usize)> + use<> {
    let (groups, tiles) = (g.groups, g.tiles());
    (0..g.n * groups * tiles)
        .into_par_iter()
        .map(move |i| (i / (groups * tiles), (i / tiles) % groups, i % tiles))
}

/// Forward convolution: `y = conv(x, w) + bias`. `y` must hold `g.y_len()` floats
/// (its contents are overwritten); `bias`, if given, holds `c_out` floats.
pub(crate) fn conv_forward(
    g: &ConvGeom,
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    debug_assert_eq!(x.len(), g.x_len());
    debug_assert_eq!(wt.len(), g.w_len());
    debug_assert_eq!(y.len(), g.y_len());
    let (cg, og, kdim, hw, p) = (g.cg(), g.og(), g.kdim(), g.h * g.w, g.oh * g.ow);
    let rpt = g.rows_per_tile();
    let yp = SyncPtr(y.as_mut_ptr());
    items(g).for_each(|(b, grp, tile)| {
        let oy0 = tile * rpt;
        let oy1 = (oy0 + rpt).min(g.oh);
        let t = (oy1 - oy0) * g.ow;
        let src = &x[(b * g.c_in + grp * cg) * hw..(b * g.c_in + (grp + 1) * cg) * hw];
        let w_g = &wt[grp * og * kdim..(grp + 1) * og * kdim];
        // SAFETY: each item writes the disjoint block y[b, grp*og.., oy0..oy1, :].
        let dst = unsafe { yp.get().add((b * g.c_out + grp * og) * p + oy0 * g.ow) };
        let accumulate = if let Some(bias) = bias {
            for o in 0..og {
                // SAFETY: row o of this item's block, t floats, owned by this item.
                let row = unsafe { std::slice::from_raw_parts_mut(dst.add(o * p), t) };
                row.fill(bias[grp * og + o]);
            }
            true
        } else {
            false
        };
        if g.is_pointwise() {
            let rhs = &src[oy0 * g.ow..];
            // SAFETY: extents lie within x, wt, y.
            unsafe {
                sgemm(
                    og,
                    t,
                    kdim,
                    dst,
                    p as isize,
                    1,
                    accumulate,
                    w_g.as_ptr(),
                    kdim as isize,
                    1,
                    rhs.as_ptr(),
                    hw as isize,
                    1,
                )
            };
            return;
        }
        with_scratch(kdim * t, |col| {
            im2col_tile(g, src, oy0, oy1, col);
            // SAFETY: col is kdim×t, w_g is og×kdim, dst block is og×t with row stride p.
            unsafe {
                sgemm(
                    og,
                    t,
                    kdim,
                    dst,
                    p as isize,
                    1,
                    accumulate,
                    w_g.as_ptr(),
                    kdim as isize,
                    1,
                    col.as_ptr(),
                    t as isize,
                    1,
                )
            };
        });
    });
}

/// Whether the input gradient can be computed as a forward convolution of the
/// output gradient with the flipped, transposed kernel.
pub(crate) fn bwd_data_as_forward(g: &ConvGeom) -> bool {
    g.stride == 1 && g.pad < g.kh && g.pad < g.kw && g.kh == g.kw
}

/// Geometry and kernel of the equivalent forward convolution that computes the
/// input gradient of a stride-1 convolution (see [`bwd_data_as_forward`]).
pub(crate) fn flipped_geometry(g: &ConvGeom, wt: &[f32]) -> (ConvGeom, Vec<f32>) {
    let (cg, og, kh, kw) = (g.cg(), g.og(), g.kh, g.kw);
    let mut wf = vec![0.0f32; wt.len()];
    // w: [groups·og, cg, kh, kw] -> wf: [groups·cg, og, kh, kw], spatially flipped.
    for grp in 0..g.groups {
        for o in 0..og {
            for c in 0..cg {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let src = (((grp * og + o) * cg + c) * kh + ky) * kw + kx;
                        let dst =
                            (((grp * cg + c) * og + o) * kh + (kh - 1 - ky)) * kw + (kw - 1 - kx);
                        wf[dst] = wt[src];
                    }
                }
            }
        }
    }
    let fg = ConvGeom {
        n: g.n,
        c_in: g.c_out,
        h: g.oh,
        w: g.ow,
        c_out: g.c_in,
        kh,
        kw,
        stride: 1,
        pad: kh - 1 - g.pad,
        groups: g.groups,
        oh: g.h,
        ow: g.w,
    };
    (fg, wf)
}

/// Input gradient: `dx = conv_transpose(dy, w)`. `dx` must hold `g.x_len()` floats.
pub(crate) fn conv_backward_data(g: &ConvGeom, dy: &[f32], wt: &[f32], dx: &mut [f32]) {
    debug_assert_eq!(dy.len(), g.y_len());
    debug_assert_eq!(dx.len(), g.x_len());
    if bwd_data_as_forward(g) {
        let (fg, wf) = flipped_geometry(g, wt);
        // With stride 1 and pad < k the flipped convolution has exactly the input's size.
        if g.oh + 2 * fg.pad + 1 == fg.oh + fg.kh && g.ow + 2 * fg.pad + 1 == fg.ow + fg.kw {
            conv_forward(&fg, dy, &wf, None, dx);
            return;
        }
    }
    let (cg, og, kdim, hw, p) = (g.cg(), g.og(), g.kdim(), g.h * g.w, g.oh * g.ow);
    let rpt = g.rows_per_tile();
    let tiles = g.tiles();
    let groups = g.groups;
    // Items (image, group) write disjoint channel blocks of dx.
    dx.par_chunks_mut(cg * hw)
        .enumerate()
        .for_each(|(bg, dst)| {
            let (b, grp) = (bg / groups, bg % groups);
            dst.fill(0.0);
            let w_g = &wt[grp * og * kdim..(grp + 1) * og * kdim];
            let dy_g = &dy[(b * g.c_out + grp * og) * p..(b * g.c_out + (grp + 1) * og) * p];
            for tile in 0..tiles {
                let oy0 = tile * rpt;
                let oy1 = (oy0 + rpt).min(g.oh);
                let t = (oy1 - oy0) * g.ow;
                with_scratch(kdim * t, |col| {
                    // col[kdim, t] = w_gᵀ[kdim, og] · dy_g[og, tile].
                    // SAFETY: extents lie within the slices.
                    unsafe {
                        sgemm(
                            kdim,
                            t,
                            og,
                            col.as_mut_ptr(),
                            t as isize,
                            1,
                            false,
                            w_g.as_ptr(),
                            1,
                            kdim as isize,
                            dy_g[oy0 * g.ow..].as_ptr(),
                            p as isize,
                            1,
                        )
                    };
                    col2im_tile(g, col, oy0, oy1, dst);
                });
            }
        });
}

/// Weight gradient: `dw = Σ_images dy · im2col(x)ᵀ`. Returns `g.w_len()` floats.
pub(crate) fn conv_backward_weight(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    debug_assert_eq!(x.len(), g.x_len());
    debug_assert_eq!(dy.len(), g.y_len());
    let (cg, og, kdim, hw, p) = (g.cg(), g.og(), g.kdim(), g.h * g.w, g.oh * g.ow);
    let rpt = g.rows_per_tile();
    let wlen = g.w_len();
    let acc_item = |mut acc: Vec<f32>, (b, grp, tile): (usize, usize, usize)| {
        let oy0 = tile * rpt;
        let oy1 = (oy0 + rpt).min(g.oh);
        let t = (oy1 - oy0) * g.ow;
        let src = &x[(b * g.c_in + grp * cg) * hw..(b * g.c_in + (grp + 1) * cg) * hw];
        let dy_t = &dy[(b * g.c_out + grp * og) * p + oy0 * g.ow..];
        let dst = acc[grp * og * kdim..].as_mut_ptr();
        if g.is_pointwise() {
            // dw_g[og, cg] += dy_t[og, t] · x_tᵀ[t, cg].
            // SAFETY: extents lie within the slices.
            unsafe {
                sgemm(
                    og,
                    kdim,
                    t,
                    dst,
                    kdim as isize,
                    1,
                    true,
                    dy_t.as_ptr(),
                    p as isize,
                    1,
                    src[oy0 * g.ow..].as_ptr(),
                    1,
                    hw as isize,
                )
            };
            return acc;
        }
        with_scratch(kdim * t, |col| {
            im2col_tile(g, src, oy0, oy1, col);
            // SAFETY: extents lie within the slices.
            unsafe {
                sgemm(
                    og,
                    kdim,
                    t,
                    dst,
                    kdim as isize,
                    1,
                    true,
                    dy_t.as_ptr(),
                    p as isize,
                    1,
                    col.as_ptr(),
                    1,
                    t as isize,
                )
            };
        });
        acc
    };
    items(g)
        .with_min_len(4)
        .fold(|| vec![0.0f32; wlen], acc_item)
        .reduce(
            || vec![0.0f32; wlen],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(&b) {
                    *x += *y;
                }
                a
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_forward(g: &ConvGeom, x: &[f32], wt: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0f32; g.y_len()];
        let (cg, og) = (g.cg(), g.og());
        for b in 0..g.n {
            for co in 0..g.c_out {
                let grp = co / og;
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut s = 0.0f64;
                        for c in 0..cg {
                            let ci = grp * cg + c;
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                                    let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x[((b * g.c_in + ci) * g.h + iy as usize) * g.w
                                        + ix as usize];
                                    let wv = wt[((co * cg + c) * g.kh + ky) * g.kw + kx];
                                    s += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        y[((b * g.c_out + co) * g.oh + oy) * g.ow + ox] = s as f32;
                    }
                }
            }
        }
        y
    }

    fn geom(
        n: usize,
        c_in: usize,
        hw: (usize, usize),
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> ConvGeom {
        ConvGeom {
            n,
            c_in,
            h: hw.0,
            w: hw.1,
            c_out,
            kh: k,
            kw: k,
            stride,
            pad,
            groups,
            oh: (hw.0 + 2 * pad - k) / stride + 1,
            ow: (hw.1 + 2 * pad - k) / stride + 1,
        }
    }

    fn pseudo(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn forward_matches_naive_loops() {
        for (i, g) in [
            geom(2, 3, (7, 9), 4, 3, 1, 1, 1),
            geom(1, 4, (8, 8), 6, 3, 2, 1, 2),
            geom(2, 4, (5, 6), 4, 1, 1, 0, 4),
            geom(1, 2, (11, 10), 3, 7, 2, 3, 1),
            geom(1, 2, (6, 5), 2, 1, 2, 0, 1),
            geom(1, 3, (40, 33), 5, 3, 1, 0, 1),
        ]
        .iter()
        .enumerate()
        {
            let x = pseudo(g.x_len(), i as u32);
            let wt = pseudo(g.w_len(), 100 + i as u32);
            let mut y = vec![f32::NAN; g.y_len()];
            conv_forward(g, &x, &wt, None, &mut y);
            let r = naive_forward(g, &x, &wt);
            for (a, b) in y.iter().zip(&r) {
                assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{g:?}: {a} vs {b}");
            }
        }
    }
}
