//! AEDAT 3.1 (cAER; DVS128 Gesture): a `#` text header ending with `#!END-HEADER`, then
//! packets `[28-byte header][eventCapacity × eventSize bytes]`, all little-endian.
//!
//! Packet header: `i16 eventType, i16 eventSource, i32 eventSize, i32 eventTSOffset,
//! i32 eventTSOverflow, i32 eventCapacity, i32 eventNumber, i32 eventValid`.
//!
//! Only polarity packets (type 1) are decoded; every other type is skipped whole and counted
//! as `"packet:<kind>"` (e.g. `"packet:special"`, `"packet:frame"`). Within a polarity packet
//! `eventSize` is the stride, the timestamp is read at `eventTSOffset`, and the first
//! `min(eventNumber, eventCapacity)` events are decoded. Polarity event: `u32 data` with
//! bit 0 = valid, bit 1 = polarity (1 = ON), `y = (data >> 2) & 0x7FFF`,
//! `x = (data >> 17) & 0x7FFF`; then `i32 timestamp`. The 64-bit time is
//! `(eventTSOverflow << 31) | timestamp`, both taken as unsigned 32-bit words (as
//! spikingjelly does). Events whose validity bit is 0 are skipped and counted as `"invalid"`
//! unless [`ReadOptions::keep_invalid`](crate::ReadOptions) is set (spikingjelly keeps them).
//!
//! Differences from tonic's `read_dvs_ibm`, which ignores eventType, eventSize and
//! eventTSOverflow and masks x/y with 13 bits: on a file with only polarity packets of size 8,
//! all-valid events, `x, y < 8192` and timestamps below 2^31 the outputs are identical.

use std::io::Write;
use std::path::Path;

use crate::core::{
    Core, Line, Meta, Step, append_records, chip_sensor, header_line, need, parse_size, reserve,
    truncate,
};
use crate::error::{Error, Result};
use crate::format::{Format, ReadOptions};
use crate::{Events, SensorSize};

pub const MAGIC: &str = "#!AER-DAT3.1\r\n";
pub const END_HEADER: &str = "#!END-HEADER";
pub const PACKET_HEADER: usize = 28;
pub const POLARITY_EVENT: i16 = 1;
/// Largest accepted `eventSize` of a polarity packet (the format's is 8; extra bytes after the
/// timestamp are tolerated up to this stride).
pub const MAX_POLARITY_EVENT_SIZE: i32 = 1024;

/// The name used in `skipped` for a packet type.
pub fn packet_kind(event_type: i16) -> String {
    let name = match event_type {
        0 => "special",
        1 => "polarity",
        2 => "frame",
        3 => "imu6",
        4 => "imu9",
        5 => "sample",
        6 => "ear",
        7 => "config",
        8 => "point1d",
        9 => "point2d",
        10 => "point3d",
        11 => "point4d",
        12 => "spike",
        _ => return format!("packet:type{event_type}"),
    };
    format!("packet:{name}")
}

enum State {
    Header { first: bool },
    PacketHeader,
    Skip { left: u64 },
    Polarity(Packet),
}

struct Packet {
    /// Events still to decode.
    events_left: u64,
    /// Bytes after those events (capacity slack) to skip.
    tail: u64,
    stride: usize,
    ts_offset: usize,
    overflow: i64,
}

pub(crate) struct Decoder {
    state: State,
    keep_invalid: bool,
    max_header: u64,
    header_len: u64,
}

impl Decoder {
    pub fn new(opts: &ReadOptions) -> Decoder {
        Decoder {
            state: State::Header { first: true },
            keep_invalid: opts.keep_invalid,
            max_header: opts.max_header_bytes,
            header_len: 0,
        }
    }
}

#[inline(always)]
fn le32(r: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([r[i], r[i + 1], r[i + 2], r[i + 3]])
}

fn bad(offset: u64, field: &'static str, value: i64, reason: &'static str) -> Error {
    Error::BadField {
        offset,
        field,
        value,
        reason,
    }
}

/// A packet header (see the module documentation), with the fields every packet type must
/// satisfy checked.
struct PacketHeader {
    ty: i16,
    size: i32,
    ts_offset: i32,
    overflow: u32,
    capacity: i32,
    number: i32,
}

impl PacketHeader {
    /// Reads the header at the start of `bytes` (at least [`PACKET_HEADER`] bytes, at file
    /// offset `offset`): `eventSize` must be positive, `eventCapacity` and `eventNumber` not
    /// negative.
    fn parse(bytes: &[u8], offset: u64) -> Result<PacketHeader> {
        let h = &bytes[..PACKET_HEADER];
        let ty = i16::from_le_bytes([h[0], h[1]]);
        let size = le32(h, 4) as i32;
        let ts_offset = le32(h, 8) as i32;
        let overflow = le32(h, 12);
        let capacity = le32(h, 16) as i32;
        let number = le32(h, 20) as i32;
        if size <= 0 {
            return Err(bad(
                offset + 4,
                "eventSize",
                size as i64,
                "must be positive",
            ));
        }
        if capacity < 0 {
            return Err(bad(
                offset + 16,
                "eventCapacity",
                capacity as i64,
                "is negative",
            ));
        }
        if number < 0 {
            return Err(bad(
                offset + 20,
                "eventNumber",
                number as i64,
                "is negative",
            ));
        }
        Ok(PacketHeader {
            ty,
            size,
            ts_offset,
            overflow,
            capacity,
            number,
        })
    }

    /// Bytes of events after the header (`eventCapacity × eventSize`).
    fn payload(&self) -> u64 {
        self.capacity as u64 * self.size as u64
    }

    /// The decoding state of a polarity packet with this header, after the checks of its
    /// event layout.
    fn polarity(&self, offset: u64) -> Result<Packet> {
        let (size, ts_offset) = (self.size, self.ts_offset);
        if size > MAX_POLARITY_EVENT_SIZE {
            return Err(bad(
                offset + 4,
                "eventSize",
                size as i64,
                "implausibly large for a polarity event",
            ));
        }
        if size < 8 {
            return Err(bad(
                offset + 4,
                "eventSize",
                size as i64,
                "polarity events need 8 bytes",
            ));
        }
        if ts_offset < 4 || ts_offset > size - 4 {
            return Err(bad(
                offset + 8,
                "eventTSOffset",
                ts_offset as i64,
                "the timestamp must lie inside the event after the data word",
            ));
        }
        let n = self.number.min(self.capacity) as u64;
        Ok(Packet {
            events_left: n,
            tail: (self.capacity as u64 - n) * size as u64,
            stride: size as usize,
            ts_offset: ts_offset as usize,
            overflow: (self.overflow as i64) << 31,
        })
    }
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
        match &mut self.state {
            State::Header { first } => {
                let first = *first;
                self.text_header(buf, offset, eof, first, meta)
            }
            State::PacketHeader => self.packet_header(buf, offset, eof, meta),
            State::Skip { left } => {
                if *left == 0 {
                    self.state = State::PacketHeader;
                    return Ok(Step::Progress(0));
                }
                if buf.is_empty() {
                    if eof {
                        return Err(Error::Truncated {
                            offset,
                            what: "packet payload",
                            needed: *left,
                            available: 0,
                        });
                    }
                    return Ok(Step::Need(1));
                }
                let k = (*left).min(buf.len() as u64);
                *left -= k;
                Ok(Step::Progress(k as usize))
            }
            State::Polarity(p) => {
                if p.events_left == 0 {
                    self.state = State::Skip { left: p.tail };
                    return Ok(Step::Progress(0));
                }
                let n = ((buf.len() / p.stride) as u64)
                    .min(p.events_left)
                    .min(max as u64) as usize;
                if n == 0 {
                    if let Some(r) = need(buf, p.stride, eof, offset, "polarity event") {
                        return r;
                    }
                    // A whole event is there but `max` is 0.
                    return Ok(Step::Progress(0));
                }
                let bytes = &buf[..n * p.stride];
                decode_polarity(bytes, p, self.keep_invalid, out, meta);
                p.events_left -= n as u64;
                Ok(Step::Progress(n * p.stride))
            }
        }
    }
}

impl Decoder {
    /// [`State::Header`]: one line of the text header (`first`: the magic line).
    fn text_header(
        &mut self,
        buf: &[u8],
        offset: u64,
        eof: bool,
        first: bool,
        meta: &mut Meta,
    ) -> Result<Step> {
        match header_line(buf, offset, eof, self.max_header)? {
            Line::Need(n) => Ok(Step::Need(n)),
            Line::End => {
                if first {
                    return Err(Error::BadMagic {
                        offset,
                        expected: MAGIC.trim_end(),
                        found: String::from_utf8_lossy(&buf[..buf.len().min(16)]).into(),
                    });
                }
                self.state = State::PacketHeader;
                Ok(Step::Progress(0))
            }
            Line::Header(text, used) => {
                if first {
                    crate::core::check_magic(text, MAGIC)?;
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
                let s = s.trim_start_matches('#').trim();
                if let Some(rest) = s.strip_prefix("Sensor-Size:") {
                    if let Some(size) = parse_size(rest) {
                        meta.sensor = Some(size);
                    }
                } else if let Some(rest) = s.strip_prefix("Source")
                    && meta.sensor.is_none()
                    && let Some((_, size)) =
                        rest.split_once(':').and_then(|(_, dev)| chip_sensor(dev))
                {
                    meta.sensor = Some(size);
                }
                self.state = if text == END_HEADER.as_bytes() {
                    State::PacketHeader
                } else {
                    State::Header { first: false }
                };
                Ok(Step::Progress(used))
            }
        }
    }

    /// [`State::PacketHeader`]: the end of the file, or the next packet's header.
    fn packet_header(
        &mut self,
        buf: &[u8],
        offset: u64,
        eof: bool,
        meta: &mut Meta,
    ) -> Result<Step> {
        if buf.is_empty() && eof {
            return Ok(Step::Done);
        }
        if let Some(r) = need(buf, PACKET_HEADER, eof, offset, "packet header") {
            return r;
        }
        let h = PacketHeader::parse(buf, offset)?;
        let payload = h.payload();
        if eof && payload > (buf.len() - PACKET_HEADER) as u64 {
            return Err(Error::PacketPastEnd {
                offset,
                size: PACKET_HEADER as u64 + payload,
                available: buf.len() as u64,
            });
        }
        if h.ty != POLARITY_EVENT {
            meta.skip(&packet_kind(h.ty), 1);
            self.state = State::Skip { left: payload };
            return Ok(Step::Progress(PACKET_HEADER));
        }
        self.state = State::Polarity(h.polarity(offset)?);
        Ok(Step::Progress(PACKET_HEADER))
    }
}

fn decode_polarity(
    bytes: &[u8],
    p: &Packet,
    keep_invalid: bool,
    out: &mut Events,
    meta: &mut Meta,
) {
    let (stride, tso, ovf) = (p.stride, p.ts_offset, p.overflow);
    let watch = !keep_invalid;
    // Invalid events are rare: decode optimistically, filtering only the blocks that hold one.
    if stride == 8 && tso == 4 {
        crate::simd::append(out, bytes, &mut Polarity8 { ovf, watch }, meta);
        return;
    }
    let len0 = out.t.len();
    let flagged = append_records(out, bytes, stride, |r| {
        let d = le32(r, 0);
        (
            ovf | le32(r, tso) as i64,
            ((d >> 17) & 0x7FFF) as u16,
            ((d >> 2) & 0x7FFF) as u16,
            d & 2 != 0,
            watch & (d & 1 == 0),
        )
    });
    if flagged {
        truncate(out, len0);
        filter_invalid(bytes, stride, tso, ovf, out, meta);
    }
}

/// Appends the valid events of `bytes` (events of `stride` bytes, timestamp at `tso`) and
/// counts the invalid ones.
fn filter_invalid(
    bytes: &[u8],
    stride: usize,
    tso: usize,
    ovf: i64,
    out: &mut Events,
    meta: &mut Meta,
) {
    reserve(out, bytes.len() / stride);
    let mut invalid = 0u64;
    for r in bytes.chunks_exact(stride) {
        let d = le32(r, 0);
        if d & 1 == 0 {
            invalid += 1;
            continue;
        }
        out.t.push(ovf | le32(r, tso) as i64);
        out.x.push(((d >> 17) & 0x7FFF) as u16);
        out.y.push(((d >> 2) & 0x7FFF) as u16);
        out.on.push(d & 2 != 0);
    }
    meta.skip("invalid", invalid);
}

/// The decoder of polarity events of 8 bytes with the timestamp at offset 4 (the format's
/// layout) for [`crate::simd`].
#[derive(Clone, Copy)]
struct Polarity8 {
    /// `eventTSOverflow << 31`.
    ovf: i64,
    /// Flag (and filter out) invalid events.
    watch: bool,
}

impl crate::simd::Records for Polarity8 {
    const SIZE: usize = 8;

    #[inline(always)]
    fn scalar(&self, r: &[u8]) -> (i64, u16, u16, bool, bool) {
        let d = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
        let t = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
        (
            self.ovf | t as i64,
            ((d >> 17) & 0x7FFF) as u16,
            ((d >> 2) & 0x7FFF) as u16,
            d & 2 != 0,
            self.watch & (d & 1 == 0),
        )
    }

    #[inline(always)]
    fn kernel(&self) -> crate::simd::Kernel {
        crate::simd::Kernel::Aedat31Polarity8 {
            ovf: self.ovf,
            watch: self.watch,
        }
    }

    fn filter(&mut self, recs: &[u8], out: &mut Events, meta: &mut Meta) {
        filter_invalid(recs, 8, 4, self.ovf, out, meta);
    }
}

fn unrepr(index: usize, field: &'static str, value: i64, reason: &'static str) -> Error {
    Error::Unrepresentable {
        format: Format::Aedat31,
        index: index as u64,
        field,
        value,
        reason,
    }
}

/// Polarity events per packet written by [`write()`].
pub const WRITE_PACKET_EVENTS: usize = 4096;

/// The header's source name for a sensor size.
fn source_name(sensor: Option<SensorSize>) -> &'static str {
    match sensor.map(|s| (s.width, s.height)) {
        None | Some((128, 128)) => "DVS128",
        Some((240, 180)) => "DAVIS240C",
        Some((346, 260)) => "DAVIS346B",
        Some(_) => "nmoco-synthetic",
    }
}

/// Writes events as an AEDAT 3.1 file: a cAER-style header (with a `#Sensor-Size: WxH` line when
/// the sensor is given and is not a known chip), then polarity packets of up to
/// [`WRITE_PACKET_EVENTS`] valid events; a new packet starts whenever `t >> 31` changes, so any
/// `t` in `0..2^63` is represented exactly, in any order. `x` and `y` must fit in 15 bits.
pub fn write<W: Write>(w: W, events: &Events, sensor: Option<SensorSize>) -> Result<()> {
    if !events.columns_consistent() {
        return Err(unrepr(
            0,
            "columns",
            events.t.len() as i64,
            "columns differ in length",
        ));
    }
    let mut w = std::io::BufWriter::with_capacity(1 << 16, w);
    let source = source_name(sensor);
    let mut header = format!(
        "#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: {source}\r\n#Start-Time: 1970-01-01 00:00:00 (TZ+0000)\r\n"
    );
    if let Some(s) = sensor
        && source == "nmoco-synthetic"
    {
        header.push_str(&format!("#Sensor-Size: {}x{}\r\n", s.width, s.height));
    }
    header.push_str("#!END-HEADER\r\n");
    w.write_all(header.as_bytes()).map_err(Error::write)?;
    for (i, &t) in events.t.iter().enumerate() {
        if t < 0 {
            return Err(unrepr(i, "t", t, "timestamps must be non-negative"));
        }
        if events.x[i] > 0x7FFF {
            return Err(unrepr(i, "x", events.x[i] as i64, "x must fit in 15 bits"));
        }
        if events.y[i] > 0x7FFF {
            return Err(unrepr(i, "y", events.y[i] as i64, "y must fit in 15 bits"));
        }
    }
    let n = events.t.len();
    let mut start = 0;
    let mut payload = Vec::with_capacity(WRITE_PACKET_EVENTS * 8);
    while start < n {
        let ovf = events.t[start] >> 31;
        let mut end = start + 1;
        while end < n && end - start < WRITE_PACKET_EVENTS && events.t[end] >> 31 == ovf {
            end += 1;
        }
        let count = (end - start) as i32;
        let mut h = [0u8; PACKET_HEADER];
        h[0..2].copy_from_slice(&POLARITY_EVENT.to_le_bytes());
        h[2..4].copy_from_slice(&1i16.to_le_bytes());
        h[4..8].copy_from_slice(&8i32.to_le_bytes());
        h[8..12].copy_from_slice(&4i32.to_le_bytes());
        h[12..16].copy_from_slice(&(ovf as u32).to_le_bytes());
        h[16..20].copy_from_slice(&count.to_le_bytes());
        h[20..24].copy_from_slice(&count.to_le_bytes());
        h[24..28].copy_from_slice(&count.to_le_bytes());
        w.write_all(&h).map_err(Error::write)?;
        payload.clear();
        for i in start..end {
            let data = ((events.x[i] as u32) << 17)
                | ((events.y[i] as u32) << 2)
                | ((events.on[i] as u32) << 1)
                | 1;
            payload.extend_from_slice(&data.to_le_bytes());
            payload.extend_from_slice(&((events.t[i] & 0x7FFF_FFFF) as u32).to_le_bytes());
        }
        w.write_all(&payload).map_err(Error::write)?;
        start = end;
    }
    w.flush().map_err(Error::write)?;
    Ok(())
}

/// [`write()`] to a file (created or truncated).
pub fn write_file(path: &Path, events: &Events, sensor: Option<SensorSize>) -> Result<()> {
    crate::write_to_path(path, |f| write(f, events, sensor))
}

/// One raw packet for hand-built fixtures: the 28-byte header fields and the payload bytes.
#[derive(Debug, Clone)]
pub struct RawPacket {
    pub event_type: i16,
    pub event_source: i16,
    pub event_size: i32,
    pub ts_offset: i32,
    pub ts_overflow: i32,
    pub capacity: i32,
    pub number: i32,
    pub valid: i32,
    pub payload: Vec<u8>,
}

impl RawPacket {
    /// The packet's bytes, header then payload, exactly as given (no consistency checks).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(PACKET_HEADER + self.payload.len());
        v.extend_from_slice(&self.event_type.to_le_bytes());
        v.extend_from_slice(&self.event_source.to_le_bytes());
        for f in [
            self.event_size,
            self.ts_offset,
            self.ts_overflow,
            self.capacity,
            self.number,
            self.valid,
        ] {
            v.extend_from_slice(&f.to_le_bytes());
        }
        v.extend_from_slice(&self.payload);
        v
    }
}
