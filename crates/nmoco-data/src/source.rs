//! From an indexed sample to frames: decode with the dataset's reader options, apply the
//! dataset's coordinate conventions, cut the segment, integrate.

use std::path::Path;

use nmoco_events::{Dvs128Polarity, Events, Format, ReadOptions, SensorSize};
use nmoco_frames::{FrameConfig, Frames};

use crate::config::{DataConfig, DatasetKind};
use crate::error::Error;
use crate::gesture::{LabelRow, cut_segment};
use crate::index::Sample;

/// Decoder settings and coordinate conventions of one dataset, as the loader applies them.
#[derive(Debug, Clone)]
pub(crate) struct Decoding {
    pub kind: DatasetKind,
    pub cifar_flip: bool,
    pub shift_to_zero: bool,
}

impl Decoding {
    pub fn new(cfg: &DataConfig) -> Self {
        Self {
            kind: cfg.dataset.clone(),
            cifar_flip: cfg.cifar_flip,
            shift_to_zero: cfg.ncaltech_shift_to_zero,
        }
    }

    /// The decode-relevant settings, for the cache hash.
    pub fn hash_value(&self) -> serde_json::Value {
        serde_json::json!({
            "dataset": self.kind.name(),
            "cifar_flip": self.kind == DatasetKind::Cifar10Dvs && self.cifar_flip,
            "ncaltech_shift_to_zero": self.kind == DatasetKind::NCaltech101 && self.shift_to_zero,
        })
    }

    fn read_options(&self) -> ReadOptions {
        match self.kind {
            // SpikingJelly reads every word of a CIFAR10-DVS file with the DVS128 masks.
            DatasetKind::Cifar10Dvs => ReadOptions {
                format: Some(Format::Aedat2),
                aedat2_layout: nmoco_events::Aedat2Layout::Dvs128,
                dvs128_polarity: Dvs128Polarity::Bit0On,
                keep_special: self.cifar_flip,
                ..Default::default()
            },
            // SpikingJelly's load_aedat_v3 ignores the validity bit.
            DatasetKind::Dvs128Gesture | DatasetKind::Synthetic => ReadOptions {
                format: Some(Format::Aedat31),
                keep_invalid: true,
                ..Default::default()
            },
            DatasetKind::NCaltech101 | DatasetKind::NMnist => ReadOptions {
                format: Some(Format::NBin),
                ..Default::default()
            },
        }
    }

    /// Decode a whole file and apply whole-file conventions (the CIFAR10-DVS flip).
    pub fn read(&self, path: &Path) -> Result<Events, Error> {
        let rec = nmoco_events::read_file_with(path, &self.read_options()).map_err(|source| {
            Error::Decode {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let mut ev = rec.events;
        if self.kind == DatasetKind::Cifar10Dvs && self.cifar_flip {
            cifar_flip(&mut ev);
        }
        Ok(ev)
    }

    /// The events of one sample of a decoded file: the segment cut, then the N-Caltech101
    /// shift when enabled.
    pub fn sample_events(&self, file_events: &Events, s: &Sample) -> Events {
        let mut ev = match s.segment {
            Some(seg) => cut_segment(
                file_events,
                &LabelRow {
                    class: s.label as u32 + 1,
                    start: seg.start,
                    end: seg.end,
                },
            ),
            None => file_events.clone(),
        };
        if self.kind == DatasetKind::NCaltech101 && self.shift_to_zero {
            shift_to_zero(&mut ev);
        }
        ev
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

/// tonic's `NCALTECH101`: subtract the sample's minimum x and minimum y.
pub fn shift_to_zero(ev: &mut Events) {
    let (Some(&mx), Some(&my)) = (ev.x.iter().min(), ev.y.iter().min()) else {
        return;
    };
    ev.x.iter_mut().for_each(|x| *x -= mx);
    ev.y.iter_mut().for_each(|y| *y -= my);
}

/// Integrate one sample's events, naming the file on failure.
pub fn integrate(
    ev: &Events,
    sensor: SensorSize,
    cfg: &FrameConfig,
    path: &Path,
) -> Result<Frames, Error> {
    nmoco_frames::integrate(ev, sensor, cfg).map_err(|source| Error::Frames {
        path: path.to_path_buf(),
        source,
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
