//! AVX-512 record decoders (x86_64): 16 fixed-size records per iteration into the columns,
//! and 8 N-binary records into tonic's packed records.
//!
//! Each column decoder handles 16 records per iteration from two 64-byte loads that together
//! cover exactly those 16 records (80 bytes for N-binary: loads at byte 0 and byte 16;
//! 128 bytes for the 8-byte formats), so nothing past the input is read. Every kernel has a
//! scalar twin in its format's module (`Records::scalar`, `nbin::scalar_records`), and the
//! tests check that they agree.

use std::arch::x86_64::*;

use super::Cols;

/// How far ahead of the record being decoded the kernels prefetch their input, in bytes
/// (two lines per 16 records; measured best of 2–16 KiB).
pub(crate) const PREFETCH_AHEAD: usize = 8192;

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

// ---------------------------------------------------------------------------------------------
// N-binary → tonic records (`nbin::decode_tonic_records`): 8 N-binary records (40 bytes) → 8
// tonic records (104 bytes) with AVX-512 VBMI byte permutes. One permute gathers each record's
// 24-bit big-endian word (t and the polarity bit) into a 64-bit lane; a shift and a ternary
// logic op keep t in bits 0–22 and move the polarity bit to bit 56, and one add puts the
// overflow base on t (so t < 2^48 while the base is at most `TONIC_MAX_BASE`: lane byte 6 is
// zero and byte 7 is p). Two two-source permutes then build the packed records from those lanes
// (t = bytes 0–6 and a zero byte, p = byte 7, the zero high bytes of x and y from byte 6) and
// the input (x = b0, y = b1). Per step: 8 vector instructions, 4 of them on the shuffle port
// (three permutes and the marker compare).

/// Bytes [`tonic_eight`] writes: the 104 bytes of the 8 records.
pub(crate) const TONIC_OUT_BYTES: usize = 104;

/// The largest overflow base [`tonic_eight`] handles: `base + t` (t < 2^23) stays below
/// 2^48 (8.9 years in µs), so bytes 6 and 7 of a lane are free for a zero and the polarity.
pub(crate) const TONIC_MAX_BASE: i64 = (1 << 48) - (1 << 23);

/// Lane `r` (bytes `8 r ..`) ← record `r`'s bytes b4, b3, b2 (t0, t1, t2 with p in bit 7);
/// index 64 (a byte of the zero second source) for the other lane bytes.
const GATHER_T: [u8; 64] = {
    let mut s = [64u8; 64];
    let mut r = 0;
    while r < 8 {
        s[8 * r] = (5 * r + 4) as u8;
        s[8 * r + 1] = (5 * r + 3) as u8;
        s[8 * r + 2] = (5 * r + 2) as u8;
        r += 1;
    }
    s
};

/// Packed byte `o` (record `o / 13`, field byte `o % 13`) of the first (`part` 0: bytes 0–63)
/// or second (`part` 1: bytes 64–103) store ← a lane byte (index < 64) or an input byte (64 +
/// input index). Zero bytes come from byte 6 of lane 0.
const fn pack(part: usize) -> [u8; 64] {
    let mut s = [6u8; 64];
    let mut k = 0;
    while k < 64 {
        let o = 64 * part + k;
        if o < 104 {
            let (r, f) = (o / 13, o % 13);
            s[k] = match f {
                0 => 64 + 5 * r,     // x: b0
                2 => 64 + 5 * r + 1, // y: b1
                1 | 3 | 11 => 6,     // high bytes of x and y, t7: zero
                12 => 8 * r + 7,     // p: lane byte 7
                _ => 8 * r + f - 4,  // t0..t6: lane bytes 0..6
            } as u8;
        }
        k += 1;
    }
    s
}
const PACK: [[u8; 64]; 2] = [pack(0), pack(1)];

/// Input bytes `5 r + 1` (the `y` bytes) of the 8 records.
const Y_IN: u64 = {
    let mut m = 0u64;
    let mut r = 0;
    while r < 8 {
        m |= 1 << (5 * r + 1);
        r += 1;
    }
    m
};

/// Decodes the 8 records at `src` (40 bytes; 64 are read) into the 104 bytes at `dst`, every
/// record as an event with the overflow base in each 64-bit lane of `base` (at most
/// [`TONIC_MAX_BASE`]) added to its timestamp, and returns the mask of their `y` bytes (bit
/// `5 r + 1` for record `r`) that hold an overflow marker when `watch` (0 otherwise): the
/// records from the first marker on are then decoded wrongly.
///
/// # Safety
/// AVX-512 F, BW and VBMI are available; `src` is valid for 64 bytes of reads, `dst` for 104
/// bytes of writes.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
#[inline]
unsafe fn tonic_eight(src: *const u8, dst: *mut u8, base: __m512i, watch: bool) -> u64 {
    // SAFETY: the loads read the 64 bytes at `src` and the tables; the stores write bytes
    // 0..64 and (masked) 64..104 at `dst`; the target features are enabled.
    unsafe {
        let a = _mm512_loadu_si512(src.cast());
        let idx = _mm512_loadu_si512(GATHER_T.as_ptr().cast());
        let w = _mm512_permutex2var_epi8(a, idx, _mm512_setzero_si512());
        // (w | w << 33) & (t bits | bit 56): t in bits 0–22, the polarity bit (23) at 56.
        let keep = _mm512_set1_epi64((1 << 23) - 1 + (1 << 56));
        let tp = _mm512_ternarylogic_epi64::<0xA8>(w, _mm512_slli_epi64::<33>(w), keep);
        let tp = _mm512_add_epi64(tp, base);
        let out = |part: usize| {
            let idx = _mm512_loadu_si512(PACK[part].as_ptr().cast());
            _mm512_permutex2var_epi8(tp, idx, a)
        };
        _mm512_storeu_si512(dst.cast(), out(0));
        _mm512_mask_storeu_epi8(dst.add(64).cast(), (1 << 40) - 1, out(1));
        if watch {
            _mm512_mask_cmpeq_epi8_mask(Y_IN, a, _mm512_set1_epi8(240u8 as i8))
        } else {
            0
        }
    }
}

/// `nbin::decode_tonic_records`' loop over [`tonic_eight`]: decodes from record `i` of the
/// N-binary `recs` into tonic record `n` of `out`, 8 records per step, while a step's 64-byte
/// load and its [`TONIC_OUT_BYTES`] of stores fit in the slices and `base` is at most
/// [`TONIC_MAX_BASE`]. With `watch`, a step whose records hold an overflow marker keeps the
/// events before the first marker, drops the marker, adds `inc` to `base` and goes on from the
/// next record (the later records are decoded again with the new base, their wrong outputs
/// overwritten). Returns the new `(i, n)` and the number of markers; the caller decodes the
/// remaining records.
///
/// # Safety
/// AVX-512 F, BW and VBMI are available.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
pub(crate) unsafe fn tonic_groups(
    recs: &[u8],
    out: &mut [u8],
    mut i: usize,
    mut n: usize,
    base: &mut i64,
    inc: i64,
    watch: bool,
) -> (usize, usize, u64) {
    let mut markers = 0u64;
    if !(0..=TONIC_MAX_BASE).contains(base) {
        return (i, n, 0);
    }
    // Steps run while `5 i + 64 <= recs.len()` and `13 n + 104 <= out.len()`.
    let (Some(i_end), Some(n_end)) = (
        recs.len().checked_sub(64).map(|b| b / 5),
        out.len().checked_sub(TONIC_OUT_BYTES).map(|b| b / 13),
    ) else {
        return (i, n, 0);
    };
    let mut base_v = _mm512_set1_epi64(*base);
    while i <= i_end && n <= n_end {
        // SAFETY: the target features are enabled (this function's contract); `5 i + 64 <=
        // recs.len()` and `13 n + 104 <= out.len()` (the loop condition).
        let m = unsafe {
            tonic_eight(
                recs.as_ptr().add(5 * i),
                out.as_mut_ptr().add(13 * n),
                base_v,
                watch,
            )
        };
        if m == 0 {
            i += 8;
            n += 8;
        } else {
            // The first marker is record `j` of this step (its `y` byte is bit 5 j + 1).
            let j = (m.trailing_zeros() as usize - 1) / 5;
            i += j + 1;
            n += j;
            *base += inc;
            markers += 1;
            if *base > TONIC_MAX_BASE {
                break;
            }
            base_v = _mm512_set1_epi64(*base);
        }
    }
    (i, n, markers)
}
