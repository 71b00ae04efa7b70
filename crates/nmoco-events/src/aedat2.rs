//! AEDAT 2.0 as written by jAER: a `#` text header, then 8-byte records
//! `u32 address, u32 timestamp`, both big-endian. Timestamps are read as unsigned 32-bit µs
//! (as tonic, aermanager and spikingjelly do; no wrap-around unwrapping).
//!
//! The header is every line whose first byte is `#` (tonic's byte-peek rule); its first line
//! must be `#!AER-DAT2.0`. With [`Aedat2Layout::Auto`] the layout comes from the
//! `# AEChip:` line (`DVS128`/`Tmpdiff128`, `DAVIS240*`, `DAVIS346*`), defaulting to DVS128.
//!
//! **DVS128 layout** (CIFAR10-DVS). Decoded fields are the raw jAER fields, not flipped:
//! `x = X = (addr >> 1) & 0x7F`, `y = Y = (addr >> 8) & 0x7F`, and by default
//! `on = (addr & 1) == 1` (iniVation's AEDAT documentation, and tonic's raw `p`). With
//! [`Dvs128Polarity::Jaer`] `on = (addr & 1) == 0` (jAER's extractor, spikingjelly).
//! Words with bit 15 or bit 31 set are special/sync events (jAER): skipped and counted as
//! `"special"` unless [`ReadOptions::keep_special`](crate::ReadOptions) is set.
//! To reproduce spikingjelly's CIFAR10-DVS arrays from the default output (bit0 = 1 → ON) use
//! `x_sj = 127 - y`, `y_sj = 127 - x`, `p_sj = 1 - (on as u8)` (= `1 - bit0`);
//! tonic/aermanager's `read_dvs_128` gives `x_t = y`, `y_t = x`, `p_t = on as u8`.
//!
//! **DAVIS240/346 layout**: bit 31 = 0 is DVS: `y = (a >> 22) & 0x1FF`,
//! `x = (a >> 12) & 0x3FF` (raw, not mirrored), `on = bit 11`; a DVS word with bit 10 set is an
//! external event (`"special"`). Bit 31 = 1 is APS (`"aps"`), or IMU (`"imu"`) when
//! `(a & 0x80000C00) == 0x80000C00`. Non-DVS words are skipped and counted unless
//! `keep_special` is set (then they are decoded with the DVS masks, as tonic's unfiltered
//! `read_davis_346` does, but without its mirroring).
//!
//! The writer writes the DVS128 layout with the default polarity sense (bit0 = 1 for ON), raw
//! X/Y fields (`x < 128`, `y < 128`) and timestamps in `0..2^32`.

use std::io::Write;
use std::path::Path;

use crate::core::{
    Core, Line, Meta, Step, check_magic, chip_sensor, header_line, reserve, short_tail,
};
use crate::error::{Error, Result};
use crate::format::{Aedat2Layout, Dvs128Polarity, Format, ReadOptions};
use crate::{Events, SensorSize};

pub const MAGIC: &str = "#!AER-DAT2.0\r\n";
pub const RECORD: usize = 8;

pub(crate) struct Decoder {
    header: bool,
    first_line: bool,
    layout: Aedat2Layout,
    chip_known: bool,
    polarity_on_bit0: bool,
    keep_special: bool,
    allow_partial: bool,
    max_header: u64,
    header_len: u64,
}

impl Decoder {
    pub fn new(opts: &ReadOptions) -> Decoder {
        Decoder {
            header: true,
            first_line: true,
            layout: opts.aedat2_layout,
            chip_known: false,
            polarity_on_bit0: opts.dvs128_polarity == Dvs128Polarity::Bit0On,
            keep_special: opts.keep_special,
            allow_partial: opts.allow_partial_record,
            max_header: opts.max_header_bytes,
            header_len: 0,
        }
    }

    fn finish_header(&mut self, meta: &mut Meta) {
        self.header = false;
        if self.layout == Aedat2Layout::Auto {
            self.layout = Aedat2Layout::Dvs128;
        } else {
            self.chip_known = true;
        }
        if self.chip_known {
            meta.sensor = self.layout.sensor();
        }
    }
}

#[inline(always)]
fn word(r: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([r[i], r[i + 1], r[i + 2], r[i + 3]])
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
        if self.header {
            let line = header_line(buf, offset, eof, self.max_header)?;
            return match line {
                Line::Need(n) => Ok(Step::Need(n)),
                Line::End => {
                    if self.first_line {
                        return Err(Error::BadMagic {
                            offset,
                            expected: MAGIC.trim_end(),
                            found: String::from_utf8_lossy(&buf[..buf.len().min(16)]).into(),
                        });
                    }
                    self.finish_header(meta);
                    Ok(Step::Progress(0))
                }
                Line::Header(text, used) => {
                    if self.first_line {
                        check_magic(text, MAGIC)?;
                        self.first_line = false;
                    }
                    self.header_len += used as u64;
                    if self.header_len > self.max_header {
                        return Err(Error::TooLarge {
                            offset,
                            what: "text header",
                            size: self.header_len,
                            limit: self.max_header,
                        });
                    }
                    let s = String::from_utf8_lossy(text);
                    if self.layout == Aedat2Layout::Auto
                        && let Some(rest) = s.trim_start_matches('#').trim().strip_prefix("AEChip:")
                        && let Some((layout, _)) = chip_sensor(rest)
                    {
                        self.layout = layout;
                        self.chip_known = true;
                    }
                    Ok(Step::Progress(used))
                }
            };
        }
        let n = (buf.len() / RECORD).min(max);
        if n == 0 {
            return short_tail(buf, RECORD, eof, self.allow_partial, offset, meta);
        }
        let recs = &buf[..n * RECORD];
        match self.layout {
            Aedat2Layout::Dvs128 | Aedat2Layout::Auto => self.dvs128(recs, out, meta),
            Aedat2Layout::Davis240 | Aedat2Layout::Davis346 => self.davis(recs, out, meta),
        }
        Ok(Step::Progress(n * RECORD))
    }
}

impl Decoder {
    fn dvs128(&self, recs: &[u8], out: &mut Events, meta: &mut Meta) {
        // Special words have bit 31 (byte 0, bit 7) or bit 15 (byte 2, bit 7) set. They are
        // rare: decode optimistically, filtering only the blocks that hold one.
        let mut k = Dvs128 {
            flip: !self.polarity_on_bit0,
            watch: !self.keep_special,
        };
        crate::simd::append(out, recs, &mut k, meta);
    }

    fn davis(&self, recs: &[u8], out: &mut Events, meta: &mut Meta) {
        let n = recs.len() / RECORD;
        reserve(out, n);
        let (mut imu, mut aps, mut special) = (0u64, 0u64, 0u64);
        for r in recs.chunks_exact(RECORD) {
            let a = word(r, 0);
            if !self.keep_special {
                if a & 0x8000_0C00 == 0x8000_0C00 {
                    imu += 1;
                    continue;
                }
                if a & 0x8000_0000 != 0 {
                    aps += 1;
                    continue;
                }
                if a & 0x400 != 0 {
                    special += 1;
                    continue;
                }
            }
            out.t.push(word(r, 4) as i64);
            out.x.push(((a >> 12) & 0x3FF) as u16);
            out.y.push(((a >> 22) & 0x1FF) as u16);
            out.on.push(a & 0x800 != 0);
        }
        meta.skip("imu", imu);
        meta.skip("aps", aps);
        meta.skip("special", special);
    }
}

/// The DVS128 record decoder for [`crate::simd`].
#[derive(Clone, Copy)]
struct Dvs128 {
    /// `on = bit0 == 0` (jAER polarity sense).
    flip: bool,
    /// Flag (and filter out) special words.
    watch: bool,
}

impl crate::simd::Records for Dvs128 {
    const SIZE: usize = RECORD;

    #[inline(always)]
    fn scalar(&self, r: &[u8]) -> (i64, u16, u16, bool, bool) {
        (
            word(r, 4) as i64,
            ((r[3] >> 1) & 0x7F) as u16,
            (r[2] & 0x7F) as u16,
            (r[3] & 1 != 0) ^ self.flip,
            self.watch & ((r[0] | r[2]) & 0x80 != 0),
        )
    }

    #[inline(always)]
    fn kernel(&self) -> crate::simd::Kernel {
        crate::simd::Kernel::Aedat2Dvs128 {
            flip: self.flip,
            watch: self.watch,
        }
    }

    fn filter(&mut self, recs: &[u8], out: &mut Events, meta: &mut Meta) {
        reserve(out, recs.len() / RECORD);
        let mut special = 0u64;
        for r in recs.chunks_exact(RECORD) {
            if (r[0] | r[2]) & 0x80 != 0 {
                special += 1;
                continue;
            }
            out.t.push(word(r, 4) as i64);
            out.x.push(((r[3] >> 1) & 0x7F) as u16);
            out.y.push((r[2] & 0x7F) as u16);
            out.on.push((r[3] & 1 != 0) ^ self.flip);
        }
        meta.skip("special", special);
    }
}

fn unrepr(index: usize, field: &'static str, value: i64, reason: &'static str) -> Error {
    Error::Unrepresentable {
        format: Format::Aedat2,
        index: index as u64,
        field,
        value,
        reason,
    }
}

/// Writes events as a jAER AEDAT 2.0 DVS128 file (header lines, then big-endian records).
/// `x` and `y` are the raw X and Y fields (`< 128`), `on` sets bit 0. The sensor size, if
/// given, must fit in 128x128; it is not stored (the header names the DVS128 chip, so the
/// reader reports 128x128).
pub fn write<W: Write>(w: W, events: &Events, sensor: Option<SensorSize>) -> Result<()> {
    if !events.columns_consistent() {
        return Err(unrepr(
            0,
            "columns",
            events.t.len() as i64,
            "columns differ in length",
        ));
    }
    if let Some(s) = sensor
        && (s.width > 128 || s.height > 128)
    {
        return Err(unrepr(
            0,
            "sensor width",
            s.width as i64,
            "the DVS128 layout addresses at most 128x128",
        ));
    }
    let mut w = std::io::BufWriter::with_capacity(1 << 16, w);
    let header = concat!(
        "#!AER-DAT2.0\r\n",
        "# This is a raw AE data file created by nmoco-events\r\n",
        "# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n",
        "# Timestamps tick is 1 us\r\n",
        "# AEChip: ch.unizh.ini.jaer.chip.retina.DVS128\r\n",
    );
    w.write_all(header.as_bytes()).map_err(Error::write)?;
    for i in 0..events.t.len() {
        let (t, x, y, on) = (events.t[i], events.x[i], events.y[i], events.on[i]);
        if x > 127 {
            return Err(unrepr(i, "x", x as i64, "DVS128 X must be < 128"));
        }
        if y > 127 {
            return Err(unrepr(i, "y", y as i64, "DVS128 Y must be < 128"));
        }
        if !(0..=u32::MAX as i64).contains(&t) {
            return Err(unrepr(
                i,
                "t",
                t,
                "timestamps must fit in an unsigned 32-bit word",
            ));
        }
        let addr = ((y as u32) << 8) | ((x as u32) << 1) | on as u32;
        let mut rec = [0u8; RECORD];
        rec[..4].copy_from_slice(&addr.to_be_bytes());
        rec[4..].copy_from_slice(&(t as u32).to_be_bytes());
        w.write_all(&rec).map_err(Error::write)?;
    }
    w.flush().map_err(Error::write)?;
    Ok(())
}

/// [`write()`] to a file (created or truncated).
pub fn write_file(path: &Path, events: &Events, sensor: Option<SensorSize>) -> Result<()> {
    crate::write_to_path(path, |f| write(f, events, sensor))
}

/// Writes raw 32-bit address/timestamp words after an AEDAT 2.0 header naming `chip`
/// (e.g. `eu.seebetter.ini.chips.davis.DAVIS240C`): for fixtures of any layout.
pub fn write_raw<W: Write>(w: W, chip: &str, words: &[(u32, u32)]) -> Result<()> {
    let mut w = std::io::BufWriter::new(w);
    write!(w, "#!AER-DAT2.0\r\n# AEChip: {chip}\r\n").map_err(Error::write)?;
    for &(a, t) in words {
        w.write_all(&a.to_be_bytes()).map_err(Error::write)?;
        w.write_all(&t.to_be_bytes()).map_err(Error::write)?;
    }
    w.flush().map_err(Error::write)?;
    Ok(())
}
