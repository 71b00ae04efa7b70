//! One module per dataset, each a [`DatasetSpec`]: its names, the layout its root must have,
//! how it is indexed and split, how its files are decoded, the literature's frame settings and
//! its published sizes. [`spec`] is the one place that maps a [`DatasetKind`] to its module;
//! the rest of the crate asks the spec instead of matching on the kind.

use std::path::Path;

use nmoco_events::{Events, ReadOptions};

use crate::config::{DataConfig, DatasetKind};
use crate::error::Error;
use crate::index::{Index, IndexOptions, Published};

pub mod cifar10_dvs;
pub mod dvs128_gesture;
pub mod n_caltech101;
pub mod n_mnist;
pub mod synthetic;

/// The decode-time conventions of a dataset that its options switch on, resolved for one
/// config (a convention that does not belong to the dataset is always off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Conventions {
    /// SpikingJelly's CIFAR10-DVS orientation and polarity ([`cifar10_dvs::cifar_flip`]).
    pub cifar_flip: bool,
    /// tonic's N-Caltech101 shift to zero ([`n_caltech101::shift_to_zero`]).
    pub shift_to_zero: bool,
}

/// Everything that differs between datasets.
pub(crate) trait DatasetSpec: Sync {
    /// The snake_case name used in configs and cache folder names.
    fn name(&self) -> &'static str;

    /// Spellings [`DatasetKind::parse`] accepts, lower-case ASCII letters and digits only
    /// (the name with its underscores removed among them).
    fn aliases(&self) -> &'static [&'static str];

    /// A one-line description of the layout a root must have.
    fn expected_layout(&self) -> &'static str;

    /// Index an existing folder `root` and apply the dataset's train/test split.
    fn index(&self, root: &Path, opts: &IndexOptions) -> Result<Index, Error>;

    /// The literature's frame and augmentation settings, applied to a default config.
    fn literature_defaults(&self, _cfg: &mut DataConfig) {}

    /// Whether mirroring a sample left/right turns it into another class (horizontal flips
    /// then break labels).
    fn mirror_changes_class(&self) -> bool {
        false
    }

    /// The published sizes with default options, if the dataset has them.
    fn published(&self) -> Option<Published> {
        None
    }

    /// Which of the dataset's conventions `cfg` switches on.
    fn conventions(&self, _cfg: &DataConfig) -> Conventions {
        Conventions::default()
    }

    /// The decoder settings for the dataset's event files.
    fn read_options(&self, conv: Conventions) -> ReadOptions;

    /// Conventions applied to a whole decoded file.
    fn after_read(&self, _ev: &mut Events, _conv: Conventions) {}

    /// Conventions applied to one sample's events after its segment is cut.
    fn after_cut(&self, _ev: &mut Events, _conv: Conventions) {}
}

/// The module of `kind`.
pub(crate) fn spec(kind: &DatasetKind) -> &'static dyn DatasetSpec {
    match kind {
        DatasetKind::Cifar10Dvs => &cifar10_dvs::Cifar10Dvs,
        DatasetKind::Dvs128Gesture => &dvs128_gesture::Dvs128Gesture,
        DatasetKind::NCaltech101 => &n_caltech101::NCaltech101,
        DatasetKind::NMnist => &n_mnist::NMnist,
        DatasetKind::Synthetic => &synthetic::Synthetic,
    }
}

#[cfg(test)]
mod tests {
    use nmoco_frames::Resize;

    use super::*;

    #[test]
    fn names_and_spellings_map_back_to_their_kind() {
        let names: Vec<&str> = DatasetKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(
            names,
            [
                "cifar10_dvs",
                "dvs128_gesture",
                "n_caltech101",
                "n_mnist",
                "synthetic"
            ]
        );
        for k in DatasetKind::ALL {
            assert_eq!(DatasetKind::parse(k.name()), Some(k.clone()));
            for a in spec(&k).aliases() {
                assert_eq!(DatasetKind::parse(a), Some(k.clone()), "{a}");
            }
        }
        for (s, k) in [
            ("cifar10-dvs", DatasetKind::Cifar10Dvs),
            ("DVS128-Gesture", DatasetKind::Dvs128Gesture),
            ("gesture", DatasetKind::Dvs128Gesture),
            ("ncaltech101", DatasetKind::NCaltech101),
            ("nmnist", DatasetKind::NMnist),
            ("synth", DatasetKind::Synthetic),
        ] {
            assert_eq!(DatasetKind::parse(s), Some(k), "{s}");
        }
        assert_eq!(DatasetKind::parse("mnist"), None);
    }

    #[test]
    fn literature_defaults_per_dataset() {
        let d = |k| DataConfig::for_dataset(k, "/r");
        let c = d(DatasetKind::Cifar10Dvs);
        assert!(c.augment.hflip);
        assert_eq!((c.frames.height, c.frames.width), (128, 128));
        assert_eq!(c.frames.resize, DataConfig::default().frames.resize);
        assert_eq!(d(DatasetKind::NCaltech101).frames.resize, Resize::Pool);
        let m = d(DatasetKind::NMnist);
        assert_eq!((m.frames.height, m.frames.width), (34, 34));
        assert_eq!(m.augment.translate_px, 3);
        for k in [DatasetKind::Dvs128Gesture, DatasetKind::Synthetic] {
            assert!(!d(k.clone()).augment.hflip);
            assert!(spec(&k).mirror_changes_class());
        }
        assert!(!spec(&DatasetKind::NMnist).mirror_changes_class());
    }

    #[test]
    fn conventions_belong_to_their_dataset() {
        let cfg = |k| DataConfig {
            dataset: k,
            cifar_flip: true,
            ncaltech_shift_to_zero: true,
            ..DataConfig::default()
        };
        let conv = |k: DatasetKind| spec(&k).conventions(&cfg(k.clone()));
        assert_eq!(
            conv(DatasetKind::Cifar10Dvs),
            Conventions {
                cifar_flip: true,
                shift_to_zero: false
            }
        );
        assert_eq!(
            conv(DatasetKind::NCaltech101),
            Conventions {
                cifar_flip: false,
                shift_to_zero: true
            }
        );
        for k in [
            DatasetKind::Dvs128Gesture,
            DatasetKind::NMnist,
            DatasetKind::Synthetic,
        ] {
            assert_eq!(conv(k), Conventions::default());
        }
    }
}
