//! Classification metrics: top-k accuracy, per-class accuracy, confusion matrix.

use serde::{Deserialize, Serialize};

use crate::Error;

/// Accuracy figures of one evaluation, as written to `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Fraction of samples whose highest score is the true class.
    pub top1: f64,
    /// Fraction of samples whose true class is among the 5 highest scores (top-k with
    /// k = min(5, classes)).
    pub top5: f64,
    /// Accuracy per class (`NaN`-free: a class with no sample gets `None`).
    pub per_class: Vec<Option<f64>>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
    pub samples: usize,
}

/// Indices of the `k` largest scores, highest first; ties broken by the lower index.
pub fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| {
        scores[b]
            .partial_cmp(&scores[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    idx.truncate(k);
    idx
}

/// Metrics from a row-major `[n, classes]` score matrix and the true labels.
pub fn evaluate(scores: &[f32], classes: usize, labels: &[usize]) -> Result<Metrics, Error> {
    let n = labels.len();
    if classes == 0 || scores.len() != n * classes {
        return Err(Error::Shape {
            what: "scores",
            expected: format!("{n} x {classes}"),
            found: format!("{} values", scores.len()),
        });
    }
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
        return Err(Error::LabelOutOfRange {
            index: i,
            label: l,
            classes,
        });
    }
    let k5 = classes.min(5);
    let mut confusion = vec![vec![0u64; classes]; classes];
    let (mut c1, mut c5) = (0usize, 0usize);
    for (i, &label) in labels.iter().enumerate() {
        let row = &scores[i * classes..(i + 1) * classes];
        let top = top_k(row, k5);
        confusion[label][top[0]] += 1;
        if top[0] == label {
            c1 += 1;
        }
        if top.contains(&label) {
            c5 += 1;
        }
    }
    let per_class = confusion
        .iter()
        .enumerate()
        .map(|(c, row)| {
            let total: u64 = row.iter().sum();
            (total > 0).then(|| row[c] as f64 / total as f64)
        })
        .collect();
    let denom = n.max(1) as f64;
    Ok(Metrics {
        top1: c1 as f64 / denom,
        top5: c5 as f64 / denom,
        per_class,
        confusion,
        samples: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_metrics() {
        // 3 classes, 4 samples.
        let scores = [
            0.9, 0.05, 0.05, // pred 0, label 0: right
            0.1, 0.3, 0.6, // pred 2, label 1: wrong (label second)
            0.2, 0.7, 0.1, // pred 1, label 2: wrong (label third)
            0.0, 0.1, 0.9, // pred 2, label 2: right
        ];
        let m = evaluate(&scores, 3, &[0, 1, 2, 2]).unwrap();
        assert_eq!(m.top1, 0.5);
        // k = min(5, 3) = 3: every label is in the top 3.
        assert_eq!(m.top5, 1.0);
        assert_eq!(m.per_class, vec![Some(1.0), Some(0.0), Some(0.5)]);
        assert_eq!(
            m.confusion,
            vec![vec![1, 0, 0], vec![0, 0, 1], vec![0, 1, 1]]
        );
        assert_eq!(m.samples, 4);
    }

    #[test]
    fn top5_counts_only_five_best() {
        let classes = 7;
        // Label 6 has the 6th-highest score: not in the top 5.
        let scores: Vec<f32> = (0..classes).map(|c| (classes - c) as f32).collect();
        let m = evaluate(&scores, classes, &[5]).unwrap();
        assert_eq!(m.top5, 0.0);
        let m = evaluate(&scores, classes, &[4]).unwrap();
        assert_eq!(m.top5, 1.0);
        assert_eq!(m.top1, 0.0);
        assert_eq!(m.per_class[0], None);
    }

    #[test]
    fn shape_and_label_errors() {
        assert!(matches!(
            evaluate(&[0.0; 5], 3, &[0, 1]),
            Err(Error::Shape { .. })
        ));
        assert!(matches!(
            evaluate(&[0.0; 6], 3, &[0, 3]),
            Err(Error::LabelOutOfRange {
                index: 1,
                label: 3,
                ..
            })
        ));
    }

    #[test]
    fn top_k_breaks_ties_by_index() {
        assert_eq!(top_k(&[1.0, 3.0, 3.0, 0.0], 3), vec![1, 2, 0]);
    }
}
