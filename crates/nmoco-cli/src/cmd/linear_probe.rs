//! `nmoco linear-probe [--checkpoint PATH] [--config FILE] [--set key=value ...] [--cuda]`:
//! the linear probe and kNN classifier on frozen time-mean features of the pre-trained encoder,
//! next to the same protocols on a randomly initialised encoder. Without arguments it
//! evaluates what the default `nmoco pretrain` wrote (runs/pretrain) on the synthetic set.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use nmoco_data::Split;
use nmoco_eval::pretrained::{arch_name, load_backbone};
use nmoco_eval::probe::{
    ProbeOutcome, augmented_features, calibrate_bn, feature_key, features_cached, labelled_subset,
    probe,
};
use nmoco_eval::{Report, SplitSizes};

use super::evalcfg::{CommonArgs, Row, Setup, dataset_name, print_table, report_dir, setup};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Fit the classifiers on this fraction of the training labels (stratified, seeded by
    /// probe.seed), e.g. 0.01 or 0.1; reports go to `linear_probe-<N>pct`
    #[arg(long)]
    pub label_fraction: Option<f64>,
}

fn bar(label: &str) -> ProgressBar {
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{label:<28} {{bar:30}} {{pos}}/{{len}} samples [{{elapsed_precise}} < {{eta_precise}}]"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(Duration::from_millis(500));
    pb
}

/// Probe one encoder (`weights = None`: the seeded random initialisation).
fn run_encoder(s: &Setup, weights: Option<&Path>, encoder: &str) -> anyhow::Result<ProbeOutcome> {
    let seed = s.cfg.seed;
    let (backbone, _vars) =
        load_backbone(&s.ckpt.backbone, weights, seed, &s.device).map_err(anyhow::Error::from)?;
    if weights.is_none() {
        let passes = s.cfg.probe.bn_calibration_passes;
        eprintln!("calibrating the random-init encoder's batch norm ({passes} passes over train)");
        calibrate_bn(
            &backbone,
            s.train.clone(),
            s.cfg.probe.batch_size,
            passes,
            &s.device,
        )
        .map_err(anyhow::Error::from)
        .context("calibrating batch norm")?;
    }
    let cache = s.ckpt.dir.join(nmoco_eval::run_dir::EVAL).join("features");
    let mut feats = Vec::new();
    for (split, ds) in [(Split::Train, &s.train), (Split::Test, &s.test)] {
        let passes = s.cfg.probe.bn_calibration_passes;
        let key = feature_key(weights, seed, passes, &s.ckpt.backbone, &s.cfg.data, split)
            .map_err(anyhow::Error::from)?;
        let pb = bar(&format!("features {encoder} {split}"));
        let progress = |done: usize, total: usize| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        };
        let f = features_cached(
            &backbone,
            ds.clone(),
            &key,
            Some(&cache),
            s.cfg.probe.batch_size,
            &s.device,
            &progress,
        )
        .map_err(anyhow::Error::from)
        .with_context(|| format!("extracting {split} features"))?;
        pb.finish_and_clear();
        feats.push(f);
    }
    // Augmented views of the labelled samples, for the linear classifier's training set.
    let mut views = Vec::new();
    if s.cfg.probe.augmented_views > 0 {
        let keep = labelled_subset(&feats[0].labels, &s.cfg.probe).map_err(anyhow::Error::from)?;
        let labelled = std::sync::Arc::new(
            s.train
                .subset(&keep)
                .map_err(anyhow::Error::from)
                .context("selecting the labelled samples")?,
        );
        let pb = bar(&format!("augmented views {encoder}"));
        let progress = |done: usize, total: usize| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        };
        views = augmented_features(&backbone, labelled, &s.cfg.probe, &s.device, &progress)
            .map_err(anyhow::Error::from)
            .context("extracting the features of augmented views")?;
        pb.finish_and_clear();
    }
    let classes = s.train.num_classes();
    probe(&feats[0], &views, &feats[1], classes, &s.cfg.probe)
        .map_err(anyhow::Error::from)
        .context("fitting the linear probe")
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut common = args.common.clone();
    if let Some(f) = args.label_fraction {
        common.set.push(format!("probe.label_fraction={f}"));
    }
    let s = setup(&common, |_| Default::default())?;
    let suffix = if s.cfg.probe.label_fraction < 1.0 {
        format!("-{}pct", (s.cfg.probe.label_fraction * 100.0).round())
    } else {
        String::new()
    };
    let weights = s.ckpt.weights.clone();
    let mut encoders: Vec<(Option<&Path>, &str)> = vec![(Some(weights.as_path()), "pretrained")];
    if !args.common.no_baseline {
        encoders.push((None, "random_init"));
    }
    let mut rows = Vec::new();
    for (w, encoder) in encoders {
        let out = run_encoder(&s, w, encoder)?;
        for (protocol, metrics, extra) in [
            (
                "linear_probe",
                &out.linear,
                serde_json::json!({ "probe": s.cfg.probe, "selection": out.selection }),
            ),
            (
                "knn",
                &out.knn,
                serde_json::json!({ "knn": s.cfg.probe.knn }),
            ),
        ] {
            let dir = report_dir(&s.ckpt.dir, &format!("{protocol}{suffix}"), encoder);
            let report = Report::new(
                protocol,
                encoder,
                w,
                arch_name(&s.ckpt.backbone),
                dataset_name(&s.cfg.data.dataset),
                SplitSizes {
                    train: out.train_size,
                    test: out.test_size,
                },
                metrics,
                s.train.class_names().to_vec(),
                s.cfg.seed,
                serde_json::json!({ "protocol": extra, "data": s.cfg.data }),
            );
            report
                .write(&dir)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("writing the report in {}", dir.display()))?;
            let label = match protocol {
                "knn" => format!("kNN (k={})", s.cfg.probe.knn.k),
                _ => "linear probe".to_string(),
            };
            rows.push(Row {
                protocol: label,
                encoder: if encoder == "pretrained" {
                    "NeuroMoCo".into()
                } else {
                    "random init".into()
                },
                top1: metrics.top1,
                top5: metrics.top5,
                report: dir.join("report.json"),
            });
        }
    }
    rows.sort_by(|a, b| {
        a.protocol
            .cmp(&b.protocol)
            .reverse()
            .then(a.encoder.cmp(&b.encoder))
    });
    print_table(&rows, 1.0 / s.train.num_classes().max(1) as f64);
    println!("wall time: {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
