//! Event-camera file decoders and writers with no ML dependency.
//!
//! Formats ([`Format`]): N-MNIST / N-Caltech101 40-bit binary ([`nbin`]), AEDAT 2.0 as written
//! by jAER ([`aedat2`]), AEDAT 3.1 as written by cAER, the DVS128 Gesture format ([`aedat31`]),
//! and AEDAT 4.0 as written by iniVation DV ([`aedat4`]). Each module documents its byte layout,
//! the exact raw fields it returns, and where the established readers (tonic, spikingjelly,
//! aedat) disagree and which option selects which behaviour.
//!
//! Decoded events are a struct of arrays, [`Events`] (`t` in µs as the file stores it, not
//! rebased). Access styles:
//! - [`read_file`] / [`read_file_with`]: bulk decode of a whole file (memory-mapped above
//!   [`MMAP_THRESHOLD`] bytes) into a [`Recording`] (events, sensor size when the file states
//!   it, and counts of skipped words/packets by kind);
//! - [`decode_bytes`]: the same for bytes already in memory, reusing the caller's buffers;
//! - [`Reader`]: streaming over any `impl Read`, chunk by chunk in bounded memory, with
//!   [`Reader::events`] as a single-event iterator;
//! - the writers `nbin::write`, `aedat2::write`, `aedat31::write`, `aedat4::write` (and
//!   `write_file` in each) produce files the readers decode back exactly.
//!
//! Bad input never panics and never allocates from an unchecked length: every error is a typed
//! [`Error`] carrying the byte offset and the offending value.
//!
//! On x86_64 CPUs with AVX-512, N-binary, AEDAT 2.0 (DVS128) and AEDAT 3.1 records are decoded
//! by SIMD kernels, and large whole-file decodes write their columns with non-temporal stores
//! (see the crate-private `simd` module for why); the output is identical to the scalar path,
//! which every other CPU uses.
//!
//! ```
//! # fn main() -> Result<(), nmoco_events::Error> {
//! use nmoco_events::{Event, Events, Format};
//! let ev: Events = (0..100).map(|i| Event { t: 10 * i, x: (i % 128) as u16, y: 3, on: i % 3 == 0 }).collect();
//! let mut bytes = Vec::new();
//! nmoco_events::aedat2::write(&mut bytes, &ev, None)?;
//! let rec = nmoco_events::decode_bytes(&bytes, &nmoco_events::ReadOptions::default())?;
//! assert_eq!(rec.events, ev);
//! assert_eq!(nmoco_events::sniff_bytes(&bytes)?, Some(Format::Aedat2));
//! # Ok(())
//! # }
//! ```

pub mod aedat2;
pub mod aedat31;
pub mod aedat4;
mod core;
mod error;
mod events;
mod format;
pub mod nbin;
mod reader;
mod simd;
mod summary;

use std::path::Path;

pub use error::{Error, Result};
pub use events::{Event, Events, Recording, SensorSize, Skipped};
pub use format::{
    Aedat2Layout, Compression, Dvs128Polarity, Format, NbinOverflow, ReadOptions, sniff_bytes,
    sniff_extension, sniff_file,
};
pub use reader::{EventIter, Reader};
pub use summary::Summary;

/// Files at least this large are memory-mapped by [`read_file_with`]; smaller ones are read.
pub const MMAP_THRESHOLD: u64 = 1 << 20;

/// Decodes a whole file; `format = None` sniffs it (magic string, then extension).
pub fn read_file(path: &Path, format: Option<Format>) -> Result<Recording> {
    read_file_with(
        path,
        &ReadOptions {
            format,
            ..Default::default()
        },
    )
}

/// Decodes a whole file with options. Errors are wrapped in [`Error::File`] naming the path.
pub fn read_file_with(path: &Path, opts: &ReadOptions) -> Result<Recording> {
    read_file_inner(path, opts).map_err(|e| e.in_file(path))
}

fn read_file_inner(path: &Path, opts: &ReadOptions) -> Result<Recording> {
    let io = |source| Error::Io { offset: 0, source };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let format = match opts.format {
        Some(f) => f,
        None => {
            drop(file);
            return read_file_inner(
                path,
                &ReadOptions {
                    format: Some(sniff_file(path)?),
                    ..opts.clone()
                },
            );
        }
    };
    let mut rec = Recording::default();
    if len >= MMAP_THRESHOLD {
        // SAFETY: the map is read-only and lives only for this call. If another process
        // truncates the file meanwhile, reads may fault (SIGBUS); this is the usual caveat of
        // memory-mapped input and the reason small files are read instead.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        decode_into(&map, format, opts, &mut rec)?;
    } else {
        use std::io::Read;
        let mut bytes = Vec::with_capacity(len as usize);
        (&file).read_to_end(&mut bytes).map_err(io)?;
        decode_into(&bytes, format, opts, &mut rec)?;
    }
    Ok(rec)
}

/// Decodes a whole in-memory file. `opts.format = None` sniffs the magic string only.
pub fn decode_bytes(bytes: &[u8], opts: &ReadOptions) -> Result<Recording> {
    let format = match opts.format {
        Some(f) => f,
        None => format::resolve(bytes, None)?,
    };
    let mut rec = Recording::default();
    decode_into(bytes, format, opts, &mut rec)?;
    Ok(rec)
}

/// Decodes a whole in-memory file into `rec`, clearing it first but keeping the columns'
/// allocations (the fast path for decoding many files in a loop).
pub fn decode_into(
    bytes: &[u8],
    format: Format,
    opts: &ReadOptions,
    rec: &mut Recording,
) -> Result<()> {
    rec.events.clear();
    rec.sensor = None;
    rec.skipped.clear();
    let mut meta = core::Meta {
        sensor: None,
        skipped: std::mem::take(&mut rec.skipped),
        whole_input: 0,
    };
    let mut c = core::AnyCore::new(format, opts);
    let res = core::decode_all(&mut c, bytes, &mut rec.events, &mut meta);
    rec.sensor = meta.sensor;
    rec.skipped = meta.skipped;
    res
}

/// The sha256 (lower-case hex) of the columns t, x, y, p, each converted to little-endian `i64`
/// and written one whole column after the other (`p = 1` for ON, `0` for OFF).
pub fn sha256_txyp(events: &Events) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut buf = Vec::with_capacity(8 * 4096);
    let mut col = |vals: &mut dyn Iterator<Item = i64>| {
        for v in vals {
            buf.extend_from_slice(&v.to_le_bytes());
            if buf.len() >= 8 * 4096 {
                h.update(&buf);
                buf.clear();
            }
        }
        h.update(&buf);
        buf.clear();
    };
    col(&mut events.t.iter().copied());
    col(&mut events.x.iter().map(|&v| v as i64));
    col(&mut events.y.iter().map(|&v| v as i64));
    col(&mut events.on.iter().map(|&v| v as i64));
    let digest = h.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a file through `f`, naming the path in any error.
pub(crate) fn write_to_path(
    path: &Path,
    f: impl FnOnce(&mut std::fs::File) -> Result<()>,
) -> Result<()> {
    let mut file =
        std::fs::File::create(path).map_err(|source| Error::Write { source }.in_file(path))?;
    f(&mut file).map_err(|e| e.in_file(path))
}

/// Writes events in any format with that format's default options (`aedat4`: LZ4).
pub fn write_file(
    path: &Path,
    format: Format,
    events: &Events,
    sensor: Option<SensorSize>,
) -> Result<()> {
    match format {
        Format::NBin => nbin::write_file(path, events, sensor),
        Format::Aedat2 => aedat2::write_file(path, events, sensor),
        Format::Aedat31 => aedat31::write_file(path, events, sensor),
        Format::Aedat4 => aedat4::write_file(path, events, sensor, Compression::Lz4),
    }
}

/// Writes events in any format to a writer with that format's default options.
pub fn write<W: std::io::Write>(
    w: W,
    format: Format,
    events: &Events,
    sensor: Option<SensorSize>,
) -> Result<()> {
    match format {
        Format::NBin => nbin::write(w, events, sensor),
        Format::Aedat2 => aedat2::write(w, events, sensor),
        Format::Aedat31 => aedat31::write(w, events, sensor),
        Format::Aedat4 => aedat4::write(w, events, sensor, Compression::Lz4),
    }
}
