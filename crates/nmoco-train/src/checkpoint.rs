//! Checkpoints: atomic writes, the `latest`/`best` pointers, pruning and file digests. The
//! layout of `runs/<name>/checkpoints/` (`epoch-NNNN/` with `master.safetensors`,
//! `key.safetensors`, `optimizer.safetensors`, `queue.safetensors`, `state.json`; the `latest`
//! and `best` pointer files) is [`nmoco_eval::run_dir`]'s.
//!
//! A checkpoint directory is only ever visible under its final name once every file in it has
//! been written and fsynced; the pointer files are replaced atomically afterwards. A process
//! killed at any moment therefore leaves `latest` naming a complete checkpoint (or absent).
//! A file damaged after it was written (truncated, overwritten) is found on load: its size or
//! SHA-256 differs from what `state.json` records, and the error names the file, what differs
//! and the newest earlier checkpoint that is intact.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use nmoco_eval::run_dir::{self, BEST, KEY, LATEST, MASTER, OPTIMIZER, QUEUE, STATE};

use crate::error::{Error, Result, io_err};

/// Version of the checkpoint layout written by this crate (2: `state.json` records file
/// digests; version 1 checkpoints, without them, are still read).
pub const FORMAT_VERSION: u32 = 2;

pub use nmoco_eval::run_dir::FileDigest;

/// The size and SHA-256 of the file at `path`.
pub fn digest_file(path: &Path) -> Result<FileDigest> {
    run_dir::digest_file(path).map_err(io_err(path))
}

/// Compare the file at `path` with its recorded digest: `Some(what differs)` on a mismatch.
pub fn check_digest(path: &Path, want: &FileDigest) -> Result<Option<String>> {
    run_dir::check_digest(path, want).map_err(io_err(path))
}

/// Everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub format: u32,
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps completed (global step).
    pub step: usize,
    pub optimizer_steps: u64,
    pub queue_len: usize,
    pub queue_dim: usize,
    pub queue_ptr: usize,
    /// SHA-256 of the resolved config (without `run.name` and `run.device`).
    pub config_hash: String,
    /// The run's seed. Data order and augmentation are pure functions of (seed, epoch, index)
    /// and nothing else in the loop draws random numbers, so (seed, epoch) is the whole RNG state.
    pub seed: u64,
    pub loss_mean: Option<f64>,
    pub knn_top1: Option<f64>,
    /// Best kNN top-1 on the monitor's validation split (carved from train).
    pub best_knn_top1: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Size and SHA-256 of every other file of the checkpoint, filled in by [`save`].
    #[serde(default)]
    pub files: BTreeMap<String, FileDigest>,
}

/// A checkpoint's tensors and state.
#[derive(Debug)]
pub struct Checkpoint {
    pub master: HashMap<String, Tensor>,
    pub key: HashMap<String, Tensor>,
    pub optimizer: HashMap<String, Tensor>,
    pub queue: Vec<f32>,
    pub state: TrainerState,
}

/// The files of a checkpoint directory besides `state.json`.
pub const FILES: [&str; 4] = run_dir::CHECKPOINT_FILES;

/// The directory name of the checkpoint after `epoch` epochs.
pub fn dir_name(epoch: usize) -> String {
    run_dir::checkpoint_dir_name(epoch)
}

fn parse_dir_name(name: &str) -> Option<usize> {
    run_dir::parse_checkpoint_dir_name(name)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    // Directories can be opened and fsynced on Unix; elsewhere this is best effort.
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
    Ok(())
}

fn fsync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

/// Write `path` atomically: `write` fills a temporary file in the same directory, which is
/// fsynced and renamed to `path`, then the directory is fsynced. A crash leaves either the old
/// file or the complete new one (and perhaps a stray temporary file).
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    write(&tmp)?;
    fsync_file(&tmp)?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    fsync_dir(dir)
}

/// Write `bytes` to `path` atomically ([`write_atomic_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        let mut f = File::create(tmp).map_err(io_err(tmp))?;
        f.write_all(bytes).map_err(io_err(tmp))
    })
}

/// Write tensors as a safetensors file at `path` atomically ([`write_atomic_with`]).
pub fn write_tensors_atomic(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    write_atomic_with(path, |tmp| {
        Ok(candle_core::safetensors::save(tensors, tmp)?)
    })
}

fn save_tensors(map: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    candle_core::safetensors::save(map, path)?;
    fsync_file(path)
}

/// Save a checkpoint as `dir/epoch-XXXX`, then point `latest` (and `best` when `is_best`) at it.
/// Returns the checkpoint's directory.
pub fn save(dir: &Path, ck: &Checkpoint, is_best: bool) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = dir_name(ck.state.epoch);
    let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    save_tensors(&ck.master, &tmp.join(MASTER))?;
    save_tensors(&ck.key, &tmp.join(KEY))?;
    save_tensors(&ck.optimizer, &tmp.join(OPTIMIZER))?;
    let q = Tensor::from_slice(
        &ck.queue,
        (ck.state.queue_len, ck.state.queue_dim),
        &Device::Cpu,
    )?;
    save_tensors(&HashMap::from([("keys".to_string(), q)]), &tmp.join(QUEUE))?;
    let mut state = ck.state.clone();
    state.files = FILES
        .iter()
        .map(|f| Ok((f.to_string(), digest_file(&tmp.join(f))?)))
        .collect::<Result<_>>()?;
    let json = serde_json::to_vec_pretty(&state).map_err(|e| Error::Checkpoint {
        path: tmp.clone(),
        reason: e.to_string(),
    })?;
    write_atomic(&tmp.join(STATE), &json)?;
    fsync_dir(&tmp)?;
    let fin = dir.join(&name);
    if fin.exists() {
        // A checkpoint of the same epoch from an earlier, interrupted attempt: replace it. It is
        // not the one `latest` points at (that would be an older epoch), so this is safe.
        fs::remove_dir_all(&fin).map_err(io_err(&fin))?;
    }
    fs::rename(&tmp, &fin).map_err(io_err(&fin))?;
    fsync_dir(dir)?;
    write_atomic(&dir.join(LATEST), format!("{name}\n").as_bytes())?;
    if is_best {
        write_atomic(&dir.join(BEST), format!("{name}\n").as_bytes())?;
    }
    Ok(fin)
}

/// The checkpoint directory a pointer file (`latest` or `best`) names, if any.
pub fn pointer(dir: &Path, which: &str) -> Result<Option<PathBuf>> {
    let p = dir.join(which);
    match fs::read_to_string(&p) {
        Ok(s) => {
            let name = s.trim();
            if parse_dir_name(name).is_none() {
                return Err(Error::Checkpoint {
                    path: p,
                    reason: format!("pointer names {name:?}, not an epoch-NNNN directory"),
                });
            }
            Ok(Some(dir.join(name)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io { path: p, source: e }),
    }
}

fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    if !path.is_file() {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: "file missing".into(),
        });
    }
    Ok(candle_core::safetensors::load(path, device)?)
}

/// Read and check `state.json` of `ck_dir`, then every file digest it records: the first
/// damaged file is a [`Error::Damaged`] naming it, what differs, and the newest earlier
/// checkpoint in the same folder that is intact.
pub fn verify(ck_dir: &Path) -> Result<TrainerState> {
    let state = read_state(ck_dir)?;
    if let Some((file, what)) = first_damage(ck_dir, &state)? {
        let epoch = state.epoch;
        let earlier = ck_dir
            .parent()
            .map(|parent| -> Result<Option<String>> {
                for e in list(parent)?.into_iter().rev().filter(|e| *e < epoch) {
                    let d = parent.join(dir_name(e));
                    if let Ok(st) = read_state(&d)
                        && matches!(first_damage(&d, &st), Ok(None))
                    {
                        return Ok(Some(dir_name(e)));
                    }
                }
                Ok(None)
            })
            .transpose()?
            .flatten();
        return Err(Error::Damaged {
            file,
            what,
            earlier,
        });
    }
    Ok(state)
}

fn first_damage(ck_dir: &Path, state: &TrainerState) -> Result<Option<(PathBuf, String)>> {
    if state.files.is_empty() && state.format >= 2 {
        return Ok(Some((
            ck_dir.join(STATE),
            "it records no file digests".into(),
        )));
    }
    for (name, want) in &state.files {
        let p = ck_dir.join(name);
        if let Some(what) = check_digest(&p, want)? {
            return Ok(Some((p, what)));
        }
    }
    Ok(None)
}

fn read_state(ck_dir: &Path) -> Result<TrainerState> {
    let sp = ck_dir.join(STATE);
    let bytes = fs::read(&sp).map_err(io_err(&sp))?;
    let state: TrainerState = serde_json::from_slice(&bytes).map_err(|e| Error::Checkpoint {
        path: sp.clone(),
        reason: e.to_string(),
    })?;
    if !(1..=FORMAT_VERSION).contains(&state.format) {
        return Err(Error::Checkpoint {
            path: sp,
            reason: format!(
                "format {} (this build reads 1 to {FORMAT_VERSION})",
                state.format
            ),
        });
    }
    Ok(state)
}

/// Load the checkpoint in `ck_dir` (one `epoch-NNNN` directory), after [`verify`]ing its files.
pub fn load(ck_dir: &Path, device: &Device) -> Result<Checkpoint> {
    let state = verify(ck_dir)?;
    let master = load_tensors(&ck_dir.join(MASTER), device)?;
    let key = load_tensors(&ck_dir.join(KEY), device)?;
    let optimizer = load_tensors(&ck_dir.join(OPTIMIZER), device)?;
    let qp = ck_dir.join(QUEUE);
    let qmap = load_tensors(&qp, &Device::Cpu)?;
    let q = qmap.get("keys").ok_or_else(|| Error::Checkpoint {
        path: qp.clone(),
        reason: "no tensor named keys".into(),
    })?;
    if q.dims() != [state.queue_len, state.queue_dim] {
        return Err(Error::Checkpoint {
            path: qp,
            reason: format!(
                "queue shape {:?}, state says [{}, {}]",
                q.dims(),
                state.queue_len,
                state.queue_dim
            ),
        });
    }
    let queue = q.flatten_all()?.to_vec1::<f32>()?;
    Ok(Checkpoint {
        master,
        key,
        optimizer,
        queue,
        state,
    })
}

/// The epochs of the complete checkpoints in `dir`, ascending (temporary directories ignored).
pub fn list(dir: &Path) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(Error::Io {
                path: dir.to_path_buf(),
                source: e,
            });
        }
    };
    for e in rd {
        let e = e.map_err(io_err(dir))?;
        if let Some(n) = e.file_name().to_str().and_then(parse_dir_name) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Which checkpoints to delete: all but the newest `keep_last`, never the best or the latest.
pub fn to_prune(
    existing: &[usize],
    keep_last: usize,
    best: Option<usize>,
    latest: Option<usize>,
) -> Vec<usize> {
    let mut sorted = existing.to_vec();
    sorted.sort_unstable();
    let cut = sorted.len().saturating_sub(keep_last);
    sorted[..cut]
        .iter()
        .copied()
        .filter(|e| Some(*e) != best && Some(*e) != latest)
        .collect()
}

/// Delete old checkpoints per [`to_prune`], and leftover temporary directories.
pub fn prune(dir: &Path, keep_last: usize) -> Result<()> {
    let best = pointer(dir, BEST)?.and_then(|p| p.file_name()?.to_str().and_then(parse_dir_name));
    let latest =
        pointer(dir, LATEST)?.and_then(|p| p.file_name()?.to_str().and_then(parse_dir_name));
    for e in to_prune(&list(dir)?, keep_last, best, latest) {
        let p = dir.join(dir_name(e));
        fs::remove_dir_all(&p).map_err(io_err(&p))?;
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name();
            if n.to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(epoch: usize) -> TrainerState {
        TrainerState {
            format: FORMAT_VERSION,
            epoch,
            step: epoch * 10,
            optimizer_steps: (epoch * 10) as u64,
            queue_len: 3,
            queue_dim: 2,
            queue_ptr: 1,
            config_hash: "abc".into(),
            seed: 7,
            loss_mean: Some(1.5),
            knn_top1: Some(0.5),
            best_knn_top1: Some(0.5),
            best_epoch: Some(epoch),
            files: BTreeMap::new(),
        }
    }

    fn ck(epoch: usize) -> Checkpoint {
        let t = Tensor::new(&[1f32, 2.0, epoch as f32], &Device::Cpu).unwrap();
        Checkpoint {
            master: HashMap::from([("backbone.w".into(), t.clone())]),
            key: HashMap::from([("backbone.w".into(), (t.clone() * 2.0).unwrap())]),
            optimizer: HashMap::from([("buf.backbone.w".into(), t)]),
            queue: vec![0.5; 6],
            state: state(epoch),
        }
    }

    #[test]
    fn save_load_round_trip_and_pointers() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("checkpoints");
        assert_eq!(pointer(&dir, "latest").unwrap(), None);
        let p = save(&dir, &ck(1), true).unwrap();
        save(&dir, &ck(2), false).unwrap();
        assert_eq!(
            pointer(&dir, "latest").unwrap(),
            Some(dir.join("epoch-0002"))
        );
        assert_eq!(pointer(&dir, "best").unwrap(), Some(p));
        let mut back = load(&dir.join("epoch-0002"), &Device::Cpu).unwrap();
        assert_eq!(
            back.state.files.keys().collect::<Vec<_>>(),
            [
                "key.safetensors",
                "master.safetensors",
                "optimizer.safetensors",
                "queue.safetensors"
            ]
        );
        back.state.files.clear();
        assert_eq!(back.state, state(2));
        assert_eq!(back.queue, vec![0.5; 6]);
        assert_eq!(
            back.key["backbone.w"].to_vec1::<f32>().unwrap(),
            vec![2.0, 4.0, 4.0]
        );
        assert_eq!(list(&dir).unwrap(), vec![1, 2]);
    }

    #[test]
    fn an_interrupted_save_leaves_latest_loadable() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        save(&dir, &ck(1), true).unwrap();
        // Simulate a kill in the middle of writing epoch 2: a half-written temporary directory.
        let tmp = dir.join(".tmp-epoch-0002-99999");
        fs::create_dir_all(&tmp).unwrap();
        fs::write(tmp.join("master.safetensors"), b"garbage").unwrap();
        let latest = pointer(&dir, "latest").unwrap().unwrap();
        assert_eq!(load(&latest, &Device::Cpu).unwrap().state.epoch, 1);
        assert_eq!(list(&dir).unwrap(), vec![1]);
        prune(&dir, 3).unwrap();
        assert!(!tmp.exists());
    }

    #[test]
    fn pruning_keeps_the_last_n_and_the_best() {
        assert_eq!(to_prune(&[1, 2, 3, 4, 5], 2, Some(2), Some(5)), vec![1, 3]);
        assert_eq!(to_prune(&[1, 2], 3, None, None), Vec::<usize>::new());
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        for e in 1..=4 {
            save(&dir, &ck(e), e == 2).unwrap();
        }
        prune(&dir, 1).unwrap();
        assert_eq!(list(&dir).unwrap(), vec![2, 4]);
    }

    #[test]
    fn corrupt_or_missing_files_are_errors_not_panics() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        let p = save(&dir, &ck(1), false).unwrap();
        fs::write(p.join("state.json"), b"{").unwrap();
        assert!(matches!(
            load(&p, &Device::Cpu),
            Err(Error::Checkpoint { .. })
        ));
        fs::write(dir.join("latest"), b"../etc\n").unwrap();
        assert!(pointer(&dir, "latest").is_err());
        let p = save(&dir, &ck(2), false).unwrap();
        fs::remove_file(p.join("key.safetensors")).unwrap();
        assert!(matches!(load(&p, &Device::Cpu), Err(Error::Damaged { .. })));
    }

    #[test]
    fn a_damaged_checkpoint_file_is_named_with_the_earlier_intact_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        save(&dir, &ck(1), false).unwrap();
        save(&dir, &ck(2), false).unwrap();
        let p = save(&dir, &ck(3), false).unwrap();
        // Truncate master.safetensors of the newest checkpoint.
        let m = p.join("master.safetensors");
        let bytes = fs::read(&m).unwrap();
        fs::write(&m, &bytes[..bytes.len() / 2]).unwrap();
        let e = load(&p, &Device::Cpu).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("epoch-0003/master.safetensors")
                && text.contains(&format!("size {} bytes", bytes.len() / 2))
                && text.contains(&format!("{} bytes were written", bytes.len()))
                && text.contains("--resume-from epoch-0002"),
            "{text}"
        );
        // Same size, other bytes: the SHA-256 differs. Epoch 2 damaged too: epoch 1 is named.
        let k = dir.join("epoch-0002/key.safetensors");
        let mut kb = fs::read(&k).unwrap();
        let last = kb.len() - 1;
        kb[last] ^= 0xff;
        fs::write(&k, &kb).unwrap();
        let text = load(&p, &Device::Cpu).unwrap_err().to_string();
        assert!(text.contains("--resume-from epoch-0001"), "{text}");
        let text = load(&dir.join("epoch-0002"), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("epoch-0002/key.safetensors") && text.contains("SHA-256"),
            "{text}"
        );
        fs::remove_dir_all(dir.join("epoch-0001")).unwrap();
        let text = load(&p, &Device::Cpu).unwrap_err().to_string();
        assert!(text.contains("no earlier checkpoint is intact"), "{text}");
    }
}
