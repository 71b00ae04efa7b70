//! The nmoco-synth set: the DVS128 Gesture layout (read through
//! [`dvs128_gesture::index_recordings`] and the same decoder settings) with its own class
//! count, class names from `gesture_mapping.csv` and the sensor size from the recordings'
//! headers.

use std::path::Path;

use nmoco_events::{ReadOptions, SensorSize};

use super::{Conventions, DatasetSpec, dvs128_gesture};
use crate::config::{DataConfig, DatasetKind};
use crate::error::{Error, io_err};
use crate::index::{Index, IndexOptions};

pub(crate) struct Synthetic;

impl DatasetSpec for Synthetic {
    fn name(&self) -> &'static str {
        "synthetic"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["synthetic", "synth"]
    }

    fn expected_layout(&self) -> &'static str {
        "a folder written by nmoco-synth in the DVS128 Gesture layout: *.aedat files, \
         *_labels.csv, trials_to_train.txt and trials_to_test.txt"
    }

    fn index(&self, root: &Path, _opts: &IndexOptions) -> Result<Index, Error> {
        let rec = dvs128_gesture::index_recordings(root, self.expected_layout(), None)?;
        let max_class = rec.max_class;
        let names = read_gesture_mapping(&rec.data_root)?.unwrap_or_else(|| {
            (0..max_class as usize)
                .map(|k| format!("class_{k}"))
                .collect()
        });
        if (max_class as usize) > names.len() {
            return Err(Error::Layout {
                path: rec.data_root.join("gesture_mapping.csv"),
                expected: format!(
                    "a mapping covering every class in the labels files ({} classes listed, class {max_class} used)",
                    names.len()
                ),
            });
        }
        let sensor = rec
            .train
            .iter()
            .chain(rec.test.iter())
            .next()
            .and_then(|s| recording_sensor(&s.path))
            .unwrap_or(SensorSize {
                width: 128,
                height: 128,
            });
        Ok(Index {
            kind: DatasetKind::Synthetic,
            data_root: rec.data_root,
            class_names: names,
            sensor,
            files: rec.files,
            train: rec.train,
            test: rec.test,
        })
    }

    fn literature_defaults(&self, cfg: &mut DataConfig) {
        cfg.augment.hflip = false;
    }

    // The motion classes come in mirrored pairs (left/right, clockwise/anticlockwise).
    fn mirror_changes_class(&self) -> bool {
        true
    }

    fn read_options(&self, _conv: Conventions) -> ReadOptions {
        dvs128_gesture::read_options()
    }
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
    let opts = ReadOptions {
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
