//! Indexing a dataset root laid out as the dataset ships, and applying the literature split.

use std::path::{Path, PathBuf};

use nmoco_events::SensorSize;
use serde::Serialize;

use crate::config::{CifarSplit, DatasetKind, Split};
use crate::error::{Error, io_err};
use crate::gesture::{self, GESTURE_CLASSES};
use crate::split::{split_per_class, split_tebn};

/// CIFAR10-DVS class folders, in sorted (= label) order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The N-Caltech101 background class folder.
pub const NCALTECH_BACKGROUND: &str = "BACKGROUND_Google";

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
    match kind {
        DatasetKind::Cifar10Dvs => index_cifar(root, opts),
        DatasetKind::Dvs128Gesture => index_gesture(kind, root),
        DatasetKind::Synthetic => index_gesture(kind, root),
        DatasetKind::NCaltech101 => index_ncaltech(root, opts),
        DatasetKind::NMnist => index_nmnist(root),
    }
}

/// A one-line description of the layout a dataset root must have.
pub fn expected_layout(kind: &DatasetKind) -> &'static str {
    match kind {
        DatasetKind::Cifar10Dvs => {
            "a folder with the 10 class folders airplane, automobile, ..., truck, each holding \
             cifar10_<class>_<n>.aedat AEDAT 2.0 files"
        }
        DatasetKind::Dvs128Gesture => {
            "the DvsGesture folder: user*_*.aedat AEDAT 3.1 files, their *_labels.csv files, \
             trials_to_train.txt and trials_to_test.txt"
        }
        DatasetKind::Synthetic => {
            "a folder written by nmoco-synth in the DVS128 Gesture layout: *.aedat files, \
             *_labels.csv, trials_to_train.txt and trials_to_test.txt"
        }
        DatasetKind::NCaltech101 => {
            "the Caltech101 folder: one folder per class (100 object classes and \
             BACKGROUND_Google) holding image_NNNN.bin files"
        }
        DatasetKind::NMnist => {
            "a folder with Train/ and Test/, each holding class folders 0-9 of .bin files"
        }
    }
}

struct Entry {
    name: String,
    path: PathBuf,
    is_dir: bool,
    len: u64,
}

/// Non-hidden entries of a folder, sorted by name as Python's `sorted()` sorts `str`
/// (code-point order, which is byte order of UTF-8).
fn list_dir(dir: &Path) -> Result<Vec<Entry>, Error> {
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

fn files_with_ext(dir: &Path, ext: &str) -> Result<Vec<Entry>, Error> {
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

fn sample(root: &Path, e: &Entry, label: usize, segment: Option<Segment>) -> Sample {
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

fn pick(all: &[Sample], pos: &[usize]) -> Vec<Sample> {
    pos.iter().map(|&i| all[i].clone()).collect()
}

/// The numeric suffix of `cifar10_<class>_<n>.aedat`.
fn cifar_number(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".aedat")?;
    stem.rsplit('_').next()?.parse().ok()
}

fn index_cifar(root: &Path, opts: &IndexOptions) -> Result<Index, Error> {
    let dirs: Vec<Entry> = list_dir(root)?.into_iter().filter(|e| e.is_dir).collect();
    let names: Vec<&str> = dirs.iter().map(|e| e.name.as_str()).collect();
    if names != CIFAR10_CLASSES {
        return Err(Error::Layout {
            path: root.to_path_buf(),
            expected: format!("exactly the 10 class folders {CIFAR10_CLASSES:?}, found {names:?}"),
        });
    }
    let mut all = Vec::new();
    let mut numbers = Vec::new();
    for (label, d) in dirs.iter().enumerate() {
        let files = files_with_ext(&d.path, ".aedat")?;
        if files.is_empty() {
            return Err(Error::Layout {
                path: d.path.clone(),
                expected: "cifar10_<class>_<n>.aedat files in every class folder".into(),
            });
        }
        for f in &files {
            let n = cifar_number(&f.name);
            if n.is_none() && opts.cifar_split == CifarSplit::Tebn {
                return Err(Error::Layout {
                    path: f.path.clone(),
                    expected: "a file name ending in _<number>.aedat (the TEBN split orders files by that number)".into(),
                });
            }
            numbers.push(n.unwrap_or(u64::MAX));
            all.push(sample(root, f, label, None));
        }
    }
    let labels: Vec<usize> = all.iter().map(|s| s.label).collect();
    let (tr, te) = match opts.cifar_split {
        CifarSplit::SpikingJelly => split_per_class(&labels, 10, opts.train_ratio),
        CifarSplit::Tebn => split_tebn(&labels, &numbers, 10, opts.train_ratio),
    };
    Ok(Index {
        kind: DatasetKind::Cifar10Dvs,
        data_root: root.to_path_buf(),
        class_names: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
        sensor: SensorSize {
            width: 128,
            height: 128,
        },
        files: all.len(),
        train: pick(&all, &tr),
        test: pick(&all, &te),
    })
}

/// Class names from `gesture_mapping.csv` (`action,label` rows, labels 1-based), as DVS128
/// Gesture ships it and nmoco-synth writes it. `None` when the file is absent.
fn read_gesture_mapping(root: &Path) -> Result<Option<Vec<String>>, Error> {
    let p = root.join("gesture_mapping.csv");
    if !p.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
    let mut named: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.rsplitn(2, ',');
        let (Some(label), Some(name)) = (parts.next(), parts.next()) else {
            return Err(Error::Labels {
                path: p,
                line: i + 1,
                reason: "expected `action,label`".into(),
            });
        };
        match label.trim().parse::<usize>() {
            Ok(l) if l >= 1 => named.push((l - 1, name.trim().to_string())),
            _ if i == 0 => continue,
            _ => {
                return Err(Error::Labels {
                    path: p,
                    line: i + 1,
                    reason: format!("label {label:?} is not a positive integer"),
                });
            }
        }
    }
    let n = named.iter().map(|(l, _)| l + 1).max().unwrap_or(0);
    let mut names: Vec<String> = (0..n).map(|k| format!("class_{k}")).collect();
    for (l, name) in named {
        names[l] = name;
    }
    Ok(Some(names))
}

/// The sensor size stated in a recording's header (nmoco-synth writes `#Sensor-Size:`).
fn recording_sensor(path: &Path) -> Option<SensorSize> {
    let f = std::fs::File::open(path).ok()?;
    let opts = nmoco_events::ReadOptions {
        format: Some(nmoco_events::Format::Aedat31),
        chunk_events: 1,
        ..Default::default()
    };
    let mut r = nmoco_events::Reader::new(std::io::BufReader::new(f), &opts).ok()?;
    if r.sensor().is_none() {
        let mut ev = nmoco_events::Events::new();
        r.read_chunk(&mut ev).ok()?;
    }
    r.sensor()
}

fn index_gesture(kind: &DatasetKind, root: &Path) -> Result<Index, Error> {
    let data_root = if !root.join("trials_to_train.txt").is_file()
        && root
            .join("DvsGesture")
            .join("trials_to_train.txt")
            .is_file()
    {
        root.join("DvsGesture")
    } else {
        root.to_path_buf()
    };
    let mut per_split: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
    let mut max_class = 0u32;
    let mut files = 0usize;
    for (si, list) in ["trials_to_train.txt", "trials_to_test.txt"]
        .iter()
        .enumerate()
    {
        let lp = data_root.join(list);
        if !lp.is_file() {
            return Err(Error::Layout {
                path: lp,
                expected: expected_layout(kind).to_string(),
            });
        }
        let text = std::fs::read_to_string(&lp).map_err(io_err(&lp))?;
        for name in gesture::parse_trials(&text, &lp)? {
            let rec = data_root.join(&name);
            let md = std::fs::metadata(&rec).map_err(|_| Error::Layout {
                path: rec.clone(),
                expected: format!("the recording listed in {}", lp.display()),
            })?;
            let csv = data_root.join(gesture::labels_name(&name));
            if !csv.is_file() {
                return Err(Error::Layout {
                    path: csv,
                    expected: format!("the labels file of {name}"),
                });
            }
            files += 1;
            let entry = Entry {
                name: name.clone(),
                path: rec,
                is_dir: false,
                len: md.len(),
            };
            for (row, r) in gesture::read_labels_csv(&csv)?.iter().enumerate() {
                if *kind == DatasetKind::Dvs128Gesture && r.class as usize > GESTURE_CLASSES.len() {
                    return Err(Error::Labels {
                        path: csv.clone(),
                        line: row + 2,
                        reason: format!("class {} is outside 1..=11", r.class),
                    });
                }
                max_class = max_class.max(r.class);
                let seg = Segment {
                    row,
                    start: r.start,
                    end: r.end,
                };
                per_split[si].push(sample(&data_root, &entry, r.label(), Some(seg)));
            }
        }
    }
    let [train, test] = per_split;
    let (class_names, sensor) = if *kind == DatasetKind::Dvs128Gesture {
        (
            GESTURE_CLASSES.iter().map(|s| s.to_string()).collect(),
            SensorSize {
                width: 128,
                height: 128,
            },
        )
    } else {
        let names = read_gesture_mapping(&data_root)?.unwrap_or_else(|| {
            (0..max_class as usize)
                .map(|k| format!("class_{k}"))
                .collect()
        });
        if (max_class as usize) > names.len() {
            return Err(Error::Layout {
                path: data_root.join("gesture_mapping.csv"),
                expected: format!(
                    "a mapping covering every class in the labels files ({} classes listed, class {max_class} used)",
                    names.len()
                ),
            });
        }
        let sensor = train
            .iter()
            .chain(test.iter())
            .next()
            .and_then(|s| recording_sensor(&s.path))
            .unwrap_or(SensorSize {
                width: 128,
                height: 128,
            });
        (names, sensor)
    };
    Ok(Index {
        kind: kind.clone(),
        data_root,
        class_names,
        sensor,
        files,
        train,
        test,
    })
}

fn index_ncaltech(root: &Path, opts: &IndexOptions) -> Result<Index, Error> {
    // The archive extracts to `Caltech101/` (next to `Caltech101_annotations/`): accept its
    // parent as the root too.
    let data_root = if root.join("Caltech101").is_dir()
        && !root.join(NCALTECH_BACKGROUND).is_dir()
        && !root.join("Faces_easy").is_dir()
    {
        root.join("Caltech101")
    } else {
        root.to_path_buf()
    };
    let mut dirs: Vec<Entry> = list_dir(&data_root)?
        .into_iter()
        .filter(|e| e.is_dir)
        .collect();
    if opts.ncaltech_include_background && !dirs.iter().any(|d| d.name == NCALTECH_BACKGROUND) {
        return Err(Error::Layout {
            path: data_root.join(NCALTECH_BACKGROUND),
            expected:
                "the BACKGROUND_Google class folder (or set ncaltech_include_background = false)"
                    .into(),
        });
    }
    if !opts.ncaltech_include_background {
        dirs.retain(|d| d.name != NCALTECH_BACKGROUND);
    }
    if dirs.is_empty() {
        return Err(Error::Layout {
            path: data_root,
            expected: expected_layout(&DatasetKind::NCaltech101).into(),
        });
    }
    let mut all = Vec::new();
    for (label, d) in dirs.iter().enumerate() {
        let files = files_with_ext(&d.path, ".bin")?;
        if files.is_empty() {
            return Err(Error::Layout {
                path: d.path.clone(),
                expected: ".bin files in every class folder".into(),
            });
        }
        for f in &files {
            all.push(sample(&data_root, f, label, None));
        }
    }
    let labels: Vec<usize> = all.iter().map(|s| s.label).collect();
    let (tr, te) = split_per_class(&labels, dirs.len(), opts.train_ratio);
    Ok(Index {
        kind: DatasetKind::NCaltech101,
        data_root,
        class_names: dirs.iter().map(|d| d.name.clone()).collect(),
        // SpikingJelly's get_H_W: raw coordinates into H × W = 180 × 240.
        sensor: SensorSize {
            width: 240,
            height: 180,
        },
        files: all.len(),
        train: pick(&all, &tr),
        test: pick(&all, &te),
    })
}

fn index_nmnist(root: &Path) -> Result<Index, Error> {
    let mut splits: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
    for (si, sub) in ["Train", "Test"].iter().enumerate() {
        let dir = root.join(sub);
        if !dir.is_dir() {
            return Err(Error::Layout {
                path: dir,
                expected: expected_layout(&DatasetKind::NMnist).into(),
            });
        }
        for digit in 0..10usize {
            let cd = dir.join(digit.to_string());
            if !cd.is_dir() {
                return Err(Error::Layout {
                    path: cd,
                    expected: "class folders 0 to 9".into(),
                });
            }
            for f in files_with_ext(&cd, ".bin")? {
                splits[si].push(sample(root, &f, digit, None));
            }
        }
    }
    let [train, test] = splits;
    Ok(Index {
        kind: DatasetKind::NMnist,
        data_root: root.to_path_buf(),
        class_names: (0..10).map(|d| d.to_string()).collect(),
        sensor: SensorSize {
            width: 34,
            height: 34,
        },
        files: train.len() + test.len(),
        train,
        test,
    })
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
    match kind {
        DatasetKind::Cifar10Dvs => Some(Published {
            classes: 10,
            files: 10_000,
            train: Some(9_000),
            test: Some(1_000),
        }),
        DatasetKind::Dvs128Gesture => Some(Published {
            classes: 11,
            files: 122,
            train: Some(1_176),
            test: Some(288),
        }),
        DatasetKind::NCaltech101 => Some(Published {
            classes: 101,
            files: 8_709,
            train: None,
            test: None,
        }),
        DatasetKind::NMnist => Some(Published {
            classes: 10,
            files: 70_000,
            train: Some(60_000),
            test: Some(10_000),
        }),
        DatasetKind::Synthetic => None,
    }
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
