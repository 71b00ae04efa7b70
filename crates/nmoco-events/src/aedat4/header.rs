//! The IO header: its flatbuffer fields and the streams declared in its XML description.

use std::collections::BTreeMap;

use super::flatbuffer::Fb;
use crate::SensorSize;
use crate::error::{Error, Result};
use crate::format::Compression;

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

pub(super) fn parse_io_header(buf: &[u8], offset: u64) -> Result<IoHeader> {
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
