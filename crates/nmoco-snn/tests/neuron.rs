//! Neuron modules, single-step streaming, configs, layer helpers and error paths.

mod common;

use candle_core::{DType, Device, Module, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use common::{all_configs, flat, rand_tensor};
use nmoco_snn::{
    MultiStepNeuron, NeuronConfig, NeuronImpl, NeuronKind, SeqToAnn, SingleStepNeuron, Surrogate,
    lif_multistep, plif_multistep, seq_apply, seq_fold, seq_unfold,
};

fn vb(map: &VarMap) -> VarBuilder<'static> {
    VarBuilder::from_varmap(map, DType::F32, &Device::Cpu)
}

/// Hand-computed: LIF tau 2, soft reset, decay_input; and IF with hard reset to -0.5.
#[test]
fn known_sequences() -> Result<()> {
    let x = Tensor::new(&[[1.5f32], [1.5], [1.5], [0.0]], &Device::Cpu)?;
    let soft = NeuronConfig {
        v_reset: None,
        ..NeuronConfig::default()
    };
    // h: 0.75, 1.125 (fire, v = 0.125), 0.8125, 0.40625
    assert_eq!(flat(&lif_multistep(&x, &soft)?), vec![0.0, 1.0, 0.0, 0.0]);
    let iff = NeuronConfig {
        kind: NeuronKind::If,
        v_reset: Some(-0.5),
        ..NeuronConfig::default()
    };
    // h: -0.5+1.5 = 1 (fire, v = -0.5), 1 (fire), 1 (fire), -0.5
    assert_eq!(flat(&lif_multistep(&x, &iff)?), vec![1.0, 1.0, 1.0, 0.0]);
    Ok(())
}

#[test]
fn single_step_matches_multi_step() -> Result<()> {
    for (i, cfg) in all_configs().iter().enumerate() {
        let map = VarMap::new();
        let m = MultiStepNeuron::new(cfg, vb(&map))?;
        let x = rand_tensor(&[12, 2, 3, 5], -1.0, 3.0, 50 + i as u64)?;
        let want = flat(&m.forward(&x)?);
        let mut s = SingleStepNeuron::from_multistep(&m)?;
        for round in 0..2 {
            let mut got = Vec::new();
            for t in 0..12 {
                got.extend(flat(&s.step(&x.get(t)?)?));
            }
            assert_eq!(got, want, "round {round} {cfg:?}");
            s.reset();
        }
    }
    Ok(())
}

#[test]
fn state_is_reset_every_forward() -> Result<()> {
    let map = VarMap::new();
    let m = MultiStepNeuron::new(&NeuronConfig::default(), vb(&map))?;
    let x = rand_tensor(&[6, 40], 0.0, 2.0, 3)?;
    assert_eq!(flat(&m.forward(&x)?), flat(&m.forward(&x)?));
    Ok(())
}

#[test]
fn plif_creates_w_and_learns() -> Result<()> {
    let cfg = NeuronConfig {
        kind: NeuronKind::Plif,
        tau: 3.0,
        ..NeuronConfig::default()
    };
    let map = VarMap::new();
    let m = MultiStepNeuron::new(&cfg, vb(&map).pp("lif1"))?;
    let vars = map.data().lock().expect("varmap").clone();
    let w = vars.get("lif1.w").expect("variable lif1.w");
    let w0 = w.as_tensor().to_scalar::<f32>()?;
    assert!((w0 - (-(2.0f32).ln())).abs() < 1e-6);
    // tau = 1 + exp(-w) recovers the configured tau.
    assert!((1.0 + (-w0).exp() - 3.0).abs() < 1e-5);
    let x = rand_tensor(&[8, 64], 0.0, 2.0, 4)?;
    let grads = m.forward(&x)?.sum_all()?.backward()?;
    let gw = grads
        .get(w.as_tensor())
        .expect("grad w")
        .to_scalar::<f32>()?;
    assert!(gw.is_finite() && gw != 0.0, "{gw}");
    Ok(())
}

#[test]
fn module_dispatches_on_implementation() -> Result<()> {
    let x = rand_tensor(&[5, 3, 7], -1.0, 3.0, 9)?;
    for kind in [NeuronKind::If, NeuronKind::Lif, NeuronKind::Plif] {
        let mut outs = Vec::new();
        for implementation in [NeuronImpl::Fused, NeuronImpl::Reference] {
            let cfg = NeuronConfig {
                kind,
                implementation,
                ..NeuronConfig::default()
            };
            let map = VarMap::new();
            let m = MultiStepNeuron::new(&cfg, vb(&map))?;
            outs.push(flat(&Module::forward(&m, &x)?));
        }
        assert_eq!(outs[0], outs[1], "{kind:?}");
    }
    Ok(())
}

#[test]
fn config_serde() {
    let cfg = NeuronConfig {
        kind: NeuronKind::Plif,
        v_reset: None,
        surrogate: Surrogate::Sigmoid { alpha: 4.0 },
        ..NeuronConfig::default()
    };
    let json = serde_json::to_string(&cfg).expect("json");
    assert_eq!(
        serde_json::from_str::<NeuronConfig>(&json).expect("back"),
        cfg
    );
    let t: NeuronConfig =
        toml::from_str("kind = \"if\"\n[surrogate]\ntype = \"rect\"\n").expect("toml");
    assert_eq!(t.kind, NeuronKind::If);
    assert_eq!(t.surrogate, Surrogate::Rect { width: 1.0 });
    assert_eq!(t.tau, 2.0);
    let d: NeuronConfig = toml::from_str("").expect("empty");
    assert_eq!(d, NeuronConfig::default());
    assert_eq!(d.surrogate, Surrogate::Atan { alpha: 2.0 });
    assert!(toml::from_str::<NeuronConfig>("taux = 2.0").is_err());
    assert!(toml::from_str::<NeuronConfig>("kind = \"lifx\"").is_err());
    assert!(toml::from_str::<NeuronConfig>("[surrogate]\ntype = \"atan\"\nbeta = 1.0").is_err());
}

#[test]
fn bad_inputs_are_errors() -> Result<()> {
    let scalar = Tensor::new(1f32, &Device::Cpu)?;
    assert!(lif_multistep(&scalar, &NeuronConfig::default()).is_err());
    let x = rand_tensor(&[3, 4], 0.0, 1.0, 1)?;
    let bad_tau = NeuronConfig {
        tau: 0.0,
        ..NeuronConfig::default()
    };
    assert!(lif_multistep(&x, &bad_tau).is_err());
    let plif_tau = NeuronConfig {
        kind: NeuronKind::Plif,
        tau: 1.0,
        ..NeuronConfig::default()
    };
    assert!(MultiStepNeuron::new(&plif_tau, vb(&VarMap::new())).is_err());
    let bad_sg = NeuronConfig {
        surrogate: Surrogate::Atan { alpha: -1.0 },
        ..NeuronConfig::default()
    };
    assert!(lif_multistep(&x, &bad_sg).is_err());
    let w2 = Tensor::new(&[0.1f32, 0.2], &Device::Cpu)?;
    assert!(plif_multistep(&x, &w2, &NeuronConfig::default()).is_err());
    let plif = NeuronConfig {
        kind: NeuronKind::Plif,
        ..NeuronConfig::default()
    };
    assert!(lif_multistep(&x, &plif).is_err());
    assert!(lif_multistep(&x.to_dtype(DType::F64)?, &NeuronConfig::default()).is_err());
    assert!(seq_fold(&Tensor::new(&[1f32], &Device::Cpu)?).is_err());
    assert!(seq_unfold(&x, 0).is_err());
    assert!(seq_unfold(&x, 2).is_err());
    Ok(())
}

#[test]
fn non_contiguous_and_empty_inputs() -> Result<()> {
    let x = rand_tensor(&[7, 6], -1.0, 3.0, 11)?;
    let xt = x.t()?; // [6, 7], non-contiguous
    let cfg = NeuronConfig::default();
    assert_eq!(
        flat(&lif_multistep(&xt, &cfg)?),
        flat(&lif_multistep(&xt.contiguous()?, &cfg)?)
    );
    let empty = Tensor::zeros((4, 0, 3), DType::F32, &Device::Cpu)?;
    assert_eq!(lif_multistep(&empty, &cfg)?.dims(), &[4, 0, 3]);
    Ok(())
}

#[test]
fn fold_unfold_and_seq_to_ann() -> Result<()> {
    let x = rand_tensor(&[4, 3, 2, 5], -1.0, 1.0, 12)?;
    let f = seq_fold(&x)?;
    assert_eq!(f.dims(), &[12, 2, 5]);
    assert_eq!(flat(&seq_unfold(&f, 4)?), flat(&x));
    assert_eq!(seq_unfold(&f, 4)?.dims(), &[4, 3, 2, 5]);
    // A linear layer through SeqToAnn equals applying it to every step.
    let map = VarMap::new();
    let lin = candle_nn::linear(5, 7, vb(&map).pp("fc"))?;
    let wrapped = SeqToAnn::new(lin.clone());
    let y = wrapped.forward(&x)?;
    assert_eq!(y.dims(), &[4, 3, 2, 7]);
    for t in 0..4 {
        let yt = lin.forward(&x.get(t)?)?;
        let d = (y.get(t)? - yt)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6);
    }
    // Batch statistics over the folded batch are statistics over T*B.
    let mean = seq_apply(&x, |f| f.mean_keepdim(0)?.broadcast_as(f.shape()))?;
    let want = x.flatten_to(1)?.mean_keepdim(0)?;
    let d = (mean.get(2)?.get(1)? - want.get(0)?.reshape((2, 5))?)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert!(d < 1e-6);
    Ok(())
}

#[test]
fn gradient_flows_to_input_through_module() -> Result<()> {
    let map = VarMap::new();
    let m = MultiStepNeuron::new(&NeuronConfig::default(), vb(&map))?;
    let x = Var::from_tensor(&rand_tensor(&[6, 10], 0.0, 2.0, 13)?)?;
    let grads = m.forward(x.as_tensor())?.sum_all()?.backward()?;
    let g = flat(grads.get(x.as_tensor()).expect("grad"));
    assert!(g.iter().any(|v| *v != 0.0) && g.iter().all(|v| v.is_finite()));
    Ok(())
}
