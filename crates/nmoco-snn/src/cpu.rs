//! CPU kernels: multi-threaded over blocks of neurons (rayon), the time loop inside each block,
//! the inner loop over the block's contiguous neurons (layout `[T, N]`), so it vectorises.
//!
//! The backward pass recomputes the membrane trace `h` of its block from `x` into a thread-local
//! scratch buffer (`T x block` floats, sized to stay in L2), then runs BPTT backwards in time.
//! Nothing is allocated per time step; per call, only the output vector.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::config::{Charge, Params};
use crate::surrogate::{AtanSg, PwQuadSg, RectSg, SigmoidSg, Surrogate, SurrogateGrad};

/// Neurons per forward task.
const FWD_BLOCK: usize = 16384;
/// Upper bound on neurons per backward task (the scratch is `T x block`).
const BWD_BLOCK_MAX: usize = 16384;
/// Target size of the backward scratch, in floats (1 MiB, half an L2).
const BWD_SCRATCH: usize = 256 * 1024;

/// A zeroed output buffer. Fresh multi-MiB allocations come from `mmap` and every 4 KiB page
/// faults on first write, which costs more than the op itself (measured in the bench: a copy into
/// a fresh buffer is ~14x slower than into a reused one on the development VM). On Linux the
/// buffer is advised for transparent huge pages before it is touched (2 MiB faults instead).
pub(crate) fn alloc_out(n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    #[cfg(target_os = "linux")]
    advise_huge_pages(&mut v);
    v
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(v: &mut [f32]) {
    const HUGE: usize = 2 << 20;
    const PAGE: usize = 4096;
    let bytes = std::mem::size_of_val(v);
    if bytes < 4 * HUGE {
        return;
    }
    let start = v.as_mut_ptr() as usize;
    let a = start.next_multiple_of(PAGE);
    let b = (start + bytes) / PAGE * PAGE;
    if b > a {
        // SAFETY: `[a, b)` lies inside the buffer we own; MADV_HUGEPAGE is advisory and changes
        // no contents (an error, e.g. THP disabled, is ignored).
        unsafe {
            libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE);
        }
    }
}

fn bwd_block_len(t: usize) -> usize {
    (BWD_SCRATCH / t.max(1)).clamp(64, BWD_BLOCK_MAX) / 16 * 16
}

/// A raw pointer to the output that rayon tasks may share: every task writes only the columns
/// of its own block of neurons, so the written ranges are disjoint.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint index ranges (see the type's doc) and the owner outlives them.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// # Safety
    /// `off + len` must be within the output and no other task may touch that range.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, off: usize, len: usize) -> &mut [f32] {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(off), len) }
    }
}

#[inline(always)]
fn charge<const CH: u8>(v: f32, x: f32, k: f32, vr: f32) -> f32 {
    match CH {
        0 => v + x,
        1 => v + (x - (v - vr)) * k,
        _ => v - (v - vr) * k + x,
    }
}

#[inline(always)]
fn reset<const HARD: bool>(h: f32, fire: bool, vth: f32, vr: f32) -> f32 {
    if HARD {
        if fire { vr } else { h }
    } else if fire {
        h - vth
    } else {
        h
    }
}

macro_rules! with_charge {
    ($v:expr, $name:ident, $body:expr) => {
        match $v {
            Charge::If => {
                const $name: u8 = 0;
                $body
            }
            Charge::Decay => {
                const $name: u8 = 1;
                $body
            }
            Charge::NoDecay => {
                const $name: u8 = 2;
                $body
            }
        }
    };
}

macro_rules! with_bool {
    ($v:expr, $name:ident, $body:expr) => {
        if $v {
            const $name: bool = true;
            $body
        } else {
            const $name: bool = false;
            $body
        }
    };
}

macro_rules! with_sg {
    ($v:expr, $name:ident, $body:expr) => {
        match $v {
            Surrogate::Atan { alpha } => {
                let $name = AtanSg::new(alpha);
                $body
            }
            Surrogate::Sigmoid { alpha } => {
                let $name = SigmoidSg::new(alpha);
                $body
            }
            Surrogate::PiecewiseQuadratic { alpha } => {
                let $name = PwQuadSg::new(alpha);
                $body
            }
            Surrogate::Rect { width } => {
                let $name = RectSg::new(width);
                $body
            }
        }
    };
}

/// Multi-step forward over `x: [t, n]` (row-major); returns the spikes.
pub(crate) fn forward(x: &[f32], t: usize, n: usize, p: &Params, k: f32) -> Vec<f32> {
    let mut out = alloc_out(t * n);
    if t == 0 || n == 0 {
        return out;
    }
    let ptr = OutPtr(out.as_mut_ptr());
    let blocks = n.div_ceil(FWD_BLOCK);
    with_charge!(p.charge, CH, {
        with_bool!(p.hard, HARD, {
            (0..blocks).into_par_iter().for_each(|b| {
                let n0 = b * FWD_BLOCK;
                let len = FWD_BLOCK.min(n - n0);
                if has_avx2() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
                    unsafe { fwd_block_avx2::<CH, HARD>(x, ptr, t, n, n0, len, k, p.vth, p.vr) }
                } else {
                    fwd_block::<CH, HARD>(x, ptr, t, n, n0, len, k, p.vth, p.vr)
                }
            })
        })
    });
    out
}

#[cfg(test)]
static FORCE_BASELINE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this CPU has AVX2 and FMA (checked once). The kernels are compiled twice, for the
/// baseline target and with AVX2 enabled (8-wide instead of 4-wide vectors); Rust never fuses
/// a multiply and an add on its own, so both give bit-identical results.
fn has_avx2() -> bool {
    #[cfg(test)]
    if FORCE_BASELINE.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`fwd_block`] compiled with AVX2 and FMA enabled (see [`has_avx2`]).
#[allow(clippy::too_many_arguments)]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
unsafe fn fwd_block_avx2<const CH: u8, const HARD: bool>(
    x: &[f32],
    out: OutPtr,
    t: usize,
    n: usize,
    n0: usize,
    len: usize,
    k: f32,
    vth: f32,
    vr: f32,
) {
    fwd_block::<CH, HARD>(x, out, t, n, n0, len, k, vth, vr)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn fwd_block<const CH: u8, const HARD: bool>(
    x: &[f32],
    out: OutPtr,
    t: usize,
    n: usize,
    n0: usize,
    len: usize,
    k: f32,
    vth: f32,
    vr: f32,
) {
    let mut v_buf = [0f32; FWD_BLOCK];
    let v = &mut v_buf[..len];
    v.fill(vr);
    for ti in 0..t {
        let off = ti * n + n0;
        let xs = &x[off..off + len];
        // SAFETY: columns n0..n0+len of row ti belong to this task only.
        let os = unsafe { out.slice(off, len) };
        for ((vi, &xi), oi) in v.iter_mut().zip(xs).zip(os.iter_mut()) {
            let h = charge::<CH>(*vi, xi, k, vr);
            let fire = h - vth >= 0.0;
            *oi = if fire { 1.0 } else { 0.0 };
            *vi = reset::<HARD>(h, fire, vth, vr);
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Multi-step backward (BPTT): from `x` and the spikes' gradient `gs` (both `[t, n]`), returns
/// the input gradient, followed by `dL/dk` (summed over all neurons and steps) when `plif`.
/// `k` is `1/tau` (LIF) or `sigmoid(w)` (PLIF).
pub(crate) fn backward(
    x: &[f32],
    gs: &[f32],
    t: usize,
    n: usize,
    p: &Params,
    k: f32,
    plif: bool,
) -> (Vec<f32>, f64) {
    let extra = usize::from(plif);
    let mut out = alloc_out(t * n + extra);
    if t == 0 || n == 0 {
        return (out, 0.0);
    }
    let ptr = OutPtr(out.as_mut_ptr());
    let bl = bwd_block_len(t);
    let blocks = n.div_ceil(bl);
    let gk = with_charge!(p.charge, CH, {
        with_bool!(p.hard, HARD, {
            with_bool!(p.detach, DETACH, {
                with_bool!(plif, PLIF, {
                    with_sg!(p.surrogate, sg, {
                        (0..blocks)
                            .into_par_iter()
                            .map(|b| {
                                let n0 = b * bl;
                                let len = bl.min(n - n0);
                                SCRATCH.with(|s| {
                                    let mut s = s.borrow_mut();
                                    if has_avx2() {
                                        // SAFETY: the CPU supports AVX2 and FMA (run-time check).
                                        unsafe {
                                            bwd_block_avx2::<CH, HARD, DETACH, PLIF, _>(
                                                x, gs, ptr, t, n, n0, len, k, p.vth, p.vr, sg,
                                                &mut s,
                                            )
                                        }
                                    } else {
                                        bwd_block::<CH, HARD, DETACH, PLIF, _>(
                                            x, gs, ptr, t, n, n0, len, k, p.vth, p.vr, sg, &mut s,
                                        )
                                    }
                                })
                            })
                            .sum::<f64>()
                    })
                })
            })
        })
    });
    (out, gk)
}

/// [`bwd_block`] compiled with AVX2 and FMA enabled (see [`has_avx2`]).
#[allow(clippy::too_many_arguments)]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
unsafe fn bwd_block_avx2<const CH: u8, const HARD: bool, const DETACH: bool, const PLIF: bool, S>(
    x: &[f32],
    gs: &[f32],
    out: OutPtr,
    t: usize,
    n: usize,
    n0: usize,
    len: usize,
    k: f32,
    vth: f32,
    vr: f32,
    sg: S,
    scratch: &mut Vec<f32>,
) -> f64
where
    S: SurrogateGrad,
{
    bwd_block::<CH, HARD, DETACH, PLIF, S>(x, gs, out, t, n, n0, len, k, vth, vr, sg, scratch)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn bwd_block<const CH: u8, const HARD: bool, const DETACH: bool, const PLIF: bool, S>(
    x: &[f32],
    gs: &[f32],
    out: OutPtr,
    t: usize,
    n: usize,
    n0: usize,
    len: usize,
    k: f32,
    vth: f32,
    vr: f32,
    sg: S,
    scratch: &mut Vec<f32>,
) -> f64
where
    S: SurrogateGrad,
{
    if scratch.len() < t * len {
        scratch.resize(t * len, 0.0);
    }
    // Pass 1: recompute the membrane trace h of this block.
    let mut v_buf = [0f32; BWD_BLOCK_MAX];
    let v = &mut v_buf[..len];
    v.fill(vr);
    for ti in 0..t {
        let off = ti * n + n0;
        let xs = &x[off..off + len];
        let hs = &mut scratch[ti * len..(ti + 1) * len];
        for ((vi, &xi), hi) in v.iter_mut().zip(xs).zip(hs.iter_mut()) {
            let h = charge::<CH>(*vi, xi, k, vr);
            *hi = h;
            *vi = reset::<HARD>(h, h - vth >= 0.0, vth, vr);
        }
    }
    // Pass 2: BPTT. `gv` is dL/dv_t, carried from step t+1 (dh_{t+1}/dv_t = a).
    let a = if CH == 0 { 1.0 } else { 1.0 - k };
    let b = if CH == 1 { k } else { 1.0 };
    let gv = &mut v_buf[..len];
    gv.fill(0.0);
    let mut gk_buf = [0f32; BWD_BLOCK_MAX];
    let gk = &mut gk_buf[..len];
    for ti in (0..t).rev() {
        let off = ti * n + n0;
        let gss = &gs[off..off + len];
        // SAFETY: columns n0..n0+len of row ti belong to this task only.
        let gxs = unsafe { out.slice(off, len) };
        let (before, rest) = scratch.split_at(ti * len);
        let hs = &rest[..len];
        let step = |h: f32, g_s: f32, g_v: &mut f32| -> f32 {
            let d = h - vth;
            let fire = d >= 0.0;
            let sgv = sg.grad(d);
            let dvdh = if HARD {
                let base = if fire { 0.0 } else { 1.0 };
                if DETACH { base } else { base + (vr - h) * sgv }
            } else if DETACH {
                1.0
            } else {
                1.0 - vth * sgv
            };
            let gh = g_s * sgv + *g_v * dvdh;
            *g_v = gh * a;
            gh
        };
        if PLIF {
            let xs = &x[off..off + len];
            if ti > 0 {
                let hp = &before[(ti - 1) * len..];
                for i in 0..len {
                    let gh = step(hs[i], gss[i], &mut gv[i]);
                    gxs[i] = gh * b;
                    let vp = reset::<HARD>(hp[i], hp[i] - vth >= 0.0, vth, vr);
                    let dhdk = if CH == 1 {
                        xs[i] - (vp - vr)
                    } else {
                        -(vp - vr)
                    };
                    gk[i] += gh * dhdk;
                }
            } else {
                for i in 0..len {
                    let gh = step(hs[i], gss[i], &mut gv[i]);
                    gxs[i] = gh * b;
                    // v_{-1} = vr, so (v - vr) = 0.
                    let dhdk = if CH == 1 { xs[i] } else { 0.0 };
                    gk[i] += gh * dhdk;
                }
            }
        } else {
            for ((&h, &g_s), (g_v, gx)) in hs.iter().zip(gss).zip(gv.iter_mut().zip(gxs.iter_mut()))
            {
                *gx = step(h, g_s, g_v) * b;
            }
        }
    }
    if PLIF {
        gk.iter().map(|&g| g as f64).sum()
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NeuronConfig;
    use crate::config::NeuronKind;

    #[test]
    fn avx2_and_baseline_kernels_agree_bit_for_bit() {
        let (t, n) = (7, 3000);
        let mut s = 0x1234_5678_u64;
        let mut rnd = |lo: f32, hi: f32| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        };
        let x: Vec<f32> = (0..t * n).map(|_| rnd(-1.0, 3.0)).collect();
        let g: Vec<f32> = (0..t * n).map(|_| rnd(-1.0, 1.0)).collect();
        for cfg in NeuronConfig::all_variants() {
            let p = cfg.params().expect("params");
            let plif = cfg.kind == NeuronKind::Plif;
            let run = || {
                (
                    forward(&x, t, n, &p, 0.4),
                    backward(&x, &g, t, n, &p, 0.4, plif),
                )
            };
            FORCE_BASELINE.store(true, std::sync::atomic::Ordering::Relaxed);
            let (fa, (ba, ka)) = run();
            FORCE_BASELINE.store(false, std::sync::atomic::Ordering::Relaxed);
            let (fb, (bb, kb)) = run();
            assert_eq!(fa, fb, "{cfg:?}");
            assert!(
                ba.iter().zip(&bb).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{cfg:?}"
            );
            assert_eq!(ka.to_bits(), kb.to_bits(), "{cfg:?}");
        }
    }
}
