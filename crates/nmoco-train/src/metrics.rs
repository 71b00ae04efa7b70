//! `metrics.jsonl`: one JSON object per line, per step and per epoch.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, io_err};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// After every optimizer step.
    Step {
        epoch: usize,
        /// Global step, 1-based (the number of steps completed).
        step: usize,
        loss: f64,
        lr: f64,
        momentum: f64,
        grad_norm: f64,
        samples_per_s: f64,
        elapsed_s: f64,
    },
    /// After every epoch (and once before training, `epoch = 0`, for the kNN baseline).
    Epoch {
        epoch: usize,
        step: usize,
        loss_mean: Option<f64>,
        knn_top1: Option<f64>,
        lr: f64,
        samples_per_s: Option<f64>,
        elapsed_s: f64,
    },
}

impl Record {
    pub fn step(&self) -> usize {
        match self {
            Record::Step { step, .. } | Record::Epoch { step, .. } => *step,
        }
    }
}

/// Appends records to a metrics file, flushing each line.
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Open `path` for appending, creating it.
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn write(&mut self, r: &Record) -> Result<()> {
        let mut line = serde_json::to_string(r).map_err(|e| Error::Checkpoint {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(io_err(&self.path))?;
        self.file.flush().map_err(io_err(&self.path))
    }
}

/// Read every record of a metrics file (a missing file reads as empty; a torn last line, from a
/// process killed mid-write, is skipped).
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: e,
            });
        }
    };
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line.map_err(io_err(path))?;
        if let Ok(r) = serde_json::from_str::<Record>(&line) {
            out.push(r);
        }
    }
    Ok(out)
}

/// Keep only the records up to global step `step` (inclusive), rewriting the file atomically.
/// Used on resume so the metrics of a killed partial epoch are not duplicated.
pub fn truncate_after(path: &Path, step: usize, epoch: usize) -> Result<()> {
    let keep: Vec<Record> = read(path)?
        .into_iter()
        .filter(|r| match r {
            Record::Step { step: s, .. } => *s <= step,
            Record::Epoch { epoch: e, .. } => *e <= epoch,
        })
        .collect();
    let mut buf = String::new();
    for r in &keep {
        buf.push_str(&serde_json::to_string(r).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?);
        buf.push('\n');
    }
    crate::checkpoint::write_atomic(path, buf.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(s: usize) -> Record {
        Record::Step {
            epoch: 1,
            step: s,
            loss: 1.0,
            lr: 0.1,
            momentum: 0.99,
            grad_norm: 1.0,
            samples_per_s: 3.0,
            elapsed_s: 1.0,
        }
    }

    #[test]
    fn write_read_truncate() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("metrics.jsonl");
        let mut w = MetricsWriter::open(&p).unwrap();
        for s in 1..=4 {
            w.write(&step(s)).unwrap();
        }
        w.write(&Record::Epoch {
            epoch: 1,
            step: 4,
            loss_mean: Some(1.0),
            knn_top1: Some(0.3),
            lr: 0.1,
            samples_per_s: None,
            elapsed_s: 2.0,
        })
        .unwrap();
        w.write(&step(5)).unwrap();
        drop(w);
        // A torn line at the end is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"kind\":\"st")
            .unwrap();
        assert_eq!(read(&p).unwrap().len(), 6);
        truncate_after(&p, 4, 1).unwrap();
        let r = read(&p).unwrap();
        assert_eq!(r.len(), 5);
        assert_eq!(r.last().unwrap().step(), 4);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.lines().next().unwrap().contains("\"kind\":\"step\""));
    }
}
