//! Bounds-checked flatbuffer reading: every offset is checked against the buffer, so a
//! corrupt packet is an [`Error::Flatbuffer`] with the packet's file offset, never a panic.

use super::EVENT_STRUCT;
use crate::error::{Error, Result};

pub(super) struct Fb<'a> {
    pub(super) buf: &'a [u8],
    /// Absolute file offset of the packet, for errors.
    pub(super) offset: u64,
}

impl<'a> Fb<'a> {
    pub(super) fn err(&self, reason: impl Into<String>) -> Error {
        Error::Flatbuffer {
            offset: self.offset,
            reason: reason.into(),
        }
    }

    pub(super) fn bytes(&self, pos: usize, n: usize) -> Result<&'a [u8]> {
        pos.checked_add(n)
            .and_then(|end| self.buf.get(pos..end))
            .ok_or_else(|| {
                self.err(format!(
                    "{n} bytes at {pos} lie outside the {}-byte buffer",
                    self.buf.len()
                ))
            })
    }

    pub(super) fn u16(&self, pos: usize) -> Result<u16> {
        let b = self.bytes(pos, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(super) fn u32(&self, pos: usize) -> Result<u32> {
        let b = self.bytes(pos, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn i64(&self, pos: usize) -> Result<i64> {
        let b = self.bytes(pos, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    /// Follows the uoffset stored at `pos`.
    pub(super) fn deref(&self, pos: usize) -> Result<usize> {
        let off = self.u32(pos)? as usize;
        pos.checked_add(off)
            .filter(|&p| p < self.buf.len())
            .ok_or_else(|| self.err(format!("offset {off} at {pos} points outside the buffer")))
    }

    /// The absolute position of field `index` of the table at `table`, or `None` if absent.
    pub(super) fn field(&self, table: usize, index: usize) -> Result<Option<usize>> {
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
/// Finds the events vector in a decompressed `EventPacket`: returns (start, count).
pub(super) fn event_vector(buf: &[u8], offset: u64) -> Result<(usize, usize)> {
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
