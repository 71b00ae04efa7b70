//! From an indexed sample to frames: decode with the dataset's reader options, apply the
//! dataset's coordinate conventions, cut the segment, integrate.

use std::path::Path;

use nmoco_events::{Events, SensorSize};
use nmoco_frames::{FrameConfig, Frames};

use crate::config::DataConfig;
use crate::datasets::{Conventions, DatasetSpec, spec};
use crate::error::Error;
use crate::gesture::{LabelRow, cut_segment};
use crate::index::Sample;

/// Decoder settings and coordinate conventions of one dataset, as the loader applies them.
#[derive(Clone)]
pub(crate) struct Decoding {
    spec: &'static dyn DatasetSpec,
    conv: Conventions,
}

impl std::fmt::Debug for Decoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoding")
            .field("dataset", &self.spec.name())
            .field("conventions", &self.conv)
            .finish()
    }
}

impl Decoding {
    pub fn new(cfg: &DataConfig) -> Self {
        let spec = spec(&cfg.dataset);
        Self {
            spec,
            conv: spec.conventions(cfg),
        }
    }

    /// The decode-relevant settings, for the cache hash.
    pub fn hash_value(&self) -> serde_json::Value {
        serde_json::json!({
            "dataset": self.spec.name(),
            "cifar_flip": self.conv.cifar_flip,
            "ncaltech_shift_to_zero": self.conv.shift_to_zero,
        })
    }

    /// Decode a whole file and apply whole-file conventions (the CIFAR10-DVS flip).
    pub fn read(&self, path: &Path) -> Result<Events, Error> {
        let rec = nmoco_events::read_file_with(path, &self.spec.read_options(self.conv)).map_err(
            |source| Error::Decode {
                path: path.to_path_buf(),
                source,
            },
        )?;
        let mut ev = rec.events;
        self.spec.after_read(&mut ev, self.conv);
        Ok(ev)
    }

    /// The events of one sample of a decoded file: the segment cut, then the per-sample
    /// conventions (the N-Caltech101 shift when enabled).
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
        self.spec.after_cut(&mut ev, self.conv);
        ev
    }
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
    use crate::config::DatasetKind;

    /// The cache folder name hashes this value: it must not change for an unchanged config.
    #[test]
    fn hash_value_is_stable() {
        let v = |dataset, cifar_flip, ncaltech_shift_to_zero| {
            Decoding::new(&DataConfig {
                dataset,
                cifar_flip,
                ncaltech_shift_to_zero,
                ..DataConfig::default()
            })
            .hash_value()
            .to_string()
        };
        assert_eq!(
            v(DatasetKind::Cifar10Dvs, true, true),
            r#"{"cifar_flip":true,"dataset":"cifar10_dvs","ncaltech_shift_to_zero":false}"#
        );
        assert_eq!(
            v(DatasetKind::NCaltech101, true, true),
            r#"{"cifar_flip":false,"dataset":"n_caltech101","ncaltech_shift_to_zero":true}"#
        );
        assert_eq!(
            v(DatasetKind::Synthetic, true, false),
            r#"{"cifar_flip":false,"dataset":"synthetic","ncaltech_shift_to_zero":false}"#
        );
    }
}
