//! Unit tests of the step on a stand-in encoder.

use super::*;
use crate::encoder::snapshot;
use crate::loss::LossKind;
use candle_core::{DType, Device, Module};
use candle_nn::{Linear, VarBuilder, linear};
use nmoco_optim::{OptimKind, OptimParams};

/// A stand-in encoder: one linear layer per time step on the flattened frame, then a
/// linear head.
struct Tiny {
    body: Linear,
    head: Linear,
}

impl Tiny {
    fn new(vb: VarBuilder<'_>) -> candle_core::Result<Self> {
        Ok(Self {
            body: linear(2 * 3 * 3, 6, vb.pp("backbone.fc"))?,
            head: linear(6, 4, vb.pp("head.fc"))?,
        })
    }
}

impl Encoder for Tiny {
    fn embed(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let f = self.features(x, train)?;
        let (t, b, d) = f.dims3()?;
        self.head
            .forward(&f.reshape((t * b, d))?)?
            .reshape((t, b, 4))
    }
    fn features(&self, x: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        let (t, b) = (x.dim(0)?, x.dim(1)?);
        self.body
            .forward(&x.reshape((t * b, 18))?)?
            .relu()?
            .reshape((t, b, 6))
    }
}

fn setup(seed: u64) -> (EncoderPair<Tiny>, Optimizer, Queue) {
    let pair = EncoderPair::new(&Device::Cpu, seed, Tiny::new).unwrap();
    let opt = Optimizer::new(
        pair.trainable(),
        OptimParams {
            kind: OptimKind::Sgd,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: false,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
    );
    (pair, opt, Queue::random(6, 4, seed))
}

fn views(seed: u64) -> (Tensor, Tensor) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v = || -> Vec<f32> {
        (0..3 * 2 * 18)
            .map(|_| rng.random_range(0.0..1.0))
            .collect()
    };
    let a = Tensor::from_vec(v(), (3, 2, 2, 3, 3), &Device::Cpu).unwrap();
    let b = Tensor::from_vec(v(), (3, 2, 2, 3, 3), &Device::Cpu).unwrap();
    (a, b)
}

fn cfg(symmetric: bool) -> StepConfig {
    StepConfig {
        loss: LossParams {
            kind: LossKind::Mix,
            lambda: 0.5,
            tau: 0.2,
        },
        symmetric,
        grad_clip: None,
        shuffle_bn: None,
    }
}

fn flat(m: &std::collections::HashMap<String, Tensor>, n: &str) -> Vec<f32> {
    m[n].flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn key_encoder_starts_as_copy_and_follows_by_momentum_only() {
    let (pair, mut opt, mut queue) = setup(1);
    let before_q = snapshot(&pair.master_vars).unwrap();
    let before_k = snapshot(&pair.key_vars).unwrap();
    for n in before_q.keys() {
        assert_eq!(
            flat(&before_q, n),
            flat(&before_k, n),
            "{n}: key must start as a copy"
        );
    }
    let (a, b) = views(2);
    let out = train_step(&pair, &mut opt, &mut queue, &a, &b, 0.5, 0.9, &cfg(false)).unwrap();
    assert!(out.applied && out.loss.is_finite() && out.grad_norm > 0.0);
    let after_q = snapshot(&pair.master_vars).unwrap();
    let after_k = snapshot(&pair.key_vars).unwrap();
    for n in after_q.keys() {
        let (q0, q1, k1) = (flat(&before_q, n), flat(&after_q, n), flat(&after_k, n));
        assert_ne!(q0, q1, "{n}: the master must have been updated");
        for i in 0..q0.len() {
            // k0 = q0, so k1 = 0.9·q0 + 0.1·q1 exactly when nothing but momentum moved it.
            let want = 0.9 * q0[i] + 0.1 * q1[i];
            assert!((k1[i] - want).abs() < 1e-6, "{n}[{i}]: {} vs {want}", k1[i]);
        }
    }
    // The batch's normalised mean keys went into rows 0 and 1 of the queue.
    assert_eq!(queue.ptr(), 2);
    for r in queue.keys().unwrap()[..8].chunks(4) {
        let n: f32 = r.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-5);
    }
}

#[test]
fn the_key_encoder_builds_no_graph_and_sees_momentum_updates() {
    let (pair, mut opt, mut queue) = setup(3);
    let (a, b) = views(2);
    let k0 = pair.key.embed(&b, true).unwrap();
    assert!(
        !k0.track_op(),
        "the key forward must not record an autograd graph"
    );
    assert!(pair.master.embed(&a, true).unwrap().track_op());
    train_step(&pair, &mut opt, &mut queue, &a, &b, 0.5, 0.9, &cfg(false)).unwrap();
    // The momentum update writes the key variables in place; the key encoder's layers share
    // their storage, so its output moves with them.
    let k1 = pair.key.embed(&b, true).unwrap();
    let (v0, v1) = (
        k0.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        k1.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    assert_ne!(v0, v1);
}

#[test]
fn gradients_reach_the_master_only() {
    let (pair, _, queue) = setup(3);
    let (a, b) = views(4);
    let q = pair.master.embed(&a, true).unwrap();
    let k = keys(&pair.key, &b).unwrap();
    let out = moco_loss(
        &q,
        &k,
        &queue.tensor(&Device::Cpu).unwrap(),
        &cfg(false).loss,
    )
    .unwrap();
    let grads = out.loss.backward().unwrap();
    for (n, v) in crate::momentum::sorted_vars(&pair.master_vars) {
        assert!(
            grads.get(v.as_tensor()).is_some(),
            "master {n} has no gradient"
        );
    }
    for (n, v) in crate::momentum::sorted_vars(&pair.key_vars) {
        assert!(grads.get(v.as_tensor()).is_none(), "key {n} got a gradient");
    }
}

#[test]
fn a_non_finite_loss_changes_nothing() {
    let (pair, mut opt, queue) = setup(5);
    let (a, b) = views(6);
    // A queue holding NaN makes the logits, hence the loss, NaN.
    let mut keys = queue.keys().unwrap();
    keys[0] = f32::NAN;
    let mut queue = Queue::from_parts(queue.len(), queue.dim(), keys, 0).unwrap();
    let before_k = snapshot(&pair.key_vars).unwrap();
    let before_q = snapshot(&pair.master_vars).unwrap();
    let before_queue = queue.clone();
    let out = train_step(&pair, &mut opt, &mut queue, &a, &b, 0.5, 0.9, &cfg(false)).unwrap();
    assert!(!out.applied && out.loss.is_nan());
    let after_k = snapshot(&pair.key_vars).unwrap();
    for n in before_k.keys() {
        assert_eq!(flat(&before_k, n), flat(&after_k, n));
    }
    let bits = |q: &Queue| {
        q.keys()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        (queue.ptr(), bits(&queue)),
        (before_queue.ptr(), bits(&before_queue))
    );
    assert_eq!(opt.steps(), 0);
    let after = snapshot(&pair.master_vars).unwrap();
    for n in before_q.keys() {
        assert_eq!(flat(&before_q, n), flat(&after, n));
    }
}

#[test]
fn steps_are_deterministic_and_symmetric_mode_runs() {
    let run = |symmetric| {
        let (pair, mut opt, mut queue) = setup(7);
        let mut losses = vec![];
        for s in 0..4 {
            let (a, b) = views(100 + s);
            losses.push(
                train_step(
                    &pair,
                    &mut opt,
                    &mut queue,
                    &a,
                    &b,
                    0.1,
                    0.99,
                    &cfg(symmetric),
                )
                .unwrap()
                .loss,
            );
        }
        losses
    };
    assert_eq!(run(false), run(false));
    let sym = run(true);
    assert!(sym.iter().all(|l| l.is_finite()));
    assert_ne!(sym, run(false));
    let _ = DType::F32;
}

#[test]
fn a_step_without_read_backs_makes_the_same_update() {
    let run = |sync: StepSync| {
        let (pair, mut opt, mut queue) = setup(9);
        let mut out = vec![];
        for s in 0..3 {
            let (a, b) = views(200 + s);
            let r = train_step_with(
                &pair,
                &mut opt,
                &mut queue,
                &a,
                &b,
                0.1,
                0.99,
                &cfg(false),
                sync,
            )
            .unwrap();
            assert!(r.applied);
            assert_eq!(r.loss_value.is_some(), sync.read_loss);
            assert_eq!(r.grad_norm.is_some(), sync.grad_norm);
            assert!(!r.loss.track_op());
            out.push(r.loss.to_scalar::<f32>().unwrap());
        }
        (
            out,
            snapshot(&pair.master_vars).unwrap(),
            snapshot(&pair.key_vars).unwrap(),
            queue,
        )
    };
    let (l0, q0, k0, queue0) = run(StepSync::ALL);
    let (l1, q1, k1, queue1) = run(StepSync::NONE);
    assert_eq!(l0, l1);
    for n in q0.keys() {
        assert_eq!(flat(&q0, n), flat(&q1, n), "master {n}");
        assert_eq!(flat(&k0, n), flat(&k1, n), "key {n}");
    }
    assert_eq!(queue0, queue1);
    // Clipping needs the norm, so it is computed even when not asked for.
    let (pair, mut opt, mut queue) = setup(9);
    let (a, b) = views(200);
    let mut c = cfg(false);
    c.grad_clip = Some(1e-3);
    let r = train_step_with(
        &pair,
        &mut opt,
        &mut queue,
        &a,
        &b,
        0.1,
        0.99,
        &c,
        StepSync::NONE,
    )
    .unwrap();
    assert!(r.grad_norm.unwrap() > 0.0);
}

#[test]
fn marked_step_marks_each_phase_in_order_and_changes_nothing() {
    use crate::profile::{Phase, PhaseTimer};
    for symmetric in [false, true] {
        let (xq, xk) = views(11);
        let (pair_a, mut opt_a, mut queue_a) = setup(5);
        let (pair_b, mut opt_b, mut queue_b) = setup(5);
        let c = cfg(symmetric);
        let mut marks = Vec::new();
        let mut timer = PhaseTimer::new(&Device::Cpu).unwrap();
        for _ in 0..2 {
            let a = train_step_with(
                &pair_a,
                &mut opt_a,
                &mut queue_a,
                &xq,
                &xk,
                0.1,
                0.9,
                &c,
                StepSync::ALL,
            )
            .unwrap();
            marks.clear();
            timer.start().unwrap();
            let b = train_step_marked(
                &pair_b,
                &mut opt_b,
                &mut queue_b,
                &xq,
                &xk,
                0.1,
                0.9,
                &c,
                StepSync::ALL,
                &mut |p| {
                    marks.push(p);
                    timer.mark(p)
                },
            )
            .unwrap();
            assert_eq!(a.loss_value, b.loss_value);
            assert_eq!(a.grad_norm, b.grad_norm);
            let times = timer.finish().unwrap();
            let ms: Vec<Phase> = times.device_ms.iter().map(|(p, _)| *p).collect();
            assert_eq!(ms, Phase::ALL[1..].to_vec(), "symmetric {symmetric}");
        }
        let expected: Vec<Phase> = if symmetric {
            use Phase::*;
            vec![
                QueryForward,
                KeyForward,
                Loss,
                QueryForward,
                KeyForward,
                Loss,
                Backward,
                Optimizer,
                Momentum,
                Enqueue,
            ]
        } else {
            Phase::ALL[1..].to_vec()
        };
        assert_eq!(marks, expected, "symmetric {symmetric}");
        let (sa, sb) = (
            snapshot(&pair_a.master_vars).unwrap(),
            snapshot(&pair_b.master_vars).unwrap(),
        );
        for n in sa.keys() {
            assert_eq!(flat(&sa, n), flat(&sb, n), "{n}");
        }
        let (ka, kb) = (
            snapshot(&pair_a.key_vars).unwrap(),
            snapshot(&pair_b.key_vars).unwrap(),
        );
        for n in ka.keys() {
            assert_eq!(flat(&ka, n), flat(&kb, n), "{n}");
        }
        let qa = queue_a.tensor(&Device::Cpu).unwrap().flatten_all().unwrap();
        let qb = queue_b.tensor(&Device::Cpu).unwrap().flatten_all().unwrap();
        assert_eq!(qa.to_vec1::<f32>().unwrap(), qb.to_vec1::<f32>().unwrap());
    }
}

#[test]
fn a_failing_mark_stops_the_step() {
    let (xq, xk) = views(12);
    let (pair, mut opt, mut queue) = setup(6);
    let mut fail = |p: crate::profile::Phase| {
        if p == crate::profile::Phase::Backward {
            Err(crate::Error::PhaseTimer {
                reason: "test".into(),
            })
        } else {
            Ok(())
        }
    };
    let r = train_step_marked(
        &pair,
        &mut opt,
        &mut queue,
        &xq,
        &xk,
        0.1,
        0.9,
        &cfg(false),
        StepSync::ALL,
        &mut fail,
    );
    assert!(r.is_err());
    assert_eq!(opt.steps(), 0, "no optimizer step after a failed mark");
}
