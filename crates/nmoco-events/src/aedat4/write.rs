//! Writing AEDAT 4.0: the IO header, event packets and the file data table as flatbuffers,
//! compressed per the options; plus stand-in payloads for fixtures.

use std::io::Write;
use std::path::Path;

use super::{EVENT_STRUCT, MAGIC};
use crate::error::{Error, Result};
use crate::format::{Compression, Format};
use crate::{Events, SensorSize};

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
