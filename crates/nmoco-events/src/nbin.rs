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
        crate::fast::append(out, &buf[..n * RECORD], self, meta);
        Ok(Step::Progress(n * RECORD))
    }
}

impl crate::fast::Records for Decoder {
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

    #[cfg(target_arch = "x86_64")]
    fn simd_available(&self) -> bool {
        crate::fast::x86::has_avx512vbmi()
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn simd(&self, recs: &[u8], c: crate::fast::Cols, nt_t: bool) -> (usize, bool) {
        // SAFETY: forwarded from the trait method's contract (VBMI checked by
        // `simd_available`, room for every record in `c`, `c.t` aligned if `nt_t`).
        unsafe {
            if nt_t {
                crate::fast::x86::nbin::<true>(recs, c, self.base, self.increment.is_some())
            } else {
                crate::fast::x86::nbin::<false>(recs, c, self.base, self.increment.is_some())
            }
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
