//! AEDAT 4.0 (iniVation DV).
//!
//! Layout: the magic `#!AER-DAT4.0\r\n`; a `u32` LE length N and an N-byte IO-header
//! flatbuffer (identifier `IOHE`: `compression: int32`, `file_data_position: int64 = -1`,
//! `description: string` holding the stream XML); then packets `i32 streamId, i32 byteLength,
//! payload` until `file_data_position` (when ≥ 0) or the end of the file. At
//! `file_data_position` lies the file data table, which is not a packet and is not parsed.
//!
//! Each payload is compressed as a whole (LZ4 frame, zstd frame, or none, per the IO header)
//! and decompresses to a size-prefixed flatbuffer whose identifier names the stream type
//! (`EVTS` for events). An `EventPacket` holds a vector of 16-byte structs
//! `{ t: i64, x: i16, y: i16, on: bool, 3 padding bytes }`; `t` is absolute µs.
//! `x` and `y` are cast to `u16` (as the `aedat` Python module does) and `on` is `byte != 0`.
//!
//! The decoder follows `tonic.io.read_aedat4`: it decodes the events stream with the lowest id
//! (or [`ReadOptions::aedat4_stream`](crate::ReadOptions)) and skips every other packet
//! without decompressing it, counting it as `"packet:frame"`, `"packet:imu"`,
//! `"packet:trigger"`, `"packet:events"` (another events stream) or `"packet:<id>"`. A packet
//! with a stream id the header does not declare is an error (as in the `aedat` crate).
//! Flatbuffers are parsed by hand with every offset bounds-checked.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use crate::core::{Core, Meta, Step, append_records};
use crate::error::{Error, Result};
use crate::format::{Compression, Format, ReadOptions};
use crate::{Events, SensorSize};

pub const MAGIC: &str = "#!AER-DAT4.0\r\n";
/// Bytes per event struct in an `EventPacket`.
pub const EVENT_STRUCT: usize = 16;

// ---------------------------------------------------------------------------------------------
// Bounds-checked flatbuffer reading.

struct Fb<'a> {
    buf: &'a [u8],
    /// Absolute file offset of the packet, for errors.
    offset: u64,
}

impl<'a> Fb<'a> {
    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Flatbuffer {
            offset: self.offset,
            reason: reason.into(),
        }
    }

    fn bytes(&self, pos: usize, n: usize) -> Result<&'a [u8]> {
        pos.checked_add(n)
            .and_then(|end| self.buf.get(pos..end))
            .ok_or_else(|| {
                self.err(format!(
                    "{n} bytes at {pos} lie outside the {}-byte buffer",
                    self.buf.len()
                ))
            })
    }

    fn u16(&self, pos: usize) -> Result<u16> {
        let b = self.bytes(pos, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&self, pos: usize) -> Result<u32> {
        let b = self.bytes(pos, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&self, pos: usize) -> Result<i64> {
        let b = self.bytes(pos, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    /// Follows the uoffset stored at `pos`.
    fn deref(&self, pos: usize) -> Result<usize> {
        let off = self.u32(pos)? as usize;
        pos.checked_add(off)
            .filter(|&p| p < self.buf.len())
            .ok_or_else(|| self.err(format!("offset {off} at {pos} points outside the buffer")))
    }

    /// The absolute position of field `index` of the table at `table`, or `None` if absent.
    fn field(&self, table: usize, index: usize) -> Result<Option<usize>> {
        let soff = self.u32(table)? as i32 as i64;
        let vt = table as i64 - soff;
        if vt < 0 || vt as usize >= self.buf.len() {
            return Err(self.err(format!(
                "vtable offset {soff} of the table at {table} points outside the buffer"
            )));
        }
        let vt = vt as usize;
        let vt_size = self.u16(vt)? as usize;
        let entry = 4 + 2 * index;
        if entry + 2 > vt_size {
            return Ok(None);
        }
        let off = self.u16(vt + entry)? as usize;
        if off == 0 {
            return Ok(None);
        }
        Ok(Some(table + off))
    }
}

/// The decoded IO header.
#[derive(Debug, Clone, PartialEq)]
pub struct IoHeader {
    pub compression: Compression,
    pub file_data_position: i64,
    pub description: String,
}

/// One output stream declared in the IO header's XML description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// `EVTS`, `FRME`, `IMUS`, `TRIG`, ...
    pub type_identifier: String,
    pub sensor: Option<SensorSize>,
}

fn parse_io_header(buf: &[u8], offset: u64) -> Result<IoHeader> {
    let fb = Fb { buf, offset };
    let hdr = |reason: String| Error::CorruptHeader { offset, reason };
    let root = fb.deref(0).map_err(|e| hdr(e.to_string()))?;
    let compression = match fb.field(root, 0).map_err(|e| hdr(e.to_string()))? {
        None => Compression::None,
        Some(p) => {
            let code = fb.u32(p).map_err(|e| hdr(e.to_string()))? as i32;
            Compression::from_code(code).ok_or(Error::BadField {
                offset: offset + p as u64,
                field: "compression",
                value: code as i64,
                reason: "unknown compression (expected 0..=4)",
            })?
        }
    };
    let file_data_position = match fb.field(root, 1).map_err(|e| hdr(e.to_string()))? {
        None => -1,
        Some(p) => fb.i64(p).map_err(|e| hdr(e.to_string()))?,
    };
    let description = match fb.field(root, 2).map_err(|e| hdr(e.to_string()))? {
        None => return Err(hdr("the IO header has no description".into())),
        Some(p) => {
            let s = fb.deref(p).map_err(|e| hdr(e.to_string()))?;
            let len = fb.u32(s).map_err(|e| hdr(e.to_string()))? as usize;
            let bytes = fb.bytes(s + 4, len).map_err(|e| hdr(e.to_string()))?;
            String::from_utf8_lossy(bytes).into_owned()
        }
    };
    Ok(IoHeader {
        compression,
        file_data_position,
        description,
    })
}

/// The value of `key="..."` inside a tag's text.
fn attr_value<'a>(tag: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("{key}=\"");
    let start = tag.find(&pat)? + pat.len();
    let end = tag[start..].find('"')? + start;
    Some(&tag[start..end])
}

/// Parses the streams out of the IO header's XML: `<node name="outInfo">` holds one
/// `<node name="<id>">` per stream with an `<attr key="typeIdentifier">` and an
/// `<node name="info">` with `sizeX`/`sizeY`.
pub fn parse_streams(xml: &str) -> std::result::Result<BTreeMap<u32, StreamInfo>, String> {
    let mut streams: BTreeMap<u32, StreamInfo> = BTreeMap::new();
    let mut path: Vec<String> = Vec::new();
    let mut sizes: BTreeMap<u32, (Option<u16>, Option<u16>)> = BTreeMap::new();
    let mut rest = xml;
    while let Some(lt) = rest.find('<') {
        rest = &rest[lt..];
        let gt = rest
            .find('>')
            .ok_or("unterminated tag in the description")?;
        let tag = &rest[1..gt];
        let after = &rest[gt + 1..];
        if let Some(t) = tag.strip_prefix("node") {
            if t.starts_with([' ', '\t', '\n', '\r', '/']) || t.is_empty() {
                let name = attr_value(tag, "name").unwrap_or("").to_string();
                if !tag.ends_with('/') {
                    path.push(name);
                }
            }
        } else if tag.starts_with("/node") {
            path.pop();
        } else if tag.starts_with("attr ") && !tag.ends_with('/') {
            let key = attr_value(tag, "key").unwrap_or("");
            let end = after.find('<').unwrap_or(after.len());
            let value = after[..end].trim();
            let in_out = path.first().map(String::as_str) == Some("outInfo");
            if in_out && path.len() == 2 && key == "typeIdentifier" {
                let id: u32 = path[1]
                    .parse()
                    .map_err(|_| format!("stream id {:?} is not a number", path[1]))?;
                if streams
                    .insert(
                        id,
                        StreamInfo {
                            type_identifier: value.to_string(),
                            sensor: None,
                        },
                    )
                    .is_some()
                {
                    return Err(format!("duplicate stream id {id}"));
                }
            } else if in_out
                && path.len() == 3
                && path[2] == "info"
                && (key == "sizeX" || key == "sizeY")
                && let Ok(id) = path[1].parse::<u32>()
            {
                let v: u16 = value.parse().map_err(|_| {
                    format!("{key} = {value:?} of stream {id} is not a 16-bit size")
                })?;
                let e = sizes.entry(id).or_default();
                if key == "sizeX" {
                    e.0 = Some(v);
                } else {
                    e.1 = Some(v);
                }
            }
        }
        rest = after;
    }
    for (id, (w, h)) in sizes {
        if let (Some(s), Some(width), Some(height)) = (streams.get_mut(&id), w, h) {
            s.sensor = Some(SensorSize { width, height });
        }
    }
    if streams.is_empty() {
        return Err("no stream found in the description".into());
    }
    Ok(streams)
}

fn skip_kind(type_identifier: &str) -> String {
    match type_identifier {
        "FRME" => "packet:frame".into(),
        "IMUS" => "packet:imu".into(),
        "TRIG" => "packet:trigger".into(),
        "EVTS" => "packet:events".into(),
        other => format!("packet:{}", other.to_ascii_lowercase()),
    }
}

/// Decompresses `payload` into `out` (cleared first), refusing more than `limit` bytes.
fn decompress(
    compression: Compression,
    payload: &[u8],
    out: &mut Vec<u8>,
    limit: u64,
    offset: u64,
) -> Result<()> {
    out.clear();
    let de = |source| Error::Decompress { offset, source };
    match compression {
        Compression::None => out.extend_from_slice(payload),
        Compression::Lz4 | Compression::Lz4High => {
            lz4_flex::frame::FrameDecoder::new(payload)
                .take(limit + 1)
                .read_to_end(out)
                .map_err(de)?;
        }
        Compression::Zstd | Compression::ZstdHigh => {
            let dec = zstd::stream::read::Decoder::with_buffer(payload).map_err(de)?;
            dec.take(limit + 1).read_to_end(out).map_err(de)?;
        }
    }
    if out.len() as u64 > limit {
        return Err(Error::TooLarge {
            offset,
            what: "decompressed packet",
            size: out.len() as u64,
            limit,
        });
    }
    Ok(())
}

/// Finds the events vector in a decompressed `EventPacket`: returns (start, count).
fn event_vector(buf: &[u8], offset: u64) -> Result<(usize, usize)> {
    let fb = Fb { buf, offset };
    let size = fb.u32(0)? as usize;
    if size > buf.len() - 4 {
        return Err(fb.err(format!(
            "size prefix {size} exceeds the {}-byte payload",
            buf.len() - 4
        )));
    }
    let ident = fb.bytes(8, 4)?;
    if ident != b"EVTS" {
        return Err(fb.err(format!(
            "identifier {:?} where EVTS was expected",
            String::from_utf8_lossy(ident)
        )));
    }
    let root = 4 + fb.u32(4)? as usize;
    let Some(field) = fb.field(root, 0)? else {
        return Ok((0, 0));
    };
    let vec = fb.deref(field)?;
    let count = fb.u32(vec)? as usize;
    let start = vec + 4;
    let bytes = count
        .checked_mul(EVENT_STRUCT)
        .ok_or_else(|| fb.err(format!("event count {count} overflows")))?;
    fb.bytes(start, bytes)?;
    Ok((start, count))
}

// ---------------------------------------------------------------------------------------------
// The decoder core.

enum State {
    Magic,
    HeaderLen,
    Header { len: usize },
    Packets,
    Emit { pos: usize, left: usize },
    Done,
}

pub(crate) struct Decoder {
    state: State,
    max_header: u64,
    max_packet: u64,
    want_stream: Option<u32>,
    compression: Compression,
    file_data_position: i64,
    streams: BTreeMap<u32, StreamInfo>,
    stream: Option<u32>,
    scratch: Vec<u8>,
}

impl Decoder {
    pub fn new(opts: &ReadOptions) -> Decoder {
        Decoder {
            state: State::Magic,
            max_header: opts.max_header_bytes,
            max_packet: opts.max_packet_bytes,
            want_stream: opts.aedat4_stream,
            compression: Compression::None,
            file_data_position: -1,
            streams: BTreeMap::new(),
            stream: None,
            scratch: Vec::new(),
        }
    }
}

fn truncated(offset: u64, what: &'static str, needed: usize, available: usize) -> Error {
    Error::Truncated {
        offset,
        what,
        needed: needed as u64,
        available: available as u64,
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
        match self.state {
            State::Magic => {
                let m = MAGIC.as_bytes();
                if buf.len() < m.len() && !eof && m.starts_with(buf) {
                    return Ok(Step::Need(m.len()));
                }
                if buf.starts_with(m) {
                    self.state = State::HeaderLen;
                    return Ok(Step::Progress(m.len()));
                }
                if buf.starts_with(crate::format::AEDAT_MAGIC_PREFIX) {
                    crate::format::sniff_bytes(buf)?;
                }
                Err(Error::BadMagic {
                    offset,
                    expected: MAGIC.trim_end(),
                    found: String::from_utf8_lossy(&buf[..buf.len().min(14)]).into(),
                })
            }
            State::HeaderLen => {
                if buf.len() < 4 {
                    return if eof {
                        Err(truncated(offset, "IO header length", 4, buf.len()))
                    } else {
                        Ok(Step::Need(4))
                    };
                }
                let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as u64;
                if len > self.max_header {
                    return Err(Error::TooLarge {
                        offset,
                        what: "IO header",
                        size: len,
                        limit: self.max_header,
                    });
                }
                self.state = State::Header { len: len as usize };
                Ok(Step::Progress(4))
            }
            State::Header { len } => {
                if buf.len() < len {
                    return if eof {
                        Err(truncated(offset, "IO header", len, buf.len()))
                    } else {
                        Ok(Step::Need(len))
                    };
                }
                let h = parse_io_header(&buf[..len], offset)?;
                let end = offset + len as u64;
                if h.file_data_position >= 0 && (h.file_data_position as u64) < end {
                    return Err(Error::BadField {
                        offset,
                        field: "file_data_position",
                        value: h.file_data_position,
                        reason: "points inside the header",
                    });
                }
                if h.file_data_position < -1 {
                    return Err(Error::BadField {
                        offset,
                        field: "file_data_position",
                        value: h.file_data_position,
                        reason: "is negative",
                    });
                }
                self.streams = parse_streams(&h.description)
                    .map_err(|reason| Error::CorruptHeader { offset, reason })?;
                self.compression = h.compression;
                self.file_data_position = h.file_data_position;
                self.stream = match self.want_stream {
                    Some(id) => match self.streams.get(&id) {
                        Some(s) if s.type_identifier == "EVTS" => Some(id),
                        _ => {
                            return Err(Error::BadField {
                                offset,
                                field: "stream id",
                                value: id as i64,
                                reason: "the requested stream is not an events stream of this file",
                            });
                        }
                    },
                    None => self
                        .streams
                        .iter()
                        .find(|(_, s)| s.type_identifier == "EVTS")
                        .map(|(&id, _)| id),
                };
                meta.sensor = self.stream.and_then(|id| self.streams[&id].sensor);
                self.state = State::Packets;
                Ok(Step::Progress(len))
            }
            State::Packets => {
                let fdp = self.file_data_position;
                if fdp >= 0 && offset >= fdp as u64 {
                    self.state = State::Done;
                    return Ok(Step::Done);
                }
                if buf.is_empty() && eof {
                    if fdp >= 0 {
                        return Err(truncated(
                            offset,
                            "packets before the file data table",
                            (fdp as u64 - offset) as usize,
                            0,
                        ));
                    }
                    self.state = State::Done;
                    return Ok(Step::Done);
                }
                if buf.len() < 8 {
                    return if eof {
                        Err(truncated(offset, "packet header", 8, buf.len()))
                    } else {
                        Ok(Step::Need(8))
                    };
                }
                let id = i32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
                let size = i32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
                if id < 0 {
                    return Err(Error::BadField {
                        offset,
                        field: "stream id",
                        value: id as i64,
                        reason: "is negative",
                    });
                }
                if size < 0 {
                    return Err(Error::BadField {
                        offset: offset + 4,
                        field: "packet size",
                        value: size as i64,
                        reason: "is negative",
                    });
                }
                let total = 8 + size as u64;
                if fdp >= 0 && offset + total > fdp as u64 {
                    return Err(Error::PacketPastEnd {
                        offset,
                        size: total,
                        available: fdp as u64 - offset,
                    });
                }
                if size as u64 > self.max_packet {
                    return Err(Error::TooLarge {
                        offset,
                        what: "packet",
                        size: size as u64,
                        limit: self.max_packet,
                    });
                }
                if (buf.len() as u64) < total {
                    return if eof {
                        Err(Error::PacketPastEnd {
                            offset,
                            size: total,
                            available: buf.len() as u64,
                        })
                    } else {
                        Ok(Step::Need(total as usize))
                    };
                }
                let id = id as u32;
                let Some(info) = self.streams.get(&id) else {
                    return Err(Error::BadField {
                        offset,
                        field: "stream id",
                        value: id as i64,
                        reason: "not declared in the IO header",
                    });
                };
                if Some(id) != self.stream {
                    meta.skip(&skip_kind(&info.type_identifier), 1);
                    return Ok(Step::Progress(total as usize));
                }
                decompress(
                    self.compression,
                    &buf[8..total as usize],
                    &mut self.scratch,
                    self.max_packet,
                    offset,
                )?;
                let (pos, left) = event_vector(&self.scratch, offset)?;
                self.state = State::Emit { pos, left };
                Ok(Step::Progress(total as usize))
            }
            State::Emit { pos, left } => {
                let n = left.min(max);
                if n == 0 && left > 0 {
                    return Ok(Step::Progress(0));
                }
                let bytes = &self.scratch[pos..pos + n * EVENT_STRUCT];
                append_records(out, bytes, EVENT_STRUCT, |r| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&r[..8]);
                    (
                        i64::from_le_bytes(a),
                        u16::from_le_bytes([r[8], r[9]]),
                        u16::from_le_bytes([r[10], r[11]]),
                        r[12] != 0,
                        false,
                    )
                });
                self.state = if left == n {
                    State::Packets
                } else {
                    State::Emit {
                        pos: pos + n * EVENT_STRUCT,
                        left: left - n,
                    }
                };
                if n == 0 {
                    // An empty packet: nothing emitted, nothing consumed, state advanced.
                    return self.step(buf, offset, eof, out, max, meta);
                }
                Ok(Step::Progress(0))
            }
            State::Done => Ok(Step::Done),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing.

/// Events per packet written by [`write()`].
pub const WRITE_PACKET_EVENTS: usize = 4096;
/// The events stream id written by [`write()`].
pub const WRITE_STREAM_ID: u32 = 0;

/// Options for [`write_with()`].
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub compression: Compression,
    /// Events per packet (at least 1).
    pub packet_events: usize,
    /// Extra non-event packets to interleave, for fixtures: `(stream id, type identifier,
    /// raw payload before compression)`; each is written before the first event packet.
    pub extra_packets: Vec<(u32, String, Vec<u8>)>,
    /// Write the file data table trailer and its position (real DV files do).
    pub file_data_table: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            compression: Compression::Lz4,
            packet_events: WRITE_PACKET_EVENTS,
            extra_packets: Vec::new(),
            file_data_table: true,
        }
    }
}

fn compress(compression: Compression, raw: &[u8]) -> Result<Vec<u8>> {
    match compression {
        Compression::None => Ok(raw.to_vec()),
        Compression::Lz4 | Compression::Lz4High => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(raw).map_err(Error::write)?;
            enc.finish()
                .map_err(|e| Error::write(std::io::Error::other(e)))
        }
        Compression::Zstd | Compression::ZstdHigh => {
            let level = if compression == Compression::Zstd {
                3
            } else {
                9
            };
            zstd::stream::encode_all(raw, level).map_err(Error::write)
        }
    }
}

fn pad_to(v: &mut Vec<u8>, align: usize) {
    while !v.len().is_multiple_of(align) {
        v.push(0);
    }
}

fn put_u16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put_u32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn set_u32(v: &mut [u8], pos: usize, x: u32) {
    v[pos..pos + 4].copy_from_slice(&x.to_le_bytes());
}

/// The IO header flatbuffer (not size-prefixed).
fn io_header_bytes(compression: Compression, fdp: i64, description: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(64 + description.len());
    put_u32(&mut v, 24); // root table at 24
    v.extend_from_slice(b"IOHE");
    // vtable at 8: size 10, table size 20, fields at +4, +8, +16
    for x in [10u16, 20, 4, 8, 16] {
        put_u16(&mut v, x);
    }
    pad_to(&mut v, 8); // 18 -> 24
    put_u32(&mut v, 24 - 8); // soffset to the vtable
    put_u32(&mut v, compression.code() as u32);
    v.extend_from_slice(&fdp.to_le_bytes());
    put_u32(&mut v, 44 - 40); // string at 44
    put_u32(&mut v, description.len() as u32);
    v.extend_from_slice(description.as_bytes());
    v.push(0);
    pad_to(&mut v, 4);
    v
}

/// A size-prefixed `EventPacket` flatbuffer.
fn event_packet_bytes(events: &Events, range: std::ops::Range<usize>) -> Vec<u8> {
    let n = range.len();
    let mut v = Vec::with_capacity(40 + n * EVENT_STRUCT);
    put_u32(&mut v, 0); // size prefix, set below
    put_u32(&mut v, 16); // root table at 4 + 16 = 20
    v.extend_from_slice(b"EVTS");
    for x in [6u16, 8, 4] {
        put_u16(&mut v, x); // vtable at 12
    }
    pad_to(&mut v, 4); // 18 -> 20
    put_u32(&mut v, 20 - 12); // soffset
    put_u32(&mut v, 36 - 24); // vector at 36
    pad_to(&mut v, 4);
    v.resize(36, 0);
    put_u32(&mut v, n as u32);
    for i in range {
        v.extend_from_slice(&events.t[i].to_le_bytes());
        v.extend_from_slice(&events.x[i].to_le_bytes());
        v.extend_from_slice(&events.y[i].to_le_bytes());
        v.extend_from_slice(&[events.on[i] as u8, 0, 0, 0]);
    }
    let len = v.len() as u32 - 4;
    set_u32(&mut v, 0, len);
    v
}

/// One entry of the file data table.
struct TableEntry {
    byte_offset: i64,
    stream_id: i32,
    size: i32,
    num_elements: i64,
    t_start: i64,
    t_end: i64,
}

/// A size-prefixed `FileDataTable` flatbuffer (identifier `FTAB`).
fn file_data_table_bytes(entries: &[TableEntry]) -> Vec<u8> {
    let k = entries.len();
    let mut v = Vec::with_capacity(64 + k * 52);
    put_u32(&mut v, 0);
    put_u32(&mut v, 16); // root at 20
    v.extend_from_slice(b"FTAB");
    for x in [6u16, 8, 4] {
        put_u16(&mut v, x); // root vtable at 12
    }
    pad_to(&mut v, 4);
    put_u32(&mut v, 20 - 12);
    put_u32(&mut v, 28 - 24); // vector at 28
    put_u32(&mut v, k as u32);
    let offsets_at = v.len();
    v.resize(offsets_at + 4 * k, 0);
    let vt = v.len();
    for x in [14u16, 48, 8, 16, 24, 32, 40] {
        put_u16(&mut v, x); // shared vtable of the definitions
    }
    for (i, e) in entries.iter().enumerate() {
        pad_to(&mut v, 8);
        let d = v.len();
        set_u32(
            &mut v,
            offsets_at + 4 * i,
            (d - (offsets_at + 4 * i)) as u32,
        );
        put_u32(&mut v, (d - vt) as u32);
        put_u32(&mut v, 0);
        v.extend_from_slice(&e.byte_offset.to_le_bytes());
        v.extend_from_slice(&e.stream_id.to_le_bytes());
        v.extend_from_slice(&e.size.to_le_bytes());
        v.extend_from_slice(&e.num_elements.to_le_bytes());
        v.extend_from_slice(&e.t_start.to_le_bytes());
        v.extend_from_slice(&e.t_end.to_le_bytes());
    }
    let len = v.len() as u32 - 4;
    set_u32(&mut v, 0, len);
    v
}

fn description_xml(
    sensor: SensorSize,
    compression: Compression,
    extra: &[(u32, String)],
) -> String {
    let mut s = String::from(
        "<dv version=\"2.0\"><node name=\"outInfo\" path=\"/mainloop/Recorder/outInfo/\">",
    );
    s.push_str(&format!(
        "<node name=\"{id}\" path=\"/mainloop/Recorder/outInfo/{id}/\"><attr key=\"compression\" type=\"string\">{c}</attr><attr key=\"originalModuleName\" type=\"string\">nmoco</attr><attr key=\"originalOutputName\" type=\"string\">events</attr><attr key=\"typeDescription\" type=\"string\">Array of events (polarity ON/OFF).</attr><attr key=\"typeIdentifier\" type=\"string\">EVTS</attr><node name=\"info\" path=\"/mainloop/Recorder/outInfo/{id}/info/\"><attr key=\"sizeX\" type=\"int\">{w}</attr><attr key=\"sizeY\" type=\"int\">{h}</attr><attr key=\"source\" type=\"string\">nmoco</attr><attr key=\"tsOffset\" type=\"long\">0</attr></node></node>",
        id = WRITE_STREAM_ID,
        c = compression.name(),
        w = sensor.width,
        h = sensor.height
    ));
    for (id, ty) in extra {
        s.push_str(&format!(
            "<node name=\"{id}\" path=\"/mainloop/Recorder/outInfo/{id}/\"><attr key=\"compression\" type=\"string\">{c}</attr><attr key=\"typeIdentifier\" type=\"string\">{ty}</attr><node name=\"info\" path=\"/mainloop/Recorder/outInfo/{id}/info/\"><attr key=\"sizeX\" type=\"int\">{w}</attr><attr key=\"sizeY\" type=\"int\">{h}</attr></node></node>",
            c = compression.name(),
            w = sensor.width,
            h = sensor.height
        ));
    }
    s.push_str("</node></dv>");
    s
}

/// Writes events as an AEDAT 4.0 file with one events stream (id 0) and the options' packets,
/// compression and trailer. Any `t`, `x`, `y` round-trip exactly (`x`/`y` are stored as `i16`
/// bit patterns). Without a sensor size the header states the events' extent
/// (`max + 1`, at least 1).
pub fn write_with<W: Write>(
    mut w: W,
    events: &Events,
    sensor: Option<SensorSize>,
    opts: &WriteOptions,
) -> Result<()> {
    if !events.columns_consistent() {
        return Err(Error::Unrepresentable {
            format: Format::Aedat4,
            index: 0,
            field: "columns",
            value: events.t.len() as i64,
            reason: "columns differ in length",
        });
    }
    let sensor = sensor.unwrap_or_else(|| SensorSize {
        width: events.x.iter().max().map_or(1, |&m| m.saturating_add(1)),
        height: events.y.iter().max().map_or(1, |&m| m.saturating_add(1)),
    });
    let extra_decl: Vec<(u32, String)> = opts
        .extra_packets
        .iter()
        .map(|(id, ty, _)| (*id, ty.clone()))
        .collect();
    let mut declared: Vec<(u32, String)> = Vec::new();
    for d in extra_decl {
        if d.0 != WRITE_STREAM_ID && !declared.iter().any(|e| e.0 == d.0) {
            declared.push(d);
        }
    }
    let description = description_xml(sensor, opts.compression, &declared);
    // Packets first, in memory, so the header can state where the table starts.
    let mut packets: Vec<(u32, Vec<u8>, i64, i64, i64)> = Vec::new();
    for (id, _, raw) in &opts.extra_packets {
        packets.push((*id, compress(opts.compression, raw)?, 0, 0, 0));
    }
    let per = opts.packet_events.max(1);
    let mut start = 0;
    while start < events.t.len() {
        let end = (start + per).min(events.t.len());
        let raw = event_packet_bytes(events, start..end);
        let t0 = events.t[start];
        let t1 = events.t[end - 1];
        packets.push((
            WRITE_STREAM_ID,
            compress(opts.compression, &raw)?,
            (end - start) as i64,
            t0,
            t1,
        ));
        start = end;
    }
    let header_len = io_header_bytes(opts.compression, 0, &description).len();
    let mut pos = (MAGIC.len() + 4 + header_len) as i64;
    let mut entries = Vec::with_capacity(packets.len());
    for (id, payload, n, t0, t1) in &packets {
        entries.push(TableEntry {
            byte_offset: pos,
            stream_id: *id as i32,
            size: payload.len() as i32,
            num_elements: *n,
            t_start: *t0,
            t_end: *t1,
        });
        pos += 8 + payload.len() as i64;
    }
    let fdp = if opts.file_data_table { pos } else { -1 };
    let header = io_header_bytes(opts.compression, fdp, &description);
    debug_assert_eq!(header.len(), header_len);
    let mut out = std::io::BufWriter::with_capacity(1 << 16, &mut w);
    out.write_all(MAGIC.as_bytes()).map_err(Error::write)?;
    out.write_all(&(header.len() as u32).to_le_bytes())
        .map_err(Error::write)?;
    out.write_all(&header).map_err(Error::write)?;
    for (id, payload, ..) in &packets {
        out.write_all(&(*id as i32).to_le_bytes())
            .map_err(Error::write)?;
        out.write_all(&(payload.len() as i32).to_le_bytes())
            .map_err(Error::write)?;
        out.write_all(payload).map_err(Error::write)?;
    }
    if opts.file_data_table {
        let table = compress(opts.compression, &file_data_table_bytes(&entries))?;
        out.write_all(&table).map_err(Error::write)?;
    }
    out.flush().map_err(Error::write)?;
    Ok(())
}

/// Writes events as AEDAT 4.0 with the given compression and default options.
pub fn write<W: Write>(
    w: W,
    events: &Events,
    sensor: Option<SensorSize>,
    compression: Compression,
) -> Result<()> {
    write_with(
        w,
        events,
        sensor,
        &WriteOptions {
            compression,
            ..Default::default()
        },
    )
}

/// [`write()`] to a file (created or truncated).
pub fn write_file(
    path: &Path,
    events: &Events,
    sensor: Option<SensorSize>,
    compression: Compression,
) -> Result<()> {
    crate::write_to_path(path, |f| write(f, events, sensor, compression))
}

/// Builds a size-prefixed flatbuffer with the given identifier and an empty root table: a
/// stand-in payload for frame/IMU/trigger packets in fixtures.
pub fn empty_packet_payload(identifier: &[u8; 4]) -> Vec<u8> {
    let mut v = Vec::new();
    put_u32(&mut v, 16);
    put_u32(&mut v, 12); // root at 16
    v.extend_from_slice(identifier);
    for x in [4u16, 4] {
        put_u16(&mut v, x); // vtable at 12: no fields
    }
    put_u32(&mut v, 4); // table at 16: soffset to vtable at 12
    v
}
