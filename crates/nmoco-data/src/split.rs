//! Train/test split rules, as pure functions of the dataset order, and the seeded stratified
//! split that carves validation sets and label fractions out of a training split.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// SpikingJelly's `split_to_train_test_set(train_ratio, dataset, num_classes)` with
/// `random_split = False`: walk the dataset in order, collect each class's positions, and give
/// the first `ceil(n_c · train_ratio)` of class c to train and the rest to test. Both outputs
/// are class-major (all of class 0, then class 1, ...), each class in dataset order.
///
/// Returns positions into `labels`. Labels `>= num_classes` are ignored.
pub fn split_per_class(
    labels: &[usize],
    num_classes: usize,
    train_ratio: f64,
) -> (Vec<usize>, Vec<usize>) {
    let mut per_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        if let Some(v) = per_class.get_mut(l) {
            v.push(i);
        }
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for idx in &per_class {
        let pos = train_count(idx.len(), train_ratio);
        train.extend_from_slice(&idx[..pos]);
        test.extend_from_slice(&idx[pos..]);
    }
    (train, test)
}

/// `ceil(n · ratio)` clamped to `[0, n]`, computed in f64 exactly as Python's
/// `math.ceil(len(idx) * train_ratio)`.
pub fn train_count(n: usize, ratio: f64) -> usize {
    let c = (n as f64 * ratio).ceil();
    if c.is_nan() || c <= 0.0 {
        0
    } else {
        (c as usize).min(n)
    }
}

/// The TEBN convention for CIFAR10-DVS (`CIFAR10DVSTEBNSplit`: files 0–99 of each class are
/// test, 100–999 train), generalised to any class size: within each class, order the files by
/// their numeric suffix; the first `n_c − ceil(n_c · train_ratio)` are test, the rest train.
/// With 1000 files per class and ratio 0.9 this is exactly "numbers 0–99 test".
///
/// `numbers[i]` is the numeric suffix of sample i. Outputs are class-major, each class in
/// numeric order.
pub fn split_tebn(
    labels: &[usize],
    numbers: &[u64],
    num_classes: usize,
    train_ratio: f64,
) -> (Vec<usize>, Vec<usize>) {
    let mut per_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        if let Some(v) = per_class.get_mut(l) {
            v.push(i);
        }
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for idx in &mut per_class {
        idx.sort_by_key(|&i| (numbers.get(i).copied().unwrap_or(u64::MAX), i));
        let n_test = idx.len() - train_count(idx.len(), train_ratio);
        test.extend_from_slice(&idx[..n_test]);
        train.extend_from_slice(&idx[n_test..]);
    }
    (train, test)
}

/// A stratified, seeded split of indices `0..labels.len()` into (train, val): each class
/// with at least 2 samples gives `round(n_c * fraction)` (at least 1) samples to val.
pub fn stratified_split(labels: &[usize], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut by_class = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l].push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for mut idx in by_class {
        idx.shuffle(&mut rng);
        let nv = if idx.len() >= 2 {
            ((idx.len() as f64 * fraction).round() as usize).clamp(1, idx.len() - 1)
        } else {
            0
        };
        val.extend_from_slice(&idx[..nv]);
        train.extend_from_slice(&idx[nv..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

/// Stratified, seeded `k`-fold assignment of indices `0..labels.len()`: each class's samples are
/// shuffled and dealt to folds `0, 1, ..., k - 1, 0, ...` in turn, so every fold gets
/// `floor(n_c / k)` or one more of each class. Returns the fold of each sample (`k` = 0 is
/// taken as 1).
pub fn stratified_folds(labels: &[usize], k: usize, seed: u64) -> Vec<usize> {
    let k = k.max(1);
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut by_class = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l].push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut fold = vec![0; labels.len()];
    // Each class starts dealing where the previous one stopped, so that classes with fewer
    // samples than folds do not all land in the first folds.
    let mut next = 0;
    for mut idx in by_class {
        idx.shuffle(&mut rng);
        for i in idx {
            fold[i] = next;
            next = (next + 1) % k;
        }
    }
    fold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_rule_matches_python() {
        assert_eq!(train_count(1000, 0.9), 900);
        assert_eq!(train_count(20, 0.9), 18);
        assert_eq!(train_count(31, 0.9), 28); // ceil(27.9)
        assert_eq!(train_count(1, 0.9), 1);
        assert_eq!(train_count(0, 0.9), 0);
        assert_eq!(train_count(10, 0.0), 0);
        assert_eq!(train_count(10, 1.0), 10);
    }

    #[test]
    fn per_class_split_is_class_major_in_dataset_order() {
        let labels = [0, 1, 0, 1, 0, 1, 0];
        let (tr, te) = split_per_class(&labels, 2, 0.5);
        // class 0 at 0,2,4,6 → ceil(2.0)=2 train; class 1 at 1,3,5 → ceil(1.5)=2 train
        assert_eq!(tr, vec![0, 2, 1, 3]);
        assert_eq!(te, vec![4, 6, 5]);
    }

    #[test]
    fn folds_are_stratified_and_seeded() {
        let labels: Vec<usize> = (0..53).map(|i| i % 3).collect();
        let f = stratified_folds(&labels, 5, 7);
        assert_eq!(f, stratified_folds(&labels, 5, 7));
        assert_ne!(f, stratified_folds(&labels, 5, 8));
        for c in 0..3 {
            let mut per_fold = [0usize; 5];
            for (i, &l) in labels.iter().enumerate() {
                if l == c {
                    per_fold[f[i]] += 1;
                }
            }
            let (lo, hi) = (
                per_fold.iter().min().unwrap(),
                per_fold.iter().max().unwrap(),
            );
            assert!(hi - lo <= 1, "class {c}: {per_fold:?}");
        }
        // Fewer samples per class than folds: still spread over all folds.
        let few = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4];
        let f = stratified_folds(&few, 5, 0);
        for k in 0..5 {
            assert_eq!(f.iter().filter(|&&v| v == k).count(), 2);
        }
        assert!(stratified_folds(&[], 5, 0).is_empty());
        assert_eq!(stratified_folds(&[0, 1], 0, 0), vec![0, 0]);
    }

    #[test]
    fn tebn_takes_lowest_numbers_as_test() {
        let labels = vec![0; 20];
        let numbers: Vec<u64> = (0..20).rev().collect();
        let (tr, te) = split_tebn(&labels, &numbers, 1, 0.9);
        assert_eq!(
            te.iter().map(|&i| numbers[i]).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(tr.len(), 18);
        assert_eq!(numbers[tr[0]], 2);
    }
}
