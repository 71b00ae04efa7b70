//! Forward convolution: dense tiles (im2col + gemm) or the sparse scatter path
//! per (image, group).

use rayon::prelude::*;

use super::sparse::{is_sparse, sparse_forward, sparse_thresholds, transpose_groups, untranspose};
use super::{ConvGeom, SyncPtr, im2col_tile, sgemm, with_scratch};

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
