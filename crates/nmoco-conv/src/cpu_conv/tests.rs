//! The CPU kernels against naive loops.

use super::backward::conv_backward_weight_with;
use super::forward::conv_forward_with;
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
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xv =
                                    x[((b * g.c_in + ci) * g.h + iy as usize) * g.w + ix as usize];
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
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xv = x[((b * g.c_in + grp * cg + c) * g.h + iy as usize) * g.w
                                    + ix as usize];
                                dw[((co * cg + c) * g.kh + ky) * g.kw + kx] += d * f64::from(xv);
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
