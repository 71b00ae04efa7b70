//! Resize modes: crop/pad, coordinate mapping, area pooling.

use nmoco_events::Events;
use nmoco_frames::{FrameConfig, Frames, Normalize, Resize, Slicing, integrate};

use super::{cfg, ev, frame_sums, frames_with, random_events, sensor};

#[test]
fn resize_none_crops_and_pads_at_the_top_left() {
    // Sensor 4×3 onto a 3×2 canvas: x = 3 or y = 2 fall off.
    let e = ev(&[
        (0, 0, 0, true),
        (1, 3, 0, true),
        (2, 2, 1, false),
        (3, 1, 2, true),
    ]);
    let f = integrate(&e, sensor(4, 3), &cfg(1, 2, 3, Slicing::EventCount)).unwrap();
    assert_eq!(
        f,
        frames_with(1, 2, 3, &[(0, 1, 0, 0, 1.0), (0, 0, 1, 2, 1.0)])
    );
    // Sensor 2×1 onto a 3×2 canvas: zero padding right and bottom.
    let e = ev(&[(0, 1, 0, true)]);
    let f = integrate(&e, sensor(2, 1), &cfg(1, 2, 3, Slicing::EventCount)).unwrap();
    assert_eq!(f, frames_with(1, 2, 3, &[(0, 1, 0, 1, 1.0)]));
}

#[test]
fn resize_events_maps_coordinates_by_floor() {
    // 128 → 48: x' = floor(x·48/128).
    let e = ev(&[
        (0, 127, 127, true),
        (1, 3, 2, true),
        (2, 0, 64, false),
        (3, 8, 0, false),
    ]);
    let c = FrameConfig {
        resize: Resize::Events,
        ..cfg(1, 48, 48, Slicing::EventCount)
    };
    let f = integrate(&e, sensor(128, 128), &c).unwrap();
    let want = frames_with(
        1,
        48,
        48,
        &[
            (0, 1, 47, 47, 1.0),
            (0, 1, 0, 1, 1.0),
            (0, 0, 24, 0, 1.0),
            (0, 0, 0, 3, 1.0),
        ],
    );
    assert_eq!(f, want);
    // N-Caltech101 style: 240×180 → 128×128, non-uniform scale.
    let e = ev(&[(0, 239, 179, true), (1, 120, 90, true)]);
    let c = FrameConfig {
        resize: Resize::Events,
        ..cfg(1, 128, 128, Slicing::EventCount)
    };
    let f = integrate(&e, sensor(240, 180), &c).unwrap();
    assert_eq!(f.get(0, 1, 127, 127), 1.0);
    assert_eq!(f.get(0, 1, 64, 64), 1.0);
}

#[test]
fn resize_pool_hand_case_non_integer_factor() {
    // One row of 3 pixels → 2 pixels: dest 0 covers [0, 1.5), dest 1 covers [1.5, 3).
    // Counts a=1, b=2, c=4 → [a + b/2, b/2 + c] = [2, 5].
    let e = ev(&[
        (0, 0, 0, true),
        (1, 1, 0, true),
        (2, 1, 0, true),
        (3, 2, 0, true),
        (4, 2, 0, true),
        (5, 2, 0, true),
        (6, 2, 0, true),
    ]);
    let c = FrameConfig {
        resize: Resize::Pool,
        ..cfg(1, 1, 2, Slicing::EventCount)
    };
    let f = integrate(&e, sensor(3, 1), &c).unwrap();
    assert_eq!(f.data, vec![0.0, 0.0, 2.0, 5.0]);
}

#[test]
fn resize_pool_equals_event_mapping_for_integer_factors() {
    let e = random_events(5000, 128, 128, 1);
    let base = cfg(4, 64, 64, Slicing::EventCount);
    let a = integrate(
        &e,
        sensor(128, 128),
        &FrameConfig {
            resize: Resize::Pool,
            ..base.clone()
        },
    )
    .unwrap();
    let b = integrate(
        &e,
        sensor(128, 128),
        &FrameConfig {
            resize: Resize::Events,
            ..base
        },
    )
    .unwrap();
    assert_eq!(a, b);
}

#[test]
fn identity_and_lookup_paths_agree() {
    // Resize::Events at scale 1 goes through the lookup-table kernel, Resize::None through the
    // identity kernel; the frames must be identical.
    for seed in 0..4 {
        let e = random_events(4000, 40, 30, seed);
        for s in [Slicing::EventCount, Slicing::EqualTime] {
            let base = cfg(5, 30, 40, s);
            let a = integrate(&e, sensor(40, 30), &base).unwrap();
            let b = integrate(
                &e,
                sensor(40, 30),
                &FrameConfig {
                    resize: Resize::Events,
                    ..base
                },
            )
            .unwrap();
            assert_eq!(a, b);
            assert_eq!(a.sum(), 4000.0);
        }
    }
}

#[test]
fn resize_pool_preserves_totals_for_non_integer_factors() {
    let e = random_events(5000, 128, 128, 2);
    let c = FrameConfig {
        resize: Resize::Pool,
        ..cfg(4, 48, 48, Slicing::EventCount)
    };
    let f = integrate(&e, sensor(128, 128), &c).unwrap();
    let full = integrate(&e, sensor(128, 128), &cfg(4, 128, 128, Slicing::EventCount)).unwrap();
    for (a, b) in frame_sums(&f).iter().zip(frame_sums(&full)) {
        assert!((a - b).abs() < 1e-2, "{a} vs {b}");
    }
    // Each channel separately too.
    let ch = |f: &Frames, c: usize| -> f32 {
        (0..f.t)
            .flat_map(|t| (0..f.h).flat_map(move |y| (0..f.w).map(move |x| (t, y, x))))
            .map(|(t, y, x)| f.get(t, c, y, x))
            .sum()
    };
    assert!((ch(&f, 1) - ch(&full, 1)).abs() < 1e-2);
}

#[test]
fn pooled_segment_and_per_event_paths_agree() {
    // Sorted input takes the per-frame (segment) path, the same events with the middle ones
    // reversed (first and last kept, so t0 and t_end are unchanged) take the per-event path.
    let sorted = random_events(3000, 30, 20, 9);
    let mut idx: Vec<usize> = (0..3000).collect();
    idx[1..2999].reverse();
    let shuffled = Events {
        t: idx.iter().map(|&i| sorted.t[i]).collect(),
        x: idx.iter().map(|&i| sorted.x[i]).collect(),
        y: idx.iter().map(|&i| sorted.y[i]).collect(),
        on: idx.iter().map(|&i| sorted.on[i]).collect(),
    };
    for s in [Slicing::EqualTime, Slicing::TimeWindow { window_us: 700 }] {
        let c = FrameConfig {
            resize: Resize::Pool,
            normalize: Normalize::FrameCount,
            ..cfg(5, 8, 12, s)
        };
        let a = integrate(&sorted, sensor(30, 20), &c).unwrap();
        let b = integrate(&shuffled, sensor(30, 20), &c).unwrap();
        assert_eq!(a, b, "{s:?}");
        for ti in 0..5 {
            let sum: f32 = a.frame(ti).iter().sum();
            assert!((sum - 1.0).abs() < 1e-4 || sum == 0.0, "{sum}");
        }
    }
}
