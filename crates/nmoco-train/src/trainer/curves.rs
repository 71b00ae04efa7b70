//! `curves.png`: loss, kNN accuracy and learning rate, drawn from `metrics.jsonl`.

use std::path::Path;

use crate::error::Result;
use crate::metrics::{self, Record};

/// Draw the curves from the metrics file into `curves.png`.
pub fn plot_curves(metrics_path: &Path, png: &Path) -> Result<()> {
    use nmoco_viz::lines::{Panel, Series, plot};
    let recs = metrics::read(metrics_path)?;
    let (mut loss, mut lr, mut knn, mut epoch_loss) = (vec![], vec![], vec![], vec![]);
    for r in &recs {
        match r {
            Record::Step {
                step,
                loss: l,
                lr: x,
                ..
            } => {
                loss.push((*step as f64, *l));
                lr.push((*step as f64, *x));
            }
            Record::Epoch {
                epoch,
                knn_top1,
                loss_mean,
                step,
                ..
            } => {
                if let Some(a) = knn_top1 {
                    knn.push((*epoch as f64, a * 100.0));
                }
                if let Some(l) = loss_mean {
                    epoch_loss.push((*step as f64, *l));
                }
            }
        }
    }
    let panels = [
        Panel {
            title: "loss".into(),
            x_label: "step".into(),
            series: vec![
                Series::new("step", loss, [150, 170, 230]),
                Series::new("epoch mean", epoch_loss, [200, 40, 40]).with_markers(),
            ],
        },
        Panel {
            title: "knn top-1 %".into(),
            x_label: "epoch".into(),
            series: vec![Series::new("knn", knn, [30, 140, 60]).with_markers()],
        },
        Panel {
            title: "learning rate".into(),
            x_label: "step".into(),
            series: vec![Series::new("lr", lr, [60, 60, 60])],
        },
    ];
    plot(&panels, 1200, 360).save_png(png)?;
    Ok(())
}
