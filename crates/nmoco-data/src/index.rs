//! Indexing a dataset root laid out as the dataset ships, and applying the literature split.

use std::path::{Path, PathBuf};

use nmoco_events::SensorSize;
use serde::Serialize;

use crate::config::{CifarSplit, DatasetKind, Split};
use crate::datasets::spec;
use crate::error::{Error, io_err};

/// A labelled time window of a recording (DVS128 Gesture layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// Row of the labels CSV (0-based, header excluded).
    pub row: usize,
    /// Inclusive start, µs.
    pub start: i64,
    /// Exclusive end, µs.
    pub end: i64,
}

/// One sample: a file (or a segment of one) and its label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Absolute (root-joined) path of the event file.
    pub path: PathBuf,
    /// Path relative to the data root, `/`-separated; part of the cache key.
    pub rel: String,
    pub label: usize,
    pub segment: Option<Segment>,
    /// Size of the event file in bytes when indexed; part of the cache key.
    pub source_len: u64,
}

/// Options that change which samples exist or where they go.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexOptions {
    pub cifar_split: CifarSplit,
    pub train_ratio: f64,
    pub ncaltech_include_background: bool,
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self {
            cifar_split: CifarSplit::SpikingJelly,
            train_ratio: 0.9,
            ncaltech_include_background: true,
        }
    }
}

/// A dataset root, indexed and split.
#[derive(Debug, Clone)]
pub struct Index {
    pub kind: DatasetKind,
    /// The folder that actually holds the data (the given root, or a known sub-folder of it
    /// such as `DvsGesture/` or `Caltech101/`).
    pub data_root: PathBuf,
    pub class_names: Vec<String>,
    /// Size of the frames the events are integrated into (width × height).
    pub sensor: SensorSize,
    /// Number of event files found.
    pub files: usize,
    pub train: Vec<Sample>,
    pub test: Vec<Sample>,
}

impl Index {
    pub fn split(&self, split: Split) -> &[Sample] {
        match split {
            Split::Train => &self.train,
            Split::Test => &self.test,
        }
    }
}

/// Index `root` as a dataset of kind `kind`.
pub fn index_root(kind: &DatasetKind, root: &Path, opts: &IndexOptions) -> Result<Index, Error> {
    if !(opts.train_ratio > 0.0 && opts.train_ratio <= 1.0) {
        return Err(Error::Config {
            field: "train_ratio",
            reason: format!("{} is not in (0, 1]", opts.train_ratio),
        });
    }
    if !root.is_dir() {
        return Err(Error::MissingRoot {
            path: root.to_path_buf(),
            expected: expected_layout(kind).to_string(),
        });
    }
    spec(kind).index(root, opts)
}

/// A one-line description of the layout a dataset root must have.
pub fn expected_layout(kind: &DatasetKind) -> &'static str {
    spec(kind).expected_layout()
}

/// A folder entry, as [`list_dir`] returns it.
pub(crate) struct Entry {
    pub name: String,
    pub path: PathBuf,
    pub is_dir: bool,
    pub len: u64,
}

/// Non-hidden entries of a folder, sorted by name as Python's `sorted()` sorts `str`
/// (code-point order, which is byte order of UTF-8).
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<Entry>, Error> {
    let rd = std::fs::read_dir(dir).map_err(io_err(dir))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io_err(dir))?;
        let path = e.path();
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            return Err(Error::Layout {
                path,
                expected: "file names that are valid UTF-8".into(),
            });
        };
        if name.starts_with('.') {
            continue;
        }
        // Follow symlinks, as torchvision's os.walk(followlinks=True) does.
        let md = std::fs::metadata(&path).map_err(io_err(&path))?;
        out.push(Entry {
            name,
            path,
            is_dir: md.is_dir(),
            len: md.len(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub(crate) fn files_with_ext(dir: &Path, ext: &str) -> Result<Vec<Entry>, Error> {
    let mut ignored = 0usize;
    let files: Vec<Entry> = list_dir(dir)?
        .into_iter()
        .filter(|e| {
            let keep = !e.is_dir && e.name.ends_with(ext);
            if !keep {
                ignored += 1;
            }
            keep
        })
        .collect();
    if ignored > 0 {
        tracing::debug!(dir = %dir.display(), ignored, ext, "ignored entries without the expected extension");
    }
    Ok(files)
}

pub(crate) fn sample(root: &Path, e: &Entry, label: usize, segment: Option<Segment>) -> Sample {
    let rel = e
        .path
        .strip_prefix(root)
        .unwrap_or(&e.path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    Sample {
        path: e.path.clone(),
        rel,
        label,
        segment,
        source_len: e.len,
    }
}

pub(crate) fn pick(all: &[Sample], pos: &[usize]) -> Vec<Sample> {
    pos.iter().map(|&i| all[i].clone()).collect()
}

/// Published sizes of the real datasets, for `data check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Published {
    pub classes: usize,
    pub files: usize,
    pub train: Option<usize>,
    pub test: Option<usize>,
}

/// What `data check` reports about a root.
#[derive(Debug, Clone, Serialize)]
pub struct RootReport {
    pub dataset: DatasetKind,
    pub data_root: PathBuf,
    pub class_names: Vec<String>,
    pub files: usize,
    /// Samples per class in the train split.
    pub train_per_class: Vec<usize>,
    /// Samples per class in the test split.
    pub test_per_class: Vec<usize>,
    pub published: Option<Published>,
    /// Differences from the published sizes and other oddities (e.g. an empty class).
    pub warnings: Vec<String>,
}

impl RootReport {
    pub fn train_total(&self) -> usize {
        self.train_per_class.iter().sum()
    }
    pub fn test_total(&self) -> usize {
        self.test_per_class.iter().sum()
    }
}

/// The published sizes of a dataset (with default options), if it has them.
pub fn published(kind: &DatasetKind) -> Option<Published> {
    spec(kind).published()
}

/// Index a root with default options and count files and samples per class and split.
pub fn check_root(kind: &DatasetKind, root: &Path) -> Result<RootReport, Error> {
    check_root_with(kind, root, &IndexOptions::default())
}

/// [`check_root`] with explicit split options.
pub fn check_root_with(
    kind: &DatasetKind,
    root: &Path,
    opts: &IndexOptions,
) -> Result<RootReport, Error> {
    let idx = index_root(kind, root, opts)?;
    let n = idx.class_names.len();
    let count = |s: &[Sample]| {
        let mut v = vec![0usize; n];
        for x in s {
            if let Some(c) = v.get_mut(x.label) {
                *c += 1;
            }
        }
        v
    };
    let train_per_class = count(&idx.train);
    let test_per_class = count(&idx.test);
    let mut warnings = Vec::new();
    for (c, name) in idx.class_names.iter().enumerate() {
        if train_per_class[c] + test_per_class[c] == 0 {
            warnings.push(format!("class {c} ({name}) has no samples"));
        }
    }
    let pubd = published(kind);
    if let Some(p) = pubd {
        let default_opts = *opts == IndexOptions::default();
        if p.classes != n && default_opts {
            warnings.push(format!(
                "{n} classes, the published dataset has {}",
                p.classes
            ));
        }
        if p.files != idx.files {
            warnings.push(format!(
                "{} event files, the published dataset has {}",
                idx.files, p.files
            ));
        }
        if default_opts {
            let (tr, te) = (
                train_per_class.iter().sum::<usize>(),
                test_per_class.iter().sum::<usize>(),
            );
            if p.train.is_some_and(|x| x != tr) || p.test.is_some_and(|x| x != te) {
                warnings.push(format!(
                    "{tr}/{te} train/test samples, the literature split has {}/{}",
                    p.train.unwrap_or(0),
                    p.test.unwrap_or(0)
                ));
            }
        }
    }
    Ok(RootReport {
        dataset: kind.clone(),
        data_root: idx.data_root,
        class_names: idx.class_names,
        files: idx.files,
        train_per_class,
        test_per_class,
        published: pubd,
        warnings,
    })
}
