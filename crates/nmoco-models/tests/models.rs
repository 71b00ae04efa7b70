//! Shapes, parameter arithmetic, names, checkpoints, gradients and BN statistics of the
//! backbones, on tiny inputs.

use candle_core::{DType, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use nmoco_models::{
    Backbone, BackboneConfig, BatchNorm, Classifier, Connect, ProjectionHead, connect,
    count_params, is_buffer, load_weights, max_pool_3x3_s2, save_weights, seeded_init, var_shapes,
};

mod common;

use common::{DEV, frames, lcg, tiny_spikformer};

fn build(cfg: &BackboneConfig, seed: u64) -> Result<(VarMap, Backbone)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &DEV);
    let net = Backbone::new(cfg, vb)?;
    seeded_init(&varmap, seed)?;
    Ok((varmap, net))
}

/// Runs enough train-mode passes for the running statistics to approach the batch statistics
/// (0.9^60 ≈ 0.002 of the initial values remain), so eval mode produces spikes.
fn warm_stats(net: &Backbone, x: &Tensor) -> Result<()> {
    for _ in 0..60 {
        net.forward(x, true)?;
    }
    let y = net.forward(x, false)?;
    assert!(
        y.sum_all()?.to_scalar::<f32>()? > 0.0,
        "eval mode must spike after warm-up"
    );
    Ok(())
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

// ---------------------------------------------------------------- parameter arithmetic

/// conv k×k c_in→c_out without bias + BN(c_out) (weight and bias).
fn conv_bn(c_in: usize, c_out: usize, k: usize) -> usize {
    c_in * c_out * k * k + 2 * c_out
}

#[test]
fn sew_resnet18_param_count_matches_arithmetic() -> Result<()> {
    let stem = conv_bn(2, 64, 7); // 6,272 + 128
    let stage1 = 2 * (2 * conv_bn(64, 64, 3)); // 2 blocks × 2 convs
    let stage = |c_in: usize, c: usize| {
        // first block: conv1 c_in→c (stride 2), conv2 c→c, 1×1 shortcut c_in→c; second block.
        conv_bn(c_in, c, 3) + conv_bn(c, c, 3) + conv_bn(c_in, c, 1) + 2 * conv_bn(c, c, 3)
    };
    let expected = stem + stage1 + stage(64, 128) + stage(128, 256) + stage(256, 512);
    assert_eq!(expected, 11_173_376);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &DEV);
    let net = Backbone::new(&BackboneConfig::sew_resnet18(), vb.pp("backbone"))?;
    assert_eq!(net.feature_dim(), 512);
    assert_eq!(count_params(&varmap), expected);
    let _head = Classifier::new(512, 10, vb.pp("head"))?;
    assert_eq!(count_params(&varmap), expected + 512 * 10 + 10); // 11,178,506
    Ok(())
}

#[test]
fn sew_anchor_param_count_is_sewnet_py() -> Result<()> {
    // stem 2→32, 2 blocks at 32, transition 32→64 /2, 2 blocks at 64, Linear(64→10).
    let expected = conv_bn(2, 32, 3)
        + 2 * 2 * conv_bn(32, 32, 3)
        + conv_bn(32, 64, 3)
        + 2 * 2 * conv_bn(64, 64, 3);
    assert_eq!(expected, 204_288);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &DEV);
    let _net = Backbone::new(&BackboneConfig::sew_anchor(), vb.pp("backbone"))?;
    let _head = Classifier::new(64, 10, vb.pp("head"))?;
    assert_eq!(count_params(&varmap), 204_938); // sewnet.py's `sum(p.numel())`
    Ok(())
}

#[test]
fn sew_small_param_count_matches_arithmetic() -> Result<()> {
    let expected = conv_bn(2, 16, 3)
        + conv_bn(16, 32, 3)
        + 2 * conv_bn(32, 32, 3)
        + conv_bn(32, 64, 3)
        + 2 * conv_bn(64, 64, 3);
    assert_eq!(expected, 116_096);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &DEV);
    let _net = Backbone::new(&BackboneConfig::sew_small(), vb)?;
    assert_eq!(count_params(&varmap), expected);
    Ok(())
}

#[test]
fn spikformer_2_256_param_count_matches_arithmetic() -> Result<()> {
    let d = 256;
    let sps = conv_bn(2, d / 8, 3)
        + conv_bn(d / 8, d / 4, 3)
        + conv_bn(d / 4, d / 2, 3)
        + conv_bn(d / 2, d, 3)
        + conv_bn(d, d, 3); // RPE
    let lin_bn = |i: usize, o: usize, bias: bool| i * o + if bias { o } else { 0 } + 2 * o;
    let block = 3 * lin_bn(d, d, false) // Q, K, V
        + lin_bn(d, d, true) // proj
        + lin_bn(d, 4 * d, true) // fc1
        + lin_bn(4 * d, d, true); // fc2
    let expected = sps + 2 * block;
    assert_eq!(sps, 978_944);
    assert_eq!(block, 792_576);
    assert_eq!(expected, 2_564_096);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &DEV);
    let net = Backbone::new(&BackboneConfig::spikformer_2_256(), vb)?;
    assert_eq!(net.feature_dim(), 256);
    assert_eq!(count_params(&varmap), expected);
    Ok(())
}

#[test]
fn plif_adds_one_parameter_per_neuron_layer() -> Result<()> {
    let mut cfg = BackboneConfig::sew_anchor();
    if let BackboneConfig::SewResnet(c) = &mut cfg {
        c.neuron.kind = nmoco_snn::NeuronKind::Plif;
    }
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &DEV);
    let _net = Backbone::new(&cfg, vb)?;
    // 10 conv-BN-neuron units, one scalar `w` each.
    assert_eq!(count_params(&varmap), 204_288 + 10);
    assert!(
        var_shapes(&varmap)
            .iter()
            .any(|(n, d)| n == "stem.sn.w" && d.is_empty())
    );
    Ok(())
}

// ---------------------------------------------------------------- names

#[test]
fn sew_anchor_names_are_stable() -> Result<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &DEV);
    let _net = Backbone::new(&BackboneConfig::sew_anchor(), vb)?;
    let mut units = vec!["stem".to_string()];
    for s in 0..2 {
        if s == 1 {
            units.push("stages.1.transition".into());
        }
        for b in 0..2 {
            units.push(format!("stages.{s}.blocks.{b}.1"));
            units.push(format!("stages.{s}.blocks.{b}.2"));
        }
    }
    let mut expected = Vec::new();
    for u in &units {
        let (conv, bn) = match u.strip_suffix(".1").or_else(|| u.strip_suffix(".2")) {
            Some(p) => {
                let i = &u[u.len() - 1..];
                (format!("{p}.conv{i}"), format!("{p}.bn{i}"))
            }
            None => (format!("{u}.conv"), format!("{u}.bn")),
        };
        expected.push(format!("{conv}.weight"));
        for s in ["weight", "bias", "running_mean", "running_var"] {
            expected.push(format!("{bn}.{s}"));
        }
    }
    expected.sort();
    let names: Vec<String> = var_shapes(&varmap).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, expected);
    let shapes = var_shapes(&varmap);
    let get = |n: &str| shapes.iter().find(|(k, _)| k == n).map(|(_, d)| d.clone());
    assert_eq!(get("stem.conv.weight"), Some(vec![32, 2, 3, 3]));
    assert_eq!(
        get("stages.1.transition.conv.weight"),
        Some(vec![64, 32, 3, 3])
    );
    assert_eq!(
        get("stages.1.blocks.1.conv2.weight"),
        Some(vec![64, 64, 3, 3])
    );
    assert_eq!(get("stages.0.blocks.0.bn1.running_var"), Some(vec![32]));
    Ok(())
}

#[test]
fn resnet18_and_spikformer_names_are_stable() -> Result<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &DEV);
    let _a = Backbone::new(&BackboneConfig::sew_resnet18(), vb.pp("sew"))?;
    let _b = Backbone::new(&tiny_spikformer(), vb.pp("sf"))?;
    let _h = ProjectionHead::new(32, 16, 8, vb.pp("head"))?;
    let shapes = var_shapes(&varmap);
    let get = |n: &str| shapes.iter().find(|(k, _)| k == n).map(|(_, d)| d.clone());
    assert_eq!(get("sew.stem.conv.weight"), Some(vec![64, 2, 7, 7]));
    assert_eq!(
        get("sew.stages.1.blocks.0.downsample.conv.weight"),
        Some(vec![128, 64, 1, 1])
    );
    assert_eq!(get("sew.stages.0.blocks.0.downsample.conv.weight"), None);
    assert_eq!(
        get("sew.stages.3.blocks.1.bn2.running_mean"),
        Some(vec![512])
    );
    assert_eq!(get("sf.sps.conv0.weight"), Some(vec![4, 2, 3, 3]));
    assert_eq!(get("sf.sps.rpe_conv.weight"), Some(vec![32, 32, 3, 3]));
    assert_eq!(get("sf.blocks.0.attn.q.weight"), Some(vec![32, 32]));
    assert_eq!(get("sf.blocks.0.attn.q.bias"), None);
    assert_eq!(get("sf.blocks.0.attn.proj.bias"), Some(vec![32]));
    assert_eq!(get("sf.blocks.0.attn.v_bn.running_var"), Some(vec![32]));
    assert_eq!(get("sf.blocks.0.mlp.fc1.weight"), Some(vec![64, 32]));
    assert_eq!(get("sf.blocks.0.mlp.fc2_bn.weight"), Some(vec![32]));
    assert_eq!(get("head.fc1.weight"), Some(vec![16, 32]));
    assert_eq!(get("head.bn1.running_mean"), Some(vec![16]));
    assert_eq!(get("head.fc2.bias"), Some(vec![8]));
    let buffers = shapes.iter().filter(|(n, _)| is_buffer(n)).count();
    assert!(buffers > 0 && buffers % 2 == 0);
    assert!(is_buffer("a.bn.running_mean") && is_buffer("running_var"));
    assert!(!is_buffer("a.bn.weight") && !is_buffer("a.running_mean_x"));
    Ok(())
}

// ---------------------------------------------------------------- shapes

#[test]
fn forward_shapes() -> Result<()> {
    let x = frames(&[2, 2, 2, 32, 32], 0.3, 1)?;
    let (_, small) = build(&BackboneConfig::sew_small(), 1)?;
    assert_eq!(small.forward(&x, true)?.dims(), &[2, 2, 64]);
    assert_eq!(small.forward(&x, false)?.dims(), &[2, 2, 64]);
    let (_, anchor) = build(&BackboneConfig::sew_anchor(), 2)?;
    assert_eq!(anchor.forward(&x, true)?.dims(), &[2, 2, 64]);
    let (_, r18) = build(&BackboneConfig::sew_resnet18(), 3)?;
    let x1 = frames(&[2, 1, 2, 32, 32], 0.3, 2)?;
    assert_eq!(r18.forward(&x1, true)?.dims(), &[2, 1, 512]);
    let (_, sf) = build(&tiny_spikformer(), 4)?;
    let x2 = frames(&[2, 2, 2, 16, 16], 0.3, 3)?;
    assert_eq!(sf.forward(&x2, true)?.dims(), &[2, 2, 32]);
    assert_eq!(sf.forward(&x2, false)?.dims(), &[2, 2, 32]);
    // Wrong channel count or rank is a typed error, not a panic.
    assert!(
        small
            .forward(&frames(&[2, 2, 3, 32, 32], 0.3, 1)?, false)
            .is_err()
    );
    assert!(
        small
            .forward(&frames(&[2, 2, 32, 32], 0.3, 1)?, false)
            .is_err()
    );
    Ok(())
}

#[test]
fn heads_shapes() -> Result<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &DEV);
    let proj = ProjectionHead::new(8, 16, 4, vb.pp("proj"))?;
    let cls = Classifier::new(8, 3, vb.pp("cls"))?;
    let f = Tensor::from_vec(lcg(5, 3 * 2 * 8), (3, 2, 8), &DEV)?;
    assert_eq!(proj.forward(&f, true)?.dims(), &[3, 2, 4]);
    assert_eq!(proj.forward(&f, false)?.dims(), &[3, 2, 4]);
    let logits = cls.forward(&f)?;
    assert_eq!(logits.dims(), &[2, 3]);
    // The classifier acts on the time mean.
    let again = cls.forward(&f.mean_keepdim(0)?)?;
    assert!(max_abs_diff(&logits, &again)? < 1e-6);
    Ok(())
}

// ---------------------------------------------------------------- checkpoints

#[test]
fn safetensors_round_trip_gives_identical_outputs() -> Result<()> {
    let dir = tempfile::tempdir().map_err(candle_core::Error::wrap)?;
    let path = dir.path().join("sew.safetensors");
    let x = frames(&[2, 2, 2, 32, 32], 0.3, 7)?;
    let (varmap_a, net_a) = build(&BackboneConfig::sew_small(), 11)?;
    warm_stats(&net_a, &x)?;
    let y_a = net_a.forward(&x, false)?;
    save_weights(&varmap_a, &path).map_err(candle_core::Error::wrap)?;

    let (varmap_b, net_b) = build(&BackboneConfig::sew_small(), 12)?;
    warm_stats(&net_b, &x)?;
    let before = net_b.forward(&x, false)?;
    assert!(
        max_abs_diff(&before, &y_a)? > 0.0,
        "different seeds must differ"
    );
    load_weights(&varmap_b, &path, true).map_err(candle_core::Error::wrap)?;
    assert_eq!(max_abs_diff(&net_b.forward(&x, false)?, &y_a)?, 0.0);

    // Loading straight from the file (no VarMap) gives the same network too.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &DEV)? };
    let net_c = Backbone::new(&BackboneConfig::sew_small(), vb)?;
    assert_eq!(max_abs_diff(&net_c.forward(&x, false)?, &y_a)?, 0.0);

    // A checkpoint of another architecture is rejected before anything is modified.
    let (varmap_d, _net_d) = build(&BackboneConfig::sew_anchor(), 13)?;
    let err = load_weights(&varmap_d, &path, false).map_err(|e| e.to_string());
    assert!(err.is_err());
    Ok(())
}

// ---------------------------------------------------------------- gradients

fn assert_all_grads(cfg: &BackboneConfig, x: &Tensor, seed: u64) -> Result<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &DEV);
    let net = Backbone::new(cfg, vb.pp("backbone"))?;
    let head = Classifier::new(net.feature_dim(), 3, vb.pp("head"))?;
    seeded_init(&varmap, seed)?;
    let logits = head.forward(&net.forward(x, true)?)?;
    let labels = Tensor::new(&[0u32, 2], &DEV)?;
    let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
    let grads = loss.backward()?;
    let data = varmap.data().lock().expect("varmap lock");
    let mut checked = 0;
    for (name, var) in data.iter() {
        let g = grads.get(var);
        if is_buffer(name) {
            assert!(g.is_none(), "buffer {name} must not get a gradient");
            continue;
        }
        let g = g.unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
        assert!(norm.is_finite(), "{name}: non-finite gradient");
        assert!(norm > 0.0, "{name}: zero gradient");
        checked += 1;
    }
    assert!(checked > 0);
    Ok(())
}

#[test]
fn gradients_reach_every_parameter_sew() -> Result<()> {
    let x = frames(&[2, 2, 2, 16, 16], 0.5, 21)?;
    assert_all_grads(&BackboneConfig::sew_small(), &x, 21)?;
    // PLIF (learnable `w` per layer) with IAND connect.
    let mut cfg = BackboneConfig::sew_small();
    if let BackboneConfig::SewResnet(c) = &mut cfg {
        c.neuron.kind = nmoco_snn::NeuronKind::Plif;
        c.connect = Connect::Iand;
    }
    assert_all_grads(&cfg, &x, 22)
}

#[test]
fn gradients_reach_every_parameter_spikformer() -> Result<()> {
    let x = frames(&[2, 2, 2, 16, 16], 0.5, 23)?;
    // A lower threshold everywhere keeps every layer (attention included) spiking at this tiny
    // size, so that every weight sees a non-zero input.
    let mut cfg = tiny_spikformer();
    if let BackboneConfig::Spikformer(c) = &mut cfg {
        c.neuron.v_threshold = 0.25;
        c.attn_threshold = 0.125;
    }
    assert_all_grads(&cfg, &x, 23)
}

#[test]
fn sgd_step_changes_the_loss() -> Result<()> {
    let x = frames(&[2, 2, 2, 16, 16], 0.5, 31)?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &DEV);
    let net = Backbone::new(&BackboneConfig::sew_small(), vb.pp("backbone"))?;
    let head = Classifier::new(64, 3, vb.pp("head"))?;
    seeded_init(&varmap, 31)?;
    let params: Vec<Var> = {
        let data = varmap.data().lock().expect("varmap lock");
        data.iter()
            .filter(|(n, _)| !is_buffer(n))
            .map(|(_, v)| v.clone())
            .collect()
    };
    let mut sgd = <candle_nn::SGD as candle_nn::Optimizer>::new(params, 0.5)?;
    let labels = Tensor::new(&[0u32, 2], &DEV)?;
    let loss = |train| -> Result<f32> {
        let l = candle_nn::loss::cross_entropy(&head.forward(&net.forward(&x, train)?)?, &labels)?;
        l.to_scalar::<f32>()
    };
    let l0 = candle_nn::loss::cross_entropy(&head.forward(&net.forward(&x, true)?)?, &labels)?;
    candle_nn::Optimizer::backward_step(&mut sgd, &l0)?;
    let l1 = loss(true)?;
    assert!(l1.is_finite());
    assert_ne!(l1, l0.to_scalar::<f32>()?);
    Ok(())
}

#[test]
fn seeded_init_is_deterministic_and_within_bounds() -> Result<()> {
    let values = |seed| -> Result<Vec<(String, Vec<f32>)>> {
        let (varmap, _net) = build(&BackboneConfig::sew_small(), seed)?;
        let shapes = var_shapes(&varmap);
        let data = varmap.data().lock().expect("varmap lock");
        let mut out = Vec::new();
        for (name, _) in shapes {
            out.push((
                name.clone(),
                data[&name].as_tensor().flatten_all()?.to_vec1::<f32>()?,
            ));
        }
        Ok(out)
    };
    let (a, b, c) = (values(5)?, values(5)?, values(6)?);
    assert_eq!(a, b);
    assert_ne!(a, c);
    for (name, v) in &a {
        if name.ends_with(".weight") && !name.contains("bn") {
            assert!(v.iter().any(|x| *x != 0.0), "{name}");
        }
        if name.ends_with(".running_var") || name.ends_with("bn.weight") {
            assert!(
                v.iter().all(|x| *x == 1.0),
                "{name} must keep its constant init"
            );
        }
    }
    let stem = &a
        .iter()
        .find(|(n, _)| n == "stem.conv.weight")
        .expect("stem")
        .1;
    let bound = 1.0 / 18f32.sqrt();
    assert!(stem.iter().all(|x| x.abs() <= bound));
    assert!(stem.iter().any(|x| x.abs() > 0.5 * bound));
    Ok(())
}

// ---------------------------------------------------------------- batch norm

#[test]
fn batch_norm_updates_running_stats_in_train_mode_and_uses_them_in_eval() -> Result<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &DEV);
    let bn = BatchNorm::new(2, vb.pp("bn"))?;
    // [N=2, C=2, 2] with channel 0 = 1,2,3,4 and channel 1 = 0,0,0,8.
    let x = Tensor::new(&[[[1f32, 2.], [0., 0.]], [[3., 4.], [0., 8.]]], &DEV)?;
    let y = bn.forward(&x, true)?;
    // Channel 0: mean 2.5, biased var 1.25, unbiased 5/3; channel 1: mean 2, var 12, unbiased 16.
    let rm = bn.running_mean().as_tensor().to_vec1::<f32>()?;
    let rv = bn.running_var().as_tensor().to_vec1::<f32>()?;
    assert!((rm[0] - 0.25).abs() < 1e-6 && (rm[1] - 0.2).abs() < 1e-6);
    assert!((rv[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-5);
    assert!((rv[1] - (0.9 + 0.1 * 16.0)).abs() < 1e-5);
    let y0 = y.to_vec3::<f32>()?;
    assert!((y0[0][0][0] - (1.0 - 2.5) / (1.25f32 + 1e-5).sqrt()).abs() < 1e-5);
    // The VarMap sees the same values (shared storage), so checkpoints and EMA cover them.
    {
        let data = varmap.data().lock().expect("varmap lock");
        assert_eq!(data["bn.running_mean"].as_tensor().to_vec1::<f32>()?, rm);
        assert_eq!(data["bn.running_var"].as_tensor().to_vec1::<f32>()?, rv);
    }
    // Eval mode normalises with the running statistics and leaves them alone.
    let e = bn.forward(&x, false)?.to_vec3::<f32>()?;
    assert!((e[1][1][1] - (8.0 - rm[1]) / (rv[1] + 1e-5).sqrt()).abs() < 1e-5);
    assert_eq!(bn.running_mean().as_tensor().to_vec1::<f32>()?, rm);
    Ok(())
}

#[test]
fn backbone_eval_depends_on_running_stats() -> Result<()> {
    let x = frames(&[2, 2, 2, 16, 16], 0.4, 41)?;
    let (varmap, net) = build(&BackboneConfig::sew_small(), 41)?;
    let e0 = net.forward(&x, false)?;
    let rm0 = varmap.data().lock().expect("lock")["stem.bn.running_mean"]
        .as_tensor()
        .to_vec1::<f32>()?;
    warm_stats(&net, &x)?;
    let rm1 = varmap.data().lock().expect("lock")["stem.bn.running_mean"]
        .as_tensor()
        .to_vec1::<f32>()?;
    assert_ne!(rm0, rm1);
    let e1 = net.forward(&x, false)?;
    assert!(max_abs_diff(&e0, &e1)? > 0.0);
    // Eval is deterministic and does not touch the statistics.
    assert_eq!(max_abs_diff(&e1, &net.forward(&x, false)?)?, 0.0);
    Ok(())
}

// ---------------------------------------------------------------- pieces

#[test]
fn max_pool_matches_a_naive_loop_and_routes_gradients_to_the_first_maximum() -> Result<()> {
    for (h, w) in [(6usize, 6usize), (5, 7), (1, 2)] {
        let v = lcg(h as u64 * 31 + w as u64, 2 * 3 * h * w);
        // Quantise so that ties occur.
        let v: Vec<f32> = v.iter().map(|u| (u * 4.0).floor()).collect();
        let x = Var::from_vec(v.clone(), (2, 3, h, w), &DEV)?;
        let y = max_pool_3x3_s2(x.as_tensor())?;
        let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
        assert_eq!(y.dims(), &[2, 3, ho, wo]);
        let yv = y.flatten_all()?.to_vec1::<f32>()?;
        // Upstream gradient: distinct weights per output.
        let up = lcg(h as u64 + 7 * w as u64, 2 * 3 * ho * wo);
        let mut expected = Vec::new();
        let mut expected_grad = vec![0f32; v.len()];
        for nc in 0..6 {
            for oy in 0..ho {
                for ox in 0..wo {
                    // PyTorch's scan: row-major over the valid window, first strictly greater.
                    let mut m = f32::NEG_INFINITY;
                    let mut arg = usize::MAX;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = ((2 * oy + ky) as isize - 1, (2 * ox + kx) as isize - 1);
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                let i = nc * h * w + iy as usize * w + ix as usize;
                                if v[i] > m {
                                    m = v[i];
                                    arg = i;
                                }
                            }
                        }
                    }
                    expected.push(m);
                    expected_grad[arg] += up[(nc * ho + oy) * wo + ox];
                }
            }
        }
        assert_eq!(yv, expected, "h={h} w={w}");
        let upt = Tensor::from_vec(up.clone(), (2, 3, ho, wo), &DEV)?;
        let grads = (&y * &upt)?.sum_all()?.backward()?;
        let g = grads
            .get(&x)
            .expect("grad")
            .flatten_all()?
            .to_vec1::<f32>()?;
        for (i, (a, b)) in g.iter().zip(&expected_grad).enumerate() {
            assert!(
                (a - b).abs() < 1e-6,
                "h={h} w={w} input {i}: grad {a} vs {b}"
            );
        }
    }
    Ok(())
}

#[test]
fn connect_functions() -> Result<()> {
    let a = Tensor::new(&[0f32, 0., 1., 1.], &DEV)?;
    let b = Tensor::new(&[0f32, 1., 0., 1.], &DEV)?;
    assert_eq!(
        connect(Connect::Add, &a, &b)?.to_vec1::<f32>()?,
        [0., 1., 1., 2.]
    );
    assert_eq!(
        connect(Connect::And, &a, &b)?.to_vec1::<f32>()?,
        [0., 0., 0., 1.]
    );
    assert_eq!(
        connect(Connect::Iand, &a, &b)?.to_vec1::<f32>()?,
        [0., 0., 1., 0.]
    );
    Ok(())
}

#[test]
fn config_serde_round_trip_and_validation() {
    for cfg in [
        BackboneConfig::sew_resnet18(),
        BackboneConfig::sew_small(),
        BackboneConfig::sew_anchor(),
        BackboneConfig::spikformer_2_256(),
    ] {
        assert!(cfg.validate().is_ok());
        let s = serde_json::to_string(&cfg).expect("serialise");
        let back: BackboneConfig = serde_json::from_str(&s).expect("deserialise");
        assert_eq!(back, cfg);
    }
    let s = serde_json::to_string(&BackboneConfig::sew_small()).expect("serialise");
    assert!(s.contains("\"arch\":\"sew_resnet\""));
    let bad = s.replacen("\"stem_maxpool\"", "\"stem_maxpol\"", 1);
    assert!(serde_json::from_str::<BackboneConfig>(&bad).is_err());

    let mut cfg = tiny_spikformer();
    if let BackboneConfig::Spikformer(c) = &mut cfg {
        c.heads = 5;
    }
    let err = cfg.validate().expect_err("5 heads do not divide 32");
    assert!(err.to_string().contains("heads"));
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &DEV);
    assert!(Backbone::new(&cfg, vb).is_err());
}
