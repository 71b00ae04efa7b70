//! Whole backbones in train mode with the fused batch norm + LIF op on and off
//! (`set_bn_lif_fusion`): identical features and running statistics, matching parameter
//! gradients. A test binary of its own, because the switch is process-wide.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use nmoco_models::{
    Backbone, BackboneConfig, NeuronConfig, SpikformerConfig, is_buffer, seeded_init,
    set_bn_lif_fusion,
};

const DEV: Device = Device::Cpu;

/// Binary frames `[T, B, 2, H, W]` with about a quarter ones, deterministic.
fn frames(t: usize, b: usize, hw: usize) -> Result<Tensor> {
    let n = t * b * 2 * hw * hw;
    let mut rng = nmoco_testkit::XorShift::from_state(0x2545_f491_4f6c_dd1d);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            if rng.next_u64().is_multiple_of(4) {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(v, (t, b, 2, hw, hw), &DEV)
}

/// Features, then per variable (sorted by name) the running statistic or the gradient.
type Run = (Vec<f32>, Vec<(String, Tensor)>);

/// Features, running statistics and the gradient of every parameter for `loss = Σ f · g`.
fn run(cfg: &BackboneConfig, x: &Tensor, fused: bool) -> Result<Run> {
    set_bn_lif_fusion(fused);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &DEV);
    let net = Backbone::new(cfg, vb)?;
    seeded_init(&varmap, 7)?;
    let f = net.forward(x, true)?;
    // The same g for both runs, derived deterministically from the features' shape.
    let g = Tensor::arange(0f32, f.elem_count() as f32, &DEV)?
        .reshape(f.shape())?
        .affine(0.37, 0.0)?
        .sin()?;
    let grads = (f.clone() * &g)?.sum_all()?.backward()?;
    let data = varmap.data().lock().expect("varmap");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let var = &data[name];
        if is_buffer(name) {
            out.push((name.clone(), var.as_tensor().clone()));
        } else if let Some(gr) = grads.get(var) {
            out.push((name.clone(), gr.clone()));
        } else {
            panic!("no gradient for {name}");
        }
    }
    set_bn_lif_fusion(true);
    Ok((f.flatten_all()?.to_vec1()?, out))
}

fn compare(cfg: &BackboneConfig, x: &Tensor) -> Result<()> {
    let (fa, ga) = run(cfg, x, true)?;
    let (fb, gb) = run(cfg, x, false)?;
    assert_eq!(fa, fb, "features differ");
    assert!(fa.iter().any(|&v| v != 0.0));
    assert_eq!(ga.len(), gb.len());
    let absmax = |t: &Tensor| -> Result<f32> { t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>() };
    let mut scale = 0f32;
    for (name, b) in &gb {
        if !is_buffer(name) {
            scale = scale.max(absmax(b)?);
        }
    }
    for ((name, a), (_, b)) in ga.iter().zip(&gb) {
        let d = absmax(&(a - b)?)?;
        let m = absmax(b)?;
        // Relative to the tensor, plus 1e-5 of the largest gradient for tensors whose
        // gradient is zero up to rounding (a linear bias followed by batch norm).
        let tol = if is_buffer(name) {
            0.0
        } else {
            1e-4 * m + 1e-5 * scale
        };
        assert!(
            d <= tol,
            "{name}: max |diff| {d}, max |ref| {m}, largest gradient {scale}"
        );
    }
    Ok(())
}

#[test]
fn backbones_train_the_same_with_and_without_the_fused_bn_lif_op() -> Result<()> {
    compare(&BackboneConfig::sew_anchor(), &frames(3, 2, 16)?)?;
    let spikformer = BackboneConfig::Spikformer(SpikformerConfig {
        in_channels: 2,
        embed_dim: 32,
        depth: 1,
        heads: 4,
        mlp_ratio: 2,
        sps_pool: vec![false, false, true, true],
        attn_threshold: 0.5,
        attn_scale: 0.125,
        neuron: NeuronConfig::default(),
    });
    compare(&spikformer, &frames(2, 2, 16)?)?;
    Ok(())
}
