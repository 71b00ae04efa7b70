//! The on-disk frame cache: one self-checking file per sample, written atomically.
//!
//! Folder: `<cache_root>/<dataset>-<first 16 hex digits of the config hash>/`, holding
//! `manifest.json` (format version, dataset, the hashed config in full, its sha256) and one
//! `<key>.frm` per sample. `<key>` is the first 32 hex digits of the sha256 of the sample's
//! root-relative path, its segment (row, start, end) and the source file's size, so train and
//! test share one folder and a replaced source file gets a new entry.
//!
//! Entry layout (little-endian): magic `NMOCOFRM`, u32 format version, u32 dtype (0 = f32,
//! 1 = u16 counts), u32 T, u32 C (= 2), u32 H, u32 W, u64 payload bytes, 32-byte sha256 of the
//! payload, then the payload (`T·2·H·W` values in [`nmoco_frames::Frames`] order). Frames whose
//! values are all integers in `0..=65535` are stored as u16, others as f32. A reader checks the
//! magic, version, shape, size and checksum and reports any mismatch as
//! [`Error::CorruptCache`]; it never returns unchecked data.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nmoco_frames::Frames;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, io_err};
use crate::index::Sample;

pub(crate) const MAGIC: &[u8; 8] = b"NMOCOFRM";
/// Bumped whenever the entry layout or the meaning of cached frames changes.
pub const FORMAT_VERSION: u32 = 1;
pub(crate) const HEADER: usize = 8 + 4 + 4 + 16 + 8 + 32;

const DTYPE_F32: u32 = 0;
const DTYPE_U16: u32 = 1;

/// Hex sha256 of bytes.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The cache key (file name without extension) of a sample.
pub fn entry_key(s: &Sample) -> String {
    let mut h = Sha256::new();
    h.update(s.rel.as_bytes());
    h.update([0u8]);
    if let Some(seg) = s.segment {
        h.update((seg.row as u64).to_le_bytes());
        h.update(seg.start.to_le_bytes());
        h.update(seg.end.to_le_bytes());
    }
    h.update([1u8]);
    h.update(s.source_len.to_le_bytes());
    hex(&h.finalize())[..32].to_string()
}

/// Serialise frames into an entry (header + payload).
pub fn encode(f: &Frames) -> Vec<u8> {
    let as_u16 = f
        .data
        .iter()
        .all(|&v| (0.0..=65535.0).contains(&v) && v.fract() == 0.0);
    let mut payload = Vec::with_capacity(f.data.len() * if as_u16 { 2 } else { 4 });
    if as_u16 {
        for &v in &f.data {
            payload.extend_from_slice(&(v as u16).to_le_bytes());
        }
    } else {
        for &v in &f.data {
            payload.extend_from_slice(&v.to_le_bytes());
        }
    }
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(if as_u16 { DTYPE_U16 } else { DTYPE_F32 }).to_le_bytes());
    for d in [f.t, 2, f.h, f.w] {
        out.extend_from_slice(&(d as u32).to_le_bytes());
    }
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&payload));
    out.extend_from_slice(&payload);
    out
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}

/// Parse and verify an entry; `expect` is the `(T, H, W)` the caller needs.
pub fn decode(bytes: &[u8], expect: (usize, usize, usize), path: &Path) -> Result<Frames, Error> {
    let bad = |reason: String| Error::CorruptCache {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < HEADER {
        return Err(bad(format!(
            "{} bytes, shorter than the {HEADER}-byte header",
            bytes.len()
        )));
    }
    if &bytes[..8] != MAGIC {
        return Err(bad("bad magic".into()));
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {version}, expected {FORMAT_VERSION}"
        )));
    }
    let dtype = u32_at(bytes, 12);
    let (t, c, h, w) = (
        u32_at(bytes, 16) as usize,
        u32_at(bytes, 20) as usize,
        u32_at(bytes, 24) as usize,
        u32_at(bytes, 28) as usize,
    );
    if (t, c, h, w) != (expect.0, 2, expect.1, expect.2) {
        return Err(bad(format!(
            "shape {t}x{c}x{h}x{w}, expected {}x2x{}x{}",
            expect.0, expect.1, expect.2
        )));
    }
    let n = t * 2 * h * w;
    let width = match dtype {
        DTYPE_F32 => 4,
        DTYPE_U16 => 2,
        d => return Err(bad(format!("unknown dtype {d}"))),
    };
    let mut lb = [0u8; 8];
    lb.copy_from_slice(&bytes[32..40]);
    let plen = u64::from_le_bytes(lb);
    let payload = &bytes[HEADER..];
    if plen != (n * width) as u64 || payload.len() as u64 != plen {
        return Err(bad(format!(
            "payload is {} bytes, header says {plen}, shape needs {}",
            payload.len(),
            n * width
        )));
    }
    if Sha256::digest(payload).as_slice() != &bytes[40..72] {
        return Err(bad("payload checksum mismatch".into()));
    }
    let data: Vec<f32> = if dtype == DTYPE_U16 {
        payload
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as f32)
            .collect()
    } else {
        payload
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    Ok(Frames { data, t, h, w })
}

/// Whether an entry file has one of the two sizes a `(T, H, W)` entry can have (a cheap check
/// before the full checksum on read).
pub(crate) fn plausible_size(len: u64, expect: (usize, usize, usize)) -> bool {
    let n = (expect.0 * 2 * expect.1 * expect.2) as u64;
    len == HEADER as u64 + 2 * n || len == HEADER as u64 + 4 * n
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Write `bytes` to `path` atomically: a uniquely named temporary file in the same folder,
/// flushed and synced, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// What `manifest.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    pub dataset: String,
    pub config_hash: String,
    /// The exact JSON value that was hashed.
    pub config: serde_json::Value,
    pub writer: String,
}

/// An opened cache folder for one (dataset, slicing config).
#[derive(Debug, Clone)]
pub struct Cache {
    pub dir: PathBuf,
    pub shape: (usize, usize, usize),
}

impl Cache {
    /// Open (creating if needed) the folder for `config` under `root`. A manifest that does not
    /// match (unreadable, other hash or version) is replaced and the folder's entries removed.
    pub fn open(
        root: &Path,
        dataset: &str,
        config: serde_json::Value,
        shape: (usize, usize, usize),
    ) -> Result<Cache, Error> {
        let hashed = serde_json::json!({ "format_version": FORMAT_VERSION, "config": config });
        let text = serde_json::to_string(&hashed).map_err(|source| Error::Manifest {
            path: root.to_path_buf(),
            source,
        })?;
        let hash = sha256_hex(text.as_bytes());
        let dir = root.join(format!("{dataset}-{}", &hash[..16]));
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mpath = dir.join("manifest.json");
        let want = Manifest {
            format_version: FORMAT_VERSION,
            dataset: dataset.to_string(),
            config_hash: hash,
            config: hashed,
            writer: format!("nmoco-data {}", env!("CARGO_PKG_VERSION")),
        };
        let current: Option<Manifest> = std::fs::read_to_string(&mpath)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        match current {
            Some(m) if m.config_hash == want.config_hash && m.format_version == FORMAT_VERSION => {}
            other => {
                if other.is_some() || mpath.exists() {
                    tracing::warn!(dir = %dir.display(), "cache manifest does not match the config; clearing the folder");
                    clear_entries(&dir)?;
                }
                let bytes = serde_json::to_vec_pretty(&want).map_err(|source| Error::Manifest {
                    path: mpath.clone(),
                    source,
                })?;
                write_atomic(&mpath, &bytes)?;
            }
        }
        Ok(Cache { dir, shape })
    }

    pub fn entry_path(&self, s: &Sample) -> PathBuf {
        self.dir.join(format!("{}.frm", entry_key(s)))
    }

    /// Whether the entry exists and has a plausible size (no checksum).
    pub fn looks_valid(&self, s: &Sample) -> bool {
        std::fs::metadata(self.entry_path(s))
            .map(|m| m.is_file() && plausible_size(m.len(), self.shape))
            .unwrap_or(false)
    }

    /// Read and verify an entry. `Ok(None)` when it does not exist.
    pub fn read(&self, s: &Sample) -> Result<Option<Frames>, Error> {
        let p = self.entry_path(s);
        match std::fs::read(&p) {
            Ok(bytes) => decode(&bytes, self.shape, &p).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io { path: p, source: e }),
        }
    }

    pub fn write(&self, s: &Sample, f: &Frames) -> Result<(), Error> {
        write_atomic(&self.entry_path(s), &encode(f))
    }
}

fn clear_entries(dir: &Path) -> Result<(), Error> {
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let p = e.path();
        if p.extension().is_some_and(|x| x == "frm")
            || p.file_name().is_some_and(|n| n == "manifest.json")
        {
            std::fs::remove_file(&p).map_err(io_err(&p))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(vals: &[f32]) -> Frames {
        Frames {
            data: vals.to_vec(),
            t: 1,
            h: 1,
            w: vals.len() / 2,
        }
    }

    #[test]
    fn round_trips_counts_as_u16_and_reals_as_f32() {
        let p = Path::new("x.frm");
        let a = frames(&[0.0, 3.0, 65535.0, 1.0]);
        let ea = encode(&a);
        assert_eq!(ea.len(), HEADER + 8);
        assert_eq!(u32_at(&ea, 12), DTYPE_U16);
        assert_eq!(decode(&ea, (1, 1, 2), p).unwrap(), a);
        let b = frames(&[0.5, -1.0, 70000.0, 2.0]);
        let eb = encode(&b);
        assert_eq!(ea.len() + 8, eb.len());
        assert_eq!(u32_at(&eb, 12), DTYPE_F32);
        assert_eq!(decode(&eb, (1, 1, 2), p).unwrap(), b);
        assert!(plausible_size(ea.len() as u64, (1, 1, 2)));
        assert!(plausible_size(eb.len() as u64, (1, 1, 2)));
        assert!(!plausible_size(eb.len() as u64 - 1, (1, 1, 2)));
    }

    #[test]
    fn every_corruption_is_detected() {
        let p = Path::new("x.frm");
        let e = encode(&frames(&[1.0, 2.0, 3.0, 4.0]));
        // Flip every byte in turn: each must be rejected (header fields, checksum or payload).
        for i in 0..e.len() {
            let mut c = e.clone();
            c[i] ^= 0x40;
            assert!(
                decode(&c, (1, 1, 2), p).is_err(),
                "byte {i} flip not detected"
            );
        }
        for cut in 0..e.len() {
            assert!(matches!(
                decode(&e[..cut], (1, 1, 2), p),
                Err(Error::CorruptCache { .. })
            ));
        }
        assert!(decode(&e, (2, 1, 2), p).is_err());
    }
}
