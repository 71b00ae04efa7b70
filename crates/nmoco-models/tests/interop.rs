//! PyTorch interop: key maps, export ↔ import round trip, full mismatch reports, refusals.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use nmoco_models::interop::{
    InteropError, Layout, export_state_dict, import_state_dict, infer_backbone, read_state_dict,
    write_safetensors,
};
use nmoco_models::{Backbone, BackboneConfig, ConvInit, seeded_init_with, sorted_vars};

fn backbone_tensors(cfg: &BackboneConfig, seed: u64) -> HashMap<String, Tensor> {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    Backbone::new(cfg, vb).unwrap();
    seeded_init_with(&vm, seed, cfg.conv_init()).unwrap();
    sorted_vars(&vm)
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect()
}

#[test]
fn sew_resnet18_has_spikingjelly_names() {
    let cfg = BackboneConfig::sew_resnet18();
    let out = export_state_dict(&cfg, &backbone_tensors(&cfg, 1), Path::new("x")).unwrap();
    // SpikingJelly's sew_resnet18 without fc: 20 convs + 20 BNs x 5 (with num_batches_tracked).
    assert_eq!(out.len(), 120);
    for (k, dims) in [
        ("conv1.weight", vec![64, 2, 7, 7]),
        ("bn1.running_var", vec![64]),
        ("layer1.0.conv1.weight", vec![64, 64, 3, 3]),
        ("layer2.0.downsample.0.weight", vec![128, 64, 1, 1]),
        ("layer2.0.downsample.1.running_mean", vec![128]),
        ("layer4.1.bn2.bias", vec![512]),
    ] {
        assert_eq!(out[k].dims(), dims.as_slice(), "{k}");
    }
    assert_eq!(
        out["layer3.0.downsample.1.num_batches_tracked"].dtype(),
        DType::I64
    );
    assert!(!out.contains_key("layer1.0.downsample.0.weight"));
}

#[test]
fn spikformer_has_the_official_names() {
    let cfg = BackboneConfig::spikformer_2_256();
    let out = export_state_dict(&cfg, &backbone_tensors(&cfg, 2), Path::new("x")).unwrap();
    // The oracle's 108 keys (official spikformer() less pos_embed, LayerNorms and head).
    assert_eq!(out.len(), 108);
    for (k, dims) in [
        ("patch_embed.proj_conv.weight", vec![32, 2, 3, 3]),
        ("patch_embed.proj_bn3.running_var", vec![256]),
        ("patch_embed.rpe_conv.weight", vec![256, 256, 3, 3]),
        ("block.0.attn.q_conv.weight", vec![256, 256, 1]),
        ("block.1.attn.proj_conv.bias", vec![256]),
        ("block.1.mlp.fc1_conv.weight", vec![1024, 256, 1]),
        ("block.1.mlp.fc2_bn.num_batches_tracked", vec![]),
    ] {
        assert_eq!(out[k].dims(), dims.as_slice(), "{k}");
    }
}

#[test]
fn export_then_import_is_the_identity_and_plif_w_travels() {
    let mut cfgs = vec![
        BackboneConfig::sew_resnet18(),
        BackboneConfig::spikformer_2_256(),
    ];
    let mut plif = BackboneConfig::sew_resnet18();
    if let BackboneConfig::SewResnet(c) = &mut plif {
        c.neuron.kind = nmoco_snn::NeuronKind::Plif;
    }
    cfgs.push(plif);
    for cfg in cfgs {
        let t = backbone_tensors(&cfg, 3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.safetensors");
        let exported = export_state_dict(&cfg, &t, &path).unwrap();
        write_safetensors(&exported, &path).unwrap();
        let state = read_state_dict(&path).unwrap();
        assert_eq!(infer_backbone(&state).as_ref(), Some(&cfg));
        let back = import_state_dict(&cfg, &state, &path).unwrap();
        assert_eq!(back.tensors.len(), t.len());
        for (k, v) in &t {
            let w = &back.tensors[k];
            assert_eq!(v.dims(), w.dims(), "{k}");
            let d = (v - w).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "{k}");
        }
        if matches!(&cfg, BackboneConfig::SewResnet(c) if c.neuron.kind == nmoco_snn::NeuronKind::Plif)
        {
            assert!(state.contains_key("layer1.0.downsample_sn.w") || state.contains_key("sn1.w"));
        }
        let skipped: Vec<&String> = back
            .skipped
            .iter()
            .filter(|k| !k.ends_with("num_batches_tracked"))
            .collect();
        assert!(skipped.is_empty(), "{skipped:?}");
    }
}

#[test]
fn import_names_every_missing_extra_and_misshaped_tensor() {
    let cfg = BackboneConfig::sew_resnet18();
    let mut state: HashMap<String, Tensor> =
        export_state_dict(&cfg, &backbone_tensors(&cfg, 4), Path::new("x"))
            .unwrap()
            .into_iter()
            .collect();
    state.remove("layer2.1.bn2.running_var");
    state.remove("conv1.weight");
    state.insert(
        "layer9.0.conv1.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    state.insert(
        "layer3.0.downsample.0.weight".into(),
        Tensor::zeros((256, 128, 3, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    // The classifier is skipped, not an error.
    state.insert(
        "fc.weight".into(),
        Tensor::zeros((10, 512), DType::F32, &Device::Cpu).unwrap(),
    );
    let err = import_state_dict(&cfg, &state, Path::new("bad.pth")).unwrap_err();
    let msg = err.to_string();
    match &err {
        InteropError::Mismatch {
            missing,
            extra,
            misshaped,
            ..
        } => {
            assert_eq!(missing, &["conv1.weight", "layer2.1.bn2.running_var"]);
            assert_eq!(extra, &["layer9.0.conv1.weight"]);
            assert_eq!(misshaped.len(), 1);
            assert_eq!(misshaped[0].0, "layer3.0.downsample.0.weight");
        }
        e => panic!("unexpected error {e}"),
    }
    for n in [
        "conv1.weight",
        "layer2.1.bn2.running_var",
        "layer9.0.conv1.weight",
        "layer3.0.downsample.0.weight",
    ] {
        assert!(msg.contains(n), "{msg}");
    }
    assert!(!msg.contains("fc.weight"), "{msg}");
}

#[test]
fn backbones_without_a_twin_are_refused() {
    for cfg in [BackboneConfig::sew_small(), BackboneConfig::sew_anchor()] {
        let err = Layout::new(&cfg).unwrap_err();
        assert!(matches!(err, InteropError::NoTwin { .. }), "{err}");
        assert!(err.to_string().contains("no PyTorch twin"), "{err}");
    }
    let mut s = BackboneConfig::spikformer_2_256();
    if let BackboneConfig::Spikformer(c) = &mut s {
        c.sps_pool[2] = false;
    }
    assert!(matches!(Layout::new(&s), Err(InteropError::NoTwin { .. })));
}

#[test]
fn kaiming_fan_out_init_has_the_right_spread_and_leaves_the_rest_alone() {
    let cfg = BackboneConfig::sew_resnet18();
    assert_eq!(cfg.conv_init(), ConvInit::KaimingNormalFanOut);
    assert_eq!(
        BackboneConfig::sew_small().conv_init(),
        ConvInit::UniformFanIn
    );
    let t = backbone_tensors(&cfg, 5);
    // layer4 conv: fan_out = 512 * 9, std = sqrt(2 / 4608) = 0.02083.
    let w = t["stages.3.blocks.1.conv2.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let n = w.len() as f64;
    let mean = w.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let std = (w
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let expected = (2.0f64 / 4608.0).sqrt();
    assert!(
        (std / expected - 1.0).abs() < 0.01,
        "std {std} vs {expected}"
    );
    assert!(mean.abs() < 1e-3 * expected * 10.0, "mean {mean}");
    // Not uniform: values beyond 2 std exist (a uniform of that std stops at 1.73 std).
    assert!(w.iter().any(|&v| f64::from(v).abs() > 2.5 * expected));
    // BN untouched.
    let bw = t["stem.bn.weight"].to_vec1::<f32>().unwrap();
    assert!(bw.iter().all(|&v| v == 1.0));
}
