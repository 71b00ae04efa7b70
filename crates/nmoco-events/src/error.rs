//! The crate's error type. Every variant that comes from reading carries the absolute byte
//! offset in the file where the problem was found and, where there is one, the offending value.

use std::path::PathBuf;

use crate::Format;

/// Errors from decoding, sniffing or writing event files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the underlying file or stream failed.
    #[error("i/o error at byte {offset}")]
    Io {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    /// Writing failed.
    #[error("write failed")]
    Write {
        #[source]
        source: std::io::Error,
    },
    /// Neither the magic string nor the extension tells the format.
    #[error("cannot tell the file format: {reason}")]
    UnknownFormat { reason: String },
    /// The file announces a version of the format this crate does not read (e.g. AEDAT 3.0).
    #[error("unsupported format version {version:?} at byte {offset}")]
    UnsupportedVersion { offset: u64, version: String },
    /// The file does not start with the magic string of the requested format.
    #[error("bad magic at byte {offset}: expected {expected:?}, found {found:?}")]
    BadMagic {
        offset: u64,
        expected: &'static str,
        found: String,
    },
    /// The input ends inside a record, packet or header.
    #[error("truncated {what} at byte {offset}: need {needed} bytes, have {available}")]
    Truncated {
        offset: u64,
        what: &'static str,
        needed: u64,
        available: u64,
    },
    /// The record area's length is not a multiple of the record size.
    #[error(
        "data length is not a multiple of the {record_size}-byte record: {remainder} trailing bytes at byte {offset}"
    )]
    PartialRecord {
        offset: u64,
        record_size: usize,
        remainder: u64,
    },
    /// A text or flatbuffer header is malformed.
    #[error("corrupt header at byte {offset}: {reason}")]
    CorruptHeader { offset: u64, reason: String },
    /// A numeric field has a value the format does not allow.
    #[error("invalid {field} = {value} at byte {offset}: {reason}")]
    BadField {
        offset: u64,
        field: &'static str,
        value: i64,
        reason: &'static str,
    },
    /// A packet's stated size points past the end of the data.
    #[error("packet at byte {offset} claims {size} bytes but only {available} remain")]
    PacketPastEnd {
        offset: u64,
        size: u64,
        available: u64,
    },
    /// A size in the file is over the configured limit (protects against absurd allocations).
    #[error("{what} at byte {offset} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        offset: u64,
        what: &'static str,
        size: u64,
        limit: u64,
    },
    /// An AEDAT 4 packet payload could not be decompressed.
    #[error("decompression failed for the packet at byte {offset}")]
    Decompress {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    /// An AEDAT 4 packet's flatbuffer is malformed.
    #[error("malformed flatbuffer in the packet at byte {offset}: {reason}")]
    Flatbuffer { offset: u64, reason: String },
    /// An event cannot be represented in the format being written.
    #[error("event {index} cannot be written as {format}: {field} = {value} ({reason})")]
    Unrepresentable {
        format: Format,
        index: u64,
        field: &'static str,
        value: i64,
        reason: &'static str,
    },
    /// The error happened while reading or writing this file.
    #[error("{}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The absolute byte offset the error refers to, if any.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Error::Io { offset, .. }
            | Error::UnsupportedVersion { offset, .. }
            | Error::BadMagic { offset, .. }
            | Error::Truncated { offset, .. }
            | Error::PartialRecord { offset, .. }
            | Error::CorruptHeader { offset, .. }
            | Error::BadField { offset, .. }
            | Error::PacketPastEnd { offset, .. }
            | Error::TooLarge { offset, .. }
            | Error::Decompress { offset, .. }
            | Error::Flatbuffer { offset, .. } => Some(*offset),
            Error::File { source, .. } => source.offset(),
            Error::Write { .. } | Error::UnknownFormat { .. } | Error::Unrepresentable { .. } => {
                None
            }
        }
    }

    /// The innermost error, looking through [`Error::File`].
    pub fn kind(&self) -> &Error {
        match self {
            Error::File { source, .. } => source.kind(),
            e => e,
        }
    }

    pub(crate) fn in_file(self, path: &std::path::Path) -> Error {
        match self {
            e @ Error::File { .. } => e,
            e => Error::File {
                path: path.to_path_buf(),
                source: Box::new(e),
            },
        }
    }

    pub(crate) fn write(source: std::io::Error) -> Error {
        Error::Write { source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
