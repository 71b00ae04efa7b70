//! Post-processing options, batches, caller-owned buffers and the config's serde form.

use nmoco_frames::{
    Error, FrameConfig, Frames, Normalize, Resize, Slicing, integrate, integrate_batch,
    integrate_batch_into, integrate_into,
};

use super::{cfg, ev, random_events, sensor};

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
