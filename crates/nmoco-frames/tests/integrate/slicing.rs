//! Event-count, equal-time and time-window slicing; bad inputs.

use nmoco_events::Events;
use nmoco_frames::{
    Error, FrameConfig, Frames, Slicing, equal_time_bounds, event_count_bounds, integrate,
    time_window_bounds,
};
use proptest::prelude::*;

use super::{cfg, ev, frame_sums, frames_with, random_events, sensor};

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
