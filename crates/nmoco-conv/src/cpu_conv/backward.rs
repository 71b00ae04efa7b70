//! Input and weight gradients.

use rayon::prelude::*;

use super::forward::conv_forward;
use super::sparse::{axpy, for_each_tap, is_sparse, sparse_thresholds, transpose_into};
use super::{ConvGeom, col2im_tile, im2col_tile, sgemm, with_scratch};

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
