//! Augmentation determinism and invariants.

use nmoco_events::{Events, SensorSize};
use nmoco_frames::{
    AugmentConfig, Error, FrameConfig, Frames, augment, augment_events, integrate, two_views,
    two_views_events,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const S: SensorSize = SensorSize {
    width: 32,
    height: 24,
};

fn random_events(n: usize, seed: u64) -> Events {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut e = Events::with_capacity(n);
    for i in 0..n {
        e.t.push(i as i64 * 2);
        e.x.push(rng.random_range(0..S.width));
        e.y.push(rng.random_range(0..S.height));
        e.on.push(rng.random());
    }
    e
}

fn frames_cfg() -> FrameConfig {
    FrameConfig {
        t: 4,
        height: S.height as usize,
        width: S.width as usize,
        ..FrameConfig::default()
    }
}

fn random_frames(seed: u64) -> Frames {
    integrate(&random_events(3000, seed), S, &frames_cfg()).unwrap()
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn only(f: impl FnOnce(&mut AugmentConfig)) -> AugmentConfig {
    let mut c = AugmentConfig::none();
    f(&mut c);
    c
}

#[test]
fn same_seed_same_views_different_seed_different_views() {
    let f = random_frames(1);
    let cfg = AugmentConfig {
        crop_p: 1.0,
        translate_p: 1.0,
        drop_p: 1.0,
        ..AugmentConfig::default()
    };
    let (a1, b1) = two_views(&f, &cfg, 42);
    let (a2, b2) = two_views(&f, &cfg, 42);
    assert_eq!(a1, a2);
    assert_eq!(b1, b2);
    assert_ne!(a1, b1, "the two views must differ");
    let (a3, b3) = two_views(&f, &cfg, 43);
    assert_ne!(a1, a3);
    assert_ne!(b1, b3);
    for v in [&a1, &b1, &a3] {
        assert_eq!(v.shape(), f.shape());
        assert!(v.is_consistent());
    }
    // augment with an explicit RNG is reproducible too.
    assert_eq!(
        augment(&f, &cfg, &mut rng(5)),
        augment(&f, &cfg, &mut rng(5))
    );
}

#[test]
fn event_views_are_reproducible_and_differ() {
    let e = random_events(2000, 2);
    let cfg = AugmentConfig {
        drop_p: 1.0,
        translate_p: 1.0,
        time_jitter_us: 3,
        ..AugmentConfig::default()
    };
    let (a1, b1) = two_views_events(&e, S, &cfg, 9);
    let (a2, b2) = two_views_events(&e, S, &cfg, 9);
    assert_eq!((&a1, &b1), (&a2, &b2));
    assert_ne!(a1, b1);
    assert_ne!(two_views_events(&e, S, &cfg, 10).0, a1);
    for v in [&a1, &b1] {
        assert!(v.columns_consistent());
        assert!(v.x.iter().all(|&x| x < S.width));
        assert!(v.y.iter().all(|&y| y < S.height));
        assert!(
            v.t.windows(2).all(|w| w[0] <= w[1]),
            "jitter re-sorts by time"
        );
        // The output integrates without error.
        integrate(v, S, &frames_cfg()).unwrap();
    }
}

#[test]
fn geometric_only_keeps_crop_flip_and_translation() {
    let full = AugmentConfig {
        trivial_augment: true,
        time_jitter_us: 50,
        ..AugmentConfig::default()
    };
    let g = full.geometric_only();
    assert_eq!(
        (
            g.crop_p,
            g.crop_scale,
            g.hflip,
            g.hflip_p,
            g.translate_p,
            g.translate_px
        ),
        (
            full.crop_p,
            full.crop_scale,
            full.hflip,
            full.hflip_p,
            full.translate_p,
            full.translate_px
        )
    );
    assert_eq!(
        (g.rotate_p, g.cutout_p, g.drop_p, g.time_shift_p),
        (0.0, 0.0, 0.0, 0.0)
    );
    assert_eq!((g.time_jitter_us, g.trivial_augment), (0, false));
    // A config with only non-geometric transforms becomes the identity.
    let (f, c) = (
        random_frames(4),
        only(|c| (c.cutout_p, c.drop_p) = (1.0, 1.0)),
    );
    assert_ne!(augment(&f, &c, &mut rng(2)), f);
    assert_eq!(augment(&f, &c.geometric_only(), &mut rng(2)), f);
}

#[test]
fn all_off_is_identity() {
    let f = random_frames(3);
    assert_eq!(augment(&f, &AugmentConfig::none(), &mut rng(1)), f);
    let e = random_events(500, 3);
    assert_eq!(
        augment_events(&e, S, &AugmentConfig::none(), &mut rng(1)),
        e
    );
    // hflip = false disables the flip even at probability 1.
    let c = only(|c| c.hflip_p = 1.0);
    assert_eq!(augment(&f, &c, &mut rng(1)), f);
}

#[test]
fn flip_twice_is_identity_and_matches_event_flip() {
    let f = random_frames(4);
    let c = only(|c| {
        c.hflip = true;
        c.hflip_p = 1.0;
    });
    let once = augment(&f, &c, &mut rng(1));
    assert_ne!(once, f);
    assert_eq!(once.get(1, 1, 3, 0), f.get(1, 1, 3, f.w - 1));
    assert_eq!(augment(&once, &c, &mut rng(2)), f);
    // Flipping events then integrating = integrating then flipping frames.
    let e = random_events(3000, 4);
    let fe = augment_events(&e, S, &c, &mut rng(3));
    assert_eq!(integrate(&fe, S, &frames_cfg()).unwrap(), once);
    assert_eq!(augment_events(&fe, S, &c, &mut rng(4)), e);
}

#[test]
fn roll_preserves_total_count_and_matches_events() {
    let f = random_frames(5);
    let c = only(|c| {
        c.translate_p = 1.0;
        c.translate_px = 7;
    });
    let mut changed = false;
    for seed in 0..8 {
        let r = augment(&f, &c, &mut rng(seed));
        assert_eq!(r.sum(), f.sum());
        for ti in 0..f.t {
            let a: f32 = r.frame(ti).iter().sum();
            let b: f32 = f.frame(ti).iter().sum();
            assert_eq!(a, b);
        }
        changed |= r != f;
    }
    assert!(changed);
    // The same draws on events give the same frames (roll on coordinates, modulo the sensor).
    let e = random_events(3000, 5);
    for seed in 0..4 {
        let ev = augment_events(&e, S, &c, &mut rng(seed));
        assert_eq!(ev.len(), e.len());
        let fe = integrate(&ev, S, &frames_cfg()).unwrap();
        assert_eq!(fe.sum(), f.sum());
        assert_eq!(fe, augment(&f, &c, &mut rng(seed)));
    }
}

#[test]
fn roll_hand_case() {
    // 1 frame, 2 channels, 2×3 plane, one value at (y=0, x=2) of the ON channel. With shifts
    // in [-1, 1] the value must land on (y + dy) mod 2, (x + dx) mod 3 for some |dx|, |dy| <= 1.
    let mut f = Frames::zeros(1, 2, 3);
    let i = f.index(0, 1, 0, 2);
    f.data[i] = 5.0;
    let c = only(|c| {
        c.translate_p = 1.0;
        c.translate_px = 1;
    });
    let allowed: Vec<(usize, usize)> = (-1i64..=1)
        .flat_map(|dy| {
            (-1i64..=1).map(move |dx| (dy.rem_euclid(2) as usize, (2 + dx).rem_euclid(3) as usize))
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..32 {
        let r = augment(&f, &c, &mut rng(seed));
        let pos: Vec<_> = (0..2)
            .flat_map(|y| (0..3).map(move |x| (y, x)))
            .filter(|&(y, x)| r.get(0, 1, y, x) == 5.0)
            .collect();
        assert_eq!(pos.len(), 1);
        assert!(allowed.contains(&pos[0]), "{pos:?}");
        assert_eq!(r.sum(), 5.0);
        assert!(
            r.frame(0)[..6].iter().all(|&v| v == 0.0),
            "OFF channel stays empty"
        );
        seen.insert(pos[0]);
    }
    assert!(seen.len() >= 4, "{seen:?}");
}

#[test]
fn event_drop_keeps_an_ordered_subset() {
    let e = random_events(2000, 6);
    let c = only(|c| {
        c.drop_p = 1.0;
        c.drop_rate = 0.3;
    });
    let d = augment_events(&e, S, &c, &mut rng(1));
    assert!(d.len() < e.len() && d.len() > 1000, "{}", d.len());
    // A subsequence: walk both in order.
    let mut j = 0;
    for i in 0..d.len() {
        while j < e.len() && e.get(j) != d.get(i) {
            j += 1;
        }
        assert!(
            j < e.len(),
            "event {i} of the output is not in the input in order"
        );
        j += 1;
    }
    // Frame-level drop only zeroes values.
    let f = random_frames(6);
    let r = augment(&f, &c, &mut rng(1));
    assert!(
        r.data
            .iter()
            .zip(&f.data)
            .all(|(&a, &b)| a == b || a == 0.0)
    );
    assert!(r.sum() < f.sum());
}

#[test]
fn drop_rate_is_respected() {
    // 16·2·64·64 = 131072 elements, rate 0.1: mean 13107, sd ≈ 109; allow 6 sd.
    let mut f = Frames::zeros(16, 64, 64);
    f.data.fill(1.0);
    let n = f.data.len() as f64;
    for rate in [0.1, 0.5, 0.9] {
        let c = only(|c| {
            c.drop_p = 1.0;
            c.drop_rate = rate;
        });
        let r = augment(&f, &c, &mut rng(21));
        let dropped = r.data.iter().filter(|&&v| v == 0.0).count() as f64;
        let sd = (n * rate * (1.0 - rate)).sqrt();
        assert!(
            (dropped - n * rate).abs() < 6.0 * sd,
            "rate {rate}: {dropped}"
        );
    }
    let all = only(|c| {
        c.drop_p = 1.0;
        c.drop_rate = 1.0;
    });
    assert_eq!(augment(&f, &all, &mut rng(1)).sum(), 0.0);
    let e = random_events(1000, 12);
    assert!(augment_events(&e, S, &all, &mut rng(1)).is_empty());
}

#[test]
fn full_crop_and_zero_rotation_are_identity() {
    let f = random_frames(7);
    let c = only(|c| {
        c.crop_p = 1.0;
        c.crop_scale = [1.0, 1.0];
        c.crop_ratio = [32.0 / 24.0, 32.0 / 24.0];
    });
    assert_eq!(augment(&f, &c, &mut rng(1)), f);
    let e = random_events(500, 7);
    assert_eq!(augment_events(&e, S, &c, &mut rng(1)), e);
    let c = only(|c| {
        c.rotate_p = 1.0;
        c.rotate_deg = 0.0;
    });
    assert_eq!(augment(&f, &c, &mut rng(1)), f);
    assert_eq!(augment_events(&e, S, &c, &mut rng(1)), e);
}

#[test]
fn crop_zooms_in_and_keeps_shape() {
    let f = random_frames(8);
    let c = only(|c| {
        c.crop_p = 1.0;
        c.crop_scale = [0.25, 0.25];
    });
    let r = augment(&f, &c, &mut rng(3));
    assert_eq!(r.shape(), f.shape());
    assert_ne!(r, f);
    let e = random_events(2000, 8);
    let re = augment_events(&e, S, &c, &mut rng(3));
    assert!(
        re.len() < e.len() / 2,
        "a quarter-area crop keeps about a quarter"
    );
}

#[test]
fn rotation_by_180_degrees_hand_case() {
    // A 5×5 plane with one value at the centre: any rotation about the centre keeps it there
    // and (nearest neighbour) never invents counts elsewhere.
    let mut f = Frames::zeros(1, 5, 5);
    let i = f.index(0, 0, 2, 2);
    f.data[i] = 3.0;
    let c = only(|c| {
        c.rotate_p = 1.0;
        c.rotate_deg = 180.0;
    });
    for seed in 0..10 {
        let r = augment(&f, &c, &mut rng(seed));
        assert_eq!(r.get(0, 0, 2, 2), 3.0);
        assert_eq!(r.sum(), 3.0);
    }
}

#[test]
fn cutout_zeroes_one_square_in_every_frame() {
    let mut f = Frames::zeros(3, 24, 32);
    f.data.iter_mut().for_each(|v| *v = 1.0);
    let c = only(|c| {
        c.cutout_p = 1.0;
        c.cutout_frac = 0.25; // side 6
    });
    let r = augment(&f, &c, &mut rng(11));
    let zeros_per_plane: Vec<usize> = r
        .data
        .chunks_exact(24 * 32)
        .map(|p| p.iter().filter(|&&v| v == 0.0).count())
        .collect();
    assert!(zeros_per_plane.iter().all(|&z| z == zeros_per_plane[0]));
    assert!(zeros_per_plane[0] > 0 && zeros_per_plane[0] <= 36);
    // Same positions in every plane.
    let first = &r.data[..24 * 32];
    assert!(r.data.chunks_exact(24 * 32).all(|p| p == first));
}

#[test]
fn time_shift_moves_whole_frames() {
    let f = random_frames(9);
    let c = only(|c| {
        c.time_shift_p = 1.0;
        c.time_shift_max = 2;
    });
    let mut saw_shift = false;
    for seed in 0..10 {
        let r = augment(&f, &c, &mut rng(seed));
        // Every output frame is either zero or equal to some input frame.
        for ti in 0..r.t {
            let o = r.frame(ti);
            assert!(o.iter().all(|&v| v == 0.0) || (0..f.t).any(|k| f.frame(k) == o));
        }
        saw_shift |= r != f;
    }
    assert!(saw_shift);
}

#[test]
fn time_shift_hand_case() {
    // Frame ti filled with the value ti + 1; shifts of −1, 0, +1 are the only possible results.
    let mut f = Frames::zeros(4, 2, 2);
    for ti in 0..4 {
        let n = 2 * 2 * 2;
        f.data[ti * n..(ti + 1) * n].fill(ti as f32 + 1.0);
    }
    let c = only(|c| {
        c.time_shift_p = 1.0;
        c.time_shift_max = 1;
    });
    let per_frame = |f: &Frames| -> Vec<f32> { (0..f.t).map(|t| f.frame(t)[0]).collect() };
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..32 {
        let r = augment(&f, &c, &mut rng(seed));
        let v = per_frame(&r);
        assert!((0..r.t).all(|t| r.frame(t).iter().all(|&x| x == v[t])));
        let kind = match v.as_slice() {
            [1.0, 2.0, 3.0, 4.0] => 0,
            [0.0, 1.0, 2.0, 3.0] => 1,
            [2.0, 3.0, 4.0, 0.0] => -1,
            other => panic!("unexpected {other:?}"),
        };
        seen.insert(kind);
    }
    assert_eq!(seen.len(), 3);
}

#[test]
fn inconsistent_frames_are_returned_unchanged() {
    let f = Frames {
        data: vec![1.0; 5],
        t: 1,
        h: 2,
        w: 2,
    };
    assert_eq!(augment(&f, &AugmentConfig::default(), &mut rng(1)), f);
}

#[test]
fn config_validate_and_serde() {
    assert_eq!(AugmentConfig::default().validate(), Ok(()));
    let bad = AugmentConfig {
        crop_p: 1.5,
        ..AugmentConfig::default()
    };
    assert!(matches!(
        bad.validate(),
        Err(Error::InvalidConfig {
            field: "crop_p",
            ..
        })
    ));
    // Out-of-range probabilities never panic.
    let f = random_frames(10);
    let wild = AugmentConfig {
        crop_p: 7.0,
        drop_p: -1.0,
        drop_rate: 4.0,
        crop_scale: [2.0, 0.1],
        crop_ratio: [0.0, -1.0],
        rotate_deg: f64::NAN,
        hflip_p: f64::NAN,
        ..AugmentConfig::default()
    };
    let _ = augment(&f, &wild, &mut rng(1));
    let _ = augment_events(&random_events(100, 1), S, &wild, &mut rng(1));
    let c: AugmentConfig = toml::from_str("hflip = false\ntranslate_px = 4").unwrap();
    assert!(!c.hflip);
    assert_eq!(c.translate_px, 4);
    assert_eq!(c.crop_p, AugmentConfig::default().crop_p);
    assert!(toml::from_str::<AugmentConfig>("hflip_prob = 0.5").is_err());
    let round: AugmentConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(round, c);
}

mod props {
    use super::*;
    use proptest::prelude::{ProptestConfig, prop_assert, prop_assert_eq, proptest};

    fn frames_from(t: usize, h: usize, w: usize, seed: u64) -> Frames {
        let mut r = rng(seed);
        let mut f = Frames::zeros(t, h, w);
        f.data
            .iter_mut()
            .for_each(|v| *v = r.random_range(0..4) as f32);
        f
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Flip twice = identity and roll keeps every frame's total, on any shape.
        #[test]
        fn flip_and_roll_invariants(t in 1usize..5, h in 1usize..20, w in 1usize..20, seed in 0u64..500, px in 0usize..30) {
            let f = frames_from(t, h, w, seed);
            let flip = only(|c| { c.hflip = true; c.hflip_p = 1.0; });
            let once = augment(&f, &flip, &mut rng(seed));
            prop_assert_eq!(augment(&once, &flip, &mut rng(seed + 1)), f.clone());
            let roll = only(|c| { c.translate_p = 1.0; c.translate_px = px; });
            let r = augment(&f, &roll, &mut rng(seed));
            for ti in 0..t {
                let a: f32 = r.frame(ti).iter().sum();
                let b: f32 = f.frame(ti).iter().sum();
                prop_assert_eq!(a, b);
            }
        }

        /// Every transform at probability 1 keeps the shape, never panics, and is reproducible.
        #[test]
        fn everything_on_keeps_shape(t in 1usize..4, h in 1usize..16, w in 1usize..16, seed in 0u64..500) {
            let f = frames_from(t, h, w, seed);
            let c = AugmentConfig {
                crop_p: 1.0, hflip_p: 1.0, translate_p: 1.0, rotate_p: 1.0, cutout_p: 1.0,
                drop_p: 1.0, time_shift_p: 1.0, ..AugmentConfig::default()
            };
            let (a, b) = two_views(&f, &c, seed);
            prop_assert_eq!(a.shape(), f.shape());
            prop_assert!(a.is_consistent() && b.is_consistent());
            prop_assert_eq!(two_views(&f, &c, seed), (a, b));
        }
    }
}

/// A sample whose every frame and channel holds one lit pixel at (x, y).
fn one_pixel(t: usize, h: usize, w: usize, x: usize, y: usize) -> nmoco_frames::Frames {
    let mut data = vec![0f32; t * 2 * h * w];
    for plane in data.chunks_exact_mut(h * w) {
        plane[y * w + x] = 1.0;
    }
    nmoco_frames::Frames { data, t, h, w }
}

fn lit(f: &nmoco_frames::Frames) -> Vec<Vec<usize>> {
    f.data
        .chunks_exact(f.h * f.w)
        .map(|p| (0..p.len()).filter(|&i| p[i] != 0.0).collect())
        .collect()
}

#[test]
fn trivial_augment_ops_move_every_plane_alike_by_their_magnitude() {
    use nmoco_frames::{TrivialOp, trivial_augment};
    use rand::SeedableRng;
    let cfg = nmoco_frames::AugmentConfig {
        trivial_augment: true,
        ..nmoco_frames::AugmentConfig::none()
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let (h, w) = (20, 20);
    // Translation at the largest bin: 0.1 · 20 = 2 pixels, sign chooses the direction.
    let mut f = one_pixel(2, h, w, 10, 10);
    trivial_augment(&mut f, &cfg, TrivialOp::TranslateX, 30, 1.0, &mut rng);
    assert!(
        lit(&f).iter().all(|p| p == &vec![10 * w + 12]),
        "{:?}",
        lit(&f)
    );
    let mut f = one_pixel(2, h, w, 10, 10);
    trivial_augment(&mut f, &cfg, TrivialOp::TranslateY, 30, -1.0, &mut rng);
    assert!(lit(&f).iter().all(|p| p == &vec![8 * w + 10]));
    // Bin 0 is the identity for every op; so is Identity at any bin.
    for op in TrivialOp::ALL {
        let mut f = one_pixel(2, h, w, 3, 4);
        trivial_augment(&mut f, &cfg, op, 0, 1.0, &mut rng);
        assert_eq!(f, one_pixel(2, h, w, 3, 4), "{op:?} at bin 0");
    }
    let mut f = one_pixel(2, h, w, 3, 4);
    trivial_augment(&mut f, &cfg, TrivialOp::Identity, 30, 1.0, &mut rng);
    assert_eq!(f, one_pixel(2, h, w, 3, 4));
    // Shear / rotation move an off-centre pixel, identically in every plane.
    for op in [TrivialOp::ShearX, TrivialOp::ShearY, TrivialOp::Rotate] {
        let mut f = one_pixel(3, h, w, 2, 3);
        trivial_augment(&mut f, &cfg, op, 30, 1.0, &mut rng);
        let l = lit(&f);
        assert!(l.iter().all(|p| p == &l[0]), "{op:?}: planes differ");
        assert_ne!(l[0], vec![3 * w + 2], "{op:?} did not move the pixel");
    }
    // Through `augment`: seeded, and over many seeds every operation shows up.
    let base = one_pixel(2, h, w, 2, 3);
    let a = nmoco_frames::augment(&base, &cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(9));
    let b = nmoco_frames::augment(&base, &cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(9));
    assert_eq!(a, b);
    let distinct: std::collections::BTreeSet<Vec<usize>> = (0..200)
        .map(|s| {
            lit(&nmoco_frames::augment(
                &base,
                &cfg,
                &mut rand_chacha::ChaCha8Rng::seed_from_u64(s),
            ))[0]
                .clone()
        })
        .collect();
    assert!(
        distinct.len() > 10,
        "only {} distinct outcomes",
        distinct.len()
    );
    assert!(distinct.contains(&vec![3 * w + 2]), "identity never drawn");
}
