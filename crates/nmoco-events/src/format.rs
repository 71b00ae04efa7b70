//! The supported formats, the format sniffer and the decoding options.

use std::path::Path;

use crate::error::{Error, Result};

/// A supported file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// N-MNIST / N-Caltech101 40-bit binary (`.bin`).
    NBin,
    /// AEDAT 2.0 (jAER; CIFAR10-DVS).
    Aedat2,
    /// AEDAT 3.1 (cAER; DVS128 Gesture).
    Aedat31,
    /// AEDAT 4.0 (iniVation DV).
    Aedat4,
}

impl Format {
    pub const ALL: [Format; 4] = [
        Format::NBin,
        Format::Aedat2,
        Format::Aedat31,
        Format::Aedat4,
    ];

    /// The name used on the command line: `nbin`, `aedat2`, `aedat3`, `aedat4`.
    pub fn name(self) -> &'static str {
        match self {
            Format::NBin => "nbin",
            Format::Aedat2 => "aedat2",
            Format::Aedat31 => "aedat3",
            Format::Aedat4 => "aedat4",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = Error;

    /// Parses `nbin`, `aedat2`, `aedat3` (also `aedat31`, `aedat3.1`) and `aedat4`.
    fn from_str(s: &str) -> Result<Format> {
        match s.to_ascii_lowercase().as_str() {
            "nbin" | "bin" => Ok(Format::NBin),
            "aedat2" | "aedat2.0" => Ok(Format::Aedat2),
            "aedat3" | "aedat31" | "aedat3.1" => Ok(Format::Aedat31),
            "aedat4" | "aedat4.0" => Ok(Format::Aedat4),
            other => Err(Error::UnknownFormat {
                reason: format!(
                    "unknown format name {other:?} (expected nbin|aedat2|aedat3|aedat4)"
                ),
            }),
        }
    }
}

/// The prefix every AEDAT 2/3/4 file starts with.
pub(crate) const AEDAT_MAGIC_PREFIX: &[u8] = b"#!AER-DAT";

/// What the first bytes of a file say about its format.
///
/// `Ok(Some(format))` for a supported AEDAT magic line, `Ok(None)` when the bytes carry no
/// AEDAT magic (N-binary files have no header at all), and `Err(UnsupportedVersion)` for an
/// AEDAT magic with a version this crate does not read (1.0, 3.0, ...).
pub fn sniff_bytes(head: &[u8]) -> Result<Option<Format>> {
    if !head.starts_with(AEDAT_MAGIC_PREFIX) {
        return Ok(None);
    }
    let rest = &head[AEDAT_MAGIC_PREFIX.len()..];
    let end = rest
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(rest.len().min(16));
    let version = String::from_utf8_lossy(&rest[..end.min(16)]).into_owned();
    match version.as_str() {
        "2.0" => Ok(Some(Format::Aedat2)),
        "3.1" => Ok(Some(Format::Aedat31)),
        "4.0" => Ok(Some(Format::Aedat4)),
        _ => Err(Error::UnsupportedVersion { offset: 0, version }),
    }
}

/// The format implied by a file name's extension: `.bin` is N-binary, `.aedat4` is AEDAT 4.
/// `.aedat` and `.dat` are ambiguous (2.0, 3.1 and 4.0 all use them) and give `None`.
pub fn sniff_extension(path: &Path) -> Option<Format> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "bin" => Some(Format::NBin),
        "aedat4" => Some(Format::Aedat4),
        _ => None,
    }
}

/// Sniffs a file's format: the magic string first, then the extension.
pub fn sniff_file(path: &Path) -> Result<Format> {
    use std::io::Read;
    let mut head = [0u8; 32];
    let mut n = 0;
    let mut f = std::fs::File::open(path)
        .map_err(|source| Error::Io { offset: 0, source }.in_file(path))?;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(Error::Io {
                    offset: n as u64,
                    source,
                }
                .in_file(path));
            }
        }
    }
    resolve(&head[..n], Some(path)).map_err(|e| e.in_file(path))
}

/// Format from magic, then extension (if a path is known).
pub(crate) fn resolve(head: &[u8], path: Option<&Path>) -> Result<Format> {
    if let Some(f) = sniff_bytes(head)? {
        return Ok(f);
    }
    if let Some(f) = path.and_then(sniff_extension) {
        return Ok(f);
    }
    Err(Error::UnknownFormat {
        reason: "no AEDAT magic line and no telling extension (.bin, .aedat4); pass the format explicitly"
            .into(),
    })
}

/// How N-binary timestamp-overflow records (`y == 240`) are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NbinOverflow {
    /// tonic / aermanager / Orchard's `read_dataset`: every `y == 240` record is dropped and adds
    /// 2^13 = 8192 µs to the timestamps of all the records after it.
    #[default]
    Tonic,
    /// Like [`NbinOverflow::Tonic`] but each marker adds 2^23 µs, the natural increment for a
    /// 23-bit timestamp.
    Wrap23,
    /// spikingjelly / SLAYER / Orchard's MATLAB reader: no overflow handling; `y == 240` records
    /// are ordinary events.
    Ignore,
}

impl NbinOverflow {
    /// The increment per marker, or `None` when markers are ordinary events.
    pub fn increment(self) -> Option<i64> {
        match self {
            NbinOverflow::Tonic => Some(1 << 13),
            NbinOverflow::Wrap23 => Some(1 << 23),
            NbinOverflow::Ignore => None,
        }
    }
}

/// The AEDAT 2.0 address layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aedat2Layout {
    /// From the header's `# AEChip:` line; DVS128 when the line is missing or unknown.
    #[default]
    Auto,
    /// DVS128 (CIFAR10-DVS): X bits 7-1, Y bits 14-8, polarity bit 0, bit 15 = special.
    Dvs128,
    /// DAVIS240 (240x180): y bits 30-22, x bits 21-12, ON = bit 11, bit 10 = external event,
    /// bit 31 = APS/IMU.
    Davis240,
    /// DAVIS346 (346x260), same bit layout as DAVIS240.
    Davis346,
}

impl Aedat2Layout {
    pub fn sensor(self) -> Option<crate::SensorSize> {
        let (width, height) = match self {
            Aedat2Layout::Auto => return None,
            Aedat2Layout::Dvs128 => (128, 128),
            Aedat2Layout::Davis240 => (240, 180),
            Aedat2Layout::Davis346 => (346, 260),
        };
        Some(crate::SensorSize { width, height })
    }
}

/// The sense of the DVS128 AEDAT 2.0 polarity bit (bit 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dvs128Polarity {
    /// iniVation's AEDAT documentation and tonic/aermanager's raw `p = addr & 1`: bit0 = 1 → ON.
    #[default]
    Bit0On,
    /// jAER's `DVS128.Extractor` and spikingjelly's CIFAR10-DVS loader: bit0 = 0 → ON.
    Jaer,
}

/// Options for every reader. Build with struct update syntax:
/// `ReadOptions { format: Some(Format::Aedat2), ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// The format; `None` sniffs it (magic string, then extension).
    pub format: Option<Format>,
    /// N-binary `y == 240` overflow records.
    pub nbin_overflow: NbinOverflow,
    /// AEDAT 2.0 address layout.
    pub aedat2_layout: Aedat2Layout,
    /// AEDAT 2.0 DVS128 polarity sense.
    pub dvs128_polarity: Dvs128Polarity,
    /// AEDAT 2.0: decode special/external, APS and IMU words as events with the layout's masks
    /// (what tonic and spikingjelly do) instead of skipping and counting them.
    pub keep_special: bool,
    /// AEDAT 3.1: keep events whose validity bit is 0 (what spikingjelly and tonic do) instead
    /// of skipping and counting them.
    pub keep_invalid: bool,
    /// N-binary and AEDAT 2.0: drop a trailing partial record (what numpy's `fromfile` does)
    /// instead of failing with [`Error::PartialRecord`].
    pub allow_partial_record: bool,
    /// AEDAT 4: which events stream to decode; `None` = the lowest id of type `EVTS` (tonic).
    pub aedat4_stream: Option<u32>,
    /// Upper bound on one AEDAT 4 packet, compressed or decompressed, in bytes.
    pub max_packet_bytes: u64,
    /// Upper bound on a text or flatbuffer header, in bytes.
    pub max_header_bytes: u64,
    /// Events per chunk for the streaming [`crate::Reader`].
    pub chunk_events: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            format: None,
            nbin_overflow: NbinOverflow::default(),
            aedat2_layout: Aedat2Layout::default(),
            dvs128_polarity: Dvs128Polarity::default(),
            keep_special: false,
            keep_invalid: false,
            allow_partial_record: false,
            aedat4_stream: None,
            max_packet_bytes: 256 << 20,
            max_header_bytes: 16 << 20,
            chunk_events: 1 << 16,
        }
    }
}

impl ReadOptions {
    /// Default options with the given format.
    pub fn with_format(format: Format) -> Self {
        ReadOptions {
            format: Some(format),
            ..Default::default()
        }
    }
}

/// AEDAT 4 packet compression (the IO header's `compression` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    None,
    #[default]
    Lz4,
    Lz4High,
    Zstd,
    ZstdHigh,
}

impl Compression {
    pub(crate) fn from_code(code: i32) -> Option<Compression> {
        Some(match code {
            0 => Compression::None,
            1 => Compression::Lz4,
            2 => Compression::Lz4High,
            3 => Compression::Zstd,
            4 => Compression::ZstdHigh,
            _ => return None,
        })
    }

    pub(crate) fn code(self) -> i32 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
            Compression::Lz4High => 2,
            Compression::Zstd => 3,
            Compression::ZstdHigh => 4,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Compression::None => "NONE",
            Compression::Lz4 => "LZ4",
            Compression::Lz4High => "LZ4_HIGH",
            Compression::Zstd => "ZSTD",
            Compression::ZstdHigh => "ZSTD_HIGH",
        }
    }
}
