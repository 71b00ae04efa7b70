//! Dataset selection and options (serde, every field defaulted).

use std::path::{Path, PathBuf};

use nmoco_frames::{AugmentConfig, FrameConfig};
use serde::{Deserialize, Serialize};

use crate::datasets::spec;

/// The supported datasets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum DatasetKind {
    /// CIFAR10-DVS: 10 class folders of AEDAT 2.0 files (DVS128), 128×128.
    Cifar10Dvs,
    /// DVS128 Gesture: AEDAT 3.1 recordings cut by their labels CSVs, 11 classes, 128×128.
    Dvs128Gesture,
    /// N-Caltech101: 101 class folders of ATIS `.bin` files, raw coordinates in 180×240.
    NCaltech101,
    /// N-MNIST: `Train/` and `Test/` with class folders 0-9 of `.bin` files, 34×34.
    NMnist,
    /// The nmoco-synth set, in the DVS128 Gesture layout with its own class count.
    #[default]
    Synthetic,
}

impl DatasetKind {
    /// The snake_case name used in configs and cache folder names.
    pub fn name(&self) -> &'static str {
        spec(self).name()
    }

    /// All kinds, in declaration order.
    pub const ALL: [DatasetKind; 5] = [
        DatasetKind::Cifar10Dvs,
        DatasetKind::Dvs128Gesture,
        DatasetKind::NCaltech101,
        DatasetKind::NMnist,
        DatasetKind::Synthetic,
    ];

    /// Parse a name: the snake_case config name, or a common spelling
    /// (`cifar10-dvs`, `dvs128-gesture`, `gesture`, `ncaltech101`, `nmnist`, `synth`).
    pub fn parse(s: &str) -> Option<DatasetKind> {
        let k: String = s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        DatasetKind::ALL
            .into_iter()
            .find(|kind| spec(kind).aliases().contains(&k.as_str()))
    }
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which CIFAR10-DVS train/test split to use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum CifarSplit {
    /// SpikingJelly's `split_to_train_test_set(0.9, ...)`: the first `ceil(0.9·n)` files of each
    /// class in string-sorted file order are train (9000/1000).
    #[default]
    SpikingJelly,
    /// TEBN's `CIFAR10DVSTEBNSplit`: files numbered 0–99 of each class are test, 100–999 train
    /// (generalised: the lowest-numbered `n − ceil(ratio·n)` files of each class are test).
    Tebn,
}

/// Train or test split.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that selects a dataset and turns its files into frames.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub dataset: DatasetKind,
    /// The dataset root, laid out as the dataset ships.
    pub root: PathBuf,
    /// Where the frame cache lives; `None` = `<root>/.nmoco-cache`.
    pub cache_dir: Option<PathBuf>,
    /// Slicing and frame size. See [`DataConfig::for_dataset`] for per-dataset sizes.
    pub frames: FrameConfig,
    /// Augmentations the loader applies (views `Augmented` / `TwoViews`).
    pub augment: AugmentConfig,
    pub cifar_split: CifarSplit,
    /// SpikingJelly's CIFAR10-DVS orientation and polarity: `x = 127 − Y`, `y = 127 − X`,
    /// `p = 1 − bit0` relative to the raw jAER fields. Default `true`.
    pub cifar_flip: bool,
    /// Count N-Caltech101's `BACKGROUND_Google` as class 0 (SpikingJelly). Default `true`.
    pub ncaltech_include_background: bool,
    /// Subtract each N-Caltech101 sample's min x and min y (tonic). Default `false`.
    pub ncaltech_shift_to_zero: bool,
    /// Train fraction per class for CIFAR10-DVS and N-Caltech101. Default 0.9.
    pub train_ratio: f64,
    /// Threads for cache building and batch assembly; 0 = rayon's default.
    pub workers: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: DatasetKind::default(),
            root: PathBuf::new(),
            cache_dir: None,
            frames: FrameConfig::default(),
            augment: AugmentConfig::default(),
            cifar_split: CifarSplit::default(),
            cifar_flip: true,
            ncaltech_include_background: true,
            ncaltech_shift_to_zero: false,
            train_ratio: 0.9,
            workers: 0,
        }
    }
}

impl DataConfig {
    /// The literature's frame settings for `kind` (T = 16, equal event count): 128×128 for
    /// CIFAR10-DVS, DVS128 Gesture and the synthetic set; N-Caltech101 integrated at 180×240
    /// and area-resized to 128×128 ([`nmoco_frames::Resize::Pool`]); N-MNIST at 34×34, with
    /// ±3 px translations. DVS128 Gesture and the synthetic set turn horizontal flips off
    /// (left/right motions are different classes). Each dataset's module holds its settings.
    pub fn for_dataset(kind: DatasetKind, root: impl AsRef<Path>) -> Self {
        let mut cfg = DataConfig {
            dataset: kind.clone(),
            root: root.as_ref().to_path_buf(),
            ..Default::default()
        };
        spec(&kind).literature_defaults(&mut cfg);
        cfg
    }

    /// The cache folder: `cache_dir`, or `<root>/.nmoco-cache`.
    pub fn cache_root(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| self.root.join(".nmoco-cache"))
    }

    pub(crate) fn index_options(&self) -> crate::index::IndexOptions {
        crate::index::IndexOptions {
            cifar_split: self.cifar_split,
            train_ratio: self.train_ratio,
            ncaltech_include_background: self.ncaltech_include_background,
        }
    }
}
