//! The surrogate contract: the forward pass is exactly the Heaviside step, the backward pass is
//! the derivative of the surrogate's primitive (checked by central finite differences), for the
//! fused op, the reference twin and the scalar formula.

mod common;

use candle_core::{Device, Result, Tensor, Var};
use common::flat;
use nmoco_snn::{
    NeuronConfig, NeuronKind, Surrogate, lif_multistep, lif_multistep_ref, plif_multistep,
    spike_ref,
};

/// Sample points, skipping the kinks of the piecewise surrogates.
fn points(sg: &Surrogate) -> Vec<f32> {
    let kinks: Vec<f64> = match *sg {
        Surrogate::PiecewiseQuadratic { alpha } => vec![-1.0 / alpha as f64, 1.0 / alpha as f64],
        Surrogate::Rect { width } => vec![-(width as f64) / 2.0, width as f64 / 2.0],
        _ => vec![],
    };
    (0..200)
        .map(|i| -3.0 + 0.0301 * i as f32 + 0.0007)
        .filter(|&d| kinks.iter().all(|k| (d as f64 - k).abs() > 1e-2))
        .collect()
}

fn fd(sg: &Surrogate, d: f32) -> f64 {
    let h = 1e-4;
    let d = d as f64;
    (sg.primitive(d + h) - sg.primitive(d - h)) / (2.0 * h)
}

#[test]
fn scalar_grad_is_derivative_of_primitive() {
    for sg in Surrogate::ALL.iter().chain(&[
        Surrogate::Atan { alpha: 5.0 },
        Surrogate::Sigmoid { alpha: 1.5 },
        Surrogate::PiecewiseQuadratic { alpha: 2.0 },
        Surrogate::Rect { width: 0.4 },
    ]) {
        for d in points(sg) {
            let g = sg.grad(d) as f64;
            assert!(
                (g - fd(sg, d)).abs() < 1e-4,
                "{sg:?} at {d}: {g} vs {}",
                fd(sg, d)
            );
        }
        // The primitive steps from 0 to 1, like the Heaviside step it smooths.
        assert!(
            sg.primitive(-50.0) < 1e-2 && sg.primitive(50.0) > 0.99,
            "{sg:?}"
        );
    }
}

/// With T = 1 and an IF neuron, the op is `s = H(x - v_th)` and `dL/dx = g * surrogate'(x - v_th)`.
#[test]
fn fused_and_reference_single_step_contract() -> Result<()> {
    for sg in Surrogate::ALL {
        let vth = 0.5f32;
        let d = points(&sg);
        let x: Vec<f32> = d.iter().map(|d| d + vth).collect();
        let n = x.len();
        let cfg = NeuronConfig {
            kind: NeuronKind::If,
            v_threshold: vth,
            surrogate: sg,
            ..NeuronConfig::default()
        };
        for fused in [true, false] {
            let xv = Var::from_tensor(&Tensor::from_vec(x.clone(), (1, n), &Device::Cpu)?)?;
            let s = if fused {
                lif_multistep(xv.as_tensor(), &cfg)?
            } else {
                lif_multistep_ref(xv.as_tensor(), &cfg)?
            };
            let grads = s.sum_all()?.backward()?;
            let gx = flat(grads.get(xv.as_tensor()).expect("grad"));
            let s = flat(&s);
            for i in 0..n {
                // The step as computed by the neuron: h = 0 + x, then h - v_th.
                let di = x[i] - vth;
                let heaviside = if di >= 0.0 { 1.0 } else { 0.0 };
                assert_eq!(s[i], heaviside, "{sg:?} fused={fused} forward at {di}");
                let want = fd(&sg, di);
                assert!(
                    (gx[i] as f64 - want).abs() < 1e-4,
                    "{sg:?} fused={fused} at {di}: {} vs {want}",
                    gx[i]
                );
            }
        }
    }
    Ok(())
}

#[test]
fn spike_ref_is_exact_heaviside_at_zero_and_extremes() -> Result<()> {
    let d = Tensor::new(&[-1e30f32, -1e-30, -0.0, 0.0, 1e-30, 1e30], &Device::Cpu)?;
    for sg in Surrogate::ALL {
        let s = flat(&spike_ref(&d, &sg)?);
        assert_eq!(s, vec![0.0, 0.0, 1.0, 1.0, 1.0, 1.0], "{sg:?}");
    }
    Ok(())
}

/// PLIF's w gradient against the chain rule written out for one step (v starts at 0):
/// `h = x * k`, `s = H(h - v_th)`, `dL/dw = sum g * sg'(h - v_th) * x * k (1 - k)`.
#[test]
fn plif_w_gradient_single_step() -> Result<()> {
    let cfg = NeuronConfig {
        kind: NeuronKind::Plif,
        tau: 2.0,
        ..NeuronConfig::default()
    };
    let w0 = cfg.plif_init_w();
    let xs = [1.3f32, 2.2, 0.4, -0.7];
    let xv = Var::from_tensor(&Tensor::new(&[xs], &Device::Cpu)?)?;
    let wv = Var::new(w0, &Device::Cpu)?;
    let s = plif_multistep(xv.as_tensor(), wv.as_tensor(), &cfg)?;
    let grads = s.sum_all()?.backward()?;
    let gw = grads
        .get(wv.as_tensor())
        .expect("grad w")
        .to_scalar::<f32>()?;
    let k = 1.0 / (1.0 + (-w0).exp());
    let want: f32 = xs
        .iter()
        .map(|&x| cfg.surrogate.grad(x * k - 1.0) * x * k * (1.0 - k))
        .sum();
    assert!((gw - want).abs() < 1e-5, "{gw} vs {want}");
    Ok(())
}
