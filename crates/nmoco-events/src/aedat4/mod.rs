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
//!
//! Files: `flatbuffer.rs` (the bounds-checked flatbuffer reader and the `EventPacket` layout),
//! `header.rs` (the IO header and its stream XML), `decode.rs` (the decoder core), `write.rs`
//! (the writer and fixture payloads).

mod decode;
mod flatbuffer;
mod header;
mod write;

pub(crate) use decode::Decoder;
pub use header::{IoHeader, StreamInfo, parse_streams};
pub use write::{
    WRITE_PACKET_EVENTS, WRITE_STREAM_ID, WriteOptions, empty_packet_payload, write, write_file,
    write_with,
};

pub const MAGIC: &str = "#!AER-DAT4.0\r\n";
/// Bytes per event struct in an `EventPacket`.
pub const EVENT_STRUCT: usize = 16;
