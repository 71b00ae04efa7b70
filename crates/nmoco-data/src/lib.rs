//! Dataset loaders for event-camera datasets, the literature train/test splits, an on-disk
//! frame cache, and batching into candle tensors on a background thread.
//!
//! Datasets ([`DatasetKind`]): CIFAR10-DVS, DVS128 Gesture, N-Caltech101, N-MNIST and the
//! nmoco-synth set, each read from a root folder laid out as the dataset ships (see
//! `docs/datasets.md`). [`index_root`] lists the samples and applies the split;
//! [`Dataset::open`] also builds or validates the frame cache ([`cache`]), and
//! [`Dataset::get`] returns `(frames, label)`. [`Loader`] turns a [`Dataset`] into batches of
//! `[T, B, 2, H, W]` f32 tensors with plain, augmented or two augmented views, with an order
//! and augmentations that are pure functions of `(seed, epoch, sample, view)`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use nmoco_data::{DataConfig, DatasetKind, Dataset, Loader, LoaderConfig, Split, Views};
//!
//! # fn main() -> Result<(), nmoco_data::Error> {
//! let cfg = DataConfig::for_dataset(DatasetKind::Dvs128Gesture, "/data/DvsGesture");
//! let ds = Arc::new(Dataset::open(&cfg, Split::Train)?);
//! let lc = LoaderConfig { batch_size: 16, views: Views::TwoViews, ..Default::default() };
//! for batch in Loader::new(ds, &lc, &cfg.augment, &candle_core::Device::Cpu) {
//!     let batch = batch?;
//!     assert_eq!(batch.x.dims()[2], 2);
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod cache;
mod config;
mod dataset;
mod datasets;
mod error;
pub mod gesture;
mod index;
mod loader;
mod source;
pub mod split;

pub use config::{CifarSplit, DataConfig, DatasetKind, Split};
pub use dataset::{CacheMode, Dataset, PROGRESS_TARGET};
pub use datasets::cifar10_dvs::{CIFAR10_CLASSES, cifar_flip};
pub use datasets::n_caltech101::{NCALTECH_BACKGROUND, shift_to_zero};
pub use error::Error;
pub use index::{
    Index, IndexOptions, Published, RootReport, Sample, Segment, check_root, check_root_with,
    expected_layout, index_root, published,
};
pub use loader::{Batch, Loader, LoaderConfig, Views, epoch_order, num_batches, sample_seed};
