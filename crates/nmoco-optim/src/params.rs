//! The optimizer hyper-parameters and their one validation, shared by the pre-training config
//! (`[optim]`) and the fine-tuning config (`[finetune]`): each config keeps its own keys and
//! defaults, names them in an [`OptimKeys`], and checks its values with [`OptimParams::check`].

use serde::{Deserialize, Serialize};

/// Which optimizer (config `optim.kind`, `finetune.optimizer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OptimKind {
    #[default]
    Sgd,
    #[serde(rename = "adamw")]
    AdamW,
}

/// Hyper-parameters shared by both optimizers (the learning rate is passed per step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimParams {
    pub kind: OptimKind,
    /// SGD momentum μ.
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for OptimParams {
    /// SGD with momentum 0.9 and weight decay 1e-4; AdamW's β1 0.9, β2 0.999, ε 1e-8
    /// (PyTorch's).
    fn default() -> Self {
        Self {
            kind: OptimKind::Sgd,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: false,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// How a config spells the keys that [`OptimParams::check`] validates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptimKeys {
    pub lr: &'static str,
    pub momentum: &'static str,
    pub weight_decay: &'static str,
    pub nesterov: &'static str,
    pub beta1: &'static str,
    pub beta2: &'static str,
    pub eps: &'static str,
    pub grad_clip: &'static str,
}

/// A rejected optimizer setting: the config key, the value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value} for {key}: {allowed}")]
pub struct InvalidSetting {
    pub key: &'static str,
    pub value: String,
    pub allowed: String,
}

fn invalid(
    key: &'static str,
    value: impl std::fmt::Display,
    allowed: impl Into<String>,
) -> InvalidSetting {
    InvalidSetting {
        key,
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

impl OptimParams {
    /// Check these parameters with the base learning rate `lr` and the clipping norm
    /// `grad_clip`; the first bad value is an error naming its key (`keys`).
    pub fn check(
        &self,
        lr: f64,
        grad_clip: Option<f64>,
        keys: &OptimKeys,
    ) -> Result<(), InvalidSetting> {
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(invalid(keys.lr, lr, "a finite number > 0"));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(invalid(keys.momentum, self.momentum, "a number in [0, 1)"));
        }
        if self.nesterov && self.momentum == 0.0 {
            return Err(invalid(
                keys.nesterov,
                self.nesterov,
                format!("false when {} = 0", keys.momentum),
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(invalid(
                keys.weight_decay,
                self.weight_decay,
                "a finite number >= 0",
            ));
        }
        if !(0.0..1.0).contains(&self.beta1) {
            return Err(invalid(keys.beta1, self.beta1, "a number in [0, 1)"));
        }
        if !(0.0..1.0).contains(&self.beta2) {
            return Err(invalid(keys.beta2, self.beta2, "a number in [0, 1)"));
        }
        if self.eps.is_nan() || self.eps <= 0.0 {
            return Err(invalid(keys.eps, self.eps, "a number > 0"));
        }
        if let Some(c) = grad_clip
            && !(c > 0.0 && c.is_finite())
        {
            return Err(invalid(
                keys.grad_clip,
                c,
                "a finite number > 0 (or leave it out)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: OptimKeys = OptimKeys {
        lr: "o.lr",
        momentum: "o.momentum",
        weight_decay: "o.weight_decay",
        nesterov: "o.nesterov",
        beta1: "o.beta1",
        beta2: "o.beta2",
        eps: "o.eps",
        grad_clip: "o.grad_clip",
    };

    fn key_of(p: OptimParams, lr: f64, clip: Option<f64>) -> Option<&'static str> {
        p.check(lr, clip, &KEYS).err().map(|e| e.key)
    }

    #[test]
    fn each_bad_value_names_its_key() {
        let d = OptimParams::default();
        assert_eq!(key_of(d, 0.1, Some(1.0)), None);
        assert_eq!(key_of(d, 0.0, None), Some("o.lr"));
        assert_eq!(key_of(d, f64::NAN, None), Some("o.lr"));
        assert_eq!(key_of(d, f64::INFINITY, None), Some("o.lr"));
        let p = |f: fn(&mut OptimParams)| {
            let mut p = d;
            f(&mut p);
            p
        };
        assert_eq!(
            key_of(p(|p| p.momentum = 1.0), 0.1, None),
            Some("o.momentum")
        );
        let e = p(|p| {
            p.momentum = 0.0;
            p.nesterov = true
        })
        .check(0.1, None, &KEYS)
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value true for o.nesterov: false when o.momentum = 0"
        );
        assert_eq!(
            key_of(p(|p| p.weight_decay = -1.0), 0.1, None),
            Some("o.weight_decay")
        );
        assert_eq!(key_of(p(|p| p.beta1 = 1.0), 0.1, None), Some("o.beta1"));
        assert_eq!(key_of(p(|p| p.beta2 = -0.1), 0.1, None), Some("o.beta2"));
        assert_eq!(key_of(p(|p| p.eps = 0.0), 0.1, None), Some("o.eps"));
        assert_eq!(key_of(d, 0.1, Some(0.0)), Some("o.grad_clip"));
        assert_eq!(key_of(d, 0.1, Some(f64::INFINITY)), Some("o.grad_clip"));
    }
}
