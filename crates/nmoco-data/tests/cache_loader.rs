//! The frame cache (reuse, rebuild on a config change, repair of corrupt entries) and the
//! loader (shapes, determinism) on a fake CIFAR10-DVS root, and errors that name their file.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use common::{cifar_cfg, collect, write_cifar};
use nmoco_data::{Dataset, Error, Loader, LoaderConfig, Split, Views};
use nmoco_frames::AugmentConfig;

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
