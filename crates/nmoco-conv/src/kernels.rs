//! Slice-level convolution kernels: im2col tiles, col2im, and the `gemm` calls.
//!
//! All tensors are contiguous NCHW `f32` slices. Work is split into items of
//! (image, group, tile of output rows) and spread over the rayon pool; every
//! thread keeps one reusable scratch buffer for its im2col tile.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};

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
    if k == 0 {
        // An empty product: leave an accumulated dst alone, zero an overwritten one.
        if !accumulate {
            for i in 0..m as isize {
                for j in 0..n as isize {
                    // SAFETY: (i, j) lies inside the dst extent given by the caller.
                    unsafe { *dst.offset(i * dst_rs + j * dst_cs) = 0.0 };
                }
            }
        }
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

/// Forward convolution: `y = conv(x, w) + bias`. `y` must hold `g.y_len()` floats
/// (its contents are overwritten); `bias`, if given, holds `c_out` floats.
///
/// Each (image, group) whose input density is at most the forward sparse
/// threshold ([`sparse_thresholds`]) takes the sparse scatter path; the others run tiled im2col + gemm.
pub(crate) fn conv_forward(
    g: &ConvGeom,
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    conv_forward_with(g, x, wt, bias, y, sparse_thresholds().forward);
}

/// [`conv_forward`] with an explicit sparse-path threshold.
pub(crate) fn conv_forward_with(
    g: &ConvGeom,
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    max_density: f32,
) {
    debug_assert_eq!(x.len(), g.x_len());
    debug_assert_eq!(wt.len(), g.w_len());
    debug_assert_eq!(y.len(), g.y_len());
    let (cg, og, kdim, hw, p) = (g.cg(), g.og(), g.kdim(), g.h * g.w, g.oh * g.ow);
    let rpt = g.rows_per_tile();
    let tiles = g.tiles();
    let yp = SyncPtr(y.as_mut_ptr());
    let wt_t = if max_density > 0.0 && !g.is_pointwise() {
        transpose_groups(g, wt)
    } else {
        Vec::new()
    };
    let groups = g.groups;
    (0..g.n * groups).into_par_iter().for_each(|bg| {
        let (b, grp) = (bg / groups, bg % groups);
        let src = &x[(b * g.c_in + grp * cg) * hw..(b * g.c_in + (grp + 1) * cg) * hw];
        let w_g = &wt[grp * og * kdim..(grp + 1) * og * kdim];
        let b_g = bias.map(|b| &b[grp * og..(grp + 1) * og]);
        // SAFETY: each (image, group) writes only its block y[b, grp*og..(grp+1)*og].
        let dst = unsafe { yp.get().add((b * g.c_out + grp * og) * p) };
        let dst = SyncPtr(dst);
        if !wt_t.is_empty() && is_sparse(src, max_density) {
            let wt_g = &wt_t[grp * kdim * og..(grp + 1) * kdim * og];
            with_scratch(p * og, |yt| {
                sparse_forward(g, src, wt_g, yt);
                // SAFETY: the block is og rows of p floats, owned by this item.
                let block = unsafe { std::slice::from_raw_parts_mut(dst.get(), og * p) };
                untranspose(yt, og, p, b_g, block);
            });
            return;
        }
        (0..tiles).into_par_iter().for_each(|tile| {
            let oy0 = tile * rpt;
            let oy1 = (oy0 + rpt).min(g.oh);
            // SAFETY: each tile writes the disjoint columns oy0..oy1 of this block.
            let dst = unsafe { dst.get().add(oy0 * g.ow) };
            forward_tile(g, src, w_g, b_g, oy0, oy1, dst);
        });
    });
}

/// One dense tile: output rows `oy0..oy1` of one (image, group) block at `dst`
/// (row stride `oh·ow`).
fn forward_tile(
    g: &ConvGeom,
    src: &[f32],
    w_g: &[f32],
    b_g: Option<&[f32]>,
    oy0: usize,
    oy1: usize,
    dst: *mut f32,
) {
    let (og, kdim, hw, p) = (g.og(), g.kdim(), g.h * g.w, g.oh * g.ow);
    let t = (oy1 - oy0) * g.ow;
    let accumulate = if let Some(bias) = b_g {
        for o in 0..og {
            // SAFETY: row o of this tile, t floats, owned by the caller's item.
            let row = unsafe { std::slice::from_raw_parts_mut(dst.add(o * p), t) };
            row.fill(bias[o]);
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
}

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
fn is_sparse(src: &[f32], max_density: f32) -> bool {
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
fn transpose_groups(g: &ConvGeom, wt: &[f32]) -> Vec<f32> {
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
fn untranspose(yt: &[f32], og: usize, p: usize, bias: Option<&[f32]>, block: &mut [f32]) {
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
fn transpose_into(src: &[f32], og: usize, p: usize, dst: &mut [f32]) {
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
fn for_each_tap(g: &ConvGeom, src: &[f32], mut f: impl FnMut(usize, usize, f32)) {
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
fn axpy(v: f32, b: &[f32], a: &mut [f32]) {
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
fn sparse_forward(g: &ConvGeom, src: &[f32], wt_g: &[f32], yt: &mut [f32]) {
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
///
/// Each (image, group) whose input density is at most the weight-gradient
/// sparse threshold ([`sparse_thresholds`]) scatters `v · dy[:, pixel]` into a transposed accumulator; the others run
/// tiled im2col + gemm into per-thread partial sums.
pub(crate) fn conv_backward_weight(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    conv_backward_weight_with(g, x, dy, sparse_thresholds().weight_grad)
}

/// [`conv_backward_weight`] with an explicit sparse-path threshold.
pub(crate) fn conv_backward_weight_with(
    g: &ConvGeom,
    x: &[f32],
    dy: &[f32],
    max_density: f32,
) -> Vec<f32> {
    debug_assert_eq!(x.len(), g.x_len());
    debug_assert_eq!(dy.len(), g.y_len());
    let (cg, og, kdim, hw, p) = (g.cg(), g.og(), g.kdim(), g.h * g.w, g.oh * g.ow);
    let wlen = g.w_len();
    let tiles = g.tiles();
    let groups = g.groups;
    let max_density = if g.is_pointwise() { 0.0 } else { max_density };
    // Deterministic partial sums: the (image, group) items are cut into a fixed
    // number of contiguous chunks (a function of the shape only, not of the thread
    // count or of work stealing); each chunk accumulates its items in order and the
    // chunk sums are added in order, so results are bitwise reproducible.
    let items = g.n * groups;
    let chunks = items.min(16).min((32 << 20) / wlen.max(1)).max(1);
    // Few items: also spread the tiles of a dense item over the pool (decided by the
    // shape only, so that the summation order never depends on the thread count).
    let nested = items < 8;
    let add_into = |a: &mut Vec<f32>, b: &[f32]| {
        if a.is_empty() {
            a.extend_from_slice(b);
        } else {
            for (x, y) in a.iter_mut().zip(b) {
                *x += *y;
            }
        }
    };
    let partials: Vec<(Vec<f32>, Vec<f32>)> = (0..chunks)
        .into_par_iter()
        .map(|chunk| {
            let (mut acc, mut acc_t) = (Vec::new(), Vec::new());
            for bg in chunk * items / chunks..(chunk + 1) * items / chunks {
                let (b, grp) = (bg / groups, bg % groups);
                let src = &x[(b * g.c_in + grp * cg) * hw..(b * g.c_in + (grp + 1) * cg) * hw];
                let dy_g = &dy[(b * g.c_out + grp * og) * p..(b * g.c_out + (grp + 1) * og) * p];
                if is_sparse(src, max_density) {
                    if acc_t.is_empty() {
                        acc_t = vec![0.0f32; wlen];
                    }
                    let acc_g = &mut acc_t[grp * kdim * og..(grp + 1) * kdim * og];
                    with_scratch(p * og, |dyt| {
                        transpose_into(dy_g, og, p, dyt);
                        for_each_tap(g, src, |r, pix, v| {
                            axpy(
                                v,
                                &dyt[pix * og..(pix + 1) * og],
                                &mut acc_g[r * og..(r + 1) * og],
                            );
                        });
                    });
                    continue;
                }
                if acc.is_empty() {
                    acc = vec![0.0f32; wlen];
                }
                let acc_g = &mut acc[grp * og * kdim..(grp + 1) * og * kdim];
                if nested {
                    let parts: Vec<Vec<f32>> = (0..tiles)
                        .into_par_iter()
                        .map(|tile| {
                            let mut part = vec![0.0f32; og * kdim];
                            weight_tile(g, src, dy_g, tile, &mut part);
                            part
                        })
                        .collect();
                    for part in &parts {
                        for (x, y) in acc_g.iter_mut().zip(part) {
                            *x += *y;
                        }
                    }
                } else {
                    for tile in 0..tiles {
                        weight_tile(g, src, dy_g, tile, acc_g);
                    }
                }
            }
            (acc, acc_t)
        })
        .collect();
    let (mut dense, mut sparse_t) = (Vec::new(), Vec::new());
    for (a, at) in &partials {
        if !a.is_empty() {
            add_into(&mut dense, a);
        }
        if !at.is_empty() {
            add_into(&mut sparse_t, at);
        }
    }
    let mut dw = if dense.is_empty() {
        vec![0.0f32; wlen]
    } else {
        dense
    };
    if !sparse_t.is_empty() {
        for grp in 0..groups {
            let base = grp * og * kdim;
            for o in 0..og {
                for r in 0..kdim {
                    dw[base + o * kdim + r] += sparse_t[base + r * og + o];
                }
            }
        }
    }
    dw
}

/// `acc_g[og, kdim] += dy_tile[og, t] · col_tileᵀ[t, kdim]` for one tile of one
/// (image, group).
fn weight_tile(g: &ConvGeom, src: &[f32], dy_g: &[f32], tile: usize, acc_g: &mut [f32]) {
    let (og, kdim, hw, p) = (g.og(), g.kdim(), g.h * g.w, g.oh * g.ow);
    let rpt = g.rows_per_tile();
    let oy0 = tile * rpt;
    let oy1 = (oy0 + rpt).min(g.oh);
    let t = (oy1 - oy0) * g.ow;
    let dy_t = &dy_g[oy0 * g.ow..];
    let dst = acc_g.as_mut_ptr();
    if g.is_pointwise() {
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
        return;
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

    /// dw[co, c, ky, kx] = Σ dy[b, co, oy, ox] · x[b, ci, oy·s+ky-p, ox·s+kx-p].
    fn naive_weight_grad(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
        let mut dw = vec![0.0f64; g.w_len()];
        let (cg, og) = (g.cg(), g.og());
        for b in 0..g.n {
            for co in 0..g.c_out {
                let grp = co / og;
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let d = f64::from(dy[((b * g.c_out + co) * g.oh + oy) * g.ow + ox]);
                        for c in 0..cg {
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                                    let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x[((b * g.c_in + grp * cg + c) * g.h + iy as usize)
                                        * g.w
                                        + ix as usize];
                                    dw[((co * cg + c) * g.kh + ky) * g.kw + kx] +=
                                        d * f64::from(xv);
                                }
                            }
                        }
                    }
                }
            }
        }
        dw.into_iter().map(|v| v as f32).collect()
    }

    fn assert_close(what: &str, a: &[f32], b: &[f32]) {
        let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-4 * scale, "{what}[{i}]: {x} vs {y}");
        }
    }

    #[test]
    fn sparse_and_dense_paths_match_naive_loops() {
        let cases = [
            geom(2, 3, (7, 9), 4, 3, 1, 1, 1),
            geom(1, 4, (8, 8), 6, 3, 2, 1, 2),
            geom(1, 2, (11, 10), 3, 7, 2, 3, 1),
            geom(3, 4, (6, 6), 4, 3, 1, 0, 4),
            geom(1, 2, (6, 5), 2, 1, 2, 0, 1),
        ];
        for (i, g) in cases.iter().enumerate() {
            // Spikes at ~20 % density, with one non-binary value.
            let mut x: Vec<f32> = pseudo(g.x_len(), 7 + i as u32)
                .into_iter()
                .map(|u| if u > 0.6 { 1.0 } else { 0.0 })
                .collect();
            x[0] = 0.5;
            let wt = pseudo(g.w_len(), 50 + i as u32);
            let bias = pseudo(g.c_out, 60 + i as u32);
            let dy = pseudo(g.y_len(), 70 + i as u32);
            let mut want = naive_forward(g, &x, &wt);
            for (j, v) in want.iter_mut().enumerate() {
                *v += bias[(j / (g.oh * g.ow)) % g.c_out];
            }
            let want_dw = naive_weight_grad(g, &x, &dy);
            for density in [0.0, 1.0] {
                let mut y = vec![f32::NAN; g.y_len()];
                conv_forward_with(g, &x, &wt, Some(&bias), &mut y, density);
                assert_close(&format!("{g:?} y@{density}"), &y, &want);
                let dw = conv_backward_weight_with(g, &x, &dy, density);
                assert_close(&format!("{g:?} dw@{density}"), &dw, &want_dw);
            }
        }
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
            conv_forward_with(g, &x, &wt, None, &mut y, 0.0);
            let r = naive_forward(g, &x, &wt);
            for (a, b) in y.iter().zip(&r) {
                assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{g:?}: {a} vs {b}");
            }
        }
    }
}

#[cfg(test)]
mod threshold_tests {
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
