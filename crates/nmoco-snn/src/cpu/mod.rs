//! CPU kernels: multi-threaded over blocks of neurons (rayon), the time loop inside each block,
//! the inner loop over the block's contiguous neurons (layout `[T, N]`), so it vectorises.
//!
//! The backward pass recomputes the membrane trace `h` of its block from `x` into a thread-local
//! scratch buffer (`T x block` floats plus a few rows, sized to stay in L2), then runs BPTT
//! backwards in time. Nothing is allocated per time step; per call, only the output vector
//! (uninitialised: every element is written). Output rows are computed into an L1 staging row
//! and written out with non-temporal stores when the output is large ([`mem::STREAM_MIN_BYTES`]).
//!
//! Files: `block.rs` the per-block kernels, `row.rs` the per-neuron maths, `mem.rs` the memory
//! plumbing, `affine.rs` the fused batch norm's per-channel map and sums.
//!
//! The same kernels optionally apply a per-channel affine map to `x` on load
//! ([`ChannelAffine`]: training batch norm fused in front of the neuron) and, in the backward
//! pass, sum batch norm's per-channel gradient terms.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::config::{Charge, Params};
use crate::surrogate::{AtanSg, PwQuadSg, RectSg, SigmoidSg, Surrogate, SurrogateGrad};

mod affine;
mod block;
mod mem;
mod row;

pub(crate) use affine::{ChannelAffine, bn_input_grad_in_place};
use block::{bwd_block, bwd_block_avx2, fwd_block, fwd_block_avx2};
pub(crate) use mem::alloc_out;
use mem::{OutPtr, alloc_uninit, stream_output};
use row::BwdParams;

/// Neurons per forward task (the membrane and one staged output row stay in L1).
const FWD_BLOCK: usize = 4096;
/// Upper bound on neurons per backward task (the scratch is `T x block`).
const BWD_BLOCK_MAX: usize = 16384;
/// Target size of the backward scratch, in floats (1 MiB, half an L2).
const BWD_SCRATCH: usize = 256 * 1024;

fn bwd_block_len(t: usize) -> usize {
    (BWD_SCRATCH / t.max(1)).clamp(64, BWD_BLOCK_MAX) / 16 * 16
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
    forward_impl(x, t, n, p, k, None)
}

/// [`forward`] of the neuron fed with `aff(x)` (training batch norm fused in front of it).
pub(crate) fn forward_affine(
    x: &[f32],
    t: usize,
    n: usize,
    p: &Params,
    k: f32,
    aff: &ChannelAffine<'_>,
) -> Vec<f32> {
    forward_impl(x, t, n, p, k, Some(aff))
}

fn forward_impl(
    x: &[f32],
    t: usize,
    n: usize,
    p: &Params,
    k: f32,
    aff: Option<&ChannelAffine<'_>>,
) -> Vec<f32> {
    if t == 0 || n == 0 {
        return vec![0.0; t * n];
    }
    let mut out = alloc_uninit(t * n);
    let ptr = OutPtr(out.as_mut_ptr());
    let stream = stream_output(t * n);
    let blocks = n.div_ceil(FWD_BLOCK);
    with_charge!(p.charge, CH, {
        with_bool!(p.hard, HARD, {
            with_bool!(aff.is_some(), AFF, {
                (0..blocks).into_par_iter().for_each(|b| {
                    let n0 = b * FWD_BLOCK;
                    let len = FWD_BLOCK.min(n - n0);
                    let blk = Block {
                        t,
                        n,
                        n0,
                        len,
                        stream,
                    };
                    if has_avx2() {
                        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
                        unsafe { fwd_block_avx2::<CH, HARD, AFF>(x, ptr, blk, k, p.vth, p.vr, aff) }
                    } else {
                        fwd_block::<CH, HARD, AFF>(x, ptr, blk, k, p.vth, p.vr, aff)
                    }
                })
            })
        })
    });
    // SAFETY: the blocks together wrote all `t * n` elements (every row of every block).
    unsafe { out.set_len(t * n) };
    out
}

/// One task's share: neurons `n0..n0 + len` of every row of a `[t, n]` tensor.
#[derive(Clone, Copy)]
struct Block {
    t: usize,
    n: usize,
    n0: usize,
    len: usize,
    /// Write the output with non-temporal stores.
    stream: bool,
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
    let (out, sums) = backward_impl(x, gs, t, n, p, k, plif, None);
    (out, sums.gk)
}

/// Backward of [`forward_affine`] (IF/LIF only) up to the affine map: returns `dL/dy` for the
/// neuron input `y = a[c]·x + d[c]` (`[t, n]`, followed by `2c` zeros for the caller's
/// parameter gradients) and, per channel, `Σ dL/dy` and
/// `Σ dL/dy·(x − mean[c])`, accumulated in the same pass (what batch norm's backward needs).
pub(crate) fn backward_affine(
    x: &[f32],
    gs: &[f32],
    t: usize,
    n: usize,
    p: &Params,
    k: f32,
    aff: &ChannelAffine<'_>,
    mean: &[f32],
) -> (Vec<f32>, Vec<f64>, Vec<f64>) {
    let (out, sums) = backward_impl(x, gs, t, n, p, k, false, Some((aff, mean)));
    let mut s1 = sums.s1;
    let mut s2 = sums.s2;
    s1.resize(aff.c, 0.0);
    s2.resize(aff.c, 0.0);
    (out, s1, s2)
}

/// What the backward tasks sum: PLIF's `dL/dk`, and with a fused affine map the per-channel
/// `Σ g` and `Σ g·(x − mean)` (empty otherwise).
#[derive(Default)]
struct TaskSums {
    gk: f64,
    s1: Vec<f64>,
    s2: Vec<f64>,
}

impl TaskSums {
    fn merge(mut self, o: TaskSums) -> TaskSums {
        self.gk += o.gk;
        for (mine, theirs) in [(&mut self.s1, o.s1), (&mut self.s2, o.s2)] {
            if mine.is_empty() {
                *mine = theirs;
            } else {
                for (a, b) in mine.iter_mut().zip(theirs) {
                    *a += b;
                }
            }
        }
        self
    }
}

/// Everything a backward task reads, shared by all tasks.
#[derive(Clone, Copy)]
struct BwdJob<'a> {
    x: &'a [f32],
    gs: &'a [f32],
    out: OutPtr,
    t: usize,
    n: usize,
    bl: usize,
    stream: bool,
    aff: Option<(&'a ChannelAffine<'a>, &'a [f32])>,
}

#[allow(clippy::too_many_arguments)]
fn backward_impl(
    x: &[f32],
    gs: &[f32],
    t: usize,
    n: usize,
    p: &Params,
    k: f32,
    plif: bool,
    aff: Option<(&ChannelAffine<'_>, &[f32])>,
) -> (Vec<f32>, TaskSums) {
    // PLIF's dL/dw, or batch norm's dL/dgamma and dL/dbeta, follow the input gradient.
    let extra = match aff {
        Some((a, _)) => 2 * a.c,
        None => usize::from(plif),
    };
    if t == 0 || n == 0 {
        return (vec![0.0; t * n + extra], TaskSums::default());
    }
    let mut out = alloc_uninit(t * n + extra);
    let job = BwdJob {
        x,
        gs,
        out: OutPtr(out.as_mut_ptr()),
        t,
        n,
        bl: bwd_block_len(t),
        stream: stream_output(t * n),
        aff,
    };
    let (k, vth, vr) = (k, p.vth, p.vr);
    let sums = with_charge!(p.charge, CH, {
        with_bool!(p.hard, HARD, {
            with_bool!(p.detach, DETACH, {
                with_sg!(p.surrogate, sg, {
                    let pr = BwdParams { k, vth, vr, sg };
                    match (aff.is_some(), plif) {
                        (true, _) => bwd_tasks::<CH, HARD, DETACH, false, true, _>(&job, pr),
                        (false, true) => bwd_tasks::<CH, HARD, DETACH, true, false, _>(&job, pr),
                        (false, false) => bwd_tasks::<CH, HARD, DETACH, false, false, _>(&job, pr),
                    }
                })
            })
        })
    });
    for i in t * n..t * n + extra {
        // The caller fills these slots; they must be initialised before `set_len`.
        // SAFETY: `i` is within the capacity `t * n + extra`.
        unsafe { job.out.0.add(i).write(0.0) };
    }
    // SAFETY: the blocks wrote all `t * n` gradients, and the extra slots were written above.
    unsafe { out.set_len(t * n + extra) };
    (out, sums)
}

/// Runs the backward blocks in parallel and sums what they return.
fn bwd_tasks<
    const CH: u8,
    const HARD: bool,
    const DETACH: bool,
    const PLIF: bool,
    const AFF: bool,
    S,
>(
    job: &BwdJob<'_>,
    pr: BwdParams<S>,
) -> TaskSums
where
    S: SurrogateGrad,
{
    let avx2 = has_avx2();
    (0..job.n.div_ceil(job.bl))
        .into_par_iter()
        .map(|b| {
            let n0 = b * job.bl;
            let blk = Block {
                t: job.t,
                n: job.n,
                n0,
                len: job.bl.min(job.n - n0),
                stream: job.stream,
            };
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                if avx2 {
                    // SAFETY: the CPU supports AVX2 and FMA (run-time check).
                    unsafe {
                        bwd_block_avx2::<CH, HARD, DETACH, PLIF, AFF, S>(job, blk, pr, &mut s)
                    }
                } else {
                    bwd_block::<CH, HARD, DETACH, PLIF, AFF, false, S>(job, blk, pr, &mut s)
                }
            })
        })
        .reduce(TaskSums::default, TaskSums::merge)
}

#[cfg(test)]
mod tests {
    use super::mem::FORCE_STREAM;
    use super::*;
    use crate::config::NeuronConfig;
    use crate::config::NeuronKind;

    /// Baseline vs AVX2 kernels, and ordinary vs non-temporal output stores (forced on these
    /// small outputs; `n` odd so rows start unaligned), all bit-identical; for IF/LIF also with
    /// the fused per-channel affine map (batch norm) in front.
    #[test]
    fn avx2_baseline_and_streaming_kernels_agree_bit_for_bit() {
        let (t, n) = (7, 3003);
        let (c, seg) = (3, 7);
        let mut s = 0x1234_5678_u64;
        let mut rnd = |lo: f32, hi: f32| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        };
        let x: Vec<f32> = (0..t * n).map(|_| rnd(-1.0, 3.0)).collect();
        let g: Vec<f32> = (0..t * n).map(|_| rnd(-1.0, 1.0)).collect();
        let a: Vec<f32> = (0..c).map(|_| rnd(0.3, 2.0)).collect();
        let d: Vec<f32> = (0..c).map(|_| rnd(-0.5, 0.5)).collect();
        let mean: Vec<f32> = (0..c).map(|_| rnd(0.0, 2.0)).collect();
        let aff = ChannelAffine {
            a: &a,
            d: &d,
            c,
            s: seg,
        };
        let mut cases = Vec::new();
        for cfg in NeuronConfig::all_variants() {
            let plif = cfg.kind == NeuronKind::Plif;
            cases.push((cfg.clone(), false));
            if !plif {
                cases.push((cfg, true));
            }
        }
        for (cfg, affine) in cases {
            let p = cfg.params().expect("params");
            let plif = cfg.kind == NeuronKind::Plif;
            let run = || {
                if affine {
                    let (gy, s1, s2) = backward_affine(&x, &g, t, n, &p, 0.4, &aff, &mean);
                    let s1s2 = s1.iter().chain(&s2).map(|&v| v as f32).sum::<f32>();
                    (
                        forward_affine(&x, t, n, &p, 0.4, &aff),
                        (gy, f64::from(s1s2)),
                    )
                } else {
                    (
                        forward(&x, t, n, &p, 0.4),
                        backward(&x, &g, t, n, &p, 0.4, plif),
                    )
                }
            };
            let mut results = Vec::new();
            for (base, stream) in [(true, false), (false, false), (true, true), (false, true)] {
                FORCE_BASELINE.store(base, std::sync::atomic::Ordering::Relaxed);
                FORCE_STREAM.store(stream, std::sync::atomic::Ordering::Relaxed);
                results.push(run());
            }
            FORCE_BASELINE.store(false, std::sync::atomic::Ordering::Relaxed);
            FORCE_STREAM.store(false, std::sync::atomic::Ordering::Relaxed);
            let (fa, (ba, ka)) = &results[0];
            assert_eq!(fa.len(), t * n);
            let extra = if affine { 2 * c } else { usize::from(plif) };
            assert_eq!(ba.len(), t * n + extra);
            for (fb, (bb, kb)) in &results[1..] {
                assert_eq!(fa, fb, "{cfg:?}");
                assert!(
                    ba.iter().zip(bb).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{cfg:?}"
                );
                assert_eq!(ka.to_bits(), kb.to_bits(), "{cfg:?}");
            }
        }
    }
}
