//! SGD (momentum, weight decay, Nesterov) and AdamW over candle [`Var`]s, with gradient
//! clipping by global norm. Updates follow PyTorch's `torch.optim.SGD` / `AdamW` formulas.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::params::{OptimKind, OptimParams};
use crate::{Error, Result};

/// An optimizer over named variables. The state (momentum buffers or Adam moments) is keyed
/// by variable name so it can be checkpointed.
#[derive(Debug)]
pub struct Optimizer {
    params: Vec<(String, Var)>,
    hp: OptimParams,
    /// Number of steps taken.
    t: u64,
    /// `buf.<name>` (SGD) or `m.<name>`, `v.<name>` (AdamW); created on first use.
    state: HashMap<String, Tensor>,
}

impl Optimizer {
    /// An optimizer over `params` (trainable variables only: leave BN running stats out).
    pub fn new(params: Vec<(String, Var)>, hp: OptimParams) -> Self {
        Self {
            params,
            hp,
            t: 0,
            state: HashMap::new(),
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.t
    }

    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Global L2 norm of the gradients of the parameters (those without a gradient count 0).
    ///
    /// One fused reduction: each gradient's sum of squares stays on its device, the per-parameter
    /// sums are stacked and added there, and only the total is read back (one host
    /// synchronisation per call, not one per parameter).
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut parts = Vec::with_capacity(self.params.len());
        for (_, v) in &self.params {
            if let Some(g) = grads.get(v.as_tensor()) {
                parts.push(g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?);
            }
        }
        if parts.is_empty() {
            return Ok(0.0);
        }
        let sq = Tensor::stack(&parts, 0)?.sum_all()?.to_scalar::<f64>()?;
        Ok(sq.sqrt())
    }

    /// One update with learning rate `lr`. If `clip` is set and the global gradient norm exceeds
    /// it, all gradients are scaled by `clip / norm`. Returns the norm before clipping.
    ///
    /// This always computes the norm (one host synchronisation); [`Optimizer::step_with`] skips
    /// it when neither clipping nor the caller needs it.
    pub fn step(&mut self, grads: &GradStore, lr: f64, clip: Option<f64>) -> Result<f64> {
        let norm = self.step_with(grads, lr, clip, true)?;
        Ok(norm.unwrap_or(0.0))
    }

    /// One update with learning rate `lr`, clipping the global gradient norm to `clip` when set.
    /// The norm is computed (one fused reduction, one read-back) only when `clip` is set or
    /// `want_norm` is true, and returned then; otherwise the update queues its device work
    /// without any host synchronisation and `None` is returned.
    pub fn step_with(
        &mut self,
        grads: &GradStore,
        lr: f64,
        clip: Option<f64>,
        want_norm: bool,
    ) -> Result<Option<f64>> {
        let norm = if clip.is_some() || want_norm {
            Some(self.grad_norm(grads)?)
        } else {
            None
        };
        let scale = match (clip, norm) {
            (Some(c), Some(n)) if n > c => c / (n + 1e-6),
            _ => 1.0,
        };
        self.t += 1;
        let hp = self.hp;
        for (name, var) in &self.params {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // candle leaves a variable's gradient attached to the graph that produced it (e.g.
            // a weight gradient computed from the layer's input activation). Detach it, or the
            // momentum / moment buffers kept in `state` hold every step's activations alive.
            let g = g.detach();
            let g = if scale != 1.0 { (g * scale)? } else { g };
            let p = var.as_detached_tensor();
            match hp.kind {
                OptimKind::Sgd => {
                    let mut d = if hp.weight_decay != 0.0 {
                        (g + (&p * hp.weight_decay)?)?
                    } else {
                        g
                    };
                    if hp.momentum != 0.0 {
                        let key = format!("buf.{name}");
                        let buf = match self.state.get(&key) {
                            Some(b) => ((b * hp.momentum)? + &d)?,
                            None => d.copy()?,
                        };
                        d = if hp.nesterov {
                            (&d + (&buf * hp.momentum)?)?
                        } else {
                            buf.clone()
                        };
                        self.state.insert(key, buf);
                    }
                    var.set(&(p - (d * lr)?)?)?;
                }
                OptimKind::AdamW => {
                    let (mk, vk) = (format!("m.{name}"), format!("v.{name}"));
                    let m = match self.state.get(&mk) {
                        Some(m) => ((m * hp.beta1)? + (&g * (1.0 - hp.beta1))?)?,
                        None => (&g * (1.0 - hp.beta1))?,
                    };
                    let v = match self.state.get(&vk) {
                        Some(v) => ((v * hp.beta2)? + (g.sqr()? * (1.0 - hp.beta2))?)?,
                        None => (g.sqr()? * (1.0 - hp.beta2))?,
                    };
                    let bc1 = 1.0 - hp.beta1.powi(self.t as i32);
                    let bc2 = 1.0 - hp.beta2.powi(self.t as i32);
                    let decayed = (&p * (1.0 - lr * hp.weight_decay))?;
                    let denom = ((&v / bc2)?.sqrt()? + hp.eps)?;
                    let upd = ((&m / bc1)? / denom)?;
                    var.set(&(decayed - (upd * lr)?)?)?;
                    self.state.insert(mk, m);
                    self.state.insert(vk, v);
                }
            }
        }
        Ok(norm)
    }

    /// The state tensors, keyed by `buf.<name>` / `m.<name>` / `v.<name>`.
    pub fn state(&self) -> &HashMap<String, Tensor> {
        &self.state
    }

    /// Restore the state saved by [`Optimizer::state`] and [`Optimizer::steps`].
    pub fn load_state(&mut self, state: HashMap<String, Tensor>, steps: u64) -> Result<()> {
        let names: HashMap<&str, &Var> = self.params.iter().map(|(n, v)| (n.as_str(), v)).collect();
        for (k, t) in &state {
            let name = k
                .strip_prefix("buf.")
                .or_else(|| k.strip_prefix("m."))
                .or_else(|| k.strip_prefix("v."))
                .unwrap_or(k);
            match names.get(name) {
                Some(v) if v.dims() == t.dims() => {}
                Some(v) => {
                    return Err(Error::VarMismatch {
                        name: k.clone(),
                        reason: format!(
                            "optimizer state shape {:?} vs parameter {:?}",
                            t.dims(),
                            v.dims()
                        ),
                    });
                }
                None => {
                    return Err(Error::VarMismatch {
                        name: k.clone(),
                        reason: "optimizer state for an unknown parameter".into(),
                    });
                }
            }
        }
        self.state = state;
        self.t = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn hp(kind: OptimKind) -> OptimParams {
        OptimParams {
            kind,
            momentum: 0.9,
            weight_decay: 0.1,
            nesterov: false,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// Loss = sum(w·c), so the gradient is c.
    fn grads_for(w: &Var, c: &[f32]) -> GradStore {
        let ct = Tensor::from_slice(c, c.len(), &Device::Cpu).unwrap();
        (w.as_tensor() * ct)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
    }

    fn val(w: &Var) -> Vec<f32> {
        w.as_tensor().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn state_buffers_never_hold_the_autograd_graph() {
        // The weight's gradient depends on an activation that is itself the output of a graph
        // (h = relu(x·a)); candle leaves it attached. The optimizer state must not keep it.
        let dev = Device::Cpu;
        let a = Var::from_slice(&[0.5f32, -1.0, 2.0, 0.25], (2, 2), &dev).unwrap();
        let w = Var::from_slice(&[1.0f32, 2.0], (2, 1), &dev).unwrap();
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0], (2, 2), &dev).unwrap();
        let h = x.matmul(a.as_tensor()).unwrap().relu().unwrap();
        let loss = h.matmul(w.as_tensor()).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        for kind in [OptimKind::Sgd, OptimKind::AdamW] {
            let mut opt = Optimizer::new(
                vec![("a".into(), a.clone()), ("w".into(), w.clone())],
                hp(kind),
            );
            opt.step(&grads, 0.1, None).unwrap();
            for (k, t) in opt.state() {
                assert!(!t.track_op(), "{kind:?} state {k} is attached to the graph");
            }
        }
    }

    #[test]
    fn sgd_momentum_and_weight_decay_match_the_formula() {
        for nesterov in [false, true] {
            let w = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
            let mut h = hp(OptimKind::Sgd);
            h.nesterov = nesterov;
            let mut o = Optimizer::new(vec![("w".into(), w.clone())], h);
            let (mut p, mut buf) = ([1.0f64, -2.0], [0.0f64; 2]);
            let c = [0.5f64, 1.5];
            for step in 0..3 {
                let g = grads_for(&w, &[0.5, 1.5]);
                o.step(&g, 0.1, None).unwrap();
                for i in 0..2 {
                    let d = c[i] + 0.1 * p[i];
                    buf[i] = if step == 0 { d } else { 0.9 * buf[i] + d };
                    let upd = if nesterov { d + 0.9 * buf[i] } else { buf[i] };
                    p[i] -= 0.1 * upd;
                }
                let got = val(&w);
                for i in 0..2 {
                    assert!(
                        (got[i] as f64 - p[i]).abs() < 1e-5,
                        "nesterov={nesterov} step {step}"
                    );
                }
            }
            assert_eq!(o.steps(), 3);
        }
    }

    #[test]
    fn adamw_matches_the_formula() {
        let w = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let mut o = Optimizer::new(vec![("w".into(), w.clone())], hp(OptimKind::AdamW));
        let (mut p, mut m, mut v) = ([1.0f64, -2.0], [0.0f64; 2], [0.0f64; 2]);
        let c = [0.5f64, -1.5];
        for t in 1..=3 {
            let g = grads_for(&w, &[0.5, -1.5]);
            o.step(&g, 0.01, None).unwrap();
            for i in 0..2 {
                p[i] *= 1.0 - 0.01 * 0.1;
                m[i] = 0.9 * m[i] + 0.1 * c[i];
                v[i] = 0.999 * v[i] + 0.001 * c[i] * c[i];
                let mh = m[i] / (1.0 - 0.9f64.powi(t));
                let vh = v[i] / (1.0 - 0.999f64.powi(t));
                p[i] -= 0.01 * mh / (vh.sqrt() + 1e-8);
            }
            let got = val(&w);
            for i in 0..2 {
                assert!((got[i] as f64 - p[i]).abs() < 1e-5, "step {t}");
            }
        }
    }

    #[test]
    fn clipping_scales_to_the_given_norm() {
        let w = Var::new(&[0.0f32, 0.0], &Device::Cpu).unwrap();
        let mut h = hp(OptimKind::Sgd);
        h.momentum = 0.0;
        h.weight_decay = 0.0;
        let mut o = Optimizer::new(vec![("w".into(), w.clone())], h);
        let g = grads_for(&w, &[3.0, 4.0]);
        let n = o.step(&g, 1.0, Some(1.0)).unwrap();
        assert!((n - 5.0).abs() < 1e-6);
        let got = val(&w);
        assert!((got[0] + 0.6).abs() < 1e-5 && (got[1] + 0.8).abs() < 1e-5);
    }

    #[test]
    fn the_fused_norm_covers_every_parameter_and_is_skipped_when_not_needed() {
        let a = Var::new(&[0.0f32, 0.0], &Device::Cpu).unwrap();
        let b = Var::new(&[[0.0f32, 0.0], [0.0, 0.0]], &Device::Cpu).unwrap();
        let ca = Tensor::new(&[3.0f32, 4.0], &Device::Cpu).unwrap();
        let cb = Tensor::new(&[[1.0f32, 2.0], [2.0, 4.0]], &Device::Cpu).unwrap();
        let grads = ((a.as_tensor() * &ca).unwrap().sum_all().unwrap()
            + (b.as_tensor() * &cb).unwrap().sum_all().unwrap())
        .unwrap()
        .backward()
        .unwrap();
        let params = || vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let o = Optimizer::new(params(), hp(OptimKind::Sgd));
        // 9 + 16 + 1 + 4 + 4 + 16 = 50.
        assert!((o.grad_norm(&grads).unwrap() - 50f64.sqrt()).abs() < 1e-9);
        for kind in [OptimKind::Sgd, OptimKind::AdamW] {
            let run = |want: bool, clip: Option<f64>| {
                let (a0, b0) = (a.as_tensor().copy().unwrap(), b.as_tensor().copy().unwrap());
                let mut o = Optimizer::new(params(), hp(kind));
                let n = o.step_with(&grads, 0.1, clip, want).unwrap();
                let out = (
                    val(&a),
                    b.as_tensor()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap(),
                );
                a.set(&a0).unwrap();
                b.set(&b0).unwrap();
                (n, out)
            };
            let (none, skipped) = run(false, None);
            let (some, computed) = run(true, None);
            assert_eq!(
                none, None,
                "{kind:?}: no norm without clipping or a request"
            );
            assert!((some.unwrap() - 50f64.sqrt()).abs() < 1e-9);
            assert_eq!(
                skipped, computed,
                "{kind:?}: the norm must not change the update"
            );
            let (clipped_norm, clipped) = run(false, Some(1.0));
            assert!((clipped_norm.unwrap() - 50f64.sqrt()).abs() < 1e-9);
            assert_ne!(clipped, computed);
        }
    }

    #[test]
    fn state_round_trip_continues_identically() {
        let run = |split: bool| {
            let w = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
            let mut o = Optimizer::new(vec![("w".into(), w.clone())], hp(OptimKind::AdamW));
            for i in 0..4 {
                if split && i == 2 {
                    let st = o.state().clone();
                    let steps = o.steps();
                    let w2 = Var::new(val(&w).as_slice(), &Device::Cpu).unwrap();
                    o = Optimizer::new(vec![("w".into(), w2.clone())], hp(OptimKind::AdamW));
                    o.load_state(st, steps).unwrap();
                    return (w2, o, i);
                }
                let g = grads_for(&w, &[0.3, 0.7]);
                o.step(&g, 0.01, None).unwrap();
            }
            (w, o, 4)
        };
        let (w_full, _, _) = run(false);
        let (w, mut o, from) = run(true);
        for _ in from..4 {
            let g = grads_for(&w, &[0.3, 0.7]);
            o.step(&g, 0.01, None).unwrap();
        }
        assert_eq!(val(&w), val(&w_full));
        let bad: HashMap<String, Tensor> = [(
            "m.nope".to_string(),
            Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap(),
        )]
        .into();
        assert!(o.load_state(bad, 1).is_err());
    }
}
