//! `report.json` and the confusion-matrix PNG of one evaluation.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::accuracy::Metrics;

/// Sizes of the splits an evaluation used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitSizes {
    pub train: usize,
    pub test: usize,
}

/// One evaluation's record, written as `report.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// `linear_probe`, `knn`, `finetune` or `supervised`.
    pub protocol: String,
    /// `pretrained` or `random_init` (the baseline encoder).
    pub encoder: String,
    /// The weights file, or `None` for a randomly initialised encoder.
    pub checkpoint: Option<PathBuf>,
    pub backbone: String,
    pub dataset: String,
    pub split_sizes: SplitSizes,
    pub top1: f64,
    pub top5: f64,
    pub per_class: Vec<Option<f64>>,
    pub class_names: Vec<String>,
    pub confusion: Vec<Vec<u64>>,
    pub seed: u64,
    /// Protocol settings and anything protocol-specific (e.g. the weight-decay selection).
    pub config: serde_json::Value,
    /// Notes carried into every report, e.g. that MixInfoNCE is our reconstruction.
    pub notes: Vec<String>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        protocol: &str,
        encoder: &str,
        checkpoint: Option<&Path>,
        backbone: String,
        dataset: String,
        split_sizes: SplitSizes,
        metrics: &Metrics,
        class_names: Vec<String>,
        seed: u64,
        config: serde_json::Value,
    ) -> Self {
        Self {
            protocol: protocol.into(),
            encoder: encoder.into(),
            checkpoint: checkpoint.map(Path::to_path_buf),
            backbone,
            dataset,
            split_sizes,
            top1: metrics.top1,
            top5: metrics.top5,
            per_class: metrics.per_class.clone(),
            class_names,
            confusion: metrics.confusion.clone(),
            seed,
            config,
            notes: vec![
                "NeuroMoCo's MixInfoNCE loss and training details are nmoco's reconstruction \
                 from the paper's abstract (see docs/method.md); they are not the authors' code"
                    .into(),
            ],
        }
    }

    /// Write `dir/report.json` and `dir/confusion.png` (both atomically).
    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("report.json");
        let tmp = dir.join(".report.json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Config {
            key: "report",
            message: e.to_string(),
        })?;
        std::fs::write(&tmp, text).map_err(|source| Error::Io {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let title = format!(
            "{} {} TOP1 {:.1}%",
            self.protocol.replace('_', " "),
            self.encoder.replace('_', " "),
            100.0 * self.top1
        );
        nmoco_viz::heatmap::confusion_png(&self.confusion, &title, &dir.join("confusion.png"))
            .map_err(|e| Error::Io {
                path: dir.join("confusion.png"),
                source: std::io::Error::other(e.to_string()),
            })?;
        Ok(())
    }
}
