//! The evaluation protocols end to end on a tiny synthetic dataset and a tiny SEW-ResNet:
//! checkpoint discovery and its errors, feature caching, probe and kNN, report format,
//! fine-tuning with a label fraction.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use nmoco_data::{DataConfig, Dataset, DatasetKind, Split};
use nmoco_eval::pretrained::{check_compatible, load_backbone, locate};
use nmoco_eval::probe::{
    ProbeConfig, augmented_features, feature_key, features_cached, labelled_subset,
};
use nmoco_eval::{Error, FinetuneConfig, Report, SplitSizes, finetune, probe};
use nmoco_frames::Resize;
use nmoco_models::{
    Backbone, BackboneConfig, Connect, Downsample, ProjectionHead, SewConfig, StageConfig,
};

fn make_data(dir: &Path) {
    nmoco_synth::fixture::tiny(dir, 3, 3, 5).unwrap();
}

fn tiny_backbone(width: usize) -> BackboneConfig {
    BackboneConfig::SewResnet(SewConfig {
        in_channels: 2,
        stem_channels: 4,
        stem_kernel: 3,
        stem_stride: 1,
        stem_maxpool: false,
        stages: vec![StageConfig {
            channels: width,
            blocks: 1,
            stride: 2,
        }],
        downsample: Downsample::Transition,
        connect: Connect::Add,
        init: Default::default(),
        neuron: Default::default(),
    })
}

fn data_config(root: &Path, size: usize) -> DataConfig {
    let mut cfg = DataConfig::for_dataset(DatasetKind::Synthetic, root);
    cfg.frames.t = 2;
    cfg.frames.height = size;
    cfg.frames.width = size;
    cfg.frames.resize = Resize::Events;
    cfg.cache_dir = Some(root.join("cache"));
    cfg
}

/// A run folder as `nmoco pretrain` leaves it: `config.toml` and `final/encoder.safetensors`.
fn fake_run(dir: &Path, backbone: &BackboneConfig, data: &DataConfig) -> PathBuf {
    let run = dir.join("run");
    std::fs::create_dir_all(run.join("final")).unwrap();
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let bb = Backbone::new(backbone, vb.pp("backbone")).unwrap();
    ProjectionHead::new(bb.feature_dim(), 8, 4, vb.pp("head")).unwrap();
    nmoco_models::seeded_init(&map, 11).unwrap();
    map.save(run.join("final/encoder.safetensors")).unwrap();
    let mut doc = toml::Table::new();
    let mut model = toml::Table::new();
    model.insert("backbone".into(), toml::Value::try_from(backbone).unwrap());
    doc.insert("model".into(), toml::Value::Table(model));
    doc.insert("data".into(), toml::Value::try_from(data).unwrap());
    std::fs::write(run.join("config.toml"), toml::to_string(&doc).unwrap()).unwrap();
    run
}

#[test]
fn probe_knn_report_and_checkpoint_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("synth");
    make_data(&root);
    let data = data_config(&root, 16);
    let bb = tiny_backbone(8);
    let run = fake_run(tmp.path(), &bb, &data);

    // Discovery from the run folder and from the file itself.
    let ck = locate(&run).unwrap();
    assert!(ck.weights.ends_with("final/encoder.safetensors"));
    assert_eq!(ck.backbone, bb);
    assert_eq!(locate(&ck.weights).unwrap().config_path, ck.config_path);
    check_compatible(&ck, &data).unwrap();

    let dev = Device::Cpu;
    let (backbone, _vars) = load_backbone(&ck.backbone, Some(&ck.weights), 0, &dev).unwrap();
    let train = Arc::new(Dataset::open(&data, Split::Train).unwrap());
    let test = Arc::new(Dataset::open(&data, Split::Test).unwrap());
    assert_eq!((train.len(), test.len()), (9, 9));
    let cache = tmp.path().join("feats");
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let count = |_: usize, _: usize| {
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    let key = feature_key(Some(&ck.weights), 0, 3, &bb, &data, Split::Train).unwrap();
    let f1 = features_cached(
        &backbone,
        train.clone(),
        &key,
        Some(&cache),
        4,
        &dev,
        &count,
    )
    .unwrap();
    let extracted = calls.load(std::sync::atomic::Ordering::Relaxed);
    assert!(extracted > 0);
    // The second call reads the cache: identical features, no forward pass.
    let f2 = features_cached(
        &backbone,
        train.clone(),
        &key,
        Some(&cache),
        4,
        &dev,
        &count,
    )
    .unwrap();
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), extracted);
    assert_eq!(f1.features, f2.features);
    assert_eq!(f1.features.d, 8);
    assert_eq!(f1.labels, train.labels());
    // Another split gives another key.
    assert_ne!(
        key,
        feature_key(Some(&ck.weights), 0, 3, &bb, &data, Split::Test).unwrap()
    );

    let kt = feature_key(Some(&ck.weights), 0, 3, &bb, &data, Split::Test).unwrap();
    let ft = features_cached(&backbone, test.clone(), &kt, None, 4, &dev, &count).unwrap();
    let cfg = ProbeConfig {
        augmented_views: 2,
        ..Default::default()
    };
    // Augmented views: seeded (the same twice), one row per sample, not the plain features.
    let views = augmented_features(&backbone, train.clone(), &cfg, &dev, &count).unwrap();
    assert_eq!(views.len(), 2);
    assert!(views.iter().all(|v| (v.n, v.d) == (9, 8)));
    assert_eq!(
        views,
        augmented_features(&backbone, train.clone(), &cfg, &dev, &count).unwrap()
    );
    let out = probe(&f1, &views, &ft, 3, &cfg).unwrap();
    assert_eq!(out.linear.samples, 9);
    // Views that are not one per labelled sample are refused.
    assert!(probe(&f1, &views[..1], &ft, 3, &cfg).is_ok());
    let wrong = vec![views[0].select(&[0, 1])];
    assert!(probe(&f1, &wrong, &ft, 3, &cfg).is_err());
    assert!(out.linear.top1 >= 0.0 && out.linear.top1 <= 1.0);
    assert_eq!(out.knn.confusion.iter().flatten().sum::<u64>(), 9);

    let report = Report::new(
        "linear_probe",
        "pretrained",
        Some(&ck.weights),
        "sew".into(),
        "synthetic".into(),
        SplitSizes { train: 9, test: 9 },
        &out.linear,
        train.class_names().to_vec(),
        0,
        serde_json::to_value(&cfg).unwrap(),
    );
    let rdir = tmp.path().join("report");
    report.write(&rdir).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rdir.join("report.json")).unwrap()).unwrap();
    for key in [
        "protocol",
        "checkpoint",
        "dataset",
        "split_sizes",
        "top1",
        "top5",
        "per_class",
        "seed",
        "config",
    ] {
        assert!(json.get(key).is_some(), "report.json lacks {key}");
    }
    assert_eq!(json["per_class"].as_array().unwrap().len(), 3);
    assert!(rdir.join("confusion.png").is_file());

    // Errors: a missing checkpoint, another backbone, another input size.
    assert!(matches!(
        locate(&tmp.path().join("nope")),
        Err(Error::Checkpoint { .. })
    ));
    let Err(err) = load_backbone(&tiny_backbone(16), Some(&ck.weights), 0, &dev) else {
        panic!("a 16-channel backbone must not load an 8-channel checkpoint");
    };
    let msg = err.to_string();
    assert!(matches!(err, Error::Incompatible { .. }), "{msg}");
    assert!(msg.contains("shape"), "{msg}");
    let err = check_compatible(&ck, &data_config(&root, 32)).unwrap_err();
    assert!(err.to_string().contains("16x16"), "{err}");
    let empty = tmp.path().join("empty-run");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(matches!(locate(&empty), Err(Error::Checkpoint { .. })));
}

#[test]
fn finetune_runs_and_keeps_the_label_fraction() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("synth");
    make_data(&root);
    let data = data_config(&root, 16);
    let bb = tiny_backbone(8);
    let run = fake_run(tmp.path(), &bb, &data);
    let ck = locate(&run).unwrap();
    let train = Arc::new(Dataset::open(&data, Split::Train).unwrap());
    let test = Arc::new(Dataset::open(&data, Split::Test).unwrap());
    let cfg = FinetuneConfig {
        epochs: 1,
        batch_size: 4,
        label_fraction: 0.34,
        ..Default::default()
    };
    let dev = Device::Cpu;
    let out = finetune(
        &bb,
        Some(&ck.weights),
        train.clone(),
        test.clone(),
        &cfg,
        &dev,
        &|_| {},
    )
    .unwrap();
    // One sample of each of the 3 classes.
    assert_eq!(out.train_used, 3);
    assert_eq!(out.epoch_loss.len(), 1);
    assert!(out.epoch_loss[0].is_finite());
    assert_eq!(out.test.samples, 9);
    // Bad settings are rejected before any work.
    let bad = FinetuneConfig {
        label_fraction: 0.0,
        ..cfg
    };
    assert!(matches!(
        finetune(&bb, None, train, test, &bad, &dev, &|_| {}),
        Err(Error::Config {
            key: "finetune.label_fraction",
            ..
        })
    ));
}

#[test]
fn bn_calibration_gives_the_random_init_baseline_real_features() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("synth");
    make_data(&root);
    let data = data_config(&root, 16);
    let dev = Device::Cpu;
    let (backbone, _vars) = load_backbone(&tiny_backbone(8), None, 3, &dev).unwrap();
    let train = Arc::new(Dataset::open(&data, Split::Train).unwrap());
    let none = |_: usize, _: usize| {};
    let before =
        nmoco_eval::probe::extract_features(&backbone, train.clone(), 4, &dev, &none).unwrap();
    let after_calibration = {
        nmoco_eval::probe::calibrate_bn(&backbone, train.clone(), 4, 20, &dev).unwrap();
        nmoco_eval::probe::extract_features(&backbone, train.clone(), 4, &dev, &none).unwrap()
    };
    let energy = |f: &nmoco_eval::Features| f.data.iter().map(|v| v.abs()).sum::<f32>();
    // Calibration changes the features (running statistics fitted to the data) and leaves
    // them non-degenerate.
    assert_ne!(before.features, after_calibration.features);
    assert!(energy(&after_calibration.features) > 0.0);
    // The probe's augmented views of these real features: seeded (the same twice), different
    // from the plain features and from each other, and another seed draws other views.
    let cfg = ProbeConfig {
        augmented_views: 2,
        ..Default::default()
    };
    let views = augmented_features(&backbone, train.clone(), &cfg, &dev, &none).unwrap();
    assert_eq!(
        views,
        augmented_features(&backbone, train.clone(), &cfg, &dev, &none).unwrap()
    );
    assert_ne!(views[0], views[1]);
    assert_ne!(views[0], after_calibration.features);
    let other = ProbeConfig { seed: 1, ..cfg };
    assert_ne!(
        views,
        augmented_features(&backbone, train, &other, &dev, &none).unwrap()
    );
}

fn digest(p: &Path) -> serde_json::Value {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(p).unwrap();
    let hex: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    serde_json::json!({ "size": bytes.len(), "sha256": hex })
}

#[test]
fn a_damaged_final_encoder_is_named_with_an_intact_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("synth");
    let data = data_config(&root, 16);
    let bb = tiny_backbone(8);
    let run = fake_run(tmp.path(), &bb, &data);
    let enc = run.join("final/encoder.safetensors");
    std::fs::write(
        run.join("final/files.json"),
        serde_json::json!({ "files": { "encoder.safetensors": digest(&enc) } }).to_string(),
    )
    .unwrap();
    // An intact checkpoint with its state.json digests.
    let ck = run.join("checkpoints/epoch-0002");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::copy(&enc, ck.join("master.safetensors")).unwrap();
    std::fs::write(
        ck.join("state.json"),
        serde_json::json!({ "epoch": 2, "files": { "master.safetensors": digest(&ck.join("master.safetensors")) } })
            .to_string(),
    )
    .unwrap();
    locate(&run).unwrap();
    // Truncate the final encoder.
    let bytes = std::fs::read(&enc).unwrap();
    std::fs::write(&enc, &bytes[..bytes.len() - 10]).unwrap();
    let e = locate(&run).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::Damaged { .. }), "{text}");
    assert!(
        text.contains("final/encoder.safetensors")
            && text.contains(&format!("size {} bytes", bytes.len() - 10))
            && text.contains("epoch-0002/master.safetensors"),
        "{text}"
    );
    // Same size, one byte changed: the SHA-256 is named.
    let mut b2 = bytes.clone();
    b2[bytes.len() - 1] ^= 1;
    std::fs::write(&enc, &b2).unwrap();
    let text = locate(&run).unwrap_err().to_string();
    assert!(text.contains("SHA-256"), "{text}");
    // The checkpoint itself is accepted.
    assert!(locate(&ck).is_ok());
}

#[test]
fn finetune_with_the_recipe_reports_last_selected_and_max() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("synth");
    make_data(&root);
    let data = data_config(&root, 16);
    let bb = tiny_backbone(8);
    let run = fake_run(tmp.path(), &bb, &data);
    let ck = locate(&run).unwrap();
    let train = Arc::new(Dataset::open(&data, Split::Train).unwrap());
    let test = Arc::new(Dataset::open(&data, Split::Test).unwrap());
    let cfg = FinetuneConfig {
        epochs: 2,
        cooldown_epochs: 1,
        batch_size: 4,
        warmup_epochs: 1.0,
        warmup_lr: 1e-5,
        min_lr: 1e-5,
        label_smoothing: 0.1,
        mixup_alpha: 0.5,
        mixup_prob: 0.5,
        augment_policy: nmoco_eval::finetune::AugmentPolicy::FlipTrivialAugment,
        val_fraction: 0.34,
        ..FinetuneConfig::spikformer()
    };
    let out = finetune(
        &bb,
        Some(&ck.weights),
        train,
        test,
        &cfg,
        &Device::Cpu,
        &|_| {},
    )
    .unwrap();
    // 9 labelled samples, one per class held out for validation.
    assert_eq!((out.train_used, out.val_used), (9, 3));
    assert_eq!(out.epoch_loss.len(), 3);
    assert_eq!(out.test_top1_per_epoch.len(), 3);
    assert_eq!(out.val_top1_per_epoch.len(), 3);
    assert_eq!(out.test.top1, out.test_top1_per_epoch[2]);
    let max = out.test_top1_per_epoch.iter().cloned().fold(0.0, f64::max);
    assert_eq!(out.test_max_top1, max);
    assert_eq!(out.test_top1_per_epoch[out.test_max_epoch - 1], max);
    // The selected epoch is the best on validation (the first of ties), whatever test says.
    let vbest = out.val_top1_per_epoch.iter().cloned().fold(-1.0, f64::max);
    let first = out
        .val_top1_per_epoch
        .iter()
        .position(|v| *v == vbest)
        .unwrap();
    assert_eq!(out.selected_epoch, first + 1);
    assert_eq!(out.test_selected.top1, out.test_top1_per_epoch[first]);
}

#[test]
fn the_probe_fits_on_a_stratified_label_fraction() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("synth");
    make_data(&root);
    let data = data_config(&root, 16);
    let dev = Device::Cpu;
    let (backbone, _vars) = load_backbone(&tiny_backbone(8), None, 3, &dev).unwrap();
    let none = |_: usize, _: usize| {};
    let tr = nmoco_eval::probe::extract_features(
        &backbone,
        Arc::new(Dataset::open(&data, Split::Train).unwrap()),
        4,
        &dev,
        &none,
    )
    .unwrap();
    let te = nmoco_eval::probe::extract_features(
        &backbone,
        Arc::new(Dataset::open(&data, Split::Test).unwrap()),
        4,
        &dev,
        &none,
    )
    .unwrap();
    let cfg = ProbeConfig {
        label_fraction: 0.34,
        ..Default::default()
    };
    let out = probe(&tr, &[], &te, 3, &cfg).unwrap();
    assert_eq!((out.train_size, out.test_size), (3, 9));
    // The views of the labelled samples only (one per class here).
    let keep = labelled_subset(&tr.labels, &cfg).unwrap();
    assert_eq!(keep.len(), 3);
    let train_ds = Dataset::open(&data, Split::Train).unwrap();
    let labelled = Arc::new(train_ds.subset(&keep).unwrap());
    let views = augmented_features(&backbone, labelled, &cfg, &dev, &none).unwrap();
    assert_eq!((views.len(), views[0].n), (cfg.augmented_views, 3));
    let out = probe(&tr, &views, &te, 3, &cfg).unwrap();
    assert_eq!((out.train_size, out.test_size), (3, 9));
    let bad = ProbeConfig {
        label_fraction: 0.0,
        ..Default::default()
    };
    assert!(probe(&tr, &[], &te, 3, &bad).is_err());
    assert!(labelled_subset(&tr.labels, &bad).is_err());
}
