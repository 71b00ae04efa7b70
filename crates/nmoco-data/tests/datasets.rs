//! Fake dataset roots in the exact real layouts, written with the nmoco-events writers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use nmoco_data::{
    CacheMode, CifarSplit, DataConfig, Dataset, DatasetKind, Error, Loader, LoaderConfig, Split,
    Views, check_root, index_root,
};
use nmoco_events::{Events, SensorSize};
use nmoco_frames::{AugmentConfig, FrameConfig, Resize};

const S128: SensorSize = SensorSize {
    width: 128,
    height: 128,
};

/// `n` events with increasing time from `t0`, coordinates derived from `tag` so files differ.
fn events(n: usize, tag: u64, t0: i64, w: u16, h: u16) -> Events {
    let mut ev = Events::new();
    let mut z = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..n {
        z ^= z << 13;
        z ^= z >> 7;
        z ^= z << 17;
        ev.t.push(t0 + 10 * i as i64);
        ev.x.push((z % w as u64) as u16);
        ev.y.push(((z >> 20) % h as u64) as u16);
        ev.on.push(z & (1 << 40) != 0);
    }
    ev
}

fn small_frames(t: usize, hw: usize) -> FrameConfig {
    FrameConfig {
        t,
        height: hw,
        width: hw,
        resize: Resize::Events,
        ..FrameConfig::default()
    }
}

fn write_cifar(root: &Path, per_class: usize) {
    for (c, class) in nmoco_data::CIFAR10_CLASSES.iter().enumerate() {
        let d = root.join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..per_class {
            // Event count encodes the file number, so tests can tell files apart.
            let ev = events(10 + i, (c * 1000 + i) as u64, 0, 128, 128);
            nmoco_events::aedat2::write_file(
                &d.join(format!("cifar10_{class}_{i}.aedat")),
                &ev,
                Some(S128),
            )
            .unwrap();
        }
    }
}

fn cifar_cfg(root: &Path) -> DataConfig {
    DataConfig {
        dataset: DatasetKind::Cifar10Dvs,
        root: root.to_path_buf(),
        frames: small_frames(2, 16),
        ..DataConfig::default()
    }
}

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
fn unreadable_file_error_names_it() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar(dir.path(), 2);
    let bad = dir.path().join("dog").join("cifar10_dog_1.aedat");
    std::fs::write(&bad, b"not an aedat file").unwrap();
    let e = Dataset::open(&cifar_cfg(dir.path()), Split::Train).unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e}");
    assert!(e.to_string().contains("cifar10_dog_1.aedat"), "{e}");
    let mut bad_cfg = cifar_cfg(dir.path());
    bad_cfg.frames.t = 0;
    let e = Dataset::open(&bad_cfg, Split::Train).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Config {
                field: "frames",
                ..
            }
        ),
        "{e}"
    );
    let mut bad_ratio = cifar_cfg(dir.path());
    bad_ratio.train_ratio = 1.5;
    let e = Dataset::open(&bad_ratio, Split::Train).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Config {
                field: "train_ratio",
                ..
            }
        ),
        "{e}"
    );
}

fn frm_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "frm"))
        .collect();
    v.sort();
    v
}

#[test]
fn cache_is_reused_rebuilt_on_config_change_and_on_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar(dir.path(), 3);
    let cfg = cifar_cfg(dir.path());
    let ds = Dataset::open(&cfg, Split::Train).unwrap();
    let cdir = ds.cache_dir().unwrap().to_path_buf();
    let files = frm_files(&cdir);
    assert_eq!(files.len(), ds.len());
    assert_eq!(ds.len(), 30);
    let snapshot: Vec<(Vec<u8>, std::time::SystemTime)> = files
        .iter()
        .map(|p| {
            (
                std::fs::read(p).unwrap(),
                std::fs::metadata(p).unwrap().modified().unwrap(),
            )
        })
        .collect();
    // Reopen: same folder, nothing rewritten.
    let again = Dataset::open(&cfg, Split::Train).unwrap();
    assert_eq!(again.cache_dir().unwrap(), cdir);
    for (p, (_, m)) in files.iter().zip(&snapshot) {
        assert_eq!(std::fs::metadata(p).unwrap().modified().unwrap(), *m);
    }
    // Every cached sample equals a fresh computation.
    for i in 0..ds.len() {
        assert_eq!(ds.get(i).unwrap().0, ds.compute(i).unwrap());
    }
    // A different slicing config gets its own folder.
    let mut cfg2 = cfg.clone();
    cfg2.frames.t = 3;
    let ds2 = Dataset::open(&cfg2, Split::Train).unwrap();
    assert_ne!(ds2.cache_dir().unwrap(), cdir);
    assert_eq!(ds2.get(0).unwrap().0.t, 3);
    assert_eq!(frm_files(ds2.cache_dir().unwrap()).len(), 30);
    // So does a different decoding option.
    let mut cfg3 = cfg.clone();
    cfg3.cifar_flip = false;
    let ds3 = Dataset::open(&cfg3, Split::Train).unwrap();
    assert_ne!(ds3.cache_dir().unwrap(), cdir);

    // Corrupt one payload byte (same size): get() detects it, returns correct frames and
    // rewrites the entry.
    let victim = ds.cache_dir().unwrap().join(format!(
        "{}.frm",
        nmoco_data::cache::entry_key(&ds.samples()[4])
    ));
    let pos = files.iter().position(|p| *p == victim).unwrap();
    let mut bytes = snapshot[pos].0.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&victim, &bytes).unwrap();
    assert!(matches!(
        nmoco_data::cache::decode(&bytes, (2, 16, 16), &victim),
        Err(Error::CorruptCache { .. })
    ));
    let (f, _) = ds.get(4).unwrap();
    assert_eq!(f, ds.compute(4).unwrap());
    assert_eq!(std::fs::read(&victim).unwrap(), snapshot[pos].0);
    // Truncate one entry (a half-written file): open() rebuilds it.
    std::fs::write(&victim, &snapshot[pos].0[..100]).unwrap();
    let _ = Dataset::open(&cfg, Split::Train).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), snapshot[pos].0);
    // A garbage manifest clears and rewrites the folder.
    std::fs::write(cdir.join("manifest.json"), b"{").unwrap();
    let _ = Dataset::open(&cfg, Split::Train).unwrap();
    assert_eq!(frm_files(&cdir).len(), 30);
    assert!(
        std::fs::read_to_string(cdir.join("manifest.json"))
            .unwrap()
            .contains("config_hash")
    );
}

/// A batch as plain vectors: x, x2 (empty without a second view), labels, indices.
type Flat = (Vec<f32>, Vec<f32>, Vec<u32>, Vec<usize>);

fn collect(ds: &Arc<Dataset>, lc: &LoaderConfig, aug: &AugmentConfig) -> Vec<Flat> {
    let loader = Loader::new(ds.clone(), lc, aug, &Device::Cpu);
    let nb = loader.num_batches();
    let out: Vec<_> = loader
        .map(|b| {
            let b = b.unwrap();
            let x = b.x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let x2 =
                b.x2.map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                    .unwrap_or_default();
            (x, x2, b.labels.to_vec1::<u32>().unwrap(), b.indices)
        })
        .collect();
    assert_eq!(out.len(), nb);
    out
}

#[test]
fn loader_batches_are_deterministic_and_shaped_t_b_2_h_w() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar(dir.path(), 2);
    let mut cfg = cifar_cfg(dir.path());
    cfg.train_ratio = 0.5;
    let ds = Arc::new(Dataset::open(&cfg, Split::Train).unwrap());
    assert_eq!(ds.len(), 10);
    let aug = AugmentConfig::default();
    let lc = LoaderConfig {
        batch_size: 4,
        seed: 11,
        epoch: 2,
        views: Views::TwoViews,
        ..LoaderConfig::default()
    };
    let a = collect(&ds, &lc, &aug);
    assert_eq!(a.len(), 3);
    // Same (seed, epoch) with other prefetch and worker counts: identical batches.
    let mut cfg_w = cfg.clone();
    cfg_w.workers = 1;
    let ds_w = Arc::new(Dataset::open(&cfg_w, Split::Train).unwrap());
    let b = collect(
        &ds_w,
        &LoaderConfig {
            prefetch: 5,
            ..lc.clone()
        },
        &aug,
    );
    assert_eq!(a, b);
    // Views differ from each other, and another epoch gives another order and other views.
    assert!(a.iter().any(|(x, x2, _, _)| x != x2));
    let c = collect(
        &ds,
        &LoaderConfig {
            epoch: 3,
            ..lc.clone()
        },
        &aug,
    );
    assert_ne!(
        a.iter().map(|v| v.3.clone()).collect::<Vec<_>>(),
        c.iter().map(|v| v.3.clone()).collect::<Vec<_>>()
    );
    // Labels match the dataset, indices cover the split once.
    let mut seen: Vec<usize> = a.iter().flat_map(|v| v.3.clone()).collect();
    for (_, _, labels, idx) in &a {
        for (l, i) in labels.iter().zip(idx) {
            assert_eq!(*l as usize, ds.labels()[*i]);
        }
    }
    seen.sort();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    // Plain view: x[t, b] is exactly sample frame t.
    let plain = LoaderConfig {
        views: Views::Plain,
        shuffle: false,
        batch_size: 3,
        drop_last: true,
        ..lc.clone()
    };
    let loader = Loader::new(ds.clone(), &plain, &aug, &Device::Cpu);
    assert_eq!(loader.num_batches(), 3);
    let batches: Vec<_> = loader.map(|b| b.unwrap()).collect();
    assert_eq!(batches[0].x.dims(), &[2, 3, 2, 16, 16]);
    assert!(batches[0].x2.is_none());
    let (f1, _) = ds.get(1).unwrap();
    let x = batches[0].x.to_vec3::<f32>().ok();
    assert!(x.is_none()); // 5-D tensor
    let t1b1 = batches[0]
        .x
        .get(1)
        .unwrap()
        .get(1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(t1b1, f1.frame(1));
    // Augmented single view equals view 0 of the two-view batches for the same sample.
    let one = collect(
        &ds,
        &LoaderConfig {
            views: Views::Augmented,
            ..lc.clone()
        },
        &aug,
    );
    assert_eq!(
        one.iter().map(|v| v.0.clone()).collect::<Vec<_>>(),
        a.iter().map(|v| v.0.clone()).collect::<Vec<_>>()
    );
    // A subset is a dataset of the chosen samples, in the given order.
    let sub = ds.subset(&[3, 1]).unwrap();
    assert_eq!(sub.len(), 2);
    assert_eq!(sub.labels(), &[ds.labels()[3], ds.labels()[1]]);
    assert_eq!(sub.get(0).unwrap(), ds.get(3).unwrap());
    assert!(matches!(
        ds.subset(&[10]),
        Err(Error::IndexOutOfRange { index: 10, len: 10 })
    ));
    // Dropping a loader early does not hang.
    let mut early = Loader::new(ds.clone(), &lc, &aug, &Device::Cpu);
    let _ = early.next();
    drop(early);
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
