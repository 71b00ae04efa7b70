//! The fast path of the fixed-size record decoders (N-binary, AEDAT 2.0 DVS128, AEDAT 3.1
//! polarity events of 8 bytes).
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
//!   at a time, with byte permutes, shifts, masks and narrowing moves (see [`x86`]). Other
//!   CPUs use the scalar record decoder ([`Records::scalar`]). Measured (Zen 5, 2026-11-28):
//!   5–10× faster than the scalar loop on cache-sized files (20 k–1 M events), 2× on 10 M.
//! - **Streaming output** (x86_64 with the SIMD kernels, large inputs only): records are
//!   decoded block by block ([`BLOCK`] records) into staging arrays that stay in L1, and each
//!   column's block is then copied to the output with non-temporal stores (`movntdq`), which
//!   skip the read-for-ownership and do not evict the input. With SIMD, `t`
//!   (8 of the 13 bytes) skips the staging and is stored non-temporally by the kernel itself
//!   once its write position is 64-byte aligned. The flush of each block prefetches the next
//!   block's input and the kernels prefetch [`x86::PREFETCH_AHEAD`] bytes ahead, so reading
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

/// A fixed-size record format with a scalar and (maybe) a SIMD decoder of one record into
/// `(t, x, y, on, flag)`, where `flag` means "this record must not be an event as decoded".
///
/// `Copy` so that the scalar loops work on a local copy of the decoder state, which the
/// compiler keeps in registers (through a reference it reloads it per record, ≈ 10 % slower).
pub(crate) trait Records: Copy {
    /// Bytes per record.
    const SIZE: usize;

    /// Decodes one record of `SIZE` bytes.
    fn scalar(&self, r: &[u8]) -> (i64, u16, u16, bool, bool);

    /// Whether [`Records::simd`] can run on this CPU.
    fn simd_available(&self) -> bool {
        false
    }

    /// Decodes the first `k` whole groups of 16 records of `recs` (the largest such `k`) into
    /// `c[0..16 k]` and returns `(16 k, OR of the records' flags)`. With `nt_t` the `t`
    /// column is written with non-temporal stores.
    ///
    /// # Safety
    /// [`Records::simd_available`] returned `true`, every column of `c` has room for
    /// `recs.len() / SIZE` elements, and `c.t` is 64-byte aligned if `nt_t`.
    unsafe fn simd(&self, recs: &[u8], c: Cols, nt_t: bool) -> (usize, bool) {
        let _ = (recs, c, nt_t);
        (0, false)
    }

    /// Appends the events of a flagged run of records, skipping (and counting in `meta`) the
    /// records that are not events and updating any state they change.
    fn filter(&mut self, recs: &[u8], out: &mut Events, meta: &mut Meta);
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
    let simd = k.simd_available();
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
/// [`Records::simd_available`], and `nt_t` implies `simd` and a 64-byte aligned `c.t`.
#[inline(always)]
unsafe fn decode_block<R: Records>(k: &R, block: &[u8], c: Cols, simd: bool, nt_t: bool) -> bool {
    let (done, mut flag) = if simd {
        // SAFETY: forwarded from this function's contract.
        unsafe { k.simd(block, c, nt_t) }
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
        // comes from `choose`, which checked `simd_available`.
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
                x86::stream_copy(c.x.cast(), staged.x.cast(), m * 2, next, ahead);
            } else {
                x86::stream_copy(c.t.cast(), staged.t.cast(), m * 8, next, ahead);
                x86::stream_copy(c.x.cast(), staged.x.cast(), m * 2, next, 0);
            }
            x86::stream_copy(c.y.cast(), staged.y.cast(), m * 2, next, 0);
            x86::stream_copy(c.on, staged.on, m, next, 0);
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
    x86::sfence();
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    //! x86_64 kernels: the non-temporal copy and the AVX-512 record decoders.
    //!
    //! Each decoder handles 16 records per iteration from two 64-byte loads that together
    //! cover exactly those 16 records (80 bytes for N-binary: loads at byte 0 and byte 16;
    //! 128 bytes for the 8-byte formats), so nothing past the input is read.

    use std::arch::x86_64::*;

    use super::Cols;

    /// How far ahead of the record being decoded the kernels prefetch their input, in bytes
    /// (two lines per 16 records; measured best of 2–16 KiB).
    pub(crate) const PREFETCH_AHEAD: usize = 8192;

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

    pub(crate) fn has_avx512bw() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
    }

    pub(crate) fn has_avx512vbmi() -> bool {
        has_avx512bw() && is_x86_feature_detected!("avx512vbmi")
    }

    /// Stores 8 timestamps at `p`: non-temporal (`p` must then be 64-byte aligned) or not.
    ///
    /// # Safety
    /// AVX-512 F is available, `p` is valid for 64 bytes of writes, and 64-byte aligned if
    /// `NT`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store_t<const NT: bool>(p: *mut i64, v: __m512i) {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            if NT {
                _mm512_stream_si512(p.cast(), v)
            } else {
                _mm512_storeu_si512(p.cast(), v)
            }
        }
    }

    /// Index of byte `k` (0..80) of 16 N-binary records in the 128-byte table formed by
    /// the loads at byte 0 (`a`, indices 0..64) and byte 16 (`b`, indices 64..128).
    const fn nb(k: usize) -> u8 {
        (if k < 64 { k } else { k - 16 + 64 }) as u8
    }

    /// `vpermt2b` indices for N-binary: `[t of records 0..8, t of 8..16, x ++ y, on]`.
    /// `t`: per 64-bit lane bytes `r4, r3, r2` (then zeroed by the mask); `x ++ y`: per 16-bit
    /// lane byte `r0` (16 lanes) then `r1` (16 lanes); `on`: bytes `r2` of the 16 records.
    const NBIN_IDX: [[u8; 64]; 4] = {
        let mut t = [[0u8; 64]; 4];
        let mut q = 0;
        while q < 8 {
            t[0][8 * q] = nb(5 * q + 4);
            t[0][8 * q + 1] = nb(5 * q + 3);
            t[0][8 * q + 2] = nb(5 * q + 2);
            t[1][8 * q] = nb(5 * (q + 8) + 4);
            t[1][8 * q + 1] = nb(5 * (q + 8) + 3);
            t[1][8 * q + 2] = nb(5 * (q + 8) + 2);
            q += 1;
        }
        let mut w = 0;
        while w < 16 {
            t[2][2 * w] = nb(5 * w);
            t[2][32 + 2 * w] = nb(5 * w + 1);
            t[3][w] = nb(5 * w + 2);
            w += 1;
        }
        t
    };

    /// N-binary, 16 records (80 bytes) per iteration: `t = base + (r2 & 0x7F, r3, r4)` (big
    /// endian), `x = r0`, `y = r1`, `on = r2 >> 7`; flag: `watch && y == 240`.
    ///
    /// # Safety
    /// AVX-512 F, BW and VBMI are available, and every column of `c` has room for
    /// `recs.len() / 5` elements.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(crate) unsafe fn nbin<const NT_T: bool>(
        recs: &[u8],
        c: Cols,
        base: i64,
        watch: bool,
    ) -> (usize, bool) {
        let groups = recs.len() / 80;
        let mut flags: __mmask32 = 0;
        // SAFETY: loads read bytes `80 g .. 80 g + 80` of `recs` (g < groups, in bounds);
        // stores write elements `16 g .. 16 g + 16` of each column, within the room the caller
        // guarantees (16 groups ≤ recs.len() / 5); the target features are enabled.
        unsafe {
            let it0 = _mm512_loadu_si512(NBIN_IDX[0].as_ptr().cast());
            let it1 = _mm512_loadu_si512(NBIN_IDX[1].as_ptr().cast());
            let ixy = _mm512_loadu_si512(NBIN_IDX[2].as_ptr().cast());
            let ion = _mm512_loadu_si512(NBIN_IDX[3].as_ptr().cast());
            let base_v = _mm512_set1_epi64(base);
            let t_mask = _mm512_set1_epi64(0x7F_FFFF);
            let y240 = _mm512_set1_epi16(240);
            let one = _mm_set1_epi8(1);
            const T_BYTES: __mmask64 = 0x0707_0707_0707_0707;
            const LOW_BYTES: __mmask64 = 0x5555_5555_5555_5555;
            for g in 0..groups {
                let p = recs.as_ptr().add(80 * g);
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD).cast());
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD + 64).cast());
                let a = _mm512_loadu_si512(p.cast());
                let b = _mm512_loadu_si512(p.add(16).cast());
                let raw0 = _mm512_maskz_permutex2var_epi8(T_BYTES, a, it0, b);
                let raw1 = _mm512_maskz_permutex2var_epi8(T_BYTES, a, it1, b);
                let t0 = _mm512_add_epi64(_mm512_and_si512(raw0, t_mask), base_v);
                let t1 = _mm512_add_epi64(_mm512_and_si512(raw1, t_mask), base_v);
                let xy = _mm512_maskz_permutex2var_epi8(LOW_BYTES, a, ixy, b);
                flags |= _mm512_mask_cmpeq_epi16_mask(0xFFFF_0000, xy, y240);
                let r2 = _mm512_castsi512_si128(_mm512_permutex2var_epi8(a, ion, b));
                let on = _mm_and_si128(_mm_srli_epi16(r2, 7), one);
                let c = c.add(16 * g);
                store_t::<NT_T>(c.t, t0);
                store_t::<NT_T>(c.t.add(8), t1);
                _mm256_storeu_si256(c.x.cast(), _mm512_castsi512_si256(xy));
                _mm256_storeu_si256(c.y.cast(), _mm512_extracti64x4_epi64::<1>(xy));
                _mm_storeu_si128(c.on.cast(), on);
            }
        }
        (16 * groups, watch && flags != 0)
    }

    /// Dword indices of the even (first) 32-bit word of each of 16 8-byte records held in two
    /// registers.
    const EVEN_DWORDS: [u32; 16] = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30];

    /// `vpshufb` indices that turn each 64-bit lane `[a0 a1 a2 a3 t0 t1 t2 t3]` into the
    /// zero-extended big-endian `t0..t3`.
    const BE_HIGH_DWORD: [u8; 64] = {
        let mut s = [0x80u8; 64];
        let mut q = 0;
        while q < 8 {
            s[8 * q] = (8 * (q % 2) + 7) as u8;
            s[8 * q + 1] = (8 * (q % 2) + 6) as u8;
            s[8 * q + 2] = (8 * (q % 2) + 5) as u8;
            s[8 * q + 3] = (8 * (q % 2) + 4) as u8;
            q += 1;
        }
        s
    };

    /// AEDAT 2.0 DVS128 layout, 16 records (128 bytes) per iteration. With the address word
    /// loaded little-endian as `d` (byte `r0` lowest): `x = d >> 25`, `y = (d >> 16) & 0x7F`,
    /// `on = ((d >> 24) & 1) ^ flip`, `t` = the big-endian second word; flag: `watch` and
    /// bit 7 of `r0` or `r2` (`d & 0x0080_0080`).
    ///
    /// # Safety
    /// AVX-512 F and BW are available, and every column of `c` has room for
    /// `recs.len() / 8` elements.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn aedat2_dvs128<const NT_T: bool>(
        recs: &[u8],
        c: Cols,
        flip: bool,
        watch: bool,
    ) -> (usize, bool) {
        let groups = recs.len() / 128;
        let mut flags: __mmask16 = 0;
        // SAFETY: loads read bytes `128 g .. 128 g + 128` of `recs` (g < groups); stores write
        // elements `16 g .. 16 g + 16` of each column, within the caller's room; the target
        // features are enabled.
        unsafe {
            let even = _mm512_loadu_si512(EVEN_DWORDS.as_ptr().cast());
            let shuf = _mm512_loadu_si512(BE_HIGH_DWORD.as_ptr().cast());
            let special = _mm512_set1_epi32(0x0080_0080);
            let m7f = _mm512_set1_epi32(0x7F);
            let one = _mm512_set1_epi32(1);
            let flip_v = _mm512_set1_epi32(flip as i32);
            for g in 0..groups {
                let p = recs.as_ptr().add(128 * g);
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD).cast());
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD + 64).cast());
                let a = _mm512_loadu_si512(p.cast());
                let b = _mm512_loadu_si512(p.add(64).cast());
                let t0 = _mm512_shuffle_epi8(a, shuf);
                let t1 = _mm512_shuffle_epi8(b, shuf);
                let d = _mm512_permutex2var_epi32(a, even, b);
                flags |= _mm512_test_epi32_mask(d, special);
                let x = _mm512_cvtepi32_epi16(_mm512_srli_epi32(d, 25));
                let y = _mm512_cvtepi32_epi16(_mm512_and_si512(_mm512_srli_epi32(d, 16), m7f));
                let on = _mm512_and_si512(_mm512_xor_si512(_mm512_srli_epi32(d, 24), flip_v), one);
                let on = _mm512_cvtepi32_epi8(on);
                let c = c.add(16 * g);
                store_t::<NT_T>(c.t, t0);
                store_t::<NT_T>(c.t.add(8), t1);
                _mm256_storeu_si256(c.x.cast(), x);
                _mm256_storeu_si256(c.y.cast(), y);
                _mm_storeu_si128(c.on.cast(), on);
            }
        }
        (16 * groups, watch && flags != 0)
    }

    /// AEDAT 3.1 polarity events of 8 bytes with the timestamp at offset 4, 16 per iteration:
    /// `d` = little-endian data word, `x = d >> 17`, `y = (d >> 2) & 0x7FFF`,
    /// `on = (d >> 1) & 1`, `t = ovf | (u32 timestamp)`; flag: `watch && d & 1 == 0`.
    ///
    /// # Safety
    /// AVX-512 F and BW are available, and every column of `c` has room for
    /// `recs.len() / 8` elements.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn aedat31_polarity8<const NT_T: bool>(
        recs: &[u8],
        c: Cols,
        ovf: i64,
        watch: bool,
    ) -> (usize, bool) {
        let groups = recs.len() / 128;
        let mut flags: __mmask16 = 0;
        // SAFETY: as in `aedat2_dvs128`.
        unsafe {
            let even = _mm512_loadu_si512(EVEN_DWORDS.as_ptr().cast());
            let ovf_v = _mm512_set1_epi64(ovf);
            let m7fff = _mm512_set1_epi32(0x7FFF);
            let one = _mm512_set1_epi32(1);
            for g in 0..groups {
                let p = recs.as_ptr().add(128 * g);
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD).cast());
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD + 64).cast());
                let a = _mm512_loadu_si512(p.cast());
                let b = _mm512_loadu_si512(p.add(64).cast());
                let t0 = _mm512_or_si512(_mm512_srli_epi64(a, 32), ovf_v);
                let t1 = _mm512_or_si512(_mm512_srli_epi64(b, 32), ovf_v);
                let d = _mm512_permutex2var_epi32(a, even, b);
                flags |= _mm512_testn_epi32_mask(d, one);
                let x = _mm512_cvtepi32_epi16(_mm512_srli_epi32(d, 17));
                let y = _mm512_cvtepi32_epi16(_mm512_and_si512(_mm512_srli_epi32(d, 2), m7fff));
                let on = _mm512_cvtepi32_epi8(_mm512_and_si512(_mm512_srli_epi32(d, 1), one));
                let c = c.add(16 * g);
                store_t::<NT_T>(c.t, t0);
                store_t::<NT_T>(c.t.add(8), t1);
                _mm256_storeu_si256(c.x.cast(), x);
                _mm256_storeu_si256(c.y.cast(), y);
                _mm_storeu_si128(c.on.cast(), on);
            }
        }
        (16 * groups, watch && flags != 0)
    }
}

#[cfg(test)]
mod tests {
    //! The fast paths against the reference scalar path, on random records of every format.

    use super::{FORCE_PATH, Path};
    use crate::core::{AnyCore, Meta, decode_all};
    use crate::format::{Dvs128Polarity, Format, NbinOverflow, ReadOptions};
    use crate::{Event, Events, Skipped};

    /// xorshift64*: reproducible without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    const PATHS: [Path; 4] = [
        Path {
            simd: false,
            stream: false,
        },
        Path {
            simd: true,
            stream: false,
        },
        Path {
            simd: false,
            stream: true,
        },
        Path {
            simd: true,
            stream: true,
        },
    ];

    /// Record counts around the SIMD group (16) and block ([`super::BLOCK`]) sizes.
    fn counts(rng: &mut Rng) -> Vec<usize> {
        let mut v = vec![0, 1, 15, 16, 17, 33, 2047, 2048, 2049, 4096 + 31, 7000];
        v.extend((0..4).map(|_| rng.below(6000) as usize));
        v
    }

    /// How often records that are not events (markers, special words, invalid events) occur.
    #[derive(Clone, Copy, Debug)]
    enum Flags {
        None,
        One,
        Dense,
    }

    /// Events already in the output, with dirty spare capacity behind them: `k` events (so
    /// the columns' write positions have every alignment) out of a longer random sequence.
    fn prefill(rng: &mut Rng, k: usize) -> Events {
        let mut e: Events = (0..k + 100)
            .map(|_| Event {
                t: rng.next() as i64,
                x: rng.next() as u16,
                y: rng.next() as u16,
                on: rng.next() & 1 == 1,
            })
            .collect();
        e.t.truncate(k);
        e.x.truncate(k);
        e.y.truncate(k);
        e.on.truncate(k);
        e
    }

    fn decode(
        format: Format,
        opts: &ReadOptions,
        bytes: &[u8],
        out: &Events,
        path: Path,
    ) -> (Events, Skipped) {
        FORCE_PATH.set(Some(path));
        let mut out = out.clone();
        let mut meta = Meta::default();
        let mut core = AnyCore::new(format, opts);
        let res = decode_all(&mut core, bytes, &mut out, &mut meta);
        FORCE_PATH.set(None);
        res.unwrap();
        (out, meta.skipped)
    }

    /// Decodes `bytes` on every path, with a prefilled output, and checks all agree.
    fn check_all(rng: &mut Rng, format: Format, opts: &ReadOptions, bytes: &[u8], what: &str) {
        let k = rng.below(40) as usize;
        let pre = prefill(rng, k);
        let reference = decode(format, opts, bytes, &pre, PATHS[0]);
        assert_eq!(reference.0.t[..k], pre.t[..], "{what}: prefix kept");
        for &path in &PATHS[1..] {
            let got = decode(format, opts, bytes, &pre, path);
            assert!(got.0.columns_consistent(), "{what} {path:?}");
            assert_eq!(got.0.t, reference.0.t, "{what} {path:?}: t");
            assert_eq!(got.0.x, reference.0.x, "{what} {path:?}: x");
            assert_eq!(got.0.y, reference.0.y, "{what} {path:?}: y");
            assert_eq!(got.0.on, reference.0.on, "{what} {path:?}: on");
            assert_eq!(got.1, reference.1, "{what} {path:?}: skipped");
        }
    }

    fn note_simd() {
        #[cfg(target_arch = "x86_64")]
        if !super::x86::has_avx512vbmi() {
            eprintln!("note: no AVX-512 VBMI here; the SIMD kernels are not exercised");
        }
    }

    #[test]
    fn nbin_fast_paths_match_scalar() {
        note_simd();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for n in counts(&mut rng) {
            for flags in [Flags::None, Flags::One, Flags::Dense] {
                let mut b = rng.bytes(5 * n);
                for r in b.chunks_exact_mut(5) {
                    match flags {
                        Flags::None | Flags::One if r[1] == 240 => r[1] = 241,
                        Flags::Dense if rng.below(40) == 0 => r[1] = 240,
                        _ => {}
                    }
                }
                if let (Flags::One, true) = (flags, n > 0) {
                    let i = rng.below(n as u64) as usize;
                    b[5 * i + 1] = 240;
                }
                for ovf in [
                    NbinOverflow::Tonic,
                    NbinOverflow::Wrap23,
                    NbinOverflow::Ignore,
                ] {
                    let opts = ReadOptions {
                        nbin_overflow: ovf,
                        ..ReadOptions::with_format(Format::NBin)
                    };
                    let what = format!("nbin n={n} {flags:?} {ovf:?}");
                    check_all(&mut rng, Format::NBin, &opts, &b, &what);
                }
            }
        }
    }

    #[test]
    fn aedat2_fast_paths_match_scalar() {
        note_simd();
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        for n in counts(&mut rng) {
            for flags in [Flags::None, Flags::One, Flags::Dense] {
                let mut b = crate::aedat2::MAGIC.as_bytes().to_vec();
                b.extend_from_slice(b"# AEChip: ch.unizh.ini.jaer.chip.retina.DVS128\r\n");
                let h = b.len();
                b.extend(rng.bytes(8 * n));
                for r in b[h..].chunks_exact_mut(8) {
                    match flags {
                        Flags::None | Flags::One => {
                            r[0] &= 0x7F;
                            r[2] &= 0x7F;
                        }
                        Flags::Dense if rng.below(8) != 0 => {
                            r[0] &= 0x7F;
                            r[2] &= 0x7F;
                        }
                        Flags::Dense => {}
                    }
                }
                if let (Flags::One, true) = (flags, n > 0) {
                    let i = rng.below(n as u64) as usize;
                    b[h + 8 * i + 2 * rng.below(2) as usize] |= 0x80;
                }
                for keep_special in [false, true] {
                    for pol in [Dvs128Polarity::Bit0On, Dvs128Polarity::Jaer] {
                        let opts = ReadOptions {
                            keep_special,
                            dvs128_polarity: pol,
                            ..ReadOptions::with_format(Format::Aedat2)
                        };
                        let what = format!("aedat2 n={n} {flags:?} keep={keep_special} {pol:?}");
                        check_all(&mut rng, Format::Aedat2, &opts, &b, &what);
                    }
                }
            }
        }
    }

    /// An AEDAT 3.1 file of polarity packets holding `n` events in all, of random sizes, with
    /// random overflow counters and capacity slack; one packet of stride 12 (the generic path)
    /// and one non-polarity packet are mixed in.
    fn aedat31_file(rng: &mut Rng, n: usize, flags: Flags) -> Vec<u8> {
        let mut b = crate::aedat31::MAGIC.as_bytes().to_vec();
        b.extend_from_slice(b"#Source 1: DVS128\r\n#!END-HEADER\r\n");
        let mut left = n;
        let mut one = match flags {
            Flags::One if n > 0 => Some(rng.below(n as u64) as usize),
            _ => None,
        };
        let mut index = 0usize;
        let mut packet = 0;
        while left > 0 || packet < 2 {
            let (ty, stride, tso) = match packet {
                1 => (1i16, 12i32, 8i32),
                2 => (3, 40, 36),
                _ => (1, 8, 4),
            };
            let number = if ty == 1 {
                (rng.below(5000) as usize + 1).min(left)
            } else {
                3
            };
            let capacity = number + rng.below(3) as usize;
            let ovf = rng.next() as u32;
            let fields = [
                stride,
                tso,
                ovf as i32,
                capacity as i32,
                number as i32,
                number as i32,
            ];
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&0i16.to_le_bytes());
            for f in fields {
                b.extend_from_slice(&f.to_le_bytes());
            }
            for _ in 0..capacity {
                let mut e = rng.bytes(stride as usize);
                let valid = match flags {
                    Flags::None => true,
                    Flags::One => one != Some(index),
                    Flags::Dense => rng.below(8) != 0,
                };
                e[0] = (e[0] & !1) | valid as u8;
                b.extend_from_slice(&e);
                if ty == 1 {
                    index += 1;
                }
            }
            if ty == 1 {
                left -= number;
                if one.is_some_and(|i| i < index) {
                    one = None;
                }
            }
            packet += 1;
        }
        b
    }

    #[test]
    fn aedat31_fast_paths_match_scalar() {
        note_simd();
        let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
        for n in counts(&mut rng) {
            for flags in [Flags::None, Flags::One, Flags::Dense] {
                let b = aedat31_file(&mut rng, n, flags);
                for keep_invalid in [false, true] {
                    let opts = ReadOptions {
                        keep_invalid,
                        ..ReadOptions::with_format(Format::Aedat31)
                    };
                    let what = format!("aedat31 n={n} {flags:?} keep={keep_invalid}");
                    check_all(&mut rng, Format::Aedat31, &opts, &b, &what);
                }
            }
        }
    }

    /// The default choice on a large file (streamed, SIMD where available) through the public
    /// entry point equals the reference path.
    #[test]
    fn large_inputs_default_path_matches_scalar() {
        let mut rng = Rng(42);
        let n = super::STREAM_MIN_OUTPUT / 13 + 12_345;
        let mut b = rng.bytes(5 * n);
        for r in b.chunks_exact_mut(5) {
            if r[1] == 240 && rng.below(64) != 0 {
                r[1] = 7;
            }
        }
        let opts = ReadOptions::with_format(Format::NBin);
        let meta = Meta {
            whole_input: b.len(),
            ..Meta::default()
        };
        let chosen = super::choose(&crate::nbin::Decoder::new(&opts), &meta);
        assert_eq!(
            chosen.stream, chosen.simd,
            "large inputs stream whenever SIMD runs"
        );
        let mut rec = crate::Recording::default();
        crate::decode_into(&b, Format::NBin, &opts, &mut rec).unwrap();
        let reference = decode(Format::NBin, &opts, &b, &Events::new(), PATHS[0]);
        assert_eq!(rec.events, reference.0);
        assert_eq!(rec.skipped, reference.1);
        assert!(rec.skipped["overflow"] > 0);
    }
}
