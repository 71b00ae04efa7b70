//! The fast path of the fixed-size record decoders (N-binary, AEDAT 2.0 DVS128, AEDAT 3.1
//! polarity events of 8 bytes): the block driver ([`append`]), the one place that picks a SIMD
//! kernel ([`Kernel`], [`TonicEight`]), and the kernels per instruction set ([`avx512`]: record
//! decoders; [`sse2`]: non-temporal copy). The formats' modules hold only the scalar decoders
//! ([`Records`]); this folder and `core::append_records` hold the crate's `unsafe` apart from
//! the memory map.
//!
//! # Why it exists
//!
//! The scalar record loop ([`append_records`], with the formats' byte-gathering closures)
//! runs at about 1 ns per event whether the output is in the cache or not: it is bound by
//! per-byte work and four scalar stores per event, not by memory. And bulk decode reads only
//! 5–8 bytes per event but writes 13 (`t: i64`, `x, y: u16`, `on: bool`, one column each), so
//! once that is fixed a large file is bound by writing columns that do not fit in the cache,
//! where every ordinary store first reads its output line from memory (read-for-ownership).
//! Two things are done, each chosen at run time:
//!
//! - **SIMD field extraction** (x86_64 with AVX-512 F/BW, plus VBMI for N-binary): 16 records
//!   at a time, with byte permutes, shifts, masks and narrowing moves (see [`avx512`]). Other
//!   CPUs use the scalar record decoder ([`Records::scalar`]). Measured (Zen 5, 2026-11-28):
//!   5–10× faster than the scalar loop on cache-sized files (20 k–1 M events), 2× on 10 M.
//! - **Streaming output** (x86_64 with the SIMD kernels, large inputs only): records are
//!   decoded block by block ([`BLOCK`] records) into staging arrays that stay in L1, and each
//!   column's block is then copied to the output with non-temporal stores (`movntdq`), which
//!   skip the read-for-ownership and do not evict the input. With SIMD, `t`
//!   (8 of the 13 bytes) skips the staging and is stored non-temporally by the kernel itself
//!   once its write position is 64-byte aligned. The flush of each block prefetches the next
//!   block's input and the kernels prefetch [`avx512::PREFETCH_AHEAD`] bytes ahead, so reading
//!   overlaps with the stores. Streaming is used only when
//!   [`decode_all`](crate::core::decode_all) decodes a whole input whose columns take at least
//!   [`STREAM_MIN_OUTPUT`] bytes: smaller outputs stay in the cache for whoever reads them next
//!   (and decode faster that way), so they keep ordinary stores, as does the streaming
//!   [`Reader`](crate::Reader), whose chunks are consumed right away. Measured: another
//!   1.4–2× on 10 M events.
//!
//! Records that must not become events (N-binary overflow markers, AEDAT 2.0 special words,
//! invalid AEDAT 3.1 events) are only detected, as a flag per block; a flagged block is decoded
//! again by the format's filtering decoder ([`Records::filter`]), so those rare blocks pay
//! twice and all others decode in one pass. Without the SIMD kernels the original single-pass
//! scalar code ([`append_records`] over the whole slice, filtering it all if anything is
//! flagged) runs unchanged: staging plus streaming with the scalar decoder was slower than it.
//! The tests force every combination and check that they agree byte for byte.

use crate::Events;
use crate::core::{Meta, append_records, reserve, truncate};

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "x86_64")]
pub(crate) mod sse2;
#[cfg(test)]
mod tests;

/// Records per block of the block driver: 2048 records are 26 KiB of staged columns (plus
/// at most 16 KiB of input), within the 32–48 KiB L1 data cache of current x86 cores.
pub(crate) const BLOCK: usize = 2048;

/// [`decode_all`](crate::core::decode_all) streams its output (non-temporal stores) when the
/// whole input holds records for at least this many bytes of columns (13 bytes per record).
/// Measured on a 32 MiB-L3 Zen 5: 1 M events (13 MB) decode faster with ordinary stores,
/// 2 M events (26 MB) and more faster with streaming.
pub(crate) const STREAM_MIN_OUTPUT: usize = 16 << 20;

/// Raw pointers to the next free slot of each column (output spare capacity or staging).
#[derive(Clone, Copy)]
pub(crate) struct Cols {
    pub t: *mut i64,
    pub x: *mut u16,
    pub y: *mut u16,
    /// `bool` column written as bytes 0 / 1.
    pub on: *mut u8,
}

impl Cols {
    /// The pointers `i` elements further on.
    ///
    /// # Safety
    /// Each column must have at least `i` more elements of room (as for `pointer::add`).
    #[inline(always)]
    unsafe fn add(self, i: usize) -> Cols {
        // SAFETY: the caller guarantees every column has room for `i` more elements.
        unsafe {
            Cols {
                t: self.t.add(i),
                x: self.x.add(i),
                y: self.y.add(i),
                on: self.on.add(i),
            }
        }
    }
}

/// A fixed-size record format with a scalar decoder of one record into
/// `(t, x, y, on, flag)`, where `flag` means "this record must not be an event as decoded",
/// and the SIMD [`Kernel`] that decodes the same records 16 at a time.
///
/// `Copy` so that the scalar loops work on a local copy of the decoder state, which the
/// compiler keeps in registers (through a reference it reloads it per record, ≈ 10 % slower).
pub(crate) trait Records: Copy {
    /// Bytes per record.
    const SIZE: usize;

    /// Decodes one record of `SIZE` bytes.
    fn scalar(&self, r: &[u8]) -> (i64, u16, u16, bool, bool);

    /// The SIMD twin of [`Records::scalar`] for the current decoder state.
    fn kernel(&self) -> Kernel;

    /// Appends the events of a flagged run of records, skipping (and counting in `meta`) the
    /// records that are not events and updating any state they change.
    fn filter(&mut self, recs: &[u8], out: &mut Events, meta: &mut Meta);
}

/// The SIMD record decoders, with the decoder state each one needs: the one place that maps a
/// format to its kernel and the instruction sets the kernel needs.
#[derive(Clone, Copy)]
pub(crate) enum Kernel {
    /// N-binary ([`avx512::nbin`], AVX-512 VBMI): `t = base + 23-bit field`; `watch` flags
    /// overflow markers.
    NBin { base: i64, watch: bool },
    /// AEDAT 2.0 DVS128 ([`avx512::aedat2_dvs128`], AVX-512 BW): `flip` for the jAER polarity
    /// sense; `watch` flags special words.
    Aedat2Dvs128 { flip: bool, watch: bool },
    /// AEDAT 3.1 polarity events of 8 bytes ([`avx512::aedat31_polarity8`], AVX-512 BW):
    /// `ovf = eventTSOverflow << 31`; `watch` flags invalid events.
    Aedat31Polarity8 { ovf: i64, watch: bool },
}

impl Kernel {
    /// Whether this CPU can run the kernel.
    #[inline(always)]
    pub(crate) fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        let available = match self {
            Kernel::NBin { .. } => avx512::has_avx512vbmi(),
            Kernel::Aedat2Dvs128 { .. } | Kernel::Aedat31Polarity8 { .. } => avx512::has_avx512bw(),
        };
        #[cfg(not(target_arch = "x86_64"))]
        let available = false;
        available
    }

    /// Decodes the first `k` whole groups of 16 records of `recs` (the largest such `k`) into
    /// `c[0..16 k]` and returns `(16 k, OR of the records' flags)`. With `nt_t` the `t`
    /// column is written with non-temporal stores.
    ///
    /// # Safety
    /// [`Kernel::available`] returned `true`, every column of `c` has room for
    /// `recs.len() / record size` elements, and `c.t` is 64-byte aligned if `nt_t`.
    #[inline(always)]
    unsafe fn run(self, recs: &[u8], c: Cols, nt_t: bool) -> (usize, bool) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded from this function's contract (the instruction sets each kernel
        // needs are the ones `available` checks).
        let done = unsafe {
            use Kernel::*;
            match (self, nt_t) {
                (NBin { base, watch }, true) => avx512::nbin::<true>(recs, c, base, watch),
                (NBin { base, watch }, false) => avx512::nbin::<false>(recs, c, base, watch),
                (Aedat2Dvs128 { flip, watch }, true) => {
                    avx512::aedat2_dvs128::<true>(recs, c, flip, watch)
                }
                (Aedat2Dvs128 { flip, watch }, false) => {
                    avx512::aedat2_dvs128::<false>(recs, c, flip, watch)
                }
                (Aedat31Polarity8 { ovf, watch }, true) => {
                    avx512::aedat31_polarity8::<true>(recs, c, ovf, watch)
                }
                (Aedat31Polarity8 { ovf, watch }, false) => {
                    avx512::aedat31_polarity8::<false>(recs, c, ovf, watch)
                }
            }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = {
            let _ = (self, recs, c, nt_t);
            (0, false)
        };
        done
    }
}

/// The kernel of `nbin::decode_tonic_records` (8 N-binary records into tonic's packed
/// records, [`avx512::tonic_eight`]); a value exists only on a CPU with AVX-512 VBMI.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct TonicEight(());

#[cfg(target_arch = "x86_64")]
impl TonicEight {
    /// The kernel, if this CPU can run it.
    pub(crate) fn detect() -> Option<TonicEight> {
        avx512::has_avx512vbmi().then_some(TonicEight(()))
    }

    /// Decodes from record `i` of `recs` into record `n` of `out`, 8 records per step, as
    /// far as whole steps fit ([`avx512::tonic_groups`]; a step may overwrite up to
    /// [`avx512::TONIC_OUT_BYTES`] bytes from its first output record): with `watch`,
    /// overflow markers are dropped and add `inc` to `base`. Returns the new `(i, n)` and the
    /// number of markers.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_groups(
        self,
        recs: &[u8],
        out: &mut [u8],
        i: usize,
        n: usize,
        base: &mut i64,
        inc: i64,
        watch: bool,
    ) -> (usize, usize, u64) {
        // SAFETY: `self` exists only if `detect` found AVX-512 F, BW and VBMI.
        unsafe { avx512::tonic_groups(recs, out, i, n, base, inc, watch) }
    }
}

/// Which implementation [`append`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Path {
    /// SIMD field extraction (when the CPU has it).
    pub simd: bool,
    /// Staging plus non-temporal stores (x86_64 only).
    pub stream: bool,
}

#[cfg(test)]
thread_local! {
    /// Test-only override of the path choice on this thread (`None`: the normal choice).
    pub(crate) static FORCE_PATH: std::cell::Cell<Option<Path>> =
        const { std::cell::Cell::new(None) };
}

fn choose<R: Records>(k: &R, meta: &Meta) -> Path {
    let simd = k.kernel().available();
    #[cfg(test)]
    if let Some(p) = FORCE_PATH.get() {
        return Path {
            simd: p.simd && simd,
            stream: p.stream && cfg!(target_arch = "x86_64"),
        };
    }
    Path {
        simd,
        // Without the SIMD kernels, staging plus streaming was slower than the plain scalar
        // loop (10 M events: 14.5 vs 11.1 ms), so the scalar decoder always writes directly.
        stream: simd && meta.whole_input / R::SIZE * 13 >= STREAM_MIN_OUTPUT,
    }
}

/// Appends one event per record of `recs` (a whole number of records), skipping through
/// [`Records::filter`] the records the decoder flags. The fastest available path is used.
pub(crate) fn append<R: Records>(out: &mut Events, recs: &[u8], k: &mut R, meta: &mut Meta) {
    debug_assert_eq!(recs.len() % R::SIZE, 0);
    let path = choose(k, meta);
    if !path.simd && !path.stream {
        // The reference path: one optimistic scalar pass; filter everything if flagged.
        let len0 = out.t.len();
        let local = *k;
        let flagged = append_records(out, recs, R::SIZE, |r| local.scalar(r));
        if flagged {
            truncate(out, len0);
            k.filter(recs, out, meta);
        }
        return;
    }
    reserve(out, recs.len() / R::SIZE);
    if path.stream {
        #[cfg(target_arch = "x86_64")]
        append_streamed(out, recs, k, meta, path.simd);
    } else {
        append_direct(out, recs, k, meta, path.simd);
    }
}

/// The next free slot of every column (only pointers are formed; writing through them needs
/// spare capacity).
fn spare(out: &mut Events) -> Cols {
    Cols {
        t: out.t.spare_capacity_mut().as_mut_ptr().cast(),
        x: out.x.spare_capacity_mut().as_mut_ptr().cast(),
        y: out.y.spare_capacity_mut().as_mut_ptr().cast(),
        on: out.on.spare_capacity_mut().as_mut_ptr().cast(),
    }
}

/// Decodes all of `block` (a whole number of records) into `c`; returns the OR of the flags.
///
/// # Safety
/// Every column of `c` has room for `block.len() / R::SIZE` elements, `simd` implies
/// [`Kernel::available`] for `k.kernel()`, and `nt_t` implies `simd` and a 64-byte aligned
/// `c.t`.
#[inline(always)]
unsafe fn decode_block<R: Records>(k: &R, block: &[u8], c: Cols, simd: bool, nt_t: bool) -> bool {
    let (done, mut flag) = if simd {
        // SAFETY: forwarded from this function's contract.
        unsafe { k.kernel().run(block, c, nt_t) }
    } else {
        (0, false)
    };
    for (i, r) in block[done * R::SIZE..].chunks_exact(R::SIZE).enumerate() {
        let (t, x, y, on, f) = k.scalar(r);
        flag |= f;
        // SAFETY: `done + i` < `block.len() / R::SIZE`, within the room the caller guarantees.
        unsafe {
            let c = c.add(done + i);
            c.t.write(t);
            c.x.write(x);
            c.y.write(y);
            c.on.write(on as u8);
        }
    }
    flag
}

/// Block by block straight into the columns (ordinary stores), SIMD or scalar per record.
fn append_direct<R: Records>(
    out: &mut Events,
    recs: &[u8],
    k: &mut R,
    meta: &mut Meta,
    simd: bool,
) {
    for block in recs.chunks(BLOCK * R::SIZE) {
        let m = block.len() / R::SIZE;
        // `append` reserved room for all records, and a block adds at most `m` events.
        debug_assert!(out.t.capacity() - out.t.len() >= m);
        let c = spare(out);
        // SAFETY: each column has room for `m` more elements (`reserve` in `append` for all
        // records of `recs`; earlier blocks added at most their own record count), and `simd`
        // comes from `choose`, which checked `Kernel::available`.
        let flagged = unsafe { decode_block(k, block, c, simd, false) };
        if flagged {
            // The slots written are beyond `len` and are simply overwritten by the filter.
            k.filter(block, out, meta);
        } else {
            let n = out.t.len() + m;
            // SAFETY: `decode_block` initialised the first `m` spare slots of every column
            // (bools as bytes 0 / 1, valid `bool`s), and the capacity holds them.
            unsafe {
                out.t.set_len(n);
                out.x.set_len(n);
                out.y.set_len(n);
                out.on.set_len(n);
            }
        }
    }
}

/// Block by block into L1-resident staging, then copied to the columns with non-temporal
/// stores; flagged blocks go to the filter and are never copied.
#[cfg(target_arch = "x86_64")]
fn append_streamed<R: Records>(
    out: &mut Events,
    recs: &[u8],
    k: &mut R,
    meta: &mut Meta,
    simd: bool,
) {
    use std::mem::MaybeUninit;
    #[repr(C, align(64))]
    struct Staging {
        t: [MaybeUninit<i64>; BLOCK],
        x: [MaybeUninit<u16>; BLOCK],
        y: [MaybeUninit<u16>; BLOCK],
        on: [MaybeUninit<u8>; BLOCK],
    }
    let mut st = MaybeUninit::<Staging>::uninit();
    let sp = st.as_mut_ptr();
    // SAFETY: only field addresses of the (uninitialised) staging struct are taken.
    let staged = unsafe {
        Cols {
            t: std::ptr::addr_of_mut!((*sp).t).cast(),
            x: std::ptr::addr_of_mut!((*sp).x).cast(),
            y: std::ptr::addr_of_mut!((*sp).y).cast(),
            on: std::ptr::addr_of_mut!((*sp).on).cast(),
        }
    };
    let mut rest = recs;
    while !rest.is_empty() {
        // With SIMD, `t` (the largest column) goes straight to the output with 64-byte
        // non-temporal stores when its next slot is 64-byte aligned; blocks are then multiples
        // of 16 records, so it stays aligned until a flagged block changes the count. To get
        // there, a misaligned `t` first gets a short block of up to 7 records.
        let t_next = out.t.spare_capacity_mut().as_ptr() as usize;
        let misaligned = (64 - (t_next & 63)) & 63;
        let direct_t = simd && misaligned == 0;
        let m = if simd && misaligned != 0 {
            misaligned / 8
        } else {
            BLOCK
        }
        .min(rest.len() / R::SIZE);
        let (block, tail) = rest.split_at(m * R::SIZE);
        rest = tail;
        debug_assert!(out.t.capacity() - out.t.len() >= m);
        let c = spare(out);
        let into = Cols {
            t: if direct_t { c.t } else { staged.t },
            ..staged
        };
        // SAFETY: `m <= BLOCK`, the staging columns' length; `c.t` has room for `m` more
        // elements (reserved in `append` for all of `recs`; earlier blocks added at most their
        // own record count) and is 64-byte aligned if `direct_t`, which implies `simd`;
        // `simd` comes from `choose`.
        let flagged = unsafe { decode_block(k, block, into, simd, direct_t) };
        if flagged {
            // Any `t` slots written are beyond `len` and are overwritten by the filter.
            k.filter(block, out, meta);
            continue;
        }
        // The flush of the largest staged column also prefetches the next block of input
        // (possibly past `recs`, e.g. the next AEDAT 3.1 packet; prefetches never fault).
        let next = rest.as_ptr();
        let ahead = BLOCK * R::SIZE;
        // SAFETY: the staging columns hold `m` initialised elements (`decode_block`); each
        // output column has room for `m` more (as above); the regions do not overlap (stack
        // vs heap).
        unsafe {
            if direct_t {
                sse2::stream_copy(c.x.cast(), staged.x.cast(), m * 2, next, ahead);
            } else {
                sse2::stream_copy(c.t.cast(), staged.t.cast(), m * 8, next, ahead);
                sse2::stream_copy(c.x.cast(), staged.x.cast(), m * 2, next, 0);
            }
            sse2::stream_copy(c.y.cast(), staged.y.cast(), m * 2, next, 0);
            sse2::stream_copy(c.on, staged.on, m, next, 0);
        }
        let n = out.t.len() + m;
        // SAFETY: the first `m` spare slots of every column were just written (`t` directly
        // by `decode_block` or by the copy; the `on` bytes are 0 / 1, valid `bool`s).
        unsafe {
            out.t.set_len(n);
            out.x.set_len(n);
            out.y.set_len(n);
            out.on.set_len(n);
        }
    }
    // Order the non-temporal stores before anything later (another thread may read the
    // columns once the decode returns).
    sse2::sfence();
}
