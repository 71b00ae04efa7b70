//! Learning-rate schedule: linear warm-up, then cosine decay to zero.

/// The learning rate at `step` (0-based) of `total_steps`, with `warmup_steps` of linear warm-up
/// from `base/warmup_steps` to `base`, then `base·(1 + cos(π·p))/2` with `p` going from 0 to 1
/// over the remaining steps.
pub fn lr_at(base: f64, step: usize, total_steps: usize, warmup_steps: usize) -> f64 {
    if step < warmup_steps {
        return base * (step + 1) as f64 / warmup_steps as f64;
    }
    let span = total_steps.saturating_sub(warmup_steps).max(1);
    let p = ((step - warmup_steps) as f64 / span as f64).min(1.0);
    base * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        assert!((lr_at(1.0, 0, 100, 10) - 0.1).abs() < 1e-12);
        assert!((lr_at(1.0, 9, 100, 10) - 1.0).abs() < 1e-12);
        assert!((lr_at(1.0, 10, 100, 10) - 1.0).abs() < 1e-12);
        assert!((lr_at(1.0, 55, 100, 10) - 0.5).abs() < 1e-12);
        assert!(lr_at(1.0, 99, 100, 10) < 0.01);
        assert!((lr_at(2.0, 0, 10, 0) - 2.0).abs() < 1e-12);
        // Monotone after warm-up.
        let v: Vec<f64> = (10..100).map(|s| lr_at(1.0, s, 100, 10)).collect();
        assert!(v.windows(2).all(|w| w[1] <= w[0]));
    }
}
