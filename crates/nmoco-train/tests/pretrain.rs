//! End-to-end runs of the trainer on a tiny synthetic dataset and a tiny SEW-ResNet: run
//! layout, exact resume after an interruption, config checks before any work.

use std::ops::ControlFlow;
use std::path::Path;

use candle_core::Device;
use nmoco_models::{BackboneConfig, Connect, Downsample, SewConfig, StageConfig};
use nmoco_train::metrics::{self, Record};
use nmoco_train::{Error, Observer, PretrainConfig, Silent, StepReport, pretrain};

fn make_data(dir: &Path) {
    nmoco_synth::fixture::tiny(dir, 2, 4, 3).unwrap();
}

fn tiny_backbone() -> BackboneConfig {
    BackboneConfig::SewResnet(SewConfig {
        in_channels: 2,
        stem_channels: 4,
        stem_kernel: 3,
        stem_stride: 1,
        stem_maxpool: false,
        stages: vec![StageConfig {
            channels: 8,
            blocks: 1,
            stride: 2,
        }],
        downsample: Downsample::Transition,
        connect: Connect::Add,
        init: Default::default(),
        neuron: Default::default(),
    })
}

fn config(root: &Path, data: &Path, name: &str, extra: &[&str]) -> PretrainConfig {
    let mut sets: Vec<String> = [
        format!("run.name={name:?}"),
        format!("run.runs_dir={:?}", root.to_str().unwrap()),
        format!("data.root={:?}", data.to_str().unwrap()),
        "run.epochs=2".into(),
        "data.frames.t=2".into(),
        "data.frames.height=16".into(),
        "data.frames.width=16".into(),
        "optim.batch_size=4".into(),
        "optim.warmup_epochs=0.5".into(),
        "moco.k=8".into(),
        // 8 training samples: a queue of 8 is long on purpose (tiny test data).
        "moco.allow_long_queue=true".into(),
        "moco.bn_sub_batches=2".into(),
        "model.head_hidden=16".into(),
        "model.head_out=8".into(),
        "monitor.knn_k=3".into(),
        "checkpoint.keep_last=1".into(),
    ]
    .into();
    sets.extend(extra.iter().map(|s| s.to_string()));
    let mut cfg = PretrainConfig::default_with(&sets, None).unwrap();
    cfg.model.backbone = Some(tiny_backbone());
    cfg
}

/// Stops the run after `after` steps, as a kill would.
struct KillAfter(usize);
impl Observer for KillAfter {
    fn on_step(&mut self, r: &StepReport) -> ControlFlow<()> {
        if r.step >= self.0 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

fn load(p: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(p, &Device::Cpu).unwrap()
}

/// Resume must be exact: the trainer adds no nondeterminism, and nmoco-conv's weight-gradient
/// reduction sums in fixed chunks (`cpu_conv/backward.rs`), independent of the thread count. The
/// test still runs on one rayon thread so that it checks the trainer, not the kernels' ordering.
#[test]
fn resume_after_an_interruption_reproduces_the_uninterrupted_run() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(resume_check);
}

fn resume_check() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_data(&data);
    let runs = tmp.path().join("runs");
    let dev = Device::Cpu;

    // Uninterrupted: 2 epochs of 2 steps.
    let a = pretrain(&config(&runs, &data, "a", &[]), &dev, false, &mut Silent).unwrap();
    assert_eq!((a.epochs_done, a.steps_done, a.losses.len()), (2, 4, 4));
    assert!(a.losses.iter().all(|l| l.is_finite() && *l > 0.0));
    assert!(a.knn_initial.is_some() && a.knn_final.is_some());

    // Interrupted in the middle of epoch 2 (after step 3), then resumed.
    let cfg_b = config(&runs, &data, "b", &[]);
    let b1 = pretrain(&cfg_b, &dev, false, &mut KillAfter(3)).unwrap();
    assert_eq!(b1.losses, a.losses[..3].to_vec());
    assert!(b1.final_encoder.is_none());
    // A second fresh start over existing checkpoints is refused.
    assert!(matches!(
        pretrain(&cfg_b, &dev, false, &mut Silent),
        Err(Error::Checkpoint { .. })
    ));
    let b2 = pretrain(&cfg_b, &dev, true, &mut Silent).unwrap();
    assert_eq!(
        b2.losses,
        a.losses[2..].to_vec(),
        "resumed losses must equal the uninterrupted ones exactly"
    );
    assert_eq!(b2.steps_done, 4);

    // Identical final weights.
    let (fa, fb) = (
        load(a.final_encoder.as_ref().unwrap()),
        load(b2.final_encoder.as_ref().unwrap()),
    );
    assert_eq!(fa.len(), fb.len());
    for (n, t) in &fa {
        let u = &fb[n];
        assert_eq!(
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            u.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "{n}"
        );
    }
    assert!(
        fa.keys()
            .all(|n| n.starts_with("backbone.") || n.starts_with("head."))
    );
    assert!(fa.keys().any(|n| n.ends_with("running_mean")));

    // The metrics of the killed partial epoch were not duplicated.
    let steps: Vec<usize> = metrics::read(&b2.run_dir.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .filter_map(|r| match r {
            Record::Step { step, .. } => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4]);

    // Resuming under a changed config is refused.
    let changed = config(&runs, &data, "b", &["optim.lr=0.5"]);
    assert!(matches!(
        pretrain(&changed, &dev, true, &mut Silent),
        Err(Error::ConfigMismatch { .. })
    ));
}

#[test]
fn run_directory_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_data(&data);
    let runs = tmp.path().join("runs");
    let cfg = config(
        &runs,
        &data,
        "layout",
        &[
            "run.epochs=1",
            "moco.loss=infonce",
            "optim.kind=adamw",
            "optim.lr=0.001",
        ],
    );
    let s = pretrain(&cfg, &Device::Cpu, false, &mut Silent).unwrap();
    let d = runs.join("layout");
    for f in [
        "config.toml",
        "metrics.jsonl",
        "curves.png",
        "checkpoints/latest",
        "checkpoints/best",
        "checkpoints/epoch-0001/master.safetensors",
        "checkpoints/epoch-0001/key.safetensors",
        "checkpoints/epoch-0001/optimizer.safetensors",
        "checkpoints/epoch-0001/queue.safetensors",
        "checkpoints/epoch-0001/state.json",
        "final/encoder.safetensors",
        "final/config.toml",
    ] {
        assert!(d.join(f).is_file(), "{f} missing");
    }
    // The written config reads back into the same config (same hash).
    let text = std::fs::read_to_string(d.join("final/config.toml")).unwrap();
    let back = PretrainConfig::from_toml(&text, None, &[], None).unwrap();
    assert_eq!(back.hash().unwrap(), cfg.hash().unwrap());
    assert_eq!(back.model.backbone, Some(tiny_backbone()));
    // The master checkpoint has exactly the final encoder's names.
    let m = load(&d.join("checkpoints/epoch-0001/master.safetensors"));
    let f = load(&d.join("final/encoder.safetensors"));
    let mut mk: Vec<_> = m.keys().collect();
    let mut fk: Vec<_> = f.keys().collect();
    mk.sort();
    fk.sort();
    assert_eq!(mk, fk);
    assert_eq!(s.chance, 0.5);
}

#[test]
fn a_missing_dataset_root_fails_before_any_output() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let cfg = config(&runs, &tmp.path().join("nope"), "x", &[]);
    let e = pretrain(&cfg, &Device::Cpu, false, &mut Silent).unwrap_err();
    assert!(matches!(e, Error::Data(_)), "{e}");
    assert!(!runs.exists());
}

#[test]
fn the_shipped_synthetic_config_is_the_built_in_default() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/synthetic.toml");
    let file = PretrainConfig::load(&p, &[], None).unwrap();
    let def = PretrainConfig::default_with(&[], None).unwrap();
    assert_eq!(file.hash().unwrap(), def.hash().unwrap());
    assert_eq!(file.run.name, def.run.name);
    // Every shipped config parses and validates (with a root from the environment).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let finetune = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("finetune_"));
        if p.extension().is_some_and(|x| x == "toml") && !finetune {
            PretrainConfig::load(&p, &[], Some("/data"))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 7);
}

/// The test split is read only by the final evaluation: with every test recording destroyed,
/// all epochs, checkpoints (the `best` one included, chosen on the validation split of train)
/// and the final encoder are written, and only the final evaluation fails, naming a test file.
#[test]
fn the_test_split_is_never_read_before_the_final_evaluation() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_data(&data);
    let tests = std::fs::read_to_string(data.join("trials_to_test.txt")).unwrap();
    let mut broken = Vec::new();
    for name in tests.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let p = data.join(name);
        std::fs::write(&p, b"not an event file").unwrap();
        broken.push(name.to_string());
    }
    assert!(!broken.is_empty());
    let runs = tmp.path().join("runs");
    let cfg = config(&runs, &data, "notest", &[]);
    struct Epochs(Vec<(usize, Option<f64>)>);
    impl Observer for Epochs {
        fn on_epoch(&mut self, r: &nmoco_train::EpochStats) -> ControlFlow<()> {
            self.0.push((r.epoch, r.knn_top1));
            ControlFlow::Continue(())
        }
    }
    let mut seen = Epochs(vec![]);
    let e = pretrain(&cfg, &Device::Cpu, false, &mut seen).unwrap_err();
    // Epoch 0 (before training) and both epochs ran their validation kNN.
    assert_eq!(
        seen.0
            .iter()
            .map(|(e, k)| (*e, k.is_some()))
            .collect::<Vec<_>>(),
        vec![(0, true), (1, true), (2, true)]
    );
    let d = runs.join("notest");
    for f in [
        "checkpoints/best",
        "checkpoints/epoch-0002/state.json",
        "final/encoder.safetensors",
        "final/files.json",
    ] {
        assert!(d.join(f).is_file(), "{f} missing");
    }
    let chain = format!("{:?}", anyhow_chain(&e));
    assert!(
        broken.iter().any(|b| chain.contains(b.as_str())),
        "the error should name a test recording: {chain}"
    );
}

fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// A truncated `master.safetensors` in the latest checkpoint: `--resume` fails before training
/// with an error naming the file and the earlier intact checkpoint, and `--resume-from` that
/// checkpoint continues the run.
#[test]
fn a_damaged_checkpoint_is_named_and_resume_from_an_earlier_one_works() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_data(&data);
    let runs = tmp.path().join("runs");
    let cfg = config(
        &runs,
        &data,
        "damaged",
        &["checkpoint.keep_last=3", "run.epochs=3"],
    );
    let stop = |n| KillAfter(n);
    // Two epochs of two steps each (checkpoints written), then stop in the third.
    pretrain(&cfg, &Device::Cpu, false, &mut stop(5)).unwrap();
    let ck = runs.join("damaged/checkpoints");
    let m = ck.join("epoch-0002/master.safetensors");
    let bytes = std::fs::read(&m).unwrap();
    std::fs::write(&m, &bytes[..100]).unwrap();
    let e = pretrain(&cfg, &Device::Cpu, true, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("epoch-0002/master.safetensors")
            && e.contains("size 100 bytes")
            && e.contains("--resume-from epoch-0001"),
        "{e}"
    );
    let s = nmoco_train::pretrain_from(
        &cfg,
        &Device::Cpu,
        &nmoco_train::Resume::From("epoch-0001".into()),
        &mut Silent,
    )
    .unwrap();
    assert_eq!(s.epochs_done, 3);
    // The damaged checkpoint was rewritten by the continued run.
    assert!(nmoco_train::checkpoint::verify(&ck.join("epoch-0002")).is_ok());
}
