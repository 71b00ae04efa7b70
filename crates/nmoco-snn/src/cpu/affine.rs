//! The per-channel affine map fused in front of the neuron (training batch norm): its
//! coefficients expanded per neuron, the per-channel gradient sums of the backward pass, and
//! batch norm's input gradient applied in place.

use rayon::prelude::*;

/// A per-channel affine map `a[c]·x + d[c]` applied to the neuron's input as it is loaded:
/// training-mode batch norm (with its batch statistics folded into `a`, `d`) fused in front of
/// the neuron, so the normalised tensor is never written. Neuron `j` of a row (`[t, n]`, the
/// row being `[B, C, S]` flattened) is in channel `(j / s) % c`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChannelAffine<'a> {
    pub(crate) a: &'a [f32],
    pub(crate) d: &'a [f32],
    pub(crate) c: usize,
    pub(crate) s: usize,
}

/// Writes `coef[channel(j)]` for neurons `j = n0..n0 + out.len()` into `out`.
#[inline]
pub(super) fn expand_channels(coef: &[f32], c: usize, s: usize, n0: usize, out: &mut [f32]) {
    let mut j = n0;
    let mut rest = out;
    while !rest.is_empty() {
        let seg = (s - j % s).min(rest.len());
        let (head, tail) = rest.split_at_mut(seg);
        head.fill(coef[(j / s) % c]);
        rest = tail;
        j += seg;
    }
}

/// Adds `per_neuron[i]` of neurons `n0 + i` into `sums[channel]`.
#[inline]
pub(super) fn reduce_channels(per_neuron: &[f32], c: usize, s: usize, n0: usize, sums: &mut [f64]) {
    let mut j = n0;
    let mut rest = per_neuron;
    while !rest.is_empty() {
        let seg = (s - j % s).min(rest.len());
        let (head, tail) = rest.split_at(seg);
        sums[(j / s) % c] += head.iter().map(|&v| f64::from(v)).sum::<f64>();
        rest = tail;
        j += seg;
    }
}

/// `s1 += g`, `s2 += g·(x − m)` per neuron (batch norm's gradient sums, per row).
#[inline(always)]
fn acc_row(g: &[f32], x: &[f32], m: &[f32], s1: &mut [f32], s2: &mut [f32]) {
    for ((&gi, (&xi, &mi)), (a, b)) in g
        .iter()
        .zip(x.iter().zip(m))
        .zip(s1.iter_mut().zip(s2.iter_mut()))
    {
        *a += gi;
        *b += gi * (xi - mi);
    }
}

/// [`acc_row`] out of line, baseline (noalias arguments, as for [`bptt_row`]).
#[inline(never)]
pub(super) fn acc_row_base(g: &[f32], x: &[f32], m: &[f32], s1: &mut [f32], s2: &mut [f32]) {
    acc_row(g, x, m, s1, s2)
}

/// [`acc_row`] out of line, with AVX2 and FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline(never)]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
pub(super) unsafe fn acc_row_avx2(g: &[f32], x: &[f32], m: &[f32], s1: &mut [f32], s2: &mut [f32]) {
    acc_row(g, x, m, s1, s2)
}

/// dL/dx of batch norm from dL/dy, in place over `g` (`[t, n]`, rows `[B, C, S]`):
/// `ka[c]·g + kb[c]·x + kd[c]` (the same f32 operations as the unfused batch norm's backward).
pub(crate) fn bn_input_grad_in_place(
    g: &mut [f32],
    x: &[f32],
    n: usize,
    c: usize,
    s: usize,
    ka: &[f32],
    kb: &[f32],
    kd: &[f32],
) {
    if n == 0 {
        return;
    }
    const PIECE: usize = 16384;
    g.par_chunks_mut(PIECE)
        .zip(x.par_chunks(PIECE))
        .enumerate()
        .for_each(|(pi, (gp, xp))| {
            let mut j = (pi * PIECE) % n;
            let (mut gp, mut xp) = (gp, xp);
            while !gp.is_empty() {
                // Up to the end of the channel segment (and of the row).
                let seg = (s - j % s).min(n - j).min(gp.len());
                let ch = (j / s) % c;
                let (a, b, d) = (ka[ch], kb[ch], kd[ch]);
                let (gh, gt) = gp.split_at_mut(seg);
                let (xh, xt) = xp.split_at(seg);
                for (o, &xv) in gh.iter_mut().zip(xh) {
                    *o = a * *o + b * xv + d;
                }
                gp = gt;
                xp = xt;
                j = (j + seg) % n;
            }
        });
}
