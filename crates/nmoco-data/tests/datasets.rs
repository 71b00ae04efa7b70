//! Each dataset's layout, split, conventions and layout errors on fake roots in the exact real
//! layouts (written with the nmoco-events writers; the synthetic set with nmoco-synth).

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{S128, cifar_cfg, collect, events, small_frames, write_cifar};
use nmoco_data::{
    CacheMode, CifarSplit, DataConfig, Dataset, DatasetKind, Error, LoaderConfig, Split, Views,
    check_root, index_root,
};
use nmoco_events::{Events, SensorSize};
use nmoco_frames::{AugmentConfig, FrameConfig, Resize};

fn file_number(p: &Path) -> u64 {
    let s = p.file_stem().unwrap().to_str().unwrap();
    s.rsplit('_').next().unwrap().parse().unwrap()
}

#[test]
fn cifar_split_follows_string_order_and_tebn_option() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar(dir.path(), 20);
    let cfg = cifar_cfg(dir.path());
    let idx = index_root(&cfg.dataset, dir.path(), &Default::default()).unwrap();
    assert_eq!((idx.train.len(), idx.test.len()), (180, 20));
    // ceil(20·0.9) = 18 train per class; in string order 0,1,10,...,19,2,...,9 the last two
    // are 8 and 9, so the test files are 8 and 9, not 18 and 19.
    for c in 0..10 {
        let test: Vec<u64> = idx
            .test
            .iter()
            .filter(|s| s.label == c)
            .map(|s| file_number(&s.path))
            .collect();
        assert_eq!(test, vec![8, 9], "class {c}");
        let train: Vec<u64> = idx
            .train
            .iter()
            .filter(|s| s.label == c)
            .map(|s| file_number(&s.path))
            .collect();
        assert_eq!(&train[..4], &[0, 1, 10, 11]);
        assert_eq!(train.len(), 18);
    }
    // Class-major order, labels follow the sorted folder names.
    assert_eq!(idx.train[0].label, 0);
    assert_eq!(idx.train[179].label, 9);
    assert!(idx.test[0].path.to_str().unwrap().contains("airplane"));

    let tebn = index_root(
        &cfg.dataset,
        dir.path(),
        &nmoco_data::IndexOptions {
            cifar_split: CifarSplit::Tebn,
            ..Default::default()
        },
    )
    .unwrap();
    for c in 0..10 {
        let test: Vec<u64> = tebn
            .test
            .iter()
            .filter(|s| s.label == c)
            .map(|s| file_number(&s.path))
            .collect();
        assert_eq!(test, vec![0, 1]);
    }
}

#[test]
fn cifar_full_size_split_has_the_documented_test_numbers() {
    // The same rule on 1000 names per class, without files: test = 91–99 and 909–999.
    let mut names: Vec<String> = (0..1000)
        .map(|i| format!("cifar10_cat_{i}.aedat"))
        .collect();
    names.sort();
    let labels = vec![0usize; 1000];
    let (tr, te) = nmoco_data::split::split_per_class(&labels, 1, 0.9);
    assert_eq!(tr.len(), 900);
    let mut test: Vec<u64> = te
        .iter()
        .map(|&i| {
            names[i]
                .trim_end_matches(".aedat")
                .rsplit('_')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    test.sort();
    let want: Vec<u64> = (91..=99).chain(909..=999).collect();
    assert_eq!(test, want);
}

#[test]
fn cifar_flip_is_on_by_default_and_matches_spikingjelly() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar(dir.path(), 1);
    let mut cfg = cifar_cfg(dir.path());
    cfg.train_ratio = 1.0;
    cfg.frames = FrameConfig {
        t: 1,
        ..FrameConfig::default()
    };
    let ds = Dataset::open_with(&cfg, Split::Train, CacheMode::Off).unwrap();
    let (f, label) = ds.get(0).unwrap();
    assert_eq!(label, 0);
    let raw = nmoco_events::read_file(&ds.samples()[0].path, None)
        .unwrap()
        .events;
    let mut want = nmoco_frames::Frames::zeros(1, 128, 128);
    for i in 0..raw.len() {
        let (x, y) = (127 - raw.y[i] as usize, 127 - raw.x[i] as usize);
        let p = 1 - raw.on[i] as usize; // p_sj = 1 − bit0
        let c = if p == 0 { 0 } else { 1 };
        let k = want.index(0, c, y, x);
        want.data[k] += 1.0;
    }
    assert_eq!(f, want);
    cfg.cifar_flip = false;
    let ds = Dataset::open_with(&cfg, Split::Train, CacheMode::Off).unwrap();
    let (g, _) = ds.get(0).unwrap();
    assert_ne!(f, g);
    assert_eq!(f.sum(), g.sum());
}

fn write_gesture_recording(root: &Path, name: &str, ev: &Events, rows: &[(u32, i64, i64)]) {
    nmoco_events::aedat31::write_file(&root.join(format!("{name}.aedat")), ev, Some(S128)).unwrap();
    let mut csv = String::from("class,startTime_usec,endTime_usec\r\n");
    for (c, s, e) in rows {
        csv.push_str(&format!("{c},{s},{e}\r\n"));
    }
    std::fs::write(root.join(format!("{name}_labels.csv")), csv).unwrap();
}

/// Two train users and one test user; user01 has overlapping segments and a repeated class.
fn write_gesture(root: &Path) -> Events {
    let ev = events(100, 1, 0, 128, 128); // t = 0, 10, ..., 990
    write_gesture_recording(
        root,
        "user01_fluorescent",
        &ev,
        &[(1, 100, 200), (3, 150, 300), (1, 400, 500), (11, 990, 2000)],
    );
    write_gesture_recording(
        root,
        "user02_led",
        &events(50, 2, 1000, 128, 128),
        &[(2, 1000, 1200)],
    );
    write_gesture_recording(
        root,
        "user24_natural",
        &events(60, 3, 5000, 128, 128),
        &[(5, 5000, 5300), (6, 5300, 5600)],
    );
    std::fs::write(
        root.join("trials_to_train.txt"),
        "user01_fluorescent.aedat\nuser02_led.aedat\n",
    )
    .unwrap();
    std::fs::write(root.join("trials_to_test.txt"), "user24_natural.aedat\n\n").unwrap();
    ev
}

#[test]
fn gesture_segments_are_half_open_overlapping_and_labelled_class_minus_one() {
    let dir = tempfile::tempdir().unwrap();
    let ev = write_gesture(dir.path());
    let cfg = DataConfig {
        dataset: DatasetKind::Dvs128Gesture,
        root: dir.path().to_path_buf(),
        frames: small_frames(1, 128),
        ..DataConfig::default()
    };
    let train = Dataset::open(&cfg, Split::Train).unwrap();
    let test = Dataset::open(&cfg, Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (5, 2));
    assert_eq!(train.labels(), &[0, 2, 0, 10, 1]);
    assert_eq!(test.labels(), &[4, 5]);
    assert_eq!(train.num_classes(), 11);
    // With one frame and no resize, the frame sum is the number of events in [start, end).
    let count = |s: i64, e: i64| ev.t.iter().filter(|&&t| t >= s && t < e).count() as f64;
    let sums: Vec<f64> = (0..4).map(|i| train.get(i).unwrap().0.sum()).collect();
    assert_eq!(
        sums,
        vec![
            count(100, 200),
            count(150, 300),
            count(400, 500),
            count(990, 2000)
        ]
    );
    assert_eq!(sums, vec![10.0, 15.0, 10.0, 1.0]);
    // The overlapping part (150 ≤ t < 200) is in both samples: compare pixel by pixel.
    let a = nmoco_frames::integrate(&ev.filter_time(150, 200), S128, &cfg.frames).unwrap();
    let (b0, _) = train.get(0).unwrap();
    let (b1, _) = train.get(1).unwrap();
    for k in 0..a.data.len() {
        assert!(b0.data[k] >= a.data[k] && b1.data[k] >= a.data[k]);
    }
    let rep = check_root(&DatasetKind::Dvs128Gesture, dir.path()).unwrap();
    assert_eq!((rep.train_total(), rep.test_total(), rep.files), (5, 2, 3));
    assert_eq!(rep.train_per_class[0], 2);
    assert!(
        rep.warnings.iter().any(|w| w.contains("1176/288")),
        "{:?}",
        rep.warnings
    );
}

#[test]
fn gesture_layout_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    write_gesture(dir.path());
    std::fs::remove_file(dir.path().join("user02_led_labels.csv")).unwrap();
    let e = check_root(&DatasetKind::Dvs128Gesture, dir.path()).unwrap_err();
    assert!(matches!(e, Error::Layout { .. }));
    assert!(e.to_string().contains("user02_led_labels.csv"), "{e}");
    let e = check_root(&DatasetKind::Dvs128Gesture, &dir.path().join("nope")).unwrap_err();
    assert!(matches!(e, Error::MissingRoot { .. }));
    assert!(e.to_string().contains("nope"), "{e}");
    let e = check_root(&DatasetKind::Cifar10Dvs, dir.path()).unwrap_err();
    assert!(matches!(e, Error::Layout { .. }), "{e}");
}

#[test]
fn ncaltech_classes_background_option_and_raw_coordinates() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Caltech101");
    let classes = ["BACKGROUND_Google", "Faces_easy", "Leopards", "accordion"];
    std::fs::create_dir_all(dir.path().join("Caltech101_annotations").join("Faces_easy")).unwrap();
    for (c, name) in classes.iter().enumerate() {
        std::fs::create_dir_all(root.join(name)).unwrap();
        for i in 1..=(5 + c) {
            let mut ev = events(20, (c * 100 + i) as u64, 0, 200, 150);
            for x in ev.x.iter_mut() {
                *x += 30; // raw ATIS coordinates do not start at 0
            }
            nmoco_events::nbin::write_file(
                &root.join(name).join(format!("image_{i:04}.bin")),
                &ev,
                None,
            )
            .unwrap();
        }
    }
    let mut cfg = DataConfig::for_dataset(DatasetKind::NCaltech101, dir.path());
    cfg.frames.t = 1;
    let tr = Dataset::open_with(&cfg, Split::Train, CacheMode::Off).unwrap();
    let te = Dataset::open_with(&cfg, Split::Test, CacheMode::Off).unwrap();
    assert_eq!(tr.class_names(), &classes.map(String::from));
    // ceil(0.9·n) per class: 5→5, 6→6, 7→7, 8→8 (0.9·8 = 7.2 → 8).
    assert_eq!((tr.len(), te.len()), (26, 0));
    assert_eq!(
        tr.sensor(),
        SensorSize {
            width: 240,
            height: 180
        }
    );
    assert_eq!(tr.frame_shape(), (1, 2, 128, 128));
    assert_eq!(tr.get(0).unwrap().0.sum(), 20.0);
    let mut nobg = cfg.clone();
    nobg.ncaltech_include_background = false;
    let tr2 = Dataset::open_with(&nobg, Split::Train, CacheMode::Off).unwrap();
    assert_eq!(tr2.num_classes(), 3);
    assert_eq!(tr2.labels()[0], 0);
    assert_eq!(tr2.class_names()[0], "Faces_easy");
    // Shift to zero moves the events to the top-left corner.
    let mut raw = cfg.clone();
    raw.frames.resize = Resize::None;
    raw.frames.height = 180;
    raw.frames.width = 240;
    let a = Dataset::open_with(&raw, Split::Train, CacheMode::Off)
        .unwrap()
        .get(0)
        .unwrap()
        .0;
    raw.ncaltech_shift_to_zero = true;
    let b = Dataset::open_with(&raw, Split::Train, CacheMode::Off)
        .unwrap()
        .get(0)
        .unwrap()
        .0;
    let min_x = |f: &nmoco_frames::Frames| {
        (0..f.w)
            .find(|&x| (0..f.h).any(|y| f.get(0, 0, y, x) + f.get(0, 1, y, x) > 0.0))
            .unwrap()
    };
    assert!(min_x(&a) >= 30);
    assert_eq!(min_x(&b), 0);
    assert_eq!(a.sum(), b.sum());
    let rep = check_root(&DatasetKind::NCaltech101, dir.path()).unwrap();
    assert_eq!(rep.files, 26);
    assert!(rep.warnings.iter().any(|w| w.contains("8709")));
}

#[test]
fn nmnist_train_test_folders() {
    let dir = tempfile::tempdir().unwrap();
    for (split, n) in [("Train", 2usize), ("Test", 1)] {
        for d in 0..10 {
            let p = dir.path().join(split).join(d.to_string());
            std::fs::create_dir_all(&p).unwrap();
            for i in 0..n {
                let ev = events(15, (d * 10 + i) as u64, 0, 34, 34);
                nmoco_events::nbin::write_file(
                    &p.join(format!("{:05}.bin", d * 100 + i)),
                    &ev,
                    None,
                )
                .unwrap();
            }
        }
    }
    let cfg = DataConfig {
        frames: FrameConfig {
            t: 2,
            ..small_frames(2, 34)
        },
        ..DataConfig::for_dataset(DatasetKind::NMnist, dir.path())
    };
    let tr = Dataset::open(&cfg, Split::Train).unwrap();
    let te = Dataset::open(&cfg, Split::Test).unwrap();
    assert_eq!((tr.len(), te.len()), (20, 10));
    assert_eq!(tr.labels()[..4], [0, 0, 1, 1]);
    assert_eq!(te.get(9).unwrap().1, 9);
    assert_eq!(tr.get(3).unwrap().0.sum(), 15.0);
    std::fs::remove_dir_all(dir.path().join("Test").join("7")).unwrap();
    let e = check_root(&DatasetKind::NMnist, dir.path()).unwrap_err();
    assert!(
        e.to_string().contains("Test/7") || e.to_string().contains("Test\\7"),
        "{e}"
    );
}

#[test]
fn synthetic_writer_to_loader_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let summary = nmoco_synth::fixture::tiny(dir.path(), 3, 1, 5).unwrap();
    let cfg = DataConfig {
        dataset: DatasetKind::Synthetic,
        root: dir.path().to_path_buf(),
        frames: small_frames(4, 32),
        ..DataConfig::default()
    };
    let tr = Arc::new(Dataset::open(&cfg, Split::Train).unwrap());
    let te = Dataset::open(&cfg, Split::Test).unwrap();
    assert_eq!(
        (tr.len(), te.len()),
        (summary.train_samples, summary.test_samples)
    );
    assert_eq!(tr.num_classes(), 3);
    assert_eq!(
        tr.sensor(),
        SensorSize {
            width: 32,
            height: 32
        }
    );
    let mut labels = tr.labels().to_vec();
    labels.sort();
    assert_eq!(labels, vec![0, 1, 2]);
    // Each sample holds exactly the events of its segment.
    for i in 0..tr.len() {
        let s = &tr.samples()[i];
        let seg = s.segment.unwrap();
        let ev = nmoco_events::read_file(&s.path, None).unwrap().events;
        let n =
            ev.t.iter()
                .filter(|&&t| t >= seg.start && t < seg.end)
                .count();
        assert_eq!(tr.get(i).unwrap().0.sum(), n as f64);
        assert!(n > 0);
    }
    let lc = LoaderConfig {
        batch_size: 2,
        views: Views::TwoViews,
        ..Default::default()
    };
    let batches = collect(&tr, &lc, &AugmentConfig::default());
    assert_eq!(batches.len(), 2);
}
