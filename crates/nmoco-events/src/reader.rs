//! The streaming reader: decodes any `impl Read` chunk by chunk in bounded memory.

use std::io::Read;

use crate::core::{AnyCore, Core, Meta, Step};
use crate::error::{Error, Result};
use crate::format::{Format, ReadOptions, resolve};
use crate::{Event, Events, SensorSize, Skipped};

/// The initial read buffer; it grows only as far as one unit (a header line, an AEDAT 4 packet)
/// needs, and those are bounded by [`ReadOptions::max_header_bytes`] and
/// [`ReadOptions::max_packet_bytes`].
const INITIAL_BUF: usize = 1 << 20;

/// A streaming decoder over any reader.
///
/// ```
/// # fn main() -> Result<(), nmoco_events::Error> {
/// use nmoco_events::{Events, Format, ReadOptions, Reader};
/// let ev: Events = (0..10)
///     .map(|i| nmoco_events::Event { t: i, x: 1, y: 2, on: i % 2 == 0 })
///     .collect();
/// let mut bytes = Vec::new();
/// nmoco_events::aedat31::write(&mut bytes, &ev, None)?;
/// let mut r = Reader::new(&bytes[..], &ReadOptions::with_format(Format::Aedat31))?;
/// let mut chunk = Events::new();
/// let mut total = 0;
/// while r.read_chunk(&mut chunk)? > 0 {
///     total += chunk.len();
///     chunk.clear();
/// }
/// assert_eq!(total, 10);
/// # Ok(())
/// # }
/// ```
pub struct Reader<R: Read> {
    inner: R,
    format: Format,
    core: AnyCore,
    meta: Meta,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Absolute offset of `buf[start]`.
    offset: u64,
    eof: bool,
    done: bool,
    chunk: usize,
    max_buf: u64,
}

impl<R: Read> Reader<R> {
    /// A reader for `inner`. Without `opts.format` the format is sniffed from the magic string
    /// (an N-binary stream has none: pass its format explicitly).
    pub fn new(inner: R, opts: &ReadOptions) -> Result<Reader<R>> {
        let mut r = Reader {
            inner,
            format: opts.format.unwrap_or(Format::NBin),
            core: AnyCore::new(Format::NBin, opts),
            meta: Meta::default(),
            buf: vec![0; INITIAL_BUF],
            start: 0,
            end: 0,
            offset: 0,
            eof: false,
            done: false,
            chunk: opts.chunk_events.max(1),
            max_buf: opts
                .max_packet_bytes
                .max(opts.max_header_bytes)
                .saturating_add(64),
        };
        let format = match opts.format {
            Some(f) => f,
            None => {
                r.fill_to(16)?;
                resolve(&r.buf[r.start..r.end], None)?
            }
        };
        r.format = format;
        r.core = AnyCore::new(format, opts);
        Ok(r)
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The sensor size, once the header has been read (after the first `read_chunk`).
    pub fn sensor(&self) -> Option<SensorSize> {
        self.meta.sensor
    }

    /// What was skipped so far, by kind.
    pub fn skipped(&self) -> &Skipped {
        &self.meta.skipped
    }

    /// Bytes currently allocated for the read buffer: at most 1 MiB unless one header line or
    /// AEDAT 4 packet needs more (bounded by the options' limits and by twice the bytes the
    /// input actually delivered).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.len()
    }

    /// Absolute byte offset of the next undecoded byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads until `buf[start..end]` holds at least `n` bytes or the input ends. The buffer
    /// grows only when it is full of unconsumed bytes, and then at most doubles, so memory
    /// follows the bytes actually present, never a length read from the file.
    fn fill_to(&mut self, n: usize) -> Result<()> {
        if n as u64 > self.max_buf {
            return Err(Error::TooLarge {
                offset: self.offset,
                what: "unit to buffer",
                size: n as u64,
                limit: self.max_buf,
            });
        }
        while self.end - self.start < n && !self.eof {
            if self.end == self.buf.len() && self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                let grown =
                    (self.buf.len() * 2).clamp(self.buf.len() + 1, n.max(self.buf.len() + 1));
                self.buf.resize(grown, 0);
            }
            let free = &mut self.buf[self.end..];
            match self.inner.read(free) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Io {
                        offset: self.offset + (self.end - self.start) as u64,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Appends up to [`ReadOptions::chunk_events`] events to `out` and returns how many;
    /// `0` means the end of the data.
    pub fn read_chunk(&mut self, out: &mut Events) -> Result<usize> {
        let before = out.t.len();
        let mut want = 1usize;
        while !self.done {
            let have = out.t.len() - before;
            if have >= self.chunk {
                break;
            }
            if self.end - self.start < want && !self.eof {
                // Top up the buffer: at least `want` bytes, opportunistically more.
                let target = want.max((self.buf.len() / 2).min(INITIAL_BUF / 2));
                self.fill_to(target)?;
            }
            let step = self.core.step(
                &self.buf[self.start..self.end],
                self.offset,
                self.eof,
                out,
                self.chunk - have,
                &mut self.meta,
            )?;
            match step {
                Step::Progress(n) => {
                    self.start += n;
                    self.offset += n as u64;
                    want = 1;
                }
                Step::Need(n) => {
                    if self.eof {
                        return Err(Error::Truncated {
                            offset: self.offset,
                            what: "data",
                            needed: n as u64,
                            available: (self.end - self.start) as u64,
                        });
                    }
                    want = n.max(self.end - self.start + 1);
                }
                Step::Done => self.done = true,
            }
            if out.t.len() > before && out.t.len() - before >= self.chunk {
                break;
            }
        }
        Ok(out.t.len() - before)
    }

    /// Decodes everything that is left.
    pub fn read_to_end(&mut self) -> Result<Events> {
        let mut all = Events::new();
        while self.read_chunk(&mut all)? > 0 {}
        Ok(all)
    }

    /// An iterator of single events (decoded a chunk at a time).
    pub fn events(&mut self) -> EventIter<'_, R> {
        EventIter {
            reader: self,
            chunk: Events::new(),
            pos: 0,
            failed: false,
        }
    }
}

/// Iterator returned by [`Reader::events`].
pub struct EventIter<'a, R: Read> {
    reader: &'a mut Reader<R>,
    chunk: Events,
    pos: usize,
    failed: bool,
}

impl<R: Read> Iterator for EventIter<'_, R> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        if self.failed {
            return None;
        }
        if self.pos >= self.chunk.t.len() {
            self.chunk.clear();
            self.pos = 0;
            match self.reader.read_chunk(&mut self.chunk) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        let e = self.chunk.get(self.pos)?;
        self.pos += 1;
        Some(Ok(e))
    }
}
