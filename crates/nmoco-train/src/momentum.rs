//! The subordinate (key) encoder as a momentum copy of the master encoder.

use candle_core::Var;
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the momentum coefficient `m` evolves (config `moco.m_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MomentumSchedule {
    /// `m` stays at its base value.
    #[default]
    Constant,
    /// MoCo v3: `m_s = 1 − (1 − m)·(cos(π·s/S) + 1)/2`, rising from `m` to 1 over `S` steps.
    Cosine,
}

/// The momentum coefficient at `step` of `total_steps`.
pub fn momentum_at(base: f64, schedule: MomentumSchedule, step: usize, total_steps: usize) -> f64 {
    match schedule {
        MomentumSchedule::Constant => base,
        MomentumSchedule::Cosine => {
            let frac = step as f64 / total_steps.max(1) as f64;
            1.0 - (1.0 - base) * ((std::f64::consts::PI * frac).cos() + 1.0) / 2.0
        }
    }
}

pub use nmoco_models::sorted_vars;

fn paired(key: &VarMap, query: &VarMap) -> Result<Vec<(String, Var, Var)>> {
    let k = sorted_vars(key);
    let q = sorted_vars(query);
    if let Some(name) = q.keys().find(|n| !k.contains_key(*n)) {
        return Err(Error::VarMismatch {
            name: name.clone(),
            reason: "missing from the key encoder".into(),
        });
    }
    if let Some(name) = k.keys().find(|n| !q.contains_key(*n)) {
        return Err(Error::VarMismatch {
            name: name.clone(),
            reason: "missing from the master encoder".into(),
        });
    }
    let mut out = Vec::with_capacity(q.len());
    for (name, qv) in q {
        let kv = k[&name].clone();
        if kv.dims() != qv.dims() {
            return Err(Error::VarMismatch {
                name,
                reason: format!("shape {:?} vs {:?}", kv.dims(), qv.dims()),
            });
        }
        out.push((name, kv, qv));
    }
    Ok(out)
}

/// `θ_k ← θ_q` for every variable (parameters and BN running statistics).
pub fn copy_vars(key: &VarMap, query: &VarMap) -> Result<()> {
    for (_, kv, qv) in paired(key, query)? {
        kv.set(&qv.as_detached_tensor().copy()?)?;
    }
    Ok(())
}

/// `θ_k ← m·θ_k + (1 − m)·θ_q` for every variable (parameters and BN running statistics).
pub fn momentum_update(key: &VarMap, query: &VarMap, m: f64) -> Result<()> {
    for (_, kv, qv) in paired(key, query)? {
        let new = ((kv.as_detached_tensor() * m)? + (qv.as_detached_tensor() * (1.0 - m))?)?;
        kv.set(&new)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    fn map(vals: &[(&str, &[f32])]) -> VarMap {
        let m = VarMap::new();
        {
            let mut d = m.data().lock().unwrap();
            for (n, v) in vals {
                let t = Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap();
                d.insert(n.to_string(), Var::from_tensor(&t).unwrap());
            }
        }
        m
    }

    fn get(m: &VarMap, n: &str) -> Vec<f32> {
        m.data().lock().unwrap()[n]
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap()
    }

    #[test]
    fn update_is_the_ema_of_every_var_including_buffers() {
        let q = map(&[("w", &[1.0, 2.0]), ("bn.running_mean", &[4.0])]);
        let k = map(&[("w", &[0.0, 0.0]), ("bn.running_mean", &[0.0])]);
        momentum_update(&k, &q, 0.75).unwrap();
        assert_eq!(get(&k, "w"), vec![0.25, 0.5]);
        assert_eq!(get(&k, "bn.running_mean"), vec![1.0]);
        momentum_update(&k, &q, 0.5).unwrap();
        assert_eq!(get(&k, "w"), vec![0.625, 1.25]);
        // The master is untouched.
        assert_eq!(get(&q, "w"), vec![1.0, 2.0]);
        copy_vars(&k, &q).unwrap();
        assert_eq!(get(&k, "bn.running_mean"), vec![4.0]);
        // The copy is independent storage.
        q.data().lock().unwrap()["w"]
            .set(&Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap())
            .unwrap();
        assert_eq!(get(&k, "w"), vec![1.0, 2.0]);
    }

    #[test]
    fn mismatched_maps_are_rejected() {
        let q = map(&[("w", &[1.0, 2.0])]);
        let k = map(&[("v", &[0.0, 0.0])]);
        assert!(matches!(
            momentum_update(&k, &q, 0.9),
            Err(Error::VarMismatch { .. })
        ));
        let k = map(&[("w", &[0.0])]);
        assert!(matches!(
            momentum_update(&k, &q, 0.9),
            Err(Error::VarMismatch { .. })
        ));
    }

    #[test]
    fn cosine_schedule_rises_from_base_to_one() {
        assert_eq!(momentum_at(0.99, MomentumSchedule::Constant, 50, 100), 0.99);
        assert!((momentum_at(0.99, MomentumSchedule::Cosine, 0, 100) - 0.99).abs() < 1e-12);
        assert!((momentum_at(0.99, MomentumSchedule::Cosine, 50, 100) - 0.995).abs() < 1e-12);
        assert!((momentum_at(0.99, MomentumSchedule::Cosine, 100, 100) - 1.0).abs() < 1e-12);
    }
}
