//! Memory plumbing of the CPU kernels: output buffers allocated uninitialised and advised for
//! huge pages, the shared output pointer with ordinary or non-temporal (streaming) stores, and
//! software prefetch of the rows a block visits.

/// Outputs at least this large (bytes) are written with non-temporal stores: they exceed the
/// L3 cache, so the next op reads them from memory anyway, and ordinary stores would first read
/// every output line in (read-for-ownership), a third more memory traffic for a memory-bound op.
const STREAM_MIN_BYTES: usize = 16 << 20;

/// Whether an output of `n` floats is streamed (see [`STREAM_MIN_BYTES`]).
pub(super) fn stream_output(n: usize) -> bool {
    #[cfg(test)]
    if FORCE_STREAM.load(std::sync::atomic::Ordering::Relaxed) {
        return cfg!(target_arch = "x86_64");
    }
    cfg!(target_arch = "x86_64") && n * std::mem::size_of::<f32>() >= STREAM_MIN_BYTES
}

#[cfg(test)]
pub(super) static FORCE_STREAM: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// An output buffer of capacity `n` and length 0, not initialised: the kernels write every
/// element through [`OutPtr`] (which costs no zeroing pass) and the caller sets the length.
/// Huge-page advised on Linux like [`alloc_out`].
pub(super) fn alloc_uninit(n: usize) -> Vec<f32> {
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

/// A raw pointer to the output that rayon tasks may share: every task writes only the columns
/// of its own block of neurons, so the written ranges are disjoint.
#[derive(Clone, Copy)]
pub(super) struct OutPtr(pub(super) *mut f32);
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
    pub(super) unsafe fn store(&self, off: usize, src: &[f32], stream: bool) {
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
pub(super) fn store_fence(stream: bool) {
    #[cfg(target_arch = "x86_64")]
    if stream {
        // SAFETY: SSE is baseline on x86_64; a fence has no memory-safety preconditions.
        unsafe { std::arch::x86_64::_mm_sfence() };
    }
    let _ = stream;
}

/// Neurons per chunk of a row between software prefetches (1 KiB of f32).
const CHUNK: usize = 256;
/// How far ahead the kernels prefetch their streamed input, in floats (4 KiB). The rows of a
/// block are short (16–64 KiB) and 8 MiB apart, and each row restarts the hardware prefetcher;
/// measured on the development VM: the forward went from 7.3–8.0 to 6.1–6.5 ms at T = 16,
/// N = 2 Mi (distances of 1–2 Ki floats alike, 256 floats too short).
const PF_DIST: usize = 1024;

/// `(start, end)` of the chunks of a row of `len` neurons.
#[inline]
pub(super) fn chunks(len: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..len)
        .step_by(CHUNK)
        .map(move |c0| (c0, (c0 + CHUNK).min(len)))
}

/// The rows of one block of a `[t, n]` tensor, for prefetching along the order a loop visits
/// them.
#[derive(Clone, Copy)]
pub(super) struct Rows {
    pub(super) n: usize,
    pub(super) n0: usize,
    pub(super) len: usize,
    pub(super) t: usize,
}

impl Rows {
    /// Prefetches one chunk of `src`, [`PF_DIST`] floats past column `c0` of row `ti` in visit
    /// order (rows ascending, or descending when `rev`), if that is still in the block.
    #[inline(always)]
    pub(super) fn prefetch_ahead(&self, src: &[f32], ti: usize, c0: usize, rev: bool) {
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
