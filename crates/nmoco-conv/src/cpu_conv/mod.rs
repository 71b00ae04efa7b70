//! Slice-level convolution kernels: im2col tiles, col2im, and the `gemm` calls.
//!
//! All tensors are contiguous NCHW `f32` slices. Work is split into items of
//! (image, group, tile of output rows) and spread over the rayon pool; every
//! thread keeps one reusable scratch buffer for its im2col tile.

use std::cell::RefCell;

use gemm::Parallelism;

use crate::geom::ConvGeom;

mod backward;
mod forward;
mod sparse;
#[cfg(test)]
mod tests;

pub(crate) use backward::{conv_backward_data, conv_backward_weight};
pub(crate) use forward::conv_forward;
pub use sparse::{
    DEFAULT_SPARSE_THRESHOLDS, SparseThresholds, set_sparse_thresholds, sparse_thresholds,
};

/// Target number of output pixels per im2col tile (the tile is
/// `C_in/groups · KH · KW` rows by this many columns, kept small enough for L2).
const TILE_PIXELS: usize = 512;

/// Tiling of the output rows (CPU only).
impl ConvGeom {
    /// Output rows per tile.
    fn rows_per_tile(&self) -> usize {
        (TILE_PIXELS / self.ow.max(1)).clamp(1, self.oh.max(1))
    }
    fn tiles(&self) -> usize {
        self.oh.div_ceil(self.rows_per_tile())
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
