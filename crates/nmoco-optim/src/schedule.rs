//! Learning-rate schedule: linear warm-up, then cosine decay.

/// Linear warm-up from `warmup_from` to `peak` over `warmup_steps`, then cosine from `peak` to
/// `floor` until step `cosine_end`, `floor` after it. Pre-training's [`lr_at`] is the case
/// `warmup_from = floor = 0`; fine-tuning's recipe sets both and adds a cool-down at `floor`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupCosine {
    pub peak: f64,
    pub warmup_from: f64,
    pub floor: f64,
    pub warmup_steps: usize,
    /// The step at which the cosine reaches `floor`.
    pub cosine_end: usize,
}

impl WarmupCosine {
    /// The learning rate at `step` (0-based): during the warm-up
    /// `warmup_from + (peak − warmup_from)·(step + 1)/warmup_steps`, then
    /// `floor + (peak − floor)·(1 + cos(π·p))/2` with `p` going from 0 to 1 over the steps up to
    /// `cosine_end` (and staying 1 after it).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.warmup_from
                + (self.peak - self.warmup_from) * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.cosine_end.saturating_sub(self.warmup_steps).max(1);
        let p = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        self.floor + (self.peak - self.floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
    }
}

/// The learning rate at `step` (0-based) of `total_steps`, with `warmup_steps` of linear warm-up
/// from `base/warmup_steps` to `base`, then `base·(1 + cos(π·p))/2` with `p` going from 0 to 1
/// over the remaining steps ([`WarmupCosine`] from 0 to 0).
pub fn lr_at(base: f64, step: usize, total_steps: usize, warmup_steps: usize) -> f64 {
    WarmupCosine {
        peak: base,
        warmup_from: 0.0,
        floor: 0.0,
        warmup_steps,
        cosine_end: total_steps,
    }
    .at(step)
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

    /// The closed form `lr_at` had before it became a case of `WarmupCosine`: bit-identical.
    #[test]
    fn lr_at_is_the_zero_floor_case_bit_for_bit() {
        let direct = |base: f64, step: usize, total: usize, warm: usize| {
            if step < warm {
                return base * (step + 1) as f64 / warm as f64;
            }
            let span = total.saturating_sub(warm).max(1);
            let p = ((step - warm) as f64 / span as f64).min(1.0);
            base * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
        };
        for (base, total, warm) in [(0.03, 100, 10), (1e-3, 37, 0), (0.06, 5, 5), (2.0, 0, 0)] {
            for step in 0..total + 3 {
                assert_eq!(
                    lr_at(base, step, total, warm).to_bits(),
                    direct(base, step, total, warm).to_bits()
                );
            }
        }
    }
}
