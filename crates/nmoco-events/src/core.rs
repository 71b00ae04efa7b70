//! The byte-level decoder cores shared by the bulk decoder and the streaming reader.
//!
//! A core is a state machine fed with byte slices. Each call to [`Core::step`] looks at
//! `buf` (which starts at absolute file offset `offset`), appends at most `max` events and says
//! how many bytes it consumed, how many it needs before it can go on, or that it is done.
//! With `eof = true` a core never asks for more bytes: it finishes or returns an error.

use crate::error::{Error, Result};
use crate::format::{Format, ReadOptions};
use crate::{Events, SensorSize, Skipped};

/// The outcome of one [`Core::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Consumed this many bytes (0 is allowed only if events were emitted from internal state).
    Progress(usize),
    /// Cannot go on until `buf` holds at least this many bytes.
    Need(usize),
    /// The end of the data (for AEDAT 4, possibly before the end of the file).
    Done,
}

/// Shared output state that is not events.
#[derive(Debug, Default)]
pub(crate) struct Meta {
    pub sensor: Option<SensorSize>,
    pub skipped: Skipped,
    /// The size of the whole input when it is decoded at once ([`decode_all`]), from which
    /// [`crate::simd`] decides whether the output is large enough for non-temporal stores;
    /// 0 for the streaming reader.
    pub whole_input: usize,
}

impl Meta {
    pub fn skip(&mut self, kind: &str, n: u64) {
        if n > 0 {
            *self.skipped.entry(kind.to_string()).or_insert(0) += n;
        }
    }
}

/// The step of a fixed-size-record core when `buf` holds no whole record it may decode (or
/// `max` is 0): done at EOF on an empty buffer, wait for more bytes, or, at EOF on a partial
/// record, skip it (counted as `partial_record`) when allowed and fail otherwise.
pub(crate) fn short_tail(
    buf: &[u8],
    record: usize,
    eof: bool,
    allow_partial: bool,
    offset: u64,
    meta: &mut Meta,
) -> Result<Step> {
    if buf.is_empty() {
        return Ok(if eof { Step::Done } else { Step::Need(record) });
    }
    if buf.len() >= record {
        // max == 0: nothing to do yet.
        return Ok(Step::Progress(0));
    }
    if !eof {
        return Ok(Step::Need(record));
    }
    if allow_partial {
        meta.skip("partial_record", 1);
        return Ok(Step::Progress(buf.len()));
    }
    Err(Error::PartialRecord {
        offset,
        record_size: record,
        remainder: buf.len() as u64,
    })
}

/// The step when `buf` holds fewer than the `n` bytes of the next item (`what`, at file offset
/// `offset`): wait for them, or at the end of the input fail with [`Error::Truncated`]. `None`
/// when they are there.
pub(crate) fn need(
    buf: &[u8],
    n: usize,
    eof: bool,
    offset: u64,
    what: &'static str,
) -> Option<Result<Step>> {
    if buf.len() >= n {
        return None;
    }
    Some(if eof {
        Err(Error::Truncated {
            offset,
            what,
            needed: n as u64,
            available: buf.len() as u64,
        })
    } else {
        Ok(Step::Need(n))
    })
}

pub(crate) trait Core {
    fn step(
        &mut self,
        buf: &[u8],
        offset: u64,
        eof: bool,
        out: &mut Events,
        max: usize,
        meta: &mut Meta,
    ) -> Result<Step>;
}

/// Any of the format cores.
pub(crate) enum AnyCore {
    NBin(crate::nbin::Decoder),
    Aedat2(crate::aedat2::Decoder),
    Aedat31(crate::aedat31::Decoder),
    Aedat4(Box<crate::aedat4::Decoder>),
}

impl AnyCore {
    pub fn new(format: Format, opts: &ReadOptions) -> AnyCore {
        match format {
            Format::NBin => AnyCore::NBin(crate::nbin::Decoder::new(opts)),
            Format::Aedat2 => AnyCore::Aedat2(crate::aedat2::Decoder::new(opts)),
            Format::Aedat31 => AnyCore::Aedat31(crate::aedat31::Decoder::new(opts)),
            Format::Aedat4 => AnyCore::Aedat4(Box::new(crate::aedat4::Decoder::new(opts))),
        }
    }
}

impl Core for AnyCore {
    fn step(
        &mut self,
        buf: &[u8],
        offset: u64,
        eof: bool,
        out: &mut Events,
        max: usize,
        meta: &mut Meta,
    ) -> Result<Step> {
        match self {
            AnyCore::NBin(c) => c.step(buf, offset, eof, out, max, meta),
            AnyCore::Aedat2(c) => c.step(buf, offset, eof, out, max, meta),
            AnyCore::Aedat31(c) => c.step(buf, offset, eof, out, max, meta),
            AnyCore::Aedat4(c) => c.step(buf, offset, eof, out, max, meta),
        }
    }
}

/// Runs a core over a whole in-memory file.
pub(crate) fn decode_all(
    core: &mut impl Core,
    data: &[u8],
    out: &mut Events,
    meta: &mut Meta,
) -> Result<()> {
    meta.whole_input = data.len();
    let res = decode_all_inner(core, data, out, meta);
    meta.whole_input = 0;
    res
}

fn decode_all_inner(
    core: &mut impl Core,
    data: &[u8],
    out: &mut Events,
    meta: &mut Meta,
) -> Result<()> {
    let mut pos = 0usize;
    let mut idle = 0u32;
    loop {
        let before = out.t.len();
        match core.step(&data[pos..], pos as u64, true, out, usize::MAX, meta)? {
            Step::Progress(n) => {
                if n == 0 && out.t.len() == before {
                    idle += 1;
                } else {
                    idle = 0;
                }
                // State changes may consume nothing, but never many in a row.
                if idle > 8 {
                    // A core that neither consumes nor emits would loop forever; this is a bug
                    // in the core, reported rather than hung on.
                    return Err(Error::CorruptHeader {
                        offset: pos as u64,
                        reason: "decoder made no progress".into(),
                    });
                }
                pos += n;
            }
            Step::Need(n) => {
                return Err(Error::Truncated {
                    offset: pos as u64,
                    what: "data",
                    needed: n as u64,
                    available: (data.len() - pos) as u64,
                });
            }
            Step::Done => return Ok(()),
        }
    }
}

/// A text header line: `#...` up to and including `\n`.
pub(crate) enum Line<'a> {
    /// A header line (without its line ending) and the bytes it occupies.
    Header(&'a [u8], usize),
    /// The next byte is not `#`: the header is over.
    End,
    /// Need at least this many bytes to see the whole line.
    Need(usize),
}

/// The next line of an AEDAT 2/3 text header, tonic-style: a line is part of the header when
/// its first byte is `#`.
pub(crate) fn header_line(buf: &[u8], offset: u64, eof: bool, max_line: u64) -> Result<Line<'_>> {
    match buf.first() {
        None if eof => Ok(Line::End),
        None => Ok(Line::Need(1)),
        Some(&b) if b != b'#' => Ok(Line::End),
        Some(_) => match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let mut line = &buf[..i];
                if let Some(l) = line.strip_suffix(b"\r") {
                    line = l;
                }
                Ok(Line::Header(line, i + 1))
            }
            None if eof => {
                // The header runs into the end of the file: every remaining byte is header.
                Ok(Line::Header(buf, buf.len()))
            }
            None if buf.len() as u64 >= max_line => Err(Error::TooLarge {
                offset,
                what: "header line",
                size: buf.len() as u64,
                limit: max_line,
            }),
            None => Ok(Line::Need(buf.len() + 1)),
        },
    }
}

/// Checks the first header line of an AEDAT 2/3 file against the expected version.
pub(crate) fn check_magic(line: &[u8], expected: &'static str) -> Result<()> {
    let exp = expected.trim_end();
    if line == exp.as_bytes() {
        return Ok(());
    }
    if line.starts_with(crate::format::AEDAT_MAGIC_PREFIX) {
        let v = &line[crate::format::AEDAT_MAGIC_PREFIX.len()..];
        return Err(Error::UnsupportedVersion {
            offset: 0,
            version: String::from_utf8_lossy(&v[..v.len().min(32)]).into_owned(),
        });
    }
    Err(Error::BadMagic {
        offset: 0,
        expected: exp,
        found: String::from_utf8_lossy(&line[..line.len().min(32)]).into_owned(),
    })
}

/// Sensor size from a chip or device name in an AEDAT header (`DVS128`, `DAVIS240C`, `DAVIS346B`).
pub(crate) fn chip_sensor(name: &str) -> Option<(crate::format::Aedat2Layout, SensorSize)> {
    use crate::format::Aedat2Layout as L;
    let n = name.to_ascii_lowercase();
    let layout = if n.contains("davis346") {
        L::Davis346
    } else if n.contains("davis240") {
        L::Davis240
    } else if n.contains("dvs128") || n.contains("tmpdiff128") {
        L::Dvs128
    } else {
        return None;
    };
    Some((layout, layout.sensor()?))
}

/// Parses `WxH` (e.g. `128x128`).
pub(crate) fn parse_size(s: &str) -> Option<SensorSize> {
    let (w, h) = s.trim().split_once(['x', 'X'])?;
    Some(SensorSize {
        width: w.trim().parse().ok()?,
        height: h.trim().parse().ok()?,
    })
}

/// Reserves room for `n` more events in every column, refusing absurd sizes gracefully.
#[inline]
pub(crate) fn reserve(out: &mut Events, n: usize) {
    out.t.reserve(n);
    out.x.reserve(n);
    out.y.reserve(n);
    out.on.reserve(n);
}

/// Appends one event per record of `recs` (records of `size` bytes), decoded by `f`, to all
/// four columns in a single pass without zero-filling or per-push capacity checks.
///
/// `f` also returns a flag (e.g. "this record is special and must not be an event"); the
/// function returns the OR of all flags, so a caller can decode optimistically in one pass and
/// fall back to a filtering path (after truncating) only when some record was flagged.
#[inline(always)]
pub(crate) fn append_records(
    out: &mut Events,
    recs: &[u8],
    size: usize,
    f: impl Fn(&[u8]) -> (i64, u16, u16, bool, bool),
) -> bool {
    let n = recs.len() / size;
    reserve(out, n);
    let mut written = 0usize;
    let mut flagged = false;
    {
        let t = &mut out.t.spare_capacity_mut()[..n];
        let x = &mut out.x.spare_capacity_mut()[..n];
        let y = &mut out.y.spare_capacity_mut()[..n];
        let on = &mut out.on.spare_capacity_mut()[..n];
        for ((((r, t), x), y), on) in recs
            .chunks_exact(size)
            .zip(t.iter_mut())
            .zip(x.iter_mut())
            .zip(y.iter_mut())
            .zip(on.iter_mut())
        {
            let (vt, vx, vy, von, flag) = f(r);
            flagged |= flag;
            t.write(vt);
            x.write(vx);
            y.write(vy);
            on.write(von);
            written += 1;
        }
    }
    assert_eq!(written, n, "every spare slot was written");
    // SAFETY: `reserve` made room for `n` more elements in every column, and the loop above
    // initialised exactly the first `n` spare slots of each column (`written == n`, and the zip
    // is as long as the shortest of the four n-long slices and the n records).
    unsafe {
        out.t.set_len(out.t.len() + n);
        out.x.set_len(out.x.len() + n);
        out.y.set_len(out.y.len() + n);
        out.on.set_len(out.on.len() + n);
    }
    flagged
}

/// Truncates every column to `len`.
pub(crate) fn truncate(out: &mut Events, len: usize) {
    out.t.truncate(len);
    out.x.truncate(len);
    out.y.truncate(len);
    out.on.truncate(len);
}
