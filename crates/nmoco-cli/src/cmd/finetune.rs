//! `nmoco finetune [--checkpoint PATH] [--config FILE] [--set key=value ...] [--label-fraction F]
//! [--cuda]`: initialise from the pre-trained encoder and train everything with labels, next to
//! supervised training from scratch with the same budget. The recipe follows the backbone
//! (SEW: SGD lr 0.01 momentum 0.9 cosine; Spikformer: AdamW lr 1e-3 wd 0.06, warm-up, label
//! smoothing 0.1; a SEW on the synthetic set: AdamW lr 2e-3 wd 0.01, 60 epochs, see
//! `FinetuneConfig::synthetic`); `--set finetune.epochs=...` etc. change it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use nmoco_data::DatasetKind;
use nmoco_eval::pretrained::arch_name;
use nmoco_eval::{FinetuneConfig, FinetuneProgress, Report, SplitSizes, finetune};
use nmoco_models::BackboneConfig;

use super::evalcfg::{CommonArgs, Row, dataset_name, print_table, report_dir, setup};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Keep only this fraction of the training labels (stratified, seeded), e.g. 0.01 or 0.1
    #[arg(long)]
    pub label_fraction: Option<f64>,
    /// Append `-TAG` to the report folders (e.g. `--tag e60` with `--set finetune.epochs=60`),
    /// so that runs with other settings do not overwrite the default ones
    #[arg(long)]
    pub tag: Option<String>,
}

/// The pre-training run's `run.epochs`, read from the checkpoint's `config.toml`.
fn pretrain_epochs(config_path: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(config_path).ok()?;
    let table: toml::Table = text.parse().ok()?;
    let epochs = table.get("run")?.get("epochs")?.as_integer()?;
    usize::try_from(epochs).ok().filter(|e| *e > 0)
}

/// The pre-training run's `run.finetune_config`, read from its `config.toml`.
fn run_finetune_config(config_path: &Path) -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string(config_path).ok()?;
    let table: toml::Table = text.parse().ok()?;
    Some(table.get("run")?.get("finetune_config")?.as_str()?.into())
}

fn bar(protocol: &str) -> ProgressBar {
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{protocol:<12} {{bar:30}} {{pos}}/{{len}} steps [{{elapsed_precise}} < {{eta_precise}}] {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(Duration::from_millis(500));
    pb
}

/// Steps move the bar; each epoch prints its line above it.
fn show_progress(pb: &ProgressBar, protocol: &str, epochs: usize, p: &FinetuneProgress) {
    match *p {
        FinetuneProgress::Step {
            epoch,
            step,
            steps_per_epoch,
            loss,
        } => {
            pb.set_length((steps_per_epoch * epochs) as u64);
            pb.set_position((epoch * steps_per_epoch + step) as u64);
            pb.set_message(format!("ep {epoch} loss {loss:.4}"));
        }
        FinetuneProgress::Epoch { .. } => pb.println(epoch_line(protocol, p)),
    }
}

/// One rounded line per fine-tuning epoch, e.g. `finetune epoch 3: loss 0.8123 val 45.0% test
/// 41.7%` (empty for a step report).
fn epoch_line(protocol: &str, p: &FinetuneProgress) -> String {
    let FinetuneProgress::Epoch {
        epochs_done,
        loss_mean,
        val_top1,
        test_top1,
    } = p
    else {
        return String::new();
    };
    let val = val_top1
        .map(|v| format!(" val {:.1}%", v * 100.0))
        .unwrap_or_default();
    format!(
        "{protocol} epoch {epochs_done}: loss {loss_mean:.4}{val} test {:.1}%",
        test_top1 * 100.0
    )
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut common = args.common.clone();
    if let Some(f) = args.label_fraction {
        common.set.push(format!("finetune.label_fraction={f}"));
    }
    // Without --config: the recipe the pre-training config names (run.finetune_config).
    if common.config.is_none()
        && let Ok(ck) = nmoco_eval::locate(&common.checkpoint)
        && let Some(p) = run_finetune_config(&ck.config_path)
    {
        if p.is_file() {
            eprintln!("fine-tuning recipe {} (run.finetune_config)", p.display());
            common.config = Some(p);
        } else {
            eprintln!(
                "warning: run.finetune_config names {}, which does not exist; using the built-in recipe",
                p.display()
            );
        }
    }
    let s = setup(&common, |ck| match ck.backbone {
        BackboneConfig::Spikformer(_) => FinetuneConfig::spikformer(),
        // The same budget as the pre-training: its number of epochs.
        _ if ck.data.dataset == DatasetKind::Synthetic => FinetuneConfig {
            epochs: pretrain_epochs(&ck.config_path).unwrap_or(FinetuneConfig::synthetic().epochs),
            ..FinetuneConfig::synthetic()
        },
        _ => FinetuneConfig::default(),
    })?;
    let cfg = s.cfg.finetune.clone();
    let weights = s.ckpt.weights.clone();
    let mut runs: Vec<(Option<&Path>, &str, &str)> =
        vec![(Some(weights.as_path()), "finetune", "pretrained")];
    if !common.no_baseline {
        runs.push((None, "supervised", "random_init"));
    }
    let mut suffix = if cfg.label_fraction < 1.0 {
        format!("-{}pct", (cfg.label_fraction * 100.0).round())
    } else {
        String::new()
    };
    if let Some(tag) = &args.tag {
        if tag.is_empty() || !tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            anyhow::bail!("--tag {tag:?}: use letters, digits and '_' only");
        }
        suffix = format!("{suffix}-{tag}");
    }
    let mut rows = Vec::new();
    let mut summaries = Vec::new();
    for (w, protocol, encoder) in runs {
        let pb = bar(protocol);
        let epochs = cfg.epochs + cfg.cooldown_epochs;
        let progress = |p: FinetuneProgress| show_progress(&pb, protocol, epochs, &p);
        let out = finetune(
            &s.ckpt.backbone,
            w,
            s.train.clone(),
            s.test.clone(),
            &cfg,
            &s.device,
            &progress,
        )
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{protocol} failed"))?;
        pb.finish_and_clear();
        let dir = report_dir(&s.ckpt.dir, &format!("{protocol}{suffix}"), encoder);
        Report::new(
            protocol,
            encoder,
            w,
            arch_name(&s.ckpt.backbone),
            dataset_name(&s.cfg.data.dataset),
            SplitSizes {
                train: out.train_used,
                test: s.test.len(),
            },
            &out.test,
            s.train.class_names().to_vec(),
            cfg.seed,
            serde_json::json!({
                "finetune": cfg,
                "epoch_loss": out.epoch_loss,
                "data": s.cfg.data,
                "top1_is": "test accuracy after the last epoch",
                "test_top1_last_epoch": out.test.top1,
                "test_top1_at_selected_epoch": out.test_selected.top1,
                "selected_epoch": out.selected_epoch,
                "selected_on": if out.val_used > 0 { "validation split of train" } else { "last epoch (no validation split)" },
                "val_samples": out.val_used,
                "test_top1_max_over_epochs_as_the_literature_reports_it": out.test_max_top1,
                "test_max_epoch": out.test_max_epoch,
                "test_top1_per_epoch": out.test_top1_per_epoch,
                "val_top1_per_epoch": out.val_top1_per_epoch,
            }),
        )
        .write(&dir)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("writing the report in {}", dir.display()))?;
        summaries.push(format!(
            "{protocol} ({encoder}): last epoch {:.1}% | epoch {} chosen on {} {:.1}% | max over epochs {:.1}% (epoch {}, as the literature reports it)",
            100.0 * out.test.top1,
            out.selected_epoch,
            if out.val_used > 0 { "validation" } else { "last epoch" },
            100.0 * out.test_selected.top1,
            100.0 * out.test_max_top1,
            out.test_max_epoch
        ));
        rows.push(Row {
            protocol: format!(
                "{protocol} ({} labels)",
                if suffix.is_empty() {
                    "all".to_string()
                } else {
                    format!("{:.0}%", cfg.label_fraction * 100.0)
                }
            ),
            encoder: if encoder == "pretrained" {
                "NeuroMoCo".into()
            } else {
                "scratch".into()
            },
            top1: out.test.top1,
            top5: out.test.top5,
            report: dir.join("report.json"),
        });
    }
    print_table(&rows, 1.0 / s.train.num_classes().max(1) as f64);
    println!("(top-1 above: test accuracy after the last epoch)");
    for line in &summaries {
        println!("{line}");
    }
    println!("wall time: {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_lines_are_rounded() {
        let p = FinetuneProgress::Epoch {
            epochs_done: 3,
            loss_mean: 0.812345,
            val_top1: Some(0.45),
            test_top1: 0.416666,
        };
        assert_eq!(
            epoch_line("finetune", &p),
            "finetune epoch 3: loss 0.8123 val 45.0% test 41.7%"
        );
        let p = FinetuneProgress::Epoch {
            epochs_done: 3,
            loss_mean: 0.812345,
            val_top1: None,
            test_top1: 0.416666,
        };
        assert_eq!(
            epoch_line("supervised", &p),
            "supervised epoch 3: loss 0.8123 test 41.7%"
        );
    }
}
