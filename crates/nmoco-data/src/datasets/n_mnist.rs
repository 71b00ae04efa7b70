//! N-MNIST: `Train/` and `Test/`, each with class folders `0`–`9` of ATIS `.bin` files, 34×34.

use std::path::Path;

use nmoco_events::{Format, ReadOptions, SensorSize};

use super::{Conventions, DatasetSpec};
use crate::config::{DataConfig, DatasetKind};
use crate::error::Error;
use crate::index::{Index, IndexOptions, Published, Sample, files_with_ext, sample};

pub(crate) struct NMnist;

impl DatasetSpec for NMnist {
    fn name(&self) -> &'static str {
        "n_mnist"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["nmnist"]
    }

    fn expected_layout(&self) -> &'static str {
        "a folder with Train/ and Test/, each holding class folders 0-9 of .bin files"
    }

    fn index(&self, root: &Path, _opts: &IndexOptions) -> Result<Index, Error> {
        index_nmnist(root, self.expected_layout())
    }

    fn literature_defaults(&self, cfg: &mut DataConfig) {
        cfg.frames.height = 34;
        cfg.frames.width = 34;
        cfg.augment.translate_px = 3;
    }

    fn published(&self) -> Option<Published> {
        Some(Published {
            classes: 10,
            files: 70_000,
            train: Some(60_000),
            test: Some(10_000),
        })
    }

    fn read_options(&self, _conv: Conventions) -> ReadOptions {
        ReadOptions {
            format: Some(Format::NBin),
            ..Default::default()
        }
    }
}

fn index_nmnist(root: &Path, layout: &str) -> Result<Index, Error> {
    let mut splits: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
    for (si, sub) in ["Train", "Test"].iter().enumerate() {
        let dir = root.join(sub);
        if !dir.is_dir() {
            return Err(Error::Layout {
                path: dir,
                expected: layout.into(),
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
