//! CPU kernels: multi-threaded over blocks of neurons (rayon), the time loop inside each block,
//! the inner loop over the block's contiguous neurons (layout `[T, N]`), so it vectorises.
//!
//! The backward pass recomputes the membrane trace `h` of its block from `x` into a thread-local
//! scratch buffer (`T x block` floats plus a few rows, sized to stay in L2), then runs BPTT
//! backwards in time. Nothing is allocated per time step; per call, only the output vector
//! (uninitialised: every element is written). Output rows are computed into an L1 staging row
//! and written out with non-temporal stores when the output is large ([`STREAM_MIN_BYTES`]).
//!
//! The same kernels optionally apply a per-channel affine map to `x` on load
//! ([`ChannelAffine`]: training batch norm fused in front of the neuron) and, in the backward
//! pass, sum batch norm's per-channel gradient terms.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::config::{Charge, Params};
use crate::surrogate::{AtanSg, PwQuadSg, RectSg, SigmoidSg, Surrogate, SurrogateGrad};

/// Neurons per forward task (the membrane and one staged output row stay in L1).
const FWD_BLOCK: usize = 4096;
/// Upper bound on neurons per backward task (the scratch is `T x block`).
const BWD_BLOCK_MAX: usize = 16384;
/// Target size of the backward scratch, in floats (1 MiB, half an L2).
const BWD_SCRATCH: usize = 256 * 1024;

/// Outputs at least this large (bytes) are written with non-temporal stores: they exceed the
/// L3 cache, so the next op reads them from memory anyway, and ordinary stores would first read
/// every output line in (read-for-ownership), a third more memory traffic for a memory-bound op.
const STREAM_MIN_BYTES: usize = 16 << 20;

/// Whether an output of `n` floats is streamed (see [`STREAM_MIN_BYTES`]).
fn stream_output(n: usize) -> bool {
    #[cfg(test)]
    if FORCE_STREAM.load(std::sync::atomic::Ordering::Relaxed) {
        return cfg!(target_arch = "x86_64");
    }
    cfg!(target_arch = "x86_64") && n * std::mem::size_of::<f32>() >= STREAM_MIN_BYTES
}

#[cfg(test)]
static FORCE_STREAM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// An output buffer of capacity `n` and length 0, not initialised: the kernels write every
/// element through [`OutPtr`] (which costs no zeroing pass) and the caller sets the length.
/// Huge-page advised on Linux like [`alloc_out`].
fn alloc_uninit(n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    #[cfg(target_os = "linux")]
    advise_huge_pages(v.as_mut_ptr() as usize, n * std::mem::size_of::<f32>());
    v
}

/// A zeroed output buffer. Fresh multi-MiB allocations come from `mmap` and every 4 KiB page
/// faults on first write, which costs more than the op itself (measured in the bench: a copy into
/// a fresh buffer is ~14x slower than into a reused one on the development VM). On Linux the
/// buffer is advised for transparent huge pages before it is touched (2 MiB faults instead).
pub(crate) fn alloc_out(n: usize) -> Vec<f32> {
    let mut v = alloc_uninit(n);
    v.resize(n, 0.0);
    v
}

/// Advises `[start, start + bytes)` (an allocation we own) for transparent huge pages.
#[cfg(target_os = "linux")]
fn advise_huge_pages(start: usize, bytes: usize) {
    const HUGE: usize = 2 << 20;
    const PAGE: usize = 4096;
    if bytes < 4 * HUGE {
        return;
    }
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
    /// Writes `src` to `off..off + src.len()` of the output, with non-temporal stores when
    /// `stream` (the task must call [`store_fence`] before it ends).
    ///
    /// # Safety
    /// `off + src.len()` must be within the output's capacity and no other task may touch
    /// that range.
    #[inline(always)]
    unsafe fn store(&self, off: usize, src: &[f32], stream: bool) {
        // SAFETY: guaranteed by the caller.
        let dst = unsafe { self.0.add(off) };
        #[cfg(target_arch = "x86_64")]
        if stream {
            // SAFETY: as above.
            unsafe { stream_copy(dst, src) };
            return;
        }
        let _ = stream;
        // SAFETY: `src` is a distinct live slice; the range is ours (caller).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
    }
}

/// Copies `src` to `dst` with 16-byte non-temporal stores (SSE, baseline on x86_64), scalar
/// stores for the unaligned head and the tail.
///
/// # Safety
/// `dst..dst + src.len()` must be writable and not overlap `src`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn stream_copy(dst: *mut f32, src: &[f32]) {
    use std::arch::x86_64::{_mm_loadu_ps, _mm_stream_ps};
    let n = src.len();
    let sp = src.as_ptr();
    let head = (dst.align_offset(16)).min(n);
    // SAFETY: every index below is < n, within both ranges (caller); `dst + i` is 16-byte
    // aligned in the middle loop by the choice of `head`.
    unsafe {
        for i in 0..head {
            *dst.add(i) = *sp.add(i);
        }
        let mut i = head;
        while i + 8 <= n {
            _mm_stream_ps(dst.add(i), _mm_loadu_ps(sp.add(i)));
            _mm_stream_ps(dst.add(i + 4), _mm_loadu_ps(sp.add(i + 4)));
            i += 8;
        }
        while i < n {
            *dst.add(i) = *sp.add(i);
            i += 1;
        }
    }
}

/// Orders this thread's earlier non-temporal stores before anything it does next (rayon's
/// hand-back of the task then publishes them).
#[inline(always)]
fn store_fence(stream: bool) {
    #[cfg(target_arch = "x86_64")]
    if stream {
        // SAFETY: SSE is baseline on x86_64; a fence has no memory-safety preconditions.
        unsafe { std::arch::x86_64::_mm_sfence() };
    }
    let _ = stream;
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
fn expand_channels(coef: &[f32], c: usize, s: usize, n0: usize, out: &mut [f32]) {
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
fn reduce_channels(per_neuron: &[f32], c: usize, s: usize, n0: usize, sums: &mut [f64]) {
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

/// [`fwd_block`] compiled with AVX2 and FMA enabled (see [`has_avx2`]).
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
unsafe fn fwd_block_avx2<const CH: u8, const HARD: bool, const AFF: bool>(
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
fn fwd_block<const CH: u8, const HARD: bool, const AFF: bool>(
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
            if AFF {
                for (((vi, &xi), oi), (&a, &d)) in v
                    .iter_mut()
                    .zip(xs)
                    .zip(os.iter_mut())
                    .zip(ab[c0..c1].iter().zip(&db[c0..c1]))
                {
                    // The same f32 operations as the unfused batch norm's output.
                    let h = charge::<CH>(*vi, a * xi + d, k, vr);
                    let fire = h - vth >= 0.0;
                    *oi = if fire { 1.0 } else { 0.0 };
                    *vi = reset::<HARD>(h, fire, vth, vr);
                }
            } else {
                for ((vi, &xi), oi) in v.iter_mut().zip(xs).zip(os.iter_mut()) {
                    let h = charge::<CH>(*vi, xi, k, vr);
                    let fire = h - vth >= 0.0;
                    *oi = if fire { 1.0 } else { 0.0 };
                    *vi = reset::<HARD>(h, fire, vth, vr);
                }
            }
        }
        // SAFETY: columns n0..n0+len of row ti are in the output and belong to this task only.
        unsafe { out.store(off, os, blk.stream) };
    }
    store_fence(blk.stream);
}

/// Neurons per chunk of a row between software prefetches (1 KiB of f32).
const CHUNK: usize = 256;
/// How far ahead the kernels prefetch their streamed input, in floats (4 KiB). The rows of a
/// block are short (16–64 KiB) and 8 MiB apart, and each row restarts the hardware prefetcher;
/// measured on the development VM: the forward went from 7.3–8.0 to 6.1–6.5 ms at T = 16,
/// N = 2 Mi (distances of 1–2 Ki floats alike, 256 floats too short).
const PF_DIST: usize = 1024;

/// `(start, end)` of the chunks of a row of `len` neurons.
fn chunks(len: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..len)
        .step_by(CHUNK)
        .map(move |c0| (c0, (c0 + CHUNK).min(len)))
}

/// The rows of one block of a `[t, n]` tensor, for prefetching along the order a loop visits
/// them.
#[derive(Clone, Copy)]
struct Rows {
    n: usize,
    n0: usize,
    len: usize,
    t: usize,
}

impl Rows {
    /// Prefetches one chunk of `src`, [`PF_DIST`] floats past column `c0` of row `ti` in visit
    /// order (rows ascending, or descending when `rev`), if that is still in the block.
    #[inline(always)]
    fn prefetch_ahead(&self, src: &[f32], ti: usize, c0: usize, rev: bool) {
        let q = c0 + PF_DIST;
        let (step, col) = (q / self.len, q % self.len);
        let row = if rev {
            ti.checked_sub(step)
        } else {
            Some(ti + step).filter(|&r| r < self.t)
        };
        if let Some(row) = row {
            let a = row * self.n + self.n0 + col;
            let b = (a + CHUNK).min(row * self.n + self.n0 + self.len);
            if let Some(s) = src.get(a..b) {
                prefetch(s);
            }
        }
    }
}

/// Asks the CPU to start loading `v` into cache (one hint per 64-byte line); no effect on
/// results.
#[inline(always)]
fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = v.as_ptr() as *const i8;
        let bytes = std::mem::size_of_val(v);
        let mut o = 0;
        while o < bytes {
            // SAFETY: a prefetch hint inside the slice; it never faults and changes no state.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(o)) };
            o += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
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

/// The scalar parameters of a backward task.
#[derive(Clone, Copy)]
struct BwdParams<S> {
    k: f32,
    vth: f32,
    vr: f32,
    sg: S,
}

/// [`bwd_block`] compiled with AVX2 and FMA enabled (see [`has_avx2`]).
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
unsafe fn bwd_block_avx2<
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

/// dL/dh_t of one neuron from its membrane `h`, the spike gradient `g_s` and the carried
/// dL/dv_t `g_v` (updated to dL/dv_{t-1} = a * dL/dh_t).
#[inline(always)]
fn bptt_step<const HARD: bool, const DETACH: bool, S: SurrogateGrad>(
    h: f32,
    g_s: f32,
    g_v: &mut f32,
    a: f32,
    vth: f32,
    vr: f32,
    sg: S,
) -> f32 {
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
}

/// One row (time step) of BPTT over a block. Its own function, not inlined into the block
/// loop, and compiled per instruction set ([`bptt_row_avx2`]): inlined there, LLVM kept this
/// loop scalar (one `vdivss` per neuron for ATan, measured), since it could not prove that the
/// rows do not alias; as a function its slice arguments are `noalias` and it vectorises.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn bptt_row<const CH: u8, const HARD: bool, const DETACH: bool, const PLIF: bool, S>(
    hs: &[f32],
    hp: Option<&[f32]>,
    xs: &[f32],
    gss: &[f32],
    gv: &mut [f32],
    gk: &mut [f32],
    gxs: &mut [f32],
    pr: BwdParams<S>,
) where
    S: SurrogateGrad,
{
    let BwdParams { k, vth, vr, sg } = pr;
    let a = if CH == 0 { 1.0 } else { 1.0 - k };
    let b = if CH == 1 { k } else { 1.0 };
    if !PLIF {
        for ((&h, &g_s), (g_v, gx)) in hs.iter().zip(gss).zip(gv.iter_mut().zip(gxs.iter_mut())) {
            *gx = bptt_step::<HARD, DETACH, S>(h, g_s, g_v, a, vth, vr, sg) * b;
        }
        return;
    }
    let len = hs.len();
    let (xs, gss, gv, gk, gxs) = (
        &xs[..len],
        &gss[..len],
        &mut gv[..len],
        &mut gk[..len],
        &mut gxs[..len],
    );
    match hp {
        Some(hp) => {
            let hp = &hp[..len];
            for i in 0..len {
                let gh = bptt_step::<HARD, DETACH, S>(hs[i], gss[i], &mut gv[i], a, vth, vr, sg);
                gxs[i] = gh * b;
                let vp = reset::<HARD>(hp[i], hp[i] - vth >= 0.0, vth, vr);
                let dhdk = if CH == 1 {
                    xs[i] - (vp - vr)
                } else {
                    -(vp - vr)
                };
                gk[i] += gh * dhdk;
            }
        }
        None => {
            for i in 0..len {
                let gh = bptt_step::<HARD, DETACH, S>(hs[i], gss[i], &mut gv[i], a, vth, vr, sg);
                gxs[i] = gh * b;
                // v_{-1} = vr, so (v - vr) = 0.
                let dhdk = if CH == 1 { xs[i] } else { 0.0 };
                gk[i] += gh * dhdk;
            }
        }
    }
}

/// [`bptt_row`] as an out-of-line baseline function (see there why).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn bptt_row_base<const CH: u8, const HARD: bool, const DETACH: bool, const PLIF: bool, S>(
    hs: &[f32],
    hp: Option<&[f32]>,
    xs: &[f32],
    gss: &[f32],
    gv: &mut [f32],
    gk: &mut [f32],
    gxs: &mut [f32],
    pr: BwdParams<S>,
) where
    S: SurrogateGrad,
{
    bptt_row::<CH, HARD, DETACH, PLIF, S>(hs, hp, xs, gss, gv, gk, gxs, pr)
}

/// [`bptt_row`] as an out-of-line function compiled with AVX2 and FMA (see there why).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
unsafe fn bptt_row_avx2<const CH: u8, const HARD: bool, const DETACH: bool, const PLIF: bool, S>(
    hs: &[f32],
    hp: Option<&[f32]>,
    xs: &[f32],
    gss: &[f32],
    gv: &mut [f32],
    gk: &mut [f32],
    gxs: &mut [f32],
    pr: BwdParams<S>,
) where
    S: SurrogateGrad,
{
    bptt_row::<CH, HARD, DETACH, PLIF, S>(hs, hp, xs, gss, gv, gk, gxs, pr)
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
fn acc_row_base(g: &[f32], x: &[f32], m: &[f32], s1: &mut [f32], s2: &mut [f32]) {
    acc_row(g, x, m, s1, s2)
}

/// [`acc_row`] out of line, with AVX2 and FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline(never)]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
unsafe fn acc_row_avx2(g: &[f32], x: &[f32], m: &[f32], s1: &mut [f32], s2: &mut [f32]) {
    acc_row(g, x, m, s1, s2)
}

#[inline(always)]
fn bwd_block<
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
            if AFF {
                for (((vi, &xi), hi), (&a, &d)) in v
                    .iter_mut()
                    .zip(xs)
                    .zip(hs.iter_mut())
                    .zip(ab[c0..c1].iter().zip(&db[c0..c1]))
                {
                    let h = charge::<CH>(*vi, a * xi + d, k, vr);
                    *hi = h;
                    *vi = reset::<HARD>(h, h - vth >= 0.0, vth, vr);
                }
            } else {
                for ((vi, &xi), hi) in v.iter_mut().zip(xs).zip(hs.iter_mut()) {
                    let h = charge::<CH>(*vi, xi, k, vr);
                    *hi = h;
                    *vi = reset::<HARD>(h, h - vth >= 0.0, vth, vr);
                }
            }
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

#[cfg(test)]
mod tests {
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
