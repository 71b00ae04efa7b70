//! Behaviour of the simulator and of the written dataset. Everything is small: 64×64 sensors,
//! sub-second samples, tiny datasets in temporary folders.

use std::collections::HashMap;
use std::f64::consts::PI;
use std::fs;
use std::path::Path;

use nmoco_events::{Events, SensorSize};
use nmoco_synth::{
    CameraParams, Error, LABELS_HEADER, Lighting, SampleParams, Shape, SynthConfig, Texture,
    TextureKind, count_in, generate, simulate_recording, simulate_sample,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SENSOR: SensorSize = SensorSize {
    width: 64,
    height: 64,
};

/// A clean sample: no noise, no hot pixels, centred, mid-range everything.
fn clean(shape: Shape, amplitude: f64) -> SampleParams {
    SampleParams {
        sensor: SENSOR,
        duration_us: 400_000,
        shape,
        texture: Texture {
            kind: TextureKind::Grating,
            cycles: 1.0,
            orientation: 0.3,
            phase: 0.0,
            amplitude,
        },
        size: 0.5,
        position: (0.5, 0.5),
        orientation: 0.0,
        pace: 0.5,
        phase: 0.3,
        drift: (0.0, 0.0),
        log_contrast: 0.8,
        background_texture: 0.05,
        camera: CameraParams {
            threshold: 0.15,
            threshold_sigma: 0.02,
            refractory_us: 100,
            noise_hz: 0.0,
            hot_pixels: 0,
            hot_pixel_hz: 0.0,
            render_step_us: 1000,
        },
    }
}

fn sample(class: usize, p: &SampleParams, seed: u64) -> Events {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ev = simulate_sample(class, p, &mut rng).expect("valid params");
    assert!(ev.len() > 200, "class {class}: only {} events", ev.len());
    assert!(ev.t.windows(2).all(|w| w[0] <= w[1]), "events not sorted");
    ev
}

/// Event centroid and second moments per time bin.
fn bins(ev: &Events, n: usize, duration: i64) -> Vec<(f64, f64, f64, f64, f64)> {
    let mut acc = vec![(0.0, 0.0, 0.0, 0.0, 0.0, 0.0); n];
    for i in 0..ev.len() {
        let b = ((ev.t[i] * n as i64) / duration).clamp(0, n as i64 - 1) as usize;
        let (x, y) = (f64::from(ev.x[i]) + 0.5, f64::from(ev.y[i]) + 0.5);
        let a = &mut acc[b];
        a.0 += 1.0;
        a.1 += x;
        a.2 += y;
        a.3 += x * x;
        a.4 += y * y;
        a.5 += x * y;
    }
    acc.into_iter()
        .map(|(c, sx, sy, sxx, syy, sxy)| {
            assert!(c >= 5.0, "a time bin has too few events ({c})");
            let (mx, my) = (sx / c, sy / c);
            (
                mx,
                my,
                sxx / c - mx * mx,
                syy / c - my * my,
                sxy / c - mx * my,
            )
        })
        .collect()
}

/// Sum of the changes of an angle sequence, each change unwrapped into (-period/2, period/2].
fn unwrapped_sweep(angles: &[f64], period: f64) -> f64 {
    angles
        .windows(2)
        .map(|w| {
            let mut d = (w[1] - w[0]) % period;
            if d > period / 2.0 {
                d -= period;
            }
            if d <= -period / 2.0 {
                d += period;
            }
            d
        })
        .sum()
}

#[test]
fn translations_move_the_events_the_right_way() {
    let p = clean(Shape::Disc, 0.3);
    // (class, expected sign of dx, expected sign of dy); y grows downwards.
    for (class, sx, sy) in [(0, 1.0, 0.0), (1, -1.0, 0.0), (2, 0.0, -1.0), (3, 0.0, 1.0)] {
        let ev = sample(class, &p, 11 + class as u64);
        let b = bins(&ev, 3, p.duration_us);
        let (dx, dy) = (b[2].0 - b[0].0, b[2].1 - b[0].1);
        let moved = |s: f64, d: f64| if s == 0.0 { d.abs() < 3.0 } else { s * d > 5.0 };
        assert!(
            moved(sx, dx) && moved(sy, dy),
            "class {class}: centroid moved by ({dx:.1}, {dy:.1})"
        );
    }
}

#[test]
fn rotations_turn_the_right_way() {
    // Two untextured parallel bars: the principal axis of the events follows the bars.
    let p = clean(Shape::Bars, 0.0);
    for (class, sign) in [(4, 1.0), (5, -1.0)] {
        let ev = sample(class, &p, 21);
        let b = bins(&ev, 10, p.duration_us);
        let axes: Vec<f64> = b
            .iter()
            .map(|&(_, _, vxx, vyy, vxy)| 0.5 * (2.0 * vxy).atan2(vxx - vyy))
            .collect();
        let sweep = unwrapped_sweep(&axes, PI);
        // Pace 0.5 turns at 5 rad/s for 0.4 s: 2 rad.
        assert!(
            sign * sweep > 1.0,
            "class {class}: axis swept {sweep:.2} rad (clockwise is positive)"
        );
        // The object stays in place.
        assert!((b[9].0 - b[0].0).abs() < 3.0 && (b[9].1 - b[0].1).abs() < 3.0);
    }
}

#[test]
fn expansion_and_contraction_change_the_spread() {
    let p = clean(Shape::Square, 0.3);
    for (class, grows) in [(6, true), (7, false)] {
        let ev = sample(class, &p, 31);
        let b = bins(&ev, 4, p.duration_us);
        let spread = |k: usize| (b[k].2 + b[k].3).sqrt();
        let (first, last) = (spread(0), spread(3));
        assert!(
            if grows {
                last > 1.3 * first
            } else {
                first > 1.3 * last
            },
            "class {class}: spread {first:.1} -> {last:.1}"
        );
    }
}

#[test]
fn oscillations_move_along_their_axis_and_come_back() {
    let p = clean(Shape::Triangle, 0.3);
    for (class, horizontal) in [(8, true), (9, false)] {
        let ev = sample(class, &p, 41);
        let b = bins(&ev, 10, p.duration_us);
        let range = |f: fn(&(f64, f64, f64, f64, f64)) -> f64| {
            let v: Vec<f64> = b.iter().map(f).collect();
            v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min)
        };
        let (rx, ry) = (range(|t| t.0), range(|t| t.1));
        let (along, across) = if horizontal { (rx, ry) } else { (ry, rx) };
        assert!(
            along > 6.0 && along > 3.0 * across,
            "class {class}: centroid ranges x {rx:.1}, y {ry:.1}"
        );
        // Back and forth: the centroid changes direction along the axis at least once.
        let pos: Vec<f64> = b
            .iter()
            .map(|t| if horizontal { t.0 } else { t.1 })
            .collect();
        let steps: Vec<f64> = pos.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(steps.iter().any(|&d| d > 0.5) && steps.iter().any(|&d| d < -0.5));
    }
}

#[test]
fn orbits_go_round_the_right_way() {
    let p = clean(Shape::Disc, 0.3);
    for (class, sign) in [(10, 1.0), (11, -1.0)] {
        let ev = sample(class, &p, 51);
        let b = bins(&ev, 12, p.duration_us);
        let (mx, my) = (
            b.iter().map(|t| t.0).sum::<f64>() / b.len() as f64,
            b.iter().map(|t| t.1).sum::<f64>() / b.len() as f64,
        );
        let angles: Vec<f64> = b.iter().map(|t| (t.1 - my).atan2(t.0 - mx)).collect();
        let sweep = unwrapped_sweep(&angles, 2.0 * PI);
        assert!(
            sign * sweep > 1.0,
            "class {class}: centroid swept {sweep:.2} rad (clockwise is positive)"
        );
    }
}

#[test]
fn noise_and_hot_pixels_are_present() {
    let quiet = clean(Shape::Disc, 0.3);
    let mut noisy = quiet;
    noisy.camera.noise_hz = 2.0;
    noisy.camera.hot_pixels = 3;
    noisy.camera.hot_pixel_hz = 400.0;
    let pixels = |ev: &Events| {
        let mut m: HashMap<(u16, u16), usize> = HashMap::new();
        for i in 0..ev.len() {
            *m.entry((ev.x[i], ev.y[i])).or_default() += 1;
        }
        m
    };
    let q = pixels(&sample(0, &quiet, 61));
    let n = pixels(&sample(0, &noisy, 61));
    // Background activity: 2 Hz × 4096 px × 0.4 s ≈ 3300 events spread over the frame.
    assert!(
        n.len() > q.len() + 1000,
        "pixels with events: quiet {}, noisy {}",
        q.len(),
        n.len()
    );
    // Hot pixels: 400 Hz × 0.4 s ≈ 160 events each, far above any signal pixel.
    let mut counts: Vec<usize> = n.values().copied().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let quiet_max = q.values().copied().max().unwrap_or(0);
    assert!(
        counts[2] > 100 && counts[2] > 3 * quiet_max,
        "top counts {:?}, quiet max {quiet_max}",
        &counts[..4]
    );
}

fn tiny_config(seed: u64) -> SynthConfig {
    SynthConfig {
        classes: 3,
        per_class: 2,
        users: 3,
        train_users: 2,
        lightings: vec![
            Lighting {
                name: "bright".into(),
                contrast: 1.0,
                threshold: 0.15,
                threshold_sigma: 0.02,
                noise_hz: 0.1,
            },
            Lighting {
                name: "dim".into(),
                contrast: 0.6,
                threshold: 0.2,
                threshold_sigma: 0.04,
                noise_hz: 1.0,
            },
        ],
        sensor: SENSOR,
        segment_us: (60_000, 120_000),
        gap_us: (30_000, 60_000),
        seed,
        ..SynthConfig::default()
    }
}

#[test]
fn refractory_period_holds_per_pixel() {
    let cfg = SynthConfig {
        refractory_us: 2000,
        hot_pixels: 5,
        hot_pixel_hz: 3000.0,
        ..tiny_config(3)
    };
    let rec = simulate_recording(&cfg, 1, 1).expect("valid config");
    let mut last: HashMap<(u16, u16), i64> = HashMap::new();
    let mut max_count: HashMap<(u16, u16), usize> = HashMap::new();
    for i in 0..rec.events.len() {
        let key = (rec.events.x[i], rec.events.y[i]);
        if let Some(&t) = last.get(&key) {
            assert!(
                rec.events.t[i] - t >= 2000,
                "pixel {key:?}: events at {t} and {}",
                rec.events.t[i]
            );
        }
        last.insert(key, rec.events.t[i]);
        *max_count.entry(key).or_default() += 1;
    }
    // The hot pixels would fire ~3000 Hz; the refractory period caps them at 500 Hz.
    let cap = (rec.duration_us / 2000 + 1) as usize;
    let top = max_count.values().copied().max().unwrap_or(0);
    assert!(
        top <= cap && top > cap / 2,
        "top pixel count {top}, cap {cap}"
    );
}

fn read_dir_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .expect("readable")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).expect("readable file"),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn same_seed_same_bytes_regardless_of_threads_and_different_seed_differs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .expect("pool");
    one.install(|| generate(&tiny_config(5), &a))
        .expect("generate");
    two.install(|| generate(&tiny_config(5), &b))
        .expect("generate");
    generate(&tiny_config(6), &c).expect("generate");
    let (fa, fb, fc) = (read_dir_bytes(&a), read_dir_bytes(&b), read_dir_bytes(&c));
    assert_eq!(fa.len(), 3 * 2 * 2 + 3);
    assert!(fa == fb, "1 thread and 3 threads wrote different files");
    let aedat = |f: &[(String, Vec<u8>)]| -> Vec<Vec<u8>> {
        f.iter()
            .filter(|(n, _)| n.ends_with(".aedat"))
            .map(|(_, b)| b.clone())
            .collect()
    };
    let (xa, xc) = (aedat(&fa), aedat(&fc));
    assert!(
        xa.iter().zip(&xc).all(|(p, q)| p != q),
        "seed 6 repeated a seed-5 file"
    );
}

#[test]
fn written_layout_decodes_and_segments_hold_events() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tiny_config(9);
    let summary = generate(&cfg, tmp.path()).expect("generate");
    assert_eq!(summary.recordings, 6);
    assert_eq!(summary.train_samples, 2 * 2 * 6);
    assert_eq!(summary.test_samples, 2 * 6);
    let train = fs::read_to_string(tmp.path().join("trials_to_train.txt")).expect("train list");
    let test = fs::read_to_string(tmp.path().join("trials_to_test.txt")).expect("test list");
    assert_eq!(
        train,
        "user01_bright.aedat\nuser01_dim.aedat\nuser02_bright.aedat\nuser02_dim.aedat\n"
    );
    assert_eq!(test, "user03_bright.aedat\nuser03_dim.aedat\n");
    let mapping = fs::read_to_string(tmp.path().join("gesture_mapping.csv")).expect("mapping");
    assert_eq!(
        mapping,
        "action,label\ntranslate_right,1\ntranslate_left,2\ntranslate_up,3\n"
    );
    let mut total = 0u64;
    for name in train.lines().chain(test.lines()) {
        let path = tmp.path().join(name);
        let rec = nmoco_events::read_file(&path, None).expect("decodes");
        let ev = &rec.events;
        total += ev.len() as u64;
        assert!(ev.t.windows(2).all(|w| w[0] <= w[1]));
        assert!(ev.x.iter().all(|&x| x < 64) && ev.y.iter().all(|&y| y < 64));
        // The file holds exactly what the simulator produced.
        let user: usize = name[4..6].parse().expect("user number");
        let li = usize::from(name.contains("_dim"));
        let sim = simulate_recording(&cfg, user, li).expect("simulate");
        assert!(
            sim.events == *ev,
            "{name}: decoded events differ from the simulation"
        );

        let csv_name = name.replace(".aedat", "_labels.csv");
        let csv = fs::read_to_string(tmp.path().join(&csv_name)).expect("labels");
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some(LABELS_HEADER));
        let mut per_class = [0usize; 3];
        let mut prev_end = 0;
        for line in lines {
            let f: Vec<i64> = line
                .split(',')
                .map(|v| v.parse().expect("integer"))
                .collect();
            assert_eq!(f.len(), 3, "{csv_name}: {line}");
            let (class, start, end) = (f[0], f[1], f[2]);
            assert!((1..=3).contains(&class));
            per_class[(class - 1) as usize] += 1;
            assert!(start >= prev_end && end > start);
            prev_end = end;
            let n = count_in(&ev.t, start, end);
            assert!(n > 50, "{csv_name}: segment {line} has {n} events");
        }
        assert_eq!(per_class, [2, 2, 2]);
    }
    assert_eq!(total, summary.events);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let p = clean(Shape::Disc, 0.3);
    assert!(matches!(
        simulate_sample(12, &p, &mut rng),
        Err(Error::ClassOutOfRange { class: 12, .. })
    ));
    let mut q = p;
    q.pace = f64::NAN;
    assert!(matches!(
        simulate_sample(0, &q, &mut rng),
        Err(Error::InvalidConfig { field: "pace", .. })
    ));
    let mut q = p;
    q.texture.amplitude = 1.0;
    assert!(simulate_sample(0, &q, &mut rng).is_err());
    for cfg in [
        SynthConfig {
            classes: 1,
            ..SynthConfig::default()
        },
        SynthConfig {
            classes: 13,
            ..SynthConfig::default()
        },
        SynthConfig {
            train_users: 9,
            ..SynthConfig::default()
        },
        SynthConfig {
            render_step_us: 2000,
            ..SynthConfig::default()
        },
        SynthConfig {
            lightings: vec![],
            ..SynthConfig::default()
        },
    ] {
        assert!(matches!(cfg.validate(), Err(Error::InvalidConfig { .. })));
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(generate(&cfg, tmp.path()).is_err());
    }
    assert!(simulate_recording(&tiny_config(0), 4, 0).is_err());
    assert!(simulate_recording(&tiny_config(0), 1, 2).is_err());
    assert!(SynthConfig::default().validate().is_ok());
}
