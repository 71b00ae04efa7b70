//! Non-temporal stores with the x86_64 baseline instruction set (SSE2): the streaming copy of
//! staged columns to the output and the fence that orders it.

use std::arch::x86_64::*;

/// Copies `len` bytes from `src` to `dst`, with non-temporal stores for every whole
/// 64-byte line of `dst` and ordinary stores for the partial first and last lines. One
/// cache line of `prefetch .. prefetch + prefetch_len` is prefetched per line stored, so
/// that reading the next input overlaps with the stores.
///
/// # Safety
/// `src` is valid for `len` bytes of reads, `dst` for `len` bytes of writes, and they do
/// not overlap. (`prefetch` may point anywhere: prefetches are hints and never fault.)
#[inline]
pub(crate) unsafe fn stream_copy(
    dst: *mut u8,
    src: *const u8,
    len: usize,
    prefetch: *const u8,
    prefetch_len: usize,
) {
    let head = ((64 - (dst as usize & 63)) & 63).min(len);
    let mut pf = 0usize;
    // SAFETY: all offsets stay below `len`, which the caller guarantees valid for both
    // regions; `dst + i` is 16-byte aligned in the loop (64-aligned after `head`), as
    // `_mm_stream_si128` requires; SSE / SSE2 are part of the x86_64 baseline.
    unsafe {
        std::ptr::copy_nonoverlapping(src, dst, head);
        let mut i = head;
        while i + 64 <= len {
            let s = src.add(i);
            let d = dst.add(i);
            _mm_stream_si128(d.cast(), _mm_loadu_si128(s.cast()));
            _mm_stream_si128(d.add(16).cast(), _mm_loadu_si128(s.add(16).cast()));
            _mm_stream_si128(d.add(32).cast(), _mm_loadu_si128(s.add(32).cast()));
            _mm_stream_si128(d.add(48).cast(), _mm_loadu_si128(s.add(48).cast()));
            if pf < prefetch_len {
                _mm_prefetch::<_MM_HINT_T0>(prefetch.wrapping_add(pf).cast());
                pf += 64;
            }
            i += 64;
        }
        std::ptr::copy_nonoverlapping(src.add(i), dst.add(i), len - i);
    }
}

/// Makes earlier non-temporal stores globally visible before later stores.
#[inline]
pub(crate) fn sfence() {
    // SAFETY: SSE is part of the x86_64 baseline; `sfence` has no other requirement.
    unsafe { _mm_sfence() }
}
