//! N-Caltech101: 101 class folders (100 object classes and `BACKGROUND_Google`) of ATIS
//! `.bin` files with raw coordinates in 180×240, split per class in folder order.

use std::path::Path;

use nmoco_events::{Events, Format, ReadOptions, SensorSize};
use nmoco_frames::Resize;

use super::{Conventions, DatasetSpec};
use crate::config::{DataConfig, DatasetKind};
use crate::error::Error;
use crate::index::{Entry, Index, IndexOptions, Published, files_with_ext, list_dir, pick, sample};
use crate::split::split_per_class;

/// The N-Caltech101 background class folder.
pub const NCALTECH_BACKGROUND: &str = "BACKGROUND_Google";

pub(crate) struct NCaltech101;

impl DatasetSpec for NCaltech101 {
    fn name(&self) -> &'static str {
        "n_caltech101"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["ncaltech101", "ncaltech", "caltech101"]
    }

    fn expected_layout(&self) -> &'static str {
        "the Caltech101 folder: one folder per class (100 object classes and \
         BACKGROUND_Google) holding image_NNNN.bin files"
    }

    fn index(&self, root: &Path, opts: &IndexOptions) -> Result<Index, Error> {
        index_ncaltech(root, opts, self.expected_layout())
    }

    fn literature_defaults(&self, cfg: &mut DataConfig) {
        cfg.frames.resize = Resize::Pool;
    }

    fn published(&self) -> Option<Published> {
        Some(Published {
            classes: 101,
            files: 8_709,
            train: None,
            test: None,
        })
    }

    fn conventions(&self, cfg: &DataConfig) -> Conventions {
        Conventions {
            shift_to_zero: cfg.ncaltech_shift_to_zero,
            ..Conventions::default()
        }
    }

    fn read_options(&self, _conv: Conventions) -> ReadOptions {
        ReadOptions {
            format: Some(Format::NBin),
            ..Default::default()
        }
    }

    fn after_cut(&self, ev: &mut Events, conv: Conventions) {
        if conv.shift_to_zero {
            shift_to_zero(ev);
        }
    }
}

/// tonic's `NCALTECH101`: subtract the sample's minimum x and minimum y.
pub fn shift_to_zero(ev: &mut Events) {
    let (Some(&mx), Some(&my)) = (ev.x.iter().min(), ev.y.iter().min()) else {
        return;
    };
    ev.x.iter_mut().for_each(|x| *x -= mx);
    ev.y.iter_mut().for_each(|y| *y -= my);
}

fn index_ncaltech(root: &Path, opts: &IndexOptions, layout: &str) -> Result<Index, Error> {
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
            expected: layout.into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_subtracts_minima() {
        let mut ev = Events {
            t: vec![0, 1, 2],
            x: vec![5, 9, 7],
            y: vec![20, 4, 8],
            on: vec![true; 3],
        };
        shift_to_zero(&mut ev);
        assert_eq!(ev.x, vec![0, 4, 2]);
        assert_eq!(ev.y, vec![16, 0, 4]);
        let mut empty = Events::new();
        shift_to_zero(&mut empty);
        assert!(empty.is_empty());
    }
}
