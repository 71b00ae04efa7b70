//! DVS128 Gesture: AEDAT 3.1 recordings listed in `trials_to_train.txt` /
//! `trials_to_test.txt`, each cut into samples by its `*_labels.csv` (file formats in
//! [`crate::gesture`]), 11 classes, 128×128. The walk over this layout is shared with the
//! synthetic set, which nmoco-synth writes in the same layout.

use std::path::{Path, PathBuf};

use nmoco_events::{Format, ReadOptions, SensorSize};

use super::{Conventions, DatasetSpec};
use crate::config::{DataConfig, DatasetKind};
use crate::error::{Error, io_err};
use crate::gesture::{self, GESTURE_CLASSES};
use crate::index::{Entry, Index, IndexOptions, Published, Sample, Segment, sample};

pub(crate) struct Dvs128Gesture;

impl DatasetSpec for Dvs128Gesture {
    fn name(&self) -> &'static str {
        "dvs128_gesture"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["dvs128gesture", "dvsgesture", "gesture", "dvs128"]
    }

    fn expected_layout(&self) -> &'static str {
        "the DvsGesture folder: user*_*.aedat AEDAT 3.1 files, their *_labels.csv files, \
         trials_to_train.txt and trials_to_test.txt"
    }

    fn index(&self, root: &Path, _opts: &IndexOptions) -> Result<Index, Error> {
        let rec = index_recordings(root, self.expected_layout(), Some(GESTURE_CLASSES.len()))?;
        Ok(Index {
            kind: DatasetKind::Dvs128Gesture,
            data_root: rec.data_root,
            class_names: GESTURE_CLASSES.iter().map(|s| s.to_string()).collect(),
            sensor: SensorSize {
                width: 128,
                height: 128,
            },
            files: rec.files,
            train: rec.train,
            test: rec.test,
        })
    }

    fn literature_defaults(&self, cfg: &mut DataConfig) {
        cfg.augment.hflip = false;
    }

    // Left/right (and clockwise/anticlockwise) motions are different classes.
    fn mirror_changes_class(&self) -> bool {
        true
    }

    fn published(&self) -> Option<Published> {
        Some(Published {
            classes: 11,
            files: 122,
            train: Some(1_176),
            test: Some(288),
        })
    }

    fn read_options(&self, _conv: Conventions) -> ReadOptions {
        read_options()
    }
}

/// SpikingJelly's load_aedat_v3 ignores the validity bit.
pub(crate) fn read_options() -> ReadOptions {
    ReadOptions {
        format: Some(Format::Aedat31),
        keep_invalid: true,
        ..Default::default()
    }
}

/// The samples of a root in the DVS128 Gesture layout.
pub(crate) struct Recordings {
    /// The given root, or its `DvsGesture/` sub-folder when the lists are there.
    pub data_root: PathBuf,
    pub train: Vec<Sample>,
    pub test: Vec<Sample>,
    /// Recordings listed.
    pub files: usize,
    /// The largest 1-based class in the labels files (0 when there are none).
    pub max_class: u32,
}

/// Walk the trials lists, check every listed recording and its labels file, and make one
/// sample per labels row. `layout` is the description a missing list is reported with;
/// `max_class`, when given, is the largest class a row may name.
pub(crate) fn index_recordings(
    root: &Path,
    layout: &str,
    max_class: Option<usize>,
) -> Result<Recordings, Error> {
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
    let mut seen_class = 0u32;
    let mut files = 0usize;
    for (si, list) in ["trials_to_train.txt", "trials_to_test.txt"]
        .iter()
        .enumerate()
    {
        let lp = data_root.join(list);
        if !lp.is_file() {
            return Err(Error::Layout {
                path: lp,
                expected: layout.to_string(),
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
                if let Some(max) = max_class
                    && r.class as usize > max
                {
                    return Err(Error::Labels {
                        path: csv.clone(),
                        line: row + 2,
                        reason: format!("class {} is outside 1..={max}", r.class),
                    });
                }
                seen_class = seen_class.max(r.class);
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
    Ok(Recordings {
        data_root,
        train,
        test,
        files,
        max_class: seen_class,
    })
}
