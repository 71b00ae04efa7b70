//! Heads applied to per-time-step backbone features `[T, B, D]`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::layers::{BatchNorm, Linear, bad_input};

/// MoCo v2 projection head applied per time step: `fc1` Linear(d, hidden, no bias) → `bn1`
/// (statistics over T·B) → ReLU → `fc2` Linear(hidden, out, bias).
///
/// Variables (under the caller's prefix): `fc1.weight`, `bn1.{weight,bias,running_mean,
/// running_var}`, `fc2.weight`, `fc2.bias`.
#[derive(Debug)]
pub struct ProjectionHead {
    fc1: Linear,
    bn1: BatchNorm,
    fc2: Linear,
    out_dim: usize,
}

impl ProjectionHead {
    /// Builds the head.
    pub fn new(in_dim: usize, hidden: usize, out_dim: usize, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(in_dim, hidden, false, vb.pp("fc1"))?,
            bn1: BatchNorm::new(hidden, vb.pp("bn1"))?,
            fc2: Linear::new(hidden, out_dim, true, vb.pp("fc2"))?,
            out_dim,
        })
    }

    /// Output dimension C.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// `[T, B, D]` → `[T, B, C]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (t, b, d) = x
            .dims3()
            .map_err(|_| bad_input("projection_head", x, "expected [T, B, D]".into()))?;
        let y = self.fc1.forward(&x.reshape((t * b, d))?)?;
        let y = self.bn1.forward(&y, train)?.relu()?;
        self.fc2.forward(&y)?.reshape((t, b, self.out_dim))
    }
}

/// Classification head: `fc` Linear(d, classes, bias) on the mean over time,
/// `[T, B, D]` → `[B, classes]`. Variables `fc.weight`, `fc.bias`.
#[derive(Debug)]
pub struct Classifier {
    fc: Linear,
}

impl Classifier {
    /// Builds the head.
    pub fn new(in_dim: usize, classes: usize, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Self {
            fc: Linear::new(in_dim, classes, true, vb.pp("fc"))?,
        })
    }

    /// `[T, B, D]` → logits `[B, classes]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() != 3 {
            return Err(bad_input("classifier", x, "expected [T, B, D]".into()));
        }
        self.fc.forward(&x.mean(0)?)
    }
}
