//! N-MNIST / N-Caltech101 40-bit binary: headerless 5-byte records.
//!
//! Record (big-endian 40 bits): `b0 = x`, `b1 = y`, `b2 bit 7 = polarity (1 = ON)`,
//! `t = ((b2 & 0x7F) << 16) | (b3 << 8) | b4` in µs.
//!
//! Timestamp-overflow records (`y == 240`, any x) are handled per
//! [`NbinOverflow`]: by default (tonic) each one is dropped, counted in
//! `skipped["overflow"]`, and adds 8192 µs to every later event.
//! A trailing partial record is an error ([`Error::PartialRecord`]) unless
//! [`ReadOptions::allow_partial_record`](crate::ReadOptions) is set (then it is dropped and
//! counted in `skipped["partial_record"]`).
//!
//! The writer is the inverse of the default reader: it emits an overflow record (`x = 0`,
//! `y = 240`, `p = 0`, `t = 0`) whenever the next event's timestamp no longer fits in 23 bits
//! above the running offset (8192 µs per record written so far). Every timestamp must
//! therefore be at least that offset (true for non-negative, non-decreasing timestamps; unsorted
//! ones are fine as long as no marker is needed before them), and `y != 240`; anything else is
//! [`Error::Unrepresentable`].

use std::io::Write;
use std::path::Path;

use crate::core::{Core, Meta, Step, append_records, short_tail};
use crate::error::{Error, Result};
use crate::format::{Format, NbinOverflow, ReadOptions};
#[cfg(target_arch = "x86_64")]
use crate::simd::TonicEight;
use crate::{Events, SensorSize};

pub const RECORD: usize = 5;
/// The `y` value that marks a timestamp-overflow record.
pub const OVERFLOW_Y: u8 = 240;
const T_MASK: i64 = (1 << 23) - 1;
/// The writer refuses gaps that would need more overflow records than this (80 MiB of markers).
const MAX_MARKERS_PER_GAP: i64 = 1 << 24;

#[derive(Clone, Copy)]
pub(crate) struct Decoder {
    increment: Option<i64>,
    base: i64,
    allow_partial: bool,
}

impl Decoder {
    pub fn new(opts: &ReadOptions) -> Decoder {
        Decoder {
            increment: opts.nbin_overflow.increment(),
            base: 0,
            allow_partial: opts.allow_partial_record,
        }
    }
}

#[inline(always)]
fn raw_t(r: &[u8]) -> i64 {
    (((r[2] & 0x7F) as i64) << 16) | ((r[3] as i64) << 8) | r[4] as i64
}

impl Core for Decoder {
    fn step(
        &mut self,
        buf: &[u8],
        offset: u64,
        eof: bool,
        out: &mut Events,
        max: usize,
        meta: &mut Meta,
    ) -> Result<Step> {
        let n = (buf.len() / RECORD).min(max);
        if n == 0 {
            return short_tail(buf, RECORD, eof, self.allow_partial, offset, meta);
        }
        crate::simd::append(out, &buf[..n * RECORD], self, meta);
        Ok(Step::Progress(n * RECORD))
    }
}

impl crate::simd::Records for Decoder {
    const SIZE: usize = RECORD;

    #[inline(always)]
    fn scalar(&self, r: &[u8]) -> (i64, u16, u16, bool, bool) {
        (
            self.base + raw_t(r),
            r[0] as u16,
            r[1] as u16,
            r[2] & 0x80 != 0,
            self.increment.is_some() & (r[1] == OVERFLOW_Y),
        )
    }

    #[inline(always)]
    fn kernel(&self) -> crate::simd::Kernel {
        crate::simd::Kernel::NBin {
            base: self.base,
            watch: self.increment.is_some(),
        }
    }

    /// Decodes run by run between the overflow markers, each adding the increment to the base.
    fn filter(&mut self, recs: &[u8], out: &mut Events, meta: &mut Meta) {
        let inc = self.increment.unwrap_or(0);
        let mut rest = recs;
        let mut markers = 0u64;
        while !rest.is_empty() {
            let run = rest
                .chunks_exact(RECORD)
                .position(|r| r[1] == OVERFLOW_Y)
                .unwrap_or(rest.len() / RECORD);
            let base = self.base;
            append_records(out, &rest[..run * RECORD], RECORD, |r| {
                (
                    base + raw_t(r),
                    r[0] as u16,
                    r[1] as u16,
                    r[2] & 0x80 != 0,
                    false,
                )
            });
            rest = &rest[run * RECORD..];
            if !rest.is_empty() {
                self.base += inc;
                markers += 1;
                rest = &rest[RECORD..];
            }
        }
        meta.skip("overflow", markers);
    }
}

/// Bytes per record of tonic's packed `events_struct` (`x` int16 at byte 0, `y` int16 at 2,
/// `t` int64 at 4, `p` bool at 12; little-endian), the layout [`decode_tonic_records`] writes.
pub const TONIC_RECORD: usize = 13;

/// Decodes N-binary `data` straight into tonic's packed structured records
/// ([`TONIC_RECORD`] bytes each): the same events, skipped counts and errors as
/// [`crate::decode_into`] with [`Format::NBin`], in one pass and without intermediate columns
/// (what a Python caller wants for `tonic.io.read_mnist_file`'s array).
///
/// `out` must hold at least `data.len() / 5` records (overflow markers make none, so this is
/// an upper bound); a smaller buffer is [`Error::TooLarge`]. Returns the number of records
/// written at the start of `out`; `skipped` gets `overflow` / `partial_record` counts added.
pub fn decode_tonic_records(
    data: &[u8],
    opts: &ReadOptions,
    out: &mut [u8],
    skipped: &mut crate::Skipped,
) -> Result<usize> {
    let n_rec = data.len() / RECORD;
    let tail = data.len() % RECORD;
    if tail != 0 && !opts.allow_partial_record {
        return Err(Error::PartialRecord {
            offset: (n_rec * RECORD) as u64,
            record_size: RECORD,
            remainder: tail as u64,
        });
    }
    let need = n_rec as u64 * TONIC_RECORD as u64;
    if (out.len() as u64) < need {
        return Err(Error::TooLarge {
            offset: 0,
            what: "decoded records for the output buffer",
            size: need,
            limit: out.len() as u64,
        });
    }
    let recs = &data[..n_rec * RECORD];
    let (n, markers) = match opts.nbin_overflow.increment() {
        Some(inc) => tonic_records::<true>(recs, inc, out),
        None => tonic_records::<false>(recs, 0, out),
    };
    if markers > 0 {
        *skipped.entry("overflow".to_string()).or_insert(0) += markers;
    }
    if tail != 0 {
        *skipped.entry("partial_record".to_string()).or_insert(0) += 1;
    }
    Ok(n)
}

/// The loop of [`decode_tonic_records`]: `MARKERS` drops `y == 240` records, each adding `inc`
/// to the later timestamps. `out` has room for every record. Where the CPU has AVX-512 VBMI,
/// the vector kernel takes 8 records per step (markers included) as far as whole steps fit;
/// the rest (the last records, other CPUs) goes through the scalar loop, its reference twin.
#[inline(always)]
fn tonic_records<const MARKERS: bool>(recs: &[u8], inc: i64, out: &mut [u8]) -> (usize, u64) {
    let mut base = 0i64;
    let mut markers = 0u64;
    let mut n = 0usize;
    let mut i = 0usize;
    #[cfg(target_arch = "x86_64")]
    if let Some(kernel) = TonicEight::detect() {
        (i, n, markers) = kernel.run_groups(recs, out, 0, 0, &mut base, inc, MARKERS);
    }
    let (k, m) = scalar_records::<MARKERS>(
        &recs[i * RECORD..],
        inc,
        &mut base,
        &mut out[n * TONIC_RECORD..],
    );
    (n + k, markers + m)
}

/// The scalar loop of [`tonic_records`]; `base` carries the timestamp offset across calls.
#[inline(always)]
pub(crate) fn scalar_records<const MARKERS: bool>(
    recs: &[u8],
    inc: i64,
    base: &mut i64,
    out: &mut [u8],
) -> (usize, u64) {
    let mut markers = 0u64;
    let mut n = 0usize;
    let mut outs = out.chunks_exact_mut(TONIC_RECORD);
    for r in recs.chunks_exact(RECORD) {
        let Ok(r) = <&[u8; RECORD]>::try_from(r) else {
            continue; // chunks_exact yields exactly RECORD bytes
        };
        if MARKERS && r[1] == OVERFLOW_Y {
            *base += inc;
            markers += 1;
            continue;
        }
        let Some(o) = outs.next() else { break };
        let Ok(o) = <&mut [u8; TONIC_RECORD]>::try_from(o) else {
            break;
        };
        let t = *base + raw_t(r);
        let xy = u32::from(r[0]) | (u32::from(r[1]) << 16);
        o[0..4].copy_from_slice(&xy.to_le_bytes());
        o[4..12].copy_from_slice(&t.to_le_bytes());
        o[12] = r[2] >> 7;
        n += 1;
    }
    (n, markers)
}

fn unrepr(index: usize, field: &'static str, value: i64, reason: &'static str) -> Error {
    Error::Unrepresentable {
        format: Format::NBin,
        index: index as u64,
        field,
        value,
        reason,
    }
}

/// Writes events as N-binary with the given overflow convention. With
/// [`NbinOverflow::Ignore`] timestamps must fit in 23 bits and no marker is ever written.
pub fn write_with<W: Write>(w: W, events: &Events, overflow: NbinOverflow) -> Result<()> {
    if !events.columns_consistent() {
        return Err(unrepr(
            0,
            "columns",
            events.t.len() as i64,
            "columns differ in length",
        ));
    }
    let mut w = std::io::BufWriter::with_capacity(1 << 16, w);
    let inc = overflow.increment();
    let mut base = 0i64;
    let mut buf = Vec::with_capacity(RECORD * 4096);
    for i in 0..events.t.len() {
        let (t, x, y, on) = (events.t[i], events.x[i], events.y[i], events.on[i]);
        if x > 255 {
            return Err(unrepr(i, "x", x as i64, "x must fit in 8 bits"));
        }
        if y > 255 {
            return Err(unrepr(i, "y", y as i64, "y must fit in 8 bits"));
        }
        if t < base {
            return Err(unrepr(
                i,
                "t",
                t,
                "timestamp is below the offset of the overflow records already written",
            ));
        }
        if let Some(inc) = inc {
            if y == OVERFLOW_Y as u16 {
                return Err(unrepr(i, "y", y as i64, "y = 240 marks an overflow record"));
            }
            if t - base > T_MASK {
                let needed = (t - base - T_MASK + inc - 1) / inc;
                if needed > MAX_MARKERS_PER_GAP {
                    return Err(unrepr(
                        i,
                        "t",
                        t,
                        "time gap needs too many overflow records",
                    ));
                }
            }
            while t - base > T_MASK {
                buf.extend_from_slice(&[0, OVERFLOW_Y, 0, 0, 0]);
                base += inc;
                if buf.len() >= RECORD * 4096 {
                    w.write_all(&buf).map_err(Error::write)?;
                    buf.clear();
                }
            }
        } else if t > T_MASK {
            return Err(unrepr(
                i,
                "t",
                t,
                "timestamp exceeds 23 bits and overflow is ignored",
            ));
        }
        let rt = t - base;
        buf.extend_from_slice(&[
            x as u8,
            y as u8,
            ((rt >> 16) as u8 & 0x7F) | if on { 0x80 } else { 0 },
            (rt >> 8) as u8,
            rt as u8,
        ]);
        if buf.len() >= RECORD * 4096 {
            w.write_all(&buf).map_err(Error::write)?;
            buf.clear();
        }
    }
    w.write_all(&buf).map_err(Error::write)?;
    w.flush().map_err(Error::write)?;
    Ok(())
}

/// Writes events as N-binary with tonic's overflow convention (the reader's default).
/// The sensor size is not stored (the format has no header); it is accepted for symmetry.
pub fn write<W: Write>(w: W, events: &Events, sensor: Option<SensorSize>) -> Result<()> {
    let _ = sensor;
    write_with(w, events, NbinOverflow::Tonic)
}

/// [`write()`] to a file (created or truncated).
pub fn write_file(path: &Path, events: &Events, sensor: Option<SensorSize>) -> Result<()> {
    crate::write_to_path(path, |f| write(f, events, sensor))
}
