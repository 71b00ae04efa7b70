//! The AEDAT 4.0 decoder core: magic, IO header, then packets, decompressing only those of the
//! chosen events stream.

use std::collections::BTreeMap;
use std::io::Read;

use super::flatbuffer::event_vector;
use super::header::{StreamInfo, parse_io_header, parse_streams};
use super::{EVENT_STRUCT, MAGIC};
use crate::Events;
use crate::core::{Core, Meta, Step, append_records, need};
use crate::error::{Error, Result};
use crate::format::{Compression, ReadOptions};

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

/// A packet's header: `i32 streamId, i32 byteLength`, both non-negative.
struct PacketHeader {
    id: u32,
    size: u32,
}

impl PacketHeader {
    const SIZE: usize = 8;

    /// Reads and checks the header at the start of `bytes` (at least [`PacketHeader::SIZE`]
    /// bytes, at file offset `offset`).
    fn parse(bytes: &[u8], offset: u64) -> Result<PacketHeader> {
        let id = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let size = i32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
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
        Ok(PacketHeader {
            id: id as u32,
            size: size as u32,
        })
    }

    /// Bytes of header and payload.
    fn total(&self) -> u64 {
        Self::SIZE as u64 + self.size as u64
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
            State::Magic => self.magic(buf, offset, eof),
            State::HeaderLen => {
                if let Some(r) = need(buf, 4, eof, offset, "IO header length") {
                    return r;
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
                if let Some(r) = need(buf, len, eof, offset, "IO header") {
                    return r;
                }
                self.io_header(&buf[..len], offset, meta)?;
                self.state = State::Packets;
                Ok(Step::Progress(len))
            }
            State::Packets => self.packet(buf, offset, eof, meta),
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

impl Decoder {
    /// [`State::Magic`]: the magic line, or the most precise error about what is there instead.
    fn magic(&mut self, buf: &[u8], offset: u64, eof: bool) -> Result<Step> {
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

    /// Takes the compression, data end, streams, decoded stream and sensor size from the IO
    /// header flatbuffer `bytes` (at file offset `offset`).
    fn io_header(&mut self, bytes: &[u8], offset: u64, meta: &mut Meta) -> Result<()> {
        let h = parse_io_header(bytes, offset)?;
        let end = offset + bytes.len() as u64;
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
        Ok(())
    }

    /// [`State::Packets`]: the end of the data, or one whole packet, skipped or decompressed
    /// into the scratch buffer for [`State::Emit`].
    fn packet(&mut self, buf: &[u8], offset: u64, eof: bool, meta: &mut Meta) -> Result<Step> {
        let fdp = self.file_data_position;
        if fdp >= 0 && offset >= fdp as u64 {
            self.state = State::Done;
            return Ok(Step::Done);
        }
        if buf.is_empty() && eof {
            if fdp >= 0 {
                return Err(Error::Truncated {
                    offset,
                    what: "packets before the file data table",
                    needed: fdp as u64 - offset,
                    available: 0,
                });
            }
            self.state = State::Done;
            return Ok(Step::Done);
        }
        if let Some(r) = need(buf, PacketHeader::SIZE, eof, offset, "packet header") {
            return r;
        }
        let h = PacketHeader::parse(buf, offset)?;
        let total = h.total();
        if fdp >= 0 && offset + total > fdp as u64 {
            return Err(Error::PacketPastEnd {
                offset,
                size: total,
                available: fdp as u64 - offset,
            });
        }
        if h.size as u64 > self.max_packet {
            return Err(Error::TooLarge {
                offset,
                what: "packet",
                size: h.size as u64,
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
        let Some(info) = self.streams.get(&h.id) else {
            return Err(Error::BadField {
                offset,
                field: "stream id",
                value: h.id as i64,
                reason: "not declared in the IO header",
            });
        };
        if Some(h.id) != self.stream {
            meta.skip(&skip_kind(&info.type_identifier), 1);
            return Ok(Step::Progress(total as usize));
        }
        decompress(
            self.compression,
            &buf[PacketHeader::SIZE..total as usize],
            &mut self.scratch,
            self.max_packet,
            offset,
        )?;
        let (pos, left) = event_vector(&self.scratch, offset)?;
        self.state = State::Emit { pos, left };
        Ok(Step::Progress(total as usize))
    }
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
