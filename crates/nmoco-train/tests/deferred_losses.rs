//! The trainer's deferred loss read-back (what it does on accelerators: losses stay on the
//! device until a log step) gives the same losses, metrics records and observer reports as
//! reading every loss before its update. Forced on the CPU with `set_defer_losses`.

use std::ops::ControlFlow;
use std::path::Path;

use candle_core::Device;
use nmoco_models::{BackboneConfig, Connect, Downsample, SewConfig, StageConfig};
use nmoco_train::metrics::{self, Record};
use nmoco_train::trainer::set_defer_losses;
use nmoco_train::{Observer, PretrainConfig, StepReport, pretrain};

fn make_data(dir: &Path) {
    nmoco_synth::fixture::tiny(dir, 2, 4, 3).unwrap();
}

fn config(root: &Path, data: &Path, name: &str) -> PretrainConfig {
    let sets: Vec<String> = vec![
        format!("run.name={name:?}"),
        format!("run.runs_dir={:?}", root.to_str().unwrap()),
        format!("data.root={:?}", data.to_str().unwrap()),
        "run.epochs=2".into(),
        "run.log_every=3".into(),
        "data.frames.t=2".into(),
        "data.frames.height=16".into(),
        "data.frames.width=16".into(),
        "optim.batch_size=2".into(),
        "moco.shuffle_bn=\"off\"".into(),
        "optim.warmup_epochs=0.5".into(),
        "moco.k=4".into(),
        "model.head_hidden=16".into(),
        "model.head_out=8".into(),
        "monitor.knn_k=3".into(),
        "checkpoint.keep_last=1".into(),
    ];
    let mut cfg = PretrainConfig::default_with(&sets, None).unwrap();
    cfg.model.backbone = Some(BackboneConfig::SewResnet(SewConfig {
        in_channels: 2,
        stem_channels: 4,
        stem_kernel: 3,
        stem_stride: 1,
        stem_maxpool: true,
        stages: vec![StageConfig {
            channels: 8,
            blocks: 1,
            stride: 2,
        }],
        downsample: Downsample::Transition,
        connect: Connect::Add,
        neuron: Default::default(),
        init: Default::default(),
    }));
    cfg
}

#[derive(Default)]
struct Collect(Vec<(usize, usize, f32, bool)>);
impl Observer for Collect {
    fn on_step(&mut self, r: &StepReport) -> ControlFlow<()> {
        self.0
            .push((r.step, r.step_in_epoch, r.loss, r.grad_norm.is_finite()));
        ControlFlow::Continue(())
    }
}

/// `(step, loss, grad_norm)` of the metrics file's step records.
fn step_records(path: &Path) -> Vec<(usize, f64, f64)> {
    metrics::read(path)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::Step {
                step,
                loss,
                grad_norm,
                ..
            } => Some((step, loss, grad_norm)),
            _ => None,
        })
        .collect()
}

#[test]
fn deferred_read_back_reports_what_per_step_read_back_does() {
    // One rayon thread: nmoco-conv's reductions are then deterministic (see tests/pretrain.rs).
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        make_data(&data);
        let runs = tmp.path().join("runs");
        let mut out = vec![];
        for (name, defer) in [("every", false), ("deferred", true)] {
            set_defer_losses(Some(defer));
            let cfg = config(&runs, &data, name);
            let mut obs = Collect::default();
            let s = pretrain(&cfg, &Device::Cpu, false, &mut obs).unwrap();
            out.push((
                s.losses,
                obs.0,
                step_records(&cfg.run_dir().join("metrics.jsonl")),
            ));
        }
        set_defer_losses(None);
        let (a, b) = (&out[0], &out[1]);
        assert!(a.0.len() >= 4, "{:?}", a.0);
        assert_eq!(a.0, b.0, "losses");
        assert_eq!(a.1, b.1, "observer reports");
        assert_eq!(a.2, b.2, "metrics step records");
        // Gradient norms are computed at log steps (every 3rd and each epoch's last) only.
        let steps_per_epoch = a.0.len() / 2;
        assert!(
            a.1.iter().any(|r| !r.3),
            "some steps must be between log steps"
        );
        for &(step, in_epoch, _, has_norm) in &a.1 {
            let log = step % 3 == 0 || in_epoch == steps_per_epoch;
            assert_eq!(has_norm, log, "step {step}");
        }
    });
}
