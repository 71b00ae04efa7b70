//! The run directory that `nmoco pretrain` writes and the evaluation commands read: the one
//! place its file names are spelled ([`RunPaths`] and the constants below), and the size +
//! SHA-256 record ([`FileDigest`]) kept next to every weights file.
//!
//! ```text
//! runs/<name>/
//!   config.toml              the resolved config (evaluation reads its [model] and [data])
//!   metrics.jsonl            one record per logged step and per epoch
//!   curves.png               loss, kNN top-1 and learning-rate curves
//!   checkpoints/
//!     epoch-0003/            one complete checkpoint (written as .tmp-epoch-0003-<pid>, renamed)
//!       master.safetensors   master encoder: backbone.* and head.* (incl. BN running stats)
//!       key.safetensors      subordinate (momentum) encoder, same names
//!       optimizer.safetensors  buf.<name> (SGD) or m.<name>, v.<name> (AdamW)
//!       queue.safetensors    keys: [K, C] f32
//!       state.json           trainer state, with the size and SHA-256 of each file above
//!     latest                 text file: name of the newest complete checkpoint directory
//!     best                   text file: name of the checkpoint with the best kNN accuracy
//!   final/                   written once the last epoch is done
//!     encoder.safetensors    the master encoder
//!     config.toml            the resolved config
//!     files.json             {"files": {"encoder.safetensors": {size, sha256}}}
//! ```
//!
//! The evaluation commands write under `<folder of the weights>/eval/`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The run's resolved configuration (in the run folder and in `final/`).
pub const CONFIG: &str = "config.toml";
/// Step and epoch records.
pub const METRICS: &str = "metrics.jsonl";
/// The training curves.
pub const CURVES: &str = "curves.png";
/// The folder of the per-epoch checkpoints.
pub const CHECKPOINTS: &str = "checkpoints";
/// Pointer file (in `checkpoints/`) naming the newest complete checkpoint.
pub const LATEST: &str = "latest";
/// Pointer file (in `checkpoints/`) naming the checkpoint with the best kNN accuracy.
pub const BEST: &str = "best";
/// The folder of the final encoder.
pub const FINAL: &str = "final";
/// The final encoder's file in `final/`.
pub const FINAL_ENCODER: &str = "encoder.safetensors";
/// The digest file next to the final encoder.
pub const FINAL_FILES: &str = "files.json";
/// A checkpoint's master encoder.
pub const MASTER: &str = "master.safetensors";
/// A checkpoint's momentum (key) encoder.
pub const KEY: &str = "key.safetensors";
/// A checkpoint's optimizer state.
pub const OPTIMIZER: &str = "optimizer.safetensors";
/// A checkpoint's queue of keys.
pub const QUEUE: &str = "queue.safetensors";
/// A checkpoint's trainer state and file digests.
pub const STATE: &str = "state.json";
/// The files of a checkpoint directory besides [`STATE`].
pub const CHECKPOINT_FILES: [&str; 4] = [MASTER, KEY, OPTIMIZER, QUEUE];
/// The folder, next to the evaluated weights, that the evaluation commands write into.
pub const EVAL: &str = "eval";

/// The directory name of the checkpoint after `epoch` epochs (`epoch-NNNN`).
pub fn checkpoint_dir_name(epoch: usize) -> String {
    format!("epoch-{epoch:04}")
}

/// The epoch of a checkpoint directory name, `None` for any other name.
pub fn parse_checkpoint_dir_name(name: &str) -> Option<usize> {
    name.strip_prefix("epoch-")?.parse().ok()
}

/// Paths inside a run directory.
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub root: PathBuf,
}

impl RunPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join(CONFIG)
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join(METRICS)
    }
    pub fn curves(&self) -> PathBuf {
        self.root.join(CURVES)
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join(CHECKPOINTS)
    }
    /// `checkpoints/latest`.
    pub fn latest(&self) -> PathBuf {
        self.checkpoints().join(LATEST)
    }
    pub fn final_dir(&self) -> PathBuf {
        self.root.join(FINAL)
    }
    pub fn final_encoder(&self) -> PathBuf {
        self.final_dir().join(FINAL_ENCODER)
    }
    /// `final/files.json`: size and SHA-256 of `final/encoder.safetensors`.
    pub fn final_files(&self) -> PathBuf {
        self.final_dir().join(FINAL_FILES)
    }
    /// `final/config.toml`.
    pub fn final_config(&self) -> PathBuf {
        self.final_dir().join(CONFIG)
    }
}

/// Size and SHA-256 (hex) of one file, as recorded in a checkpoint's `state.json` and in
/// `final/files.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub size: u64,
    pub sha256: String,
}

/// The `files` table of `final/files.json` (and of a checkpoint's `state.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigests {
    #[serde(default)]
    pub files: BTreeMap<String, FileDigest>,
}

/// The size and SHA-256 of the file at `path`.
pub fn digest_file(path: &Path) -> std::io::Result<FileDigest> {
    use sha2::{Digest, Sha256};
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok(FileDigest {
        size,
        sha256: h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
    })
}

/// Compare the file at `path` with its recorded digest: `Some(what differs)` on a mismatch
/// (a missing file included).
pub fn check_digest(path: &Path, want: &FileDigest) -> std::io::Result<Option<String>> {
    let size = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Some("the file is missing".into()));
        }
        Err(e) => return Err(e),
    };
    if size != want.size {
        return Ok(Some(format!(
            "size {size} bytes, but {} bytes were written",
            want.size
        )));
    }
    let got = digest_file(path)?;
    Ok((got.sha256 != want.sha256).then(|| {
        format!(
            "SHA-256 {} differs from the {} recorded when it was written",
            got.sha256, want.sha256
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_digests() {
        assert_eq!(checkpoint_dir_name(3), "epoch-0003");
        assert_eq!(parse_checkpoint_dir_name("epoch-0003"), Some(3));
        assert_eq!(parse_checkpoint_dir_name("../etc"), None);
        let p = RunPaths::new("runs/x");
        assert_eq!(
            p.final_encoder(),
            Path::new("runs/x/final/encoder.safetensors")
        );
        assert_eq!(p.latest(), Path::new("runs/x/checkpoints/latest"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        std::fs::write(&f, b"abc").unwrap();
        let d = digest_file(&f).unwrap();
        assert_eq!(d.size, 3);
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(check_digest(&f, &d).unwrap(), None);
        std::fs::write(&f, b"abd").unwrap();
        assert!(check_digest(&f, &d).unwrap().unwrap().contains("SHA-256"));
        std::fs::write(&f, b"ab").unwrap();
        assert!(check_digest(&f, &d).unwrap().unwrap().contains("size 2"));
        std::fs::remove_file(&f).unwrap();
        assert_eq!(
            check_digest(&f, &d).unwrap().unwrap(),
            "the file is missing"
        );
    }
}
