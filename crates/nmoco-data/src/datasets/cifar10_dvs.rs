//! CIFAR10-DVS: 10 class folders of `cifar10_<class>_<n>.aedat` AEDAT 2.0 files recorded
//! with a DVS128, split per class by SpikingJelly's or TEBN's rule.

use std::path::Path;

use nmoco_events::{Aedat2Layout, Dvs128Polarity, Events, Format, ReadOptions, SensorSize};

use super::{Conventions, DatasetSpec};
use crate::config::{CifarSplit, DataConfig, DatasetKind};
use crate::error::Error;
use crate::index::{Entry, Index, IndexOptions, Published, files_with_ext, list_dir, pick, sample};
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

pub(crate) struct Cifar10Dvs;

impl DatasetSpec for Cifar10Dvs {
    fn name(&self) -> &'static str {
        "cifar10_dvs"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["cifar10dvs", "cifar10", "cifardvs"]
    }

    fn expected_layout(&self) -> &'static str {
        "a folder with the 10 class folders airplane, automobile, ..., truck, each holding \
         cifar10_<class>_<n>.aedat AEDAT 2.0 files"
    }

    fn index(&self, root: &Path, opts: &IndexOptions) -> Result<Index, Error> {
        index_cifar(root, opts)
    }

    fn published(&self) -> Option<Published> {
        Some(Published {
            classes: 10,
            files: 10_000,
            train: Some(9_000),
            test: Some(1_000),
        })
    }

    fn conventions(&self, cfg: &DataConfig) -> Conventions {
        Conventions {
            cifar_flip: cfg.cifar_flip,
            ..Conventions::default()
        }
    }

    // SpikingJelly reads every word of a CIFAR10-DVS file with the DVS128 masks.
    fn read_options(&self, conv: Conventions) -> ReadOptions {
        ReadOptions {
            format: Some(Format::Aedat2),
            aedat2_layout: Aedat2Layout::Dvs128,
            dvs128_polarity: Dvs128Polarity::Bit0On,
            keep_special: conv.cifar_flip,
            ..Default::default()
        }
    }

    fn after_read(&self, ev: &mut Events, conv: Conventions) {
        if conv.cifar_flip {
            cifar_flip(ev);
        }
    }
}

/// SpikingJelly's CIFAR10-DVS convention from the raw jAER fields that nmoco-events returns
/// (`x = X`, `y = Y`, `on = bit0`): `x' = 127 − Y`, `y' = 127 − X`, `p' = 1 − bit0`, i.e.
/// `on' = !on` (channel 0 of the frames holds `p' = 0`).
pub fn cifar_flip(ev: &mut Events) {
    for i in 0..ev.t.len() {
        let (x, y) = (ev.x[i], ev.y[i]);
        ev.x[i] = 127u16.saturating_sub(y);
        ev.y[i] = 127u16.saturating_sub(x);
        ev.on[i] = !ev.on[i];
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_matches_spikingjelly_formula() {
        // Raw X = 3, Y = 10, bit0 = 1 → SpikingJelly x = 127 − 10, y = 127 − 3, p = 0 (OFF).
        let mut ev = Events {
            t: vec![0, 1],
            x: vec![3, 127],
            y: vec![10, 0],
            on: vec![true, false],
        };
        cifar_flip(&mut ev);
        assert_eq!(ev.x, vec![117, 127]);
        assert_eq!(ev.y, vec![124, 0]);
        assert_eq!(ev.on, vec![false, true]);
    }
}
