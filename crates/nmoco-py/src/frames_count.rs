//! The per-pixel counters of the direct `split_by='number'` path (`frames_direct`): 8- or 32-bit
//! counts, the block count with its wrap check, and the flush of a frame's counts into the
//! float32 output (AVX2 / AVX-512 twins chosen at run time).

use crate::frames_direct::Simd;

/// A per-pixel counter: `u8` (the plane of a 128×128 sensor then fits in L1; a counter that
/// wraps is recorded and adds 256 at the flush) or `u32` (below 2^24, so exact in f32).
pub(crate) trait Count: Copy + Default {
    /// Adds one; true when the counter wrapped to zero.
    fn inc(&mut self) -> bool;
    /// Takes one away (wrapping): undoes `inc` exactly.
    fn dec(&mut self);
    fn f32(self) -> f32;
}
impl Count for u8 {
    #[inline(always)]
    fn inc(&mut self) -> bool {
        let (v, wrapped) = self.overflowing_add(1);
        *self = v;
        wrapped
    }
    #[inline(always)]
    fn dec(&mut self) {
        *self = self.wrapping_sub(1);
    }
    #[inline(always)]
    fn f32(self) -> f32 {
        f32::from(self)
    }
}
impl Count for u32 {
    #[inline(always)]
    fn inc(&mut self) -> bool {
        *self += 1; // fewer than 2^24 events
        false
    }
    #[inline(always)]
    fn dec(&mut self) {
        *self -= 1; // only after `inc`
    }
    #[inline(always)]
    fn f32(self) -> f32 {
        self as i32 as f32
    }
}

/// Writes one frame from its counts and zeroes the counts.
#[inline(always)]
fn flush_counts<C: Count>(frame: &mut [f32], counts: &mut [C]) {
    for (o, c) in frame.iter_mut().zip(counts.iter_mut()) {
        *o = c.f32();
        *c = C::default();
    }
}

/// `flush_counts` compiled for AVX2.
///
/// # Safety
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn flush_counts_avx2<C: Count>(frame: &mut [f32], counts: &mut [C]) {
    flush_counts(frame, counts)
}

/// `flush_counts` compiled for AVX-512.
///
/// # Safety
/// The CPU supports AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw")]
unsafe fn flush_counts_avx512<C: Count>(frame: &mut [f32], counts: &mut [C]) {
    flush_counts(frame, counts)
}

pub(crate) fn flush_counts_any<C: Count>(simd: Simd, frame: &mut [f32], counts: &mut [C]) {
    // numpy's data is 16-byte aligned: the floats up to the first 64-byte boundary are written
    // alone, so that none of the vector stores of the rest straddles two cache lines.
    let head = frame.as_ptr().align_offset(64).min(frame.len());
    let (frame_head, frame) = frame.split_at_mut(head);
    let (counts_head, counts) = counts.split_at_mut(head.min(counts.len()));
    flush_counts(frame_head, counts_head);
    #[cfg(target_arch = "x86_64")]
    match simd {
        // SAFETY: `simd` comes from `simd_level()`.
        Simd::Avx512 => return unsafe { flush_counts_avx512(frame, counts) },
        // SAFETY: as above.
        Simd::Avx2 => return unsafe { flush_counts_avx2(frame, counts) },
        Simd::None => {}
    }
    let _ = simd;
    flush_counts(frame, counts)
}

/// Adds one at each pixel of `idx` (all below `counts.len()`: the caller range-checked x, y),
/// recording the pixels whose counter wrapped. The block is counted without looking at which
/// counter wrapped, only whether any did; such a (rare) block is taken back exactly (wrapping
/// decrements) and counted again one event at a time, recording each wrap.
#[inline(always)]
pub(crate) fn count_block<C: Count>(counts: &mut [C], idx: &[u32], wrapped: &mut Vec<u32>) {
    #[inline(always)]
    fn at<C>(counts: &mut [C], k: u32) -> &mut C {
        let k = k as usize;
        debug_assert!(k < counts.len());
        // SAFETY: k < 2·H·W = counts.len(): x < W and y < H were checked for the whole block
        // by the caller and `on` is 0 or 1, so k = on·H·W + y·W + x ≤ 2·H·W − 1.
        unsafe { counts.get_unchecked_mut(k) }
    }
    let mut any = 0u32;
    for &k in idx {
        any += u32::from(at(counts, k).inc());
    }
    if any != 0 {
        for &k in idx {
            at(counts, k).dec();
        }
        for &k in idx {
            if at(counts, k).inc() {
                wrapped.push(k);
            }
        }
    }
}
