//! Neuron configuration: kind, constants, reset mode, surrogate and implementation choice.

use serde::{Deserialize, Serialize};

use crate::error::SnnError;
use crate::surrogate::Surrogate;

/// The charge equation of a neuron (everything else, firing and reset, is shared).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NeuronKind {
    /// Integrate-and-fire: `h = v + x`.
    If,
    /// Leaky integrate-and-fire with a fixed `tau` (`k = 1/tau`):
    /// `decay_input`: `h = v + (x - (v - v_reset)) * k`, else `h = v - (v - v_reset) * k + x`.
    #[default]
    Lif,
    /// Parametric LIF: as LIF with `k = sigmoid(w)`, i.e. `tau = 1 + exp(-w)` (SpikingJelly's
    /// `ParametricLIFNode` parametrisation); `w` is learnable and initialised to `-ln(tau - 1)`.
    Plif,
}

/// Which implementation runs the time loop. `Fused` never silently falls back to `Reference`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NeuronImpl {
    /// One custom op for the forward time loop and one for BPTT.
    #[default]
    Fused,
    /// The plain-candle-ops twin (autograd through every step); slow, for checking.
    Reference,
}

/// Configuration of a spiking neuron layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NeuronConfig {
    pub kind: NeuronKind,
    /// Membrane time constant (LIF), or the initial one (PLIF). Ignored by IF.
    pub tau: f32,
    pub v_threshold: f32,
    /// `Some(v)`: hard reset to `v` after a spike (the membrane also starts at `v`);
    /// `None`: soft reset by subtracting `v_threshold` (the membrane starts at 0).
    pub v_reset: Option<f32>,
    /// LIF/PLIF: whether the input is scaled by `1/tau` too.
    pub decay_input: bool,
    /// Cut the reset path out of the gradient (the spike in the reset is treated as a constant).
    pub detach_reset: bool,
    pub surrogate: Surrogate,
    pub implementation: NeuronImpl,
}

impl Default for NeuronConfig {
    fn default() -> Self {
        Self {
            kind: NeuronKind::Lif,
            tau: 2.0,
            v_threshold: 1.0,
            v_reset: Some(0.0),
            decay_input: true,
            detach_reset: true,
            surrogate: Surrogate::default(),
            implementation: NeuronImpl::Fused,
        }
    }
}

/// How the charge equation is formed; `Plif` shares LIF's forms with a learnable `k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Charge {
    If,
    Decay,
    NoDecay,
}

impl Charge {
    pub(crate) fn as_u8(self) -> u8 {
        match self {
            Charge::If => 0,
            Charge::Decay => 1,
            Charge::NoDecay => 2,
        }
    }
}

/// Scalars the kernels need, validated and resolved from a [`NeuronConfig`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Params {
    pub charge: Charge,
    /// `1/tau` (LIF); unused by IF; PLIF takes `k` from `w` instead.
    pub k: f32,
    pub vth: f32,
    /// The reset value used in the charge equation and the hard reset (0 for soft reset).
    pub vr: f32,
    pub hard: bool,
    pub detach: bool,
    pub surrogate: Surrogate,
}

impl NeuronConfig {
    /// Check the values and resolve them for the kernels.
    pub(crate) fn params(&self) -> Result<Params, SnnError> {
        let finite = |field: &'static str, value: f32| {
            if value.is_finite() {
                Ok(())
            } else {
                Err(SnnError::Config {
                    field,
                    value,
                    reason: "must be finite",
                })
            }
        };
        finite("v_threshold", self.v_threshold)?;
        finite("tau", self.tau)?;
        if let Some(v) = self.v_reset {
            finite("v_reset", v)?;
        }
        match self.kind {
            NeuronKind::Lif if self.tau <= 0.0 => {
                return Err(SnnError::Config {
                    field: "tau",
                    value: self.tau,
                    reason: "lif needs tau > 0",
                });
            }
            NeuronKind::Plif if self.tau <= 1.0 => {
                return Err(SnnError::Config {
                    field: "tau",
                    value: self.tau,
                    reason: "plif needs tau > 1 (tau = 1 + exp(-w))",
                });
            }
            _ => {}
        }
        self.surrogate.validate()?;
        let charge = match (self.kind, self.decay_input) {
            (NeuronKind::If, _) => Charge::If,
            (_, true) => Charge::Decay,
            (_, false) => Charge::NoDecay,
        };
        Ok(Params {
            charge,
            k: 1.0 / self.tau,
            vth: self.v_threshold,
            vr: self.v_reset.unwrap_or(0.0),
            hard: self.v_reset.is_some(),
            detach: self.detach_reset,
            surrogate: self.surrogate,
        })
    }

    /// Every neuron variant the kernels specialise on (kind x reset x `decay_input` x
    /// `detach_reset` x surrogate; IF has no `decay_input` choice): 120 configs, used by the
    /// parity tests and the GPU check. Hard resets to 0 and to -0.25, and the soft reset.
    pub fn all_variants() -> Vec<NeuronConfig> {
        let mut out = Vec::new();
        for kind in [NeuronKind::If, NeuronKind::Lif, NeuronKind::Plif] {
            for v_reset in [Some(0.0), Some(-0.25), None] {
                for decay_input in [true, false] {
                    if kind == NeuronKind::If && !decay_input {
                        continue;
                    }
                    for detach_reset in [true, false] {
                        for surrogate in Surrogate::ALL {
                            out.push(NeuronConfig {
                                kind,
                                tau: if kind == NeuronKind::Plif { 3.0 } else { 2.0 },
                                v_threshold: 1.0,
                                v_reset,
                                decay_input,
                                detach_reset,
                                surrogate,
                                ..NeuronConfig::default()
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// PLIF's initial `w` for this config's `tau`: `-ln(tau - 1)`.
    pub fn plif_init_w(&self) -> f32 {
        -(self.tau - 1.0).ln()
    }
}
