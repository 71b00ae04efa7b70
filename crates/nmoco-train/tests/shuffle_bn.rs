//! Shuffled BN on one device: each key is normalised with the statistics of its own sub-batch
//! of a permuted batch (in the backbone and in the projection head), queries with the whole
//! batch's; the key encoder's running statistics are updated once, from the first sub-batch.

use candle_core::{Device, Tensor};
use nmoco_models::{BackboneConfig, Connect, Downsample, SewConfig, SpikformerConfig, StageConfig};
use nmoco_train::encoder::{EncoderPair, MocoEncoder, snapshot};
use nmoco_train::step::{ShuffleBn, StepConfig, shuffle_permutation, step_keys, sub_batch_sizes};
use nmoco_train::{Encoder, LossKind, LossParams};
use rand::{Rng, SeedableRng};

fn sew() -> BackboneConfig {
    BackboneConfig::SewResnet(SewConfig {
        in_channels: 2,
        stem_channels: 4,
        stem_kernel: 3,
        stem_stride: 1,
        stem_maxpool: false,
        stages: vec![StageConfig {
            channels: 8,
            blocks: 1,
            stride: 2,
        }],
        downsample: Downsample::Transition,
        connect: Connect::Add,
        neuron: Default::default(),
        init: Default::default(),
    })
}

fn spikformer() -> BackboneConfig {
    BackboneConfig::Spikformer(SpikformerConfig {
        in_channels: 2,
        embed_dim: 16,
        depth: 1,
        heads: 2,
        mlp_ratio: 2,
        sps_pool: vec![false, false, true, true],
        attn_threshold: 0.5,
        attn_scale: 0.125,
        neuron: Default::default(),
    })
}

fn input(b: usize, seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (t, hw) = (2, 8 * 8);
    let v: Vec<f32> = (0..t * b * 2 * hw)
        .map(|_| rng.random_range(0.0f32..2.0))
        .collect();
    Tensor::from_vec(v, (t, b, 2, 8, 8), &Device::Cpu).unwrap()
}

fn rows(t: &Tensor, b: usize) -> Vec<Vec<f32>> {
    // [T, B, C] -> per-sample flattened rows.
    (0..b)
        .map(|i| {
            t.narrow(1, i, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn buffers(pair: &EncoderPair<MocoEncoder>) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<_> = snapshot(&pair.key_vars)
        .unwrap()
        .into_iter()
        .filter(|(n, _)| nmoco_models::is_buffer(n))
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn set_buffers(pair: &EncoderPair<MocoEncoder>, values: &[(String, Vec<f32>)]) {
    let vars = nmoco_models::sorted_vars(&pair.key_vars);
    for (n, v) in values {
        let var = &vars[n];
        let t = Tensor::new(v.as_slice(), &Device::Cpu)
            .unwrap()
            .reshape(var.dims())
            .unwrap();
        var.set(&t).unwrap();
    }
}

fn check(backbone: BackboneConfig) {
    let b = 8;
    let pair =
        EncoderPair::new(&Device::Cpu, 3, |vb| MocoEncoder::new(&backbone, 16, 8, vb)).unwrap();
    let x = input(b, 11);
    let cfg = StepConfig {
        loss: LossParams {
            kind: LossKind::Mix,
            lambda: 0.5,
            tau: 0.2,
        },
        symmetric: false,
        grad_clip: None,
        shuffle_bn: Some(ShuffleBn {
            sub_batches: 2,
            seed: 5,
        }),
    };
    let step = 7;
    let perm = shuffle_permutation(b, 5, step);
    assert_ne!(
        perm,
        (0..b).collect::<Vec<_>>(),
        "the permutation should move samples"
    );
    let sizes = sub_batch_sizes(b, 2);
    assert_eq!(sizes, vec![4, 4]);
    let groups = [perm[..4].to_vec(), perm[4..].to_vec()];

    let before = buffers(&pair);
    let k = step_keys(&pair, &x, &cfg, step).unwrap();
    assert!(!k.track_op());
    let after_shuffled = buffers(&pair);
    let k_rows = rows(&k, b);

    // Each sub-batch through the key encoder alone gives exactly its samples' keys: the keys'
    // BN statistics are their sub-batch's.
    let mut first_group_buffers = None;
    for (gi, g) in groups.iter().enumerate().rev() {
        // Start each from the state before the step so the running statistics can be compared.
        set_buffers(&pair, &before);
        let idx: Vec<u32> = g.iter().map(|&i| i as u32).collect();
        let xs = x
            .index_select(&Tensor::new(idx.as_slice(), &Device::Cpu).unwrap(), 1)
            .unwrap();
        let alone = pair.key.embed(&xs, true).unwrap();
        let alone_rows = rows(&alone, g.len());
        for (j, &i) in g.iter().enumerate() {
            let d = max_diff(&k_rows[i], &alone_rows[j]);
            assert!(
                d < 1e-5,
                "sample {i} (sub-batch {gi}): key differs from its sub-batch's by {d}"
            );
        }
        if gi == 0 {
            first_group_buffers = Some(buffers(&pair));
        }
    }
    // Running statistics: updated once, from the first sub-batch (MoCo's GPU 0).
    assert_eq!(after_shuffled, first_group_buffers.unwrap());
    assert_ne!(after_shuffled, before);

    // Whole-batch BN gives other keys: the per-sub-batch statistics differ from the batch's.
    let whole = pair.key.embed(&x, true).unwrap();
    let whole_rows = rows(&whole, b);
    let d = (0..b)
        .map(|i| max_diff(&k_rows[i], &whole_rows[i]))
        .fold(0.0, f32::max);
    assert!(
        d > 1e-4,
        "shuffled and whole-batch keys agree ({d}): no per-sub-batch statistics"
    );

    // Queries keep whole-batch statistics: a query's output depends on samples of the other
    // sub-batch. Changing only sub-batch 1's samples changes sub-batch 0's queries, not its
    // keys.
    let x2 = {
        let mut v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let per = 2 * 8 * 8;
        for t in 0..2 {
            for &i in &groups[1] {
                let o = (t * b + i) * per;
                for e in &mut v[o..o + per] {
                    *e = 3.0 - *e;
                }
            }
        }
        Tensor::from_vec(v, (2, b, 2, 8, 8), &Device::Cpu).unwrap()
    };
    let k2 = rows(&step_keys(&pair, &x2, &cfg, step).unwrap(), b);
    let q1 = rows(&pair.master.embed(&x, true).unwrap(), b);
    let q2 = rows(&pair.master.embed(&x2, true).unwrap(), b);
    let k1 = rows(&step_keys(&pair, &x, &cfg, step).unwrap(), b);
    for &i in &groups[0] {
        assert!(
            max_diff(&k1[i], &k2[i]) < 1e-5,
            "key of sample {i} moved when only the other sub-batch changed"
        );
        assert!(
            max_diff(&q1[i], &q2[i]) > 1e-4,
            "query of sample {i} did not move: queries must use whole-batch statistics"
        );
    }
}

#[test]
fn sew_keys_use_per_sub_batch_statistics_and_queries_whole_batch() {
    check(sew());
}

#[test]
fn spikformer_keys_use_per_sub_batch_statistics_and_queries_whole_batch() {
    check(spikformer());
}
