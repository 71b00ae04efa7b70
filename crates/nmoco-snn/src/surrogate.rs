//! Surrogate gradients. Every surrogate is a smooth (or piecewise) primitive `g(x)` whose
//! derivative replaces the Heaviside step's derivative in the backward pass; the forward pass is
//! always exactly the Heaviside step `H(x) = [x >= 0]`.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::SnnError;

fn two() -> f32 {
    2.0
}
fn four() -> f32 {
    4.0
}
fn one() -> f32 {
    1.0
}

/// A surrogate function, serialised with a `type` tag, e.g. `{ type = "atan", alpha = 2.0 }`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Surrogate {
    /// `g(x) = atan(pi/2 * alpha * x) / pi + 1/2`, `g'(x) = alpha/2 / (1 + (pi/2 * alpha * x)^2)`.
    Atan {
        #[serde(default = "two")]
        alpha: f32,
    },
    /// `g(x) = sigmoid(alpha * x)`, `g'(x) = alpha * g(x) * (1 - g(x))`.
    Sigmoid {
        #[serde(default = "four")]
        alpha: f32,
    },
    /// Piecewise quadratic: `g'(x) = max(0, alpha - alpha^2 |x|)`; `g` is 0 below `-1/alpha`, 1
    /// above `1/alpha`, and `-alpha^2 x |x| / 2 + alpha x + 1/2` between.
    PiecewiseQuadratic {
        #[serde(default = "one")]
        alpha: f32,
    },
    /// Rectangular (straight-through inside a window): `g'(x) = 1/width` for `|x| < width/2`,
    /// else 0; `g(x) = clamp(x / width + 1/2, 0, 1)`.
    Rect {
        #[serde(default = "one")]
        width: f32,
    },
}

impl Default for Surrogate {
    fn default() -> Self {
        Surrogate::Atan { alpha: 2.0 }
    }
}

impl Surrogate {
    /// Every variant with its default parameter (for tests and benches).
    pub const ALL: [Surrogate; 4] = [
        Surrogate::Atan { alpha: 2.0 },
        Surrogate::Sigmoid { alpha: 4.0 },
        Surrogate::PiecewiseQuadratic { alpha: 1.0 },
        Surrogate::Rect { width: 1.0 },
    ];

    pub(crate) fn validate(&self) -> std::result::Result<(), SnnError> {
        let (field, v) = match *self {
            Surrogate::Atan { alpha }
            | Surrogate::Sigmoid { alpha }
            | Surrogate::PiecewiseQuadratic { alpha } => ("surrogate.alpha", alpha),
            Surrogate::Rect { width } => ("surrogate.width", width),
        };
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(SnnError::Config {
                field,
                value: v,
                reason: "must be finite and > 0",
            })
        }
    }

    /// Small integer id used in kernel variant names and NVRTC defines.
    pub fn id(&self) -> u8 {
        match self {
            Surrogate::Atan { .. } => 0,
            Surrogate::Sigmoid { .. } => 1,
            Surrogate::PiecewiseQuadratic { .. } => 2,
            Surrogate::Rect { .. } => 3,
        }
    }

    /// Short name used in kernel variant names.
    pub fn name(&self) -> &'static str {
        match self {
            Surrogate::Atan { .. } => "atan",
            Surrogate::Sigmoid { .. } => "sigmoid",
            Surrogate::PiecewiseQuadratic { .. } => "pwquad",
            Surrogate::Rect { .. } => "rect",
        }
    }

    /// The scalar parameter (alpha or width) passed to the kernels.
    pub fn param(&self) -> f32 {
        match *self {
            Surrogate::Atan { alpha }
            | Surrogate::Sigmoid { alpha }
            | Surrogate::PiecewiseQuadratic { alpha } => alpha,
            Surrogate::Rect { width } => width,
        }
    }

    /// The primitive `g(x)` (f64, for finite-difference checks).
    pub fn primitive(&self, x: f64) -> f64 {
        match *self {
            Surrogate::Atan { alpha } => {
                (std::f64::consts::FRAC_PI_2 * alpha as f64 * x).atan() / std::f64::consts::PI + 0.5
            }
            Surrogate::Sigmoid { alpha } => 1.0 / (1.0 + (-(alpha as f64) * x).exp()),
            Surrogate::PiecewiseQuadratic { alpha } => {
                let a = alpha as f64;
                if x < -1.0 / a {
                    0.0
                } else if x > 1.0 / a {
                    1.0
                } else {
                    -a * a * x * x.abs() / 2.0 + a * x + 0.5
                }
            }
            Surrogate::Rect { width } => (x / width as f64 + 0.5).clamp(0.0, 1.0),
        }
    }

    /// The surrogate gradient `g'(x)` exactly as the CPU kernel computes it.
    #[inline(always)]
    pub fn grad(&self, x: f32) -> f32 {
        match *self {
            Surrogate::Atan { alpha } => AtanSg::new(alpha).grad(x),
            Surrogate::Sigmoid { alpha } => SigmoidSg::new(alpha).grad(x),
            Surrogate::PiecewiseQuadratic { alpha } => PwQuadSg::new(alpha).grad(x),
            Surrogate::Rect { width } => RectSg::new(width).grad(x),
        }
    }

    /// The surrogate gradient built from plain candle ops (for the reference twin).
    pub fn grad_tensor(&self, x: &Tensor) -> Result<Tensor> {
        match *self {
            Surrogate::Atan { alpha } => {
                let c = std::f32::consts::FRAC_PI_2 * alpha;
                ((x * c as f64)?.sqr()? + 1.0)?.recip()? * (alpha as f64 / 2.0)
            }
            Surrogate::Sigmoid { alpha } => {
                let s = ((x * -(alpha as f64))?.exp()? + 1.0)?.recip()?;
                let one_minus = s.affine(-1.0, 1.0)?;
                (s * one_minus)? * alpha as f64
            }
            Surrogate::PiecewiseQuadratic { alpha } => {
                let a = alpha as f64;
                x.abs()?.affine(-a * a, a)?.relu()
            }
            Surrogate::Rect { width } => {
                let inside = x.abs()?.lt(width as f64 / 2.0)?.to_dtype(x.dtype())?;
                inside * (1.0 / width as f64)
            }
        }
    }
}

/// A surrogate specialised for the CPU kernels' inner loops.
pub(crate) trait SurrogateGrad: Copy + Send + Sync {
    fn grad(self, x: f32) -> f32;
}

#[derive(Clone, Copy)]
pub(crate) struct AtanSg {
    c: f32,
    half_alpha: f32,
}
impl AtanSg {
    pub(crate) fn new(alpha: f32) -> Self {
        Self {
            c: std::f32::consts::FRAC_PI_2 * alpha,
            half_alpha: alpha / 2.0,
        }
    }
}
impl SurrogateGrad for AtanSg {
    #[inline(always)]
    fn grad(self, x: f32) -> f32 {
        let u = x * self.c;
        self.half_alpha / (1.0 + u * u)
    }
}

#[derive(Clone, Copy)]
pub(crate) struct SigmoidSg {
    alpha: f32,
}
impl SigmoidSg {
    pub(crate) fn new(alpha: f32) -> Self {
        Self { alpha }
    }
}
impl SurrogateGrad for SigmoidSg {
    #[inline(always)]
    fn grad(self, x: f32) -> f32 {
        let s = 1.0 / (1.0 + (-self.alpha * x).exp());
        self.alpha * s * (1.0 - s)
    }
}

#[derive(Clone, Copy)]
pub(crate) struct PwQuadSg {
    alpha: f32,
    alpha2: f32,
}
impl PwQuadSg {
    pub(crate) fn new(alpha: f32) -> Self {
        Self {
            alpha,
            alpha2: alpha * alpha,
        }
    }
}
impl SurrogateGrad for PwQuadSg {
    #[inline(always)]
    fn grad(self, x: f32) -> f32 {
        (self.alpha - self.alpha2 * x.abs()).max(0.0)
    }
}

#[derive(Clone, Copy)]
pub(crate) struct RectSg {
    half_width: f32,
    inv_width: f32,
}
impl RectSg {
    pub(crate) fn new(width: f32) -> Self {
        Self {
            half_width: width / 2.0,
            inv_width: 1.0 / width,
        }
    }
}
impl SurrogateGrad for RectSg {
    #[inline(always)]
    fn grad(self, x: f32) -> f32 {
        if x.abs() < self.half_width {
            self.inv_width
        } else {
            0.0
        }
    }
}
