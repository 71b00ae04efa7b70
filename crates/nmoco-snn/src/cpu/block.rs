//! The per-task kernels: one block of neurons (`n0..n0 + len` of every row of a `[t, n]`
//! tensor), its time loop, each row in 256-neuron chunks with software prefetch.
//! Generic over the neuron variant (const parameters) and compiled twice, baseline and
//! AVX2 + FMA (the `_avx2` wrappers, chosen at run time by [`super::has_avx2`]).

use super::affine::{ChannelAffine, acc_row_avx2, acc_row_base, expand_channels, reduce_channels};
use super::mem::{OutPtr, Rows, chunks, store_fence};
use super::row::{BwdParams, bptt_row_avx2, bptt_row_base, neuron_row};
use super::{Block, BwdJob, FWD_BLOCK, TaskSums};
use crate::surrogate::SurrogateGrad;

/// [`fwd_block`] compiled with AVX2 and FMA enabled (see [`super::has_avx2`]).
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
pub(super) unsafe fn fwd_block_avx2<const CH: u8, const HARD: bool, const AFF: bool>(
    x: &[f32],
    out: OutPtr,
    blk: Block,
    k: f32,
    vth: f32,
    vr: f32,
    aff: Option<&ChannelAffine<'_>>,
) {
    fwd_block::<CH, HARD, AFF>(x, out, blk, k, vth, vr, aff)
}

#[inline(always)]
pub(super) fn fwd_block<const CH: u8, const HARD: bool, const AFF: bool>(
    x: &[f32],
    out: OutPtr,
    blk: Block,
    k: f32,
    vth: f32,
    vr: f32,
    aff: Option<&ChannelAffine<'_>>,
) {
    let Block { t, n, n0, len, .. } = blk;
    let mut v_buf = [0f32; FWD_BLOCK];
    let mut o_buf = [0f32; FWD_BLOCK];
    let v = &mut v_buf[..len];
    let os = &mut o_buf[..len];
    v.fill(vr);
    let mut a_buf = [0f32; FWD_BLOCK];
    let mut d_buf = [0f32; FWD_BLOCK];
    let (ab, db) = (&mut a_buf[..len], &mut d_buf[..len]);
    if let (true, Some(aff)) = (AFF, aff) {
        expand_channels(aff.a, aff.c, aff.s, n0, ab);
        expand_channels(aff.d, aff.c, aff.s, n0, db);
    }
    let rows = Rows { n, n0, len, t };
    for ti in 0..t {
        let off = ti * n + n0;
        let xs = &x[off..off + len];
        for (c0, c1) in chunks(len) {
            rows.prefetch_ahead(x, ti, c0, false);
            let (v, xs, os) = (&mut v[c0..c1], &xs[c0..c1], &mut os[c0..c1]);
            neuron_row!(
                <CH, HARD, AFF>, v, xs, ab[c0..c1], &db[c0..c1], os, k, vth, vr,
                |h, fire| if fire { 1.0 } else { 0.0 }
            );
        }
        // SAFETY: columns n0..n0+len of row ti are in the output and belong to this task only.
        unsafe { out.store(off, os, blk.stream) };
    }
    store_fence(blk.stream);
}

/// [`bwd_block`] compiled with AVX2 and FMA enabled (see [`super::has_avx2`]).
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
pub(super) unsafe fn bwd_block_avx2<
    const CH: u8,
    const HARD: bool,
    const DETACH: bool,
    const PLIF: bool,
    const AFF: bool,
    S,
>(
    job: &BwdJob<'_>,
    blk: Block,
    pr: BwdParams<S>,
    scratch: &mut Vec<f32>,
) -> TaskSums
where
    S: SurrogateGrad,
{
    bwd_block::<CH, HARD, DETACH, PLIF, AFF, true, S>(job, blk, pr, scratch)
}

#[inline(always)]
pub(super) fn bwd_block<
    const CH: u8,
    const HARD: bool,
    const DETACH: bool,
    const PLIF: bool,
    const AFF: bool,
    const AVX2: bool,
    S,
>(
    job: &BwdJob<'_>,
    blk: Block,
    pr: BwdParams<S>,
    scratch: &mut Vec<f32>,
) -> TaskSums
where
    S: SurrogateGrad,
{
    let Block { t, n, n0, len, .. } = blk;
    let BwdParams { k, vth, vr, .. } = pr;
    let x = job.x;
    // Scratch: the membrane trace (t rows), then one row each of v / dL/dv, dL/dk, dL/dx,
    // and with the affine map its a, d, mean and the two gradient sums.
    let rows = t + if AFF { 8 } else { 3 };
    if scratch.len() < rows * len {
        scratch.resize(rows * len, 0.0);
    }
    let (trace, rest) = scratch.split_at_mut(t * len);
    let (v, rest) = rest.split_at_mut(len);
    let (gk, rest) = rest.split_at_mut(len);
    let (gxs, rest) = rest.split_at_mut(len);
    let (ab, rest) = rest.split_at_mut(if AFF { len } else { 0 });
    let (db, rest) = rest.split_at_mut(if AFF { len } else { 0 });
    let (mb, rest) = rest.split_at_mut(if AFF { len } else { 0 });
    let (s1, rest) = rest.split_at_mut(if AFF { len } else { 0 });
    let s2 = &mut rest[..if AFF { len } else { 0 }];
    if let (true, Some((aff, mean))) = (AFF, job.aff) {
        expand_channels(aff.a, aff.c, aff.s, n0, ab);
        expand_channels(aff.d, aff.c, aff.s, n0, db);
        expand_channels(mean, aff.c, aff.s, n0, mb);
        s1.fill(0.0);
        s2.fill(0.0);
    }
    // Pass 1: recompute the membrane trace h of this block.
    let rows_of = Rows { n, n0, len, t };
    v.fill(vr);
    for ti in 0..t {
        let off = ti * n + n0;
        let xs = &x[off..off + len];
        let hs = &mut trace[ti * len..(ti + 1) * len];
        for (c0, c1) in chunks(len) {
            rows_of.prefetch_ahead(x, ti, c0, false);
            let (v, xs, hs) = (&mut v[c0..c1], &xs[c0..c1], &mut hs[c0..c1]);
            neuron_row!(
                <CH, HARD, AFF>, v, xs, ab[c0..c1], &db[c0..c1], hs, k, vth, vr,
                |h, fire| h
            );
        }
    }
    // Pass 2: BPTT. `gv` is dL/dv_t, carried from step t+1 (dh_{t+1}/dv_t = a).
    // The row functions are called through opaque pointers: LLVM must not inline them (see
    // `bptt_row`), and it did inline the AVX2 ones into this AVX2 function despite
    // `#[inline(never)]` (measured: the loop went scalar again).
    type RowFn<S> = unsafe fn(
        &[f32],
        Option<&[f32]>,
        &[f32],
        &[f32],
        &mut [f32],
        &mut [f32],
        &mut [f32],
        BwdParams<S>,
    );
    type AccFn = unsafe fn(&[f32], &[f32], &[f32], &mut [f32], &mut [f32]);
    let (row_fn, acc_fn): (RowFn<S>, AccFn) = if AVX2 {
        (bptt_row_avx2::<CH, HARD, DETACH, PLIF, S>, acc_row_avx2)
    } else {
        (bptt_row_base::<CH, HARD, DETACH, PLIF, S>, acc_row_base)
    };
    let (row_fn, acc_fn) = std::hint::black_box((row_fn, acc_fn));
    let gv = v;
    gv.fill(0.0);
    gk.fill(0.0);
    for ti in (0..t).rev() {
        let off = ti * n + n0;
        let gss = &job.gs[off..off + len];
        let xs = if PLIF || AFF {
            &x[off..off + len]
        } else {
            &[][..]
        };
        let (before, rest) = trace.split_at(ti * len);
        let hs = &rest[..len];
        let hp = (PLIF && ti > 0).then(|| &before[(ti - 1) * len..ti * len]);
        for (c0, c1) in chunks(len) {
            // dL/ds (and x where needed) come from memory, in descending row order.
            rows_of.prefetch_ahead(job.gs, ti, c0, true);
            if PLIF || AFF {
                rows_of.prefetch_ahead(x, ti, c0, true);
            }
            let hp = hp.map(|hp| &hp[c0..c1]);
            let xs = if PLIF || AFF { &xs[c0..c1] } else { xs };
            let gk = if PLIF { &mut gk[c0..c1] } else { &mut gk[..0] };
            // SAFETY (both calls): the AVX2 functions are only chosen when `AVX2`, which only
            // `bwd_block_avx2` sets, reached after the run-time check.
            unsafe {
                row_fn(
                    &hs[c0..c1],
                    hp,
                    xs,
                    &gss[c0..c1],
                    &mut gv[c0..c1],
                    gk,
                    &mut gxs[c0..c1],
                    pr,
                )
            };
            if AFF {
                unsafe {
                    acc_fn(
                        &gxs[c0..c1],
                        xs,
                        &mb[c0..c1],
                        &mut s1[c0..c1],
                        &mut s2[c0..c1],
                    )
                };
            }
        }
        // SAFETY: columns n0..n0+len of row ti are in the output and belong to this task only.
        unsafe { job.out.store(off, gxs, blk.stream) };
    }
    store_fence(blk.stream);
    let mut sums = TaskSums::default();
    if PLIF {
        sums.gk = gk.iter().map(|&g| g as f64).sum();
    }
    if let (true, Some((aff, _))) = (AFF, job.aff) {
        sums.s1 = vec![0.0; aff.c];
        sums.s2 = vec![0.0; aff.c];
        reduce_channels(s1, aff.c, aff.s, n0, &mut sums.s1);
        reduce_channels(s2, aff.c, aff.s, n0, &mut sums.s2);
    }
    sums
}
