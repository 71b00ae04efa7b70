//! Golden hand-made cases for every slicing mode, resize mode and option.

use nmoco_events::{Events, SensorSize};
use nmoco_frames::{
    Error, FrameConfig, Frames, Normalize, Resize, Slicing, equal_time_bounds, event_count_bounds,
    integrate, integrate_batch, integrate_batch_into, integrate_into, time_window_bounds,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Events from `(t, x, y, on)` tuples, in the given (file) order.
fn ev(list: &[(i64, u16, u16, bool)]) -> Events {
    Events {
        t: list.iter().map(|e| e.0).collect(),
        x: list.iter().map(|e| e.1).collect(),
        y: list.iter().map(|e| e.2).collect(),
        on: list.iter().map(|e| e.3).collect(),
    }
}

fn sensor(width: u16, height: u16) -> SensorSize {
    SensorSize { width, height }
}

fn cfg(t: usize, h: usize, w: usize, slicing: Slicing) -> FrameConfig {
    FrameConfig {
        t,
        slicing,
        height: h,
        width: w,
        ..FrameConfig::default()
    }
}

/// Frames from explicit `(ti, c, y, x, value)` entries on a zero background.
fn frames_with(
    t: usize,
    h: usize,
    w: usize,
    entries: &[(usize, usize, usize, usize, f32)],
) -> Frames {
    let mut f = Frames::zeros(t, h, w);
    for &(ti, c, y, x, v) in entries {
        let i = f.index(ti, c, y, x);
        f.data[i] += v;
    }
    f
}

/// Per-frame sums.
fn frame_sums(f: &Frames) -> Vec<f32> {
    (0..f.t).map(|i| f.frame(i).iter().sum()).collect()
}

#[test]
fn event_count_bounds_match_spikingjelly_rule() {
    // N = 10, T = 3: di = 3, the last frame gets the remainder.
    assert_eq!(event_count_bounds(10, 3), vec![0..3, 3..6, 6..10]);
    // N = 16, T = 4: exact division.
    assert_eq!(event_count_bounds(16, 4), vec![0..4, 4..8, 8..12, 12..16]);
    // N < T: di = 0, every frame but the last is empty.
    assert_eq!(event_count_bounds(2, 4), vec![0..0, 0..0, 0..0, 0..2]);
    // N = 0.
    assert_eq!(event_count_bounds(0, 2), vec![0..0, 0..0]);
    // N = 17, T = 5: di = 3, last = [12, 17).
    assert_eq!(
        event_count_bounds(17, 5),
        vec![0..3, 3..6, 6..9, 9..12, 12..17]
    );
}

#[test]
fn event_count_golden_frames() {
    // 7 events on a 3×2 (W×H) sensor, T = 2: di = 3, frame 0 = events 0..3, frame 1 = 3..7.
    let e = ev(&[
        (0, 0, 0, true),
        (1, 2, 1, false),
        (2, 0, 0, true),
        (3, 1, 0, false),
        (4, 1, 0, false),
        (5, 2, 1, true),
        (6, 0, 1, true),
    ]);
    let f = integrate(&e, sensor(3, 2), &cfg(2, 2, 3, Slicing::EventCount)).unwrap();
    let want = frames_with(
        2,
        2,
        3,
        &[
            (0, 1, 0, 0, 2.0),
            (0, 0, 1, 2, 1.0),
            (1, 0, 0, 1, 2.0),
            (1, 1, 1, 2, 1.0),
            (1, 1, 1, 0, 1.0),
        ],
    );
    assert_eq!(f, want);
}

#[test]
fn event_count_uses_file_order_not_time() {
    // Timestamps decreasing: the split is still by index.
    let e = ev(&[
        (9, 0, 0, true),
        (8, 1, 0, true),
        (1, 0, 0, false),
        (0, 1, 0, false),
    ]);
    let f = integrate(&e, sensor(2, 1), &cfg(2, 1, 2, Slicing::EventCount)).unwrap();
    let want = frames_with(
        2,
        1,
        2,
        &[
            (0, 1, 0, 0, 1.0),
            (0, 1, 0, 1, 1.0),
            (1, 0, 0, 0, 1.0),
            (1, 0, 0, 1, 1.0),
        ],
    );
    assert_eq!(f, want);
}

#[test]
fn event_count_fewer_events_than_frames() {
    let e = ev(&[(0, 0, 0, true), (1, 0, 0, true)]);
    let f = integrate(&e, sensor(1, 1), &cfg(4, 1, 1, Slicing::EventCount)).unwrap();
    assert_eq!(frame_sums(&f), vec![0.0, 0.0, 0.0, 2.0]);
}

#[test]
fn empty_events_give_zero_frames_in_every_mode() {
    for s in [
        Slicing::EventCount,
        Slicing::EqualTime,
        Slicing::TimeWindow { window_us: 10 },
    ] {
        let f = integrate(&Events::new(), sensor(4, 4), &cfg(3, 4, 4, s)).unwrap();
        assert_eq!(f, Frames::zeros(3, 4, 4), "{s:?}");
    }
}

#[test]
fn equal_time_golden() {
    // t = 0..=10, T = 3: dt = 10 // 3 = 3; frames [0,3) [3,6) [6, 10] (last gets 5 events).
    let list: Vec<_> = (0..=10)
        .map(|t| (t as i64, (t % 2) as u16, 0u16, t >= 5))
        .collect();
    let e = ev(&list);
    assert_eq!(equal_time_bounds(&e.t, 3), Some(vec![0..3, 3..6, 6..11]));
    let f = integrate(&e, sensor(2, 1), &cfg(3, 1, 2, Slicing::EqualTime)).unwrap();
    // frame 0: t=0 (x0 OFF), 1 (x1 OFF), 2 (x0 OFF)
    // frame 1: t=3 (x1 OFF), 4 (x0 OFF), 5 (x1 ON)
    // frame 2: t=6 (x0 ON), 7 (x1 ON), 8 (x0 ON), 9 (x1 ON), 10 (x0 ON)
    let want = frames_with(
        3,
        1,
        2,
        &[
            (0, 0, 0, 0, 2.0),
            (0, 0, 0, 1, 1.0),
            (1, 0, 0, 1, 1.0),
            (1, 0, 0, 0, 1.0),
            (1, 1, 0, 1, 1.0),
            (2, 1, 0, 0, 3.0),
            (2, 1, 0, 1, 2.0),
        ],
    );
    assert_eq!(f, want);
}

#[test]
fn equal_time_origin_is_first_event_and_handles_gaps() {
    // t0 = 100, t_end = 190, T = 3: dt = 30: [100,130) [130,160) [160, 190].
    let e = ev(&[
        (100, 0, 0, true),
        (129, 0, 0, true),
        (130, 0, 0, true),
        (159, 0, 0, true),
        (160, 0, 0, true),
        (190, 0, 0, true),
    ]);
    assert_eq!(equal_time_bounds(&e.t, 3), Some(vec![0..2, 2..4, 4..6]));
    // An empty middle frame (SpikingJelly itself raises IndexError there; we give zeros).
    let e = ev(&[(0, 0, 0, true), (1, 0, 0, true), (9, 0, 0, true)]);
    let f = integrate(&e, sensor(1, 1), &cfg(3, 1, 1, Slicing::EqualTime)).unwrap();
    assert_eq!(frame_sums(&f), vec![2.0, 0.0, 1.0]);
}

#[test]
fn equal_time_zero_span_goes_to_last_frame() {
    let e = ev(&[(5, 0, 0, true), (5, 0, 0, false), (6, 0, 0, true)]);
    // span 1 < T = 2: dt = 0, everything in the last frame.
    let f = integrate(&e, sensor(1, 1), &cfg(2, 1, 1, Slicing::EqualTime)).unwrap();
    assert_eq!(frame_sums(&f), vec![0.0, 3.0]);
}

#[test]
fn equal_time_unsorted_assigns_by_timestamp() {
    // t0 = t[0] = 0, t_end = t[N-1] = 7, dt = 3: frame 0 = t in [0,3), frame 1 = t >= 3.
    let e = ev(&[
        (0, 0, 0, true),
        (10, 0, 0, true),
        (3, 0, 0, true),
        (2, 0, 0, true),
        (7, 0, 0, true),
    ]);
    assert_eq!(equal_time_bounds(&e.t, 2), None);
    let f = integrate(&e, sensor(1, 1), &cfg(2, 1, 1, Slicing::EqualTime)).unwrap();
    assert_eq!(frame_sums(&f), vec![2.0, 3.0]);
    // An event before t0 is dropped.
    let e = ev(&[(5, 0, 0, true), (1, 0, 0, true), (9, 0, 0, true)]);
    let f = integrate(&e, sensor(1, 1), &cfg(2, 1, 1, Slicing::EqualTime)).unwrap();
    assert_eq!(frame_sums(&f), vec![1.0, 1.0]);
}

#[test]
fn time_window_golden() {
    let e = ev(&[
        (100, 0, 0, true),
        (150, 1, 0, false),
        (199, 0, 0, true),
        (200, 1, 0, true),
        (250, 1, 0, true),
        (300, 0, 0, true),
        (420, 0, 0, true),
    ]);
    let s = Slicing::TimeWindow { window_us: 100 };
    assert_eq!(time_window_bounds(&e.t, 2, 100), Some(vec![0..3, 3..5]));
    let f = integrate(&e, sensor(2, 1), &cfg(2, 1, 2, s)).unwrap();
    let want = frames_with(
        2,
        1,
        2,
        &[(0, 1, 0, 0, 2.0), (0, 0, 0, 1, 1.0), (1, 1, 0, 1, 2.0)],
    );
    assert_eq!(f, want);
    // Fewer events than windows: trailing frames are empty.
    let f = integrate(&e, sensor(2, 1), &cfg(5, 1, 2, s)).unwrap();
    assert_eq!(frame_sums(&f), vec![3.0, 2.0, 1.0, 1.0, 0.0]);
}

#[test]
fn time_window_unsorted_matches_sorted() {
    let sorted = ev(&[
        (10, 0, 0, true),
        (12, 1, 0, false),
        (25, 0, 0, true),
        (31, 1, 0, true),
        (44, 1, 0, true),
    ]);
    // Same first event (the origin), rest shuffled, plus one event before the origin (dropped).
    let shuffled = ev(&[
        (10, 0, 0, true),
        (44, 1, 0, true),
        (25, 0, 0, true),
        (3, 1, 0, true),
        (12, 1, 0, false),
        (31, 1, 0, true),
    ]);
    let c = cfg(3, 1, 2, Slicing::TimeWindow { window_us: 10 });
    let a = integrate(&sorted, sensor(2, 1), &c).unwrap();
    let b = integrate(&shuffled, sensor(2, 1), &c).unwrap();
    assert_eq!(a, b);
    assert_eq!(frame_sums(&a), vec![2.0, 1.0, 1.0]);
}

#[test]
fn channel_zero_is_off_channel_one_is_on() {
    let e = ev(&[(0, 1, 0, false), (1, 0, 0, true)]);
    let f = integrate(&e, sensor(2, 1), &cfg(1, 1, 2, Slicing::EventCount)).unwrap();
    assert_eq!(f.data, vec![0.0, 1.0, 1.0, 0.0]);
}

#[test]
fn out_of_bounds_is_an_error_naming_the_event_unless_dropped() {
    let e = ev(&[(0, 0, 0, true), (1, 3, 0, true), (2, 4, 1, true)]);
    let err = integrate(&e, sensor(4, 2), &cfg(1, 2, 4, Slicing::EventCount)).unwrap_err();
    assert_eq!(
        err,
        Error::OutOfBounds {
            index: 2,
            x: 4,
            y: 1,
            width: 4,
            height: 2
        }
    );
    assert!(err.to_string().contains("event 2 at x=4, y=1"), "{err}");
    let c = FrameConfig {
        drop_out_of_bounds: true,
        ..cfg(1, 2, 4, Slicing::EventCount)
    };
    let f = integrate(&e, sensor(4, 2), &c).unwrap();
    assert_eq!(f.sum(), 2.0);
    // The split still counts the dropped event (index rule is over all events).
    let c2 = FrameConfig {
        drop_out_of_bounds: true,
        ..cfg(3, 2, 4, Slicing::EventCount)
    };
    let f = integrate(&e, sensor(4, 2), &c2).unwrap();
    assert_eq!(frame_sums(&f), vec![1.0, 1.0, 0.0]);
}

#[test]
fn bad_inputs_are_errors() {
    let mut e = ev(&[(0, 0, 0, true)]);
    e.x.push(0);
    assert!(matches!(
        integrate(&e, sensor(1, 1), &cfg(1, 1, 1, Slicing::EventCount)),
        Err(Error::ColumnMismatch { t: 1, x: 2, .. })
    ));
    let e = ev(&[(0, 0, 0, true)]);
    for bad in [
        cfg(0, 1, 1, Slicing::EventCount),
        cfg(1, 0, 1, Slicing::EventCount),
        cfg(1, 1, 0, Slicing::EventCount),
        cfg(1, 1, 1, Slicing::TimeWindow { window_us: 0 }),
        FrameConfig {
            clip: Some(f32::NAN),
            ..cfg(1, 1, 1, Slicing::EventCount)
        },
        FrameConfig {
            clip: Some(0.0),
            ..cfg(1, 1, 1, Slicing::EventCount)
        },
        cfg(usize::MAX / 2, 4, 4, Slicing::EventCount),
    ] {
        assert!(
            matches!(
                integrate(&e, sensor(1, 1), &bad),
                Err(Error::InvalidConfig { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        integrate(&e, sensor(0, 1), &cfg(1, 1, 1, Slicing::EventCount)),
        Err(Error::EmptySensor { .. })
    ));
}

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

fn random_events(n: usize, w: u16, h: u16, seed: u64) -> Events {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut e = Events::with_capacity(n);
    for i in 0..n {
        e.t.push(i as i64 * 3 + rng.random_range(0..3));
        e.x.push(rng.random_range(0..w));
        e.y.push(rng.random_range(0..h));
        e.on.push(rng.random());
    }
    e
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

#[test]
fn options_clip_binarize_log_normalize() {
    // Pixel counts in the single frame: (x0: 3 ON), (x1: 1 OFF).
    let e = ev(&[
        (0, 0, 0, true),
        (1, 0, 0, true),
        (2, 0, 0, true),
        (3, 1, 0, false),
    ]);
    let s = sensor(2, 1);
    let base = cfg(1, 1, 2, Slicing::EventCount);
    let run = |c: FrameConfig| integrate(&e, s, &c).unwrap().data;
    // Layout: [OFF x0, OFF x1, ON x0, ON x1].
    assert_eq!(run(base.clone()), vec![0.0, 1.0, 3.0, 0.0]);
    assert_eq!(
        run(FrameConfig {
            clip: Some(2.0),
            ..base.clone()
        }),
        vec![0.0, 1.0, 2.0, 0.0]
    );
    assert_eq!(
        run(FrameConfig {
            binarize: true,
            ..base.clone()
        }),
        vec![0.0, 1.0, 1.0, 0.0]
    );
    let l = run(FrameConfig {
        log_scale: true,
        ..base.clone()
    });
    let want = [0.0, 2f32.ln(), 4f32.ln(), 0.0];
    assert!(
        l.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
        "{l:?}"
    );
    assert_eq!(
        run(FrameConfig {
            normalize: Normalize::Max,
            ..base.clone()
        }),
        vec![0.0, 1.0 / 3.0, 1.0, 0.0]
    );
    // Per-frame count: the frame holds 4 events.
    assert_eq!(
        run(FrameConfig {
            normalize: Normalize::FrameCount,
            ..base.clone()
        }),
        vec![0.0, 0.25, 0.75, 0.0]
    );
    // Order: clip, then normalise by max of the clipped values.
    assert_eq!(
        run(FrameConfig {
            clip: Some(2.0),
            normalize: Normalize::Max,
            ..base.clone()
        }),
        vec![0.0, 0.5, 1.0, 0.0]
    );
    // Frame-count normalisation uses the raw count even after binarize.
    assert_eq!(
        run(FrameConfig {
            binarize: true,
            normalize: Normalize::FrameCount,
            ..base
        }),
        vec![0.0, 0.25, 0.25, 0.0]
    );
}

#[test]
fn batch_equals_single_and_reports_first_error() {
    let a = random_events(1000, 32, 32, 3);
    let b = random_events(10, 32, 32, 4);
    let c = random_events(0, 32, 32, 5);
    let s = sensor(32, 32);
    let k = cfg(4, 32, 32, Slicing::EqualTime);
    let got = integrate_batch(&[(&a, s), (&b, s), (&c, s)], &k).unwrap();
    let want: Vec<Frames> = [&a, &b, &c]
        .iter()
        .map(|e| integrate(e, s, &k).unwrap())
        .collect();
    assert_eq!(got, want);
    let bad1 = ev(&[(0, 40, 0, true)]);
    let bad2 = ev(&[(0, 0, 50, true)]);
    let err = integrate_batch(&[(&a, s), (&bad1, s), (&bad2, s)], &k).unwrap_err();
    assert!(matches!(err, Error::OutOfBounds { x: 40, .. }), "{err:?}");
}

#[test]
fn into_variants_overwrite_dirty_buffers_and_match() {
    let a = random_events(1000, 32, 32, 6);
    let b = random_events(300, 32, 32, 7);
    let s = sensor(32, 32);
    for k in [
        cfg(4, 32, 32, Slicing::EventCount),
        FrameConfig {
            resize: Resize::Pool,
            normalize: Normalize::FrameCount,
            ..cfg(3, 12, 20, Slicing::EqualTime)
        },
    ] {
        let per = k.t * 2 * k.height * k.width;
        let mut buf = vec![7.0f32; per];
        integrate_into(&a, s, &k, &mut buf).unwrap();
        assert_eq!(buf, integrate(&a, s, &k).unwrap().data);
        let mut batch = vec![-1.0f32; 2 * per];
        integrate_batch_into(&[(&a, s), (&b, s)], &k, &mut batch).unwrap();
        assert_eq!(&batch[..per], &integrate(&a, s, &k).unwrap().data[..]);
        assert_eq!(&batch[per..], &integrate(&b, s, &k).unwrap().data[..]);
        assert_eq!(
            integrate_into(&a, s, &k, &mut buf[1..]),
            Err(Error::BufferSize {
                expected: per,
                found: per - 1
            })
        );
        assert!(matches!(
            integrate_batch_into(&[(&a, s)], &k, &mut batch),
            Err(Error::BufferSize { .. })
        ));
    }
}

#[test]
fn config_serde_defaults_tags_and_unknown_fields() {
    let c: FrameConfig = toml::from_str("").unwrap();
    assert_eq!(c, FrameConfig::default());
    let c: FrameConfig = toml::from_str(
        "t = 8\nheight = 64\nwidth = 64\nresize = \"pool\"\nnormalize = \"frame_count\"\n\
         [slicing]\nmode = \"time_window\"\nwindow_us = 5000\n",
    )
    .unwrap();
    assert_eq!(c.t, 8);
    assert_eq!(c.slicing, Slicing::TimeWindow { window_us: 5000 });
    assert_eq!(c.resize, Resize::Pool);
    assert_eq!(c.normalize, Normalize::FrameCount);
    let j = serde_json::to_string(&Slicing::EqualTime).unwrap();
    assert_eq!(j, r#"{"mode":"equal_time"}"#);
    let back: Slicing = serde_json::from_str(r#"{"mode":"event_count"}"#).unwrap();
    assert_eq!(back, Slicing::EventCount);
    assert!(toml::from_str::<FrameConfig>("frames = 3").is_err());
    let round: FrameConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(round, c);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Count split: frame i holds exactly the events of the SpikingJelly index range.
    #[test]
    fn count_split_frames_follow_index_rule(n in 0usize..300, t in 1usize..20, seed in 0u64..1000) {
        let e = random_events(n, 8, 6, seed);
        let f = integrate(&e, sensor(8, 6), &cfg(t, 6, 8, Slicing::EventCount)).unwrap();
        let sums = frame_sums(&f);
        let bounds = event_count_bounds(n, t);
        for (s, r) in sums.iter().zip(&bounds) {
            prop_assert_eq!(*s as usize, r.len());
        }
        prop_assert_eq!(f.sum() as usize, n);
    }

    /// Equal time on sorted input: per-event assignment rule equals the index ranges.
    #[test]
    fn equal_time_bounds_match_per_event_rule(n in 1usize..300, t in 1usize..20, seed in 0u64..1000) {
        let e = random_events(n, 8, 6, seed);
        let b = equal_time_bounds(&e.t, t).unwrap();
        let t0 = e.t[0];
        let dt = (e.t[n - 1] - t0) / t as i64;
        for (fi, r) in b.iter().enumerate() {
            for i in r.clone() {
                let want = if dt == 0 { t - 1 } else { (((e.t[i] - t0) / dt) as usize).min(t - 1) };
                prop_assert_eq!(fi, want);
            }
        }
        prop_assert_eq!(b.iter().map(|r| r.len()).sum::<usize>(), n);
    }
}
