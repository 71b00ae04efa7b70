//! Frame-cache build, cached reads and loader epochs on a small synthetic set
//! (nmoco-synth, DVS128 Gesture layout), 16 × 2 × 128 × 128 frames.

use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nmoco_data::{CacheMode, DataConfig, Dataset, DatasetKind, Loader, LoaderConfig, Split, Views};

fn setup() -> (tempfile::TempDir, DataConfig) {
    let dir = tempfile::tempdir().expect("tempdir");
    nmoco_synth::generate(&nmoco_synth::fixture::config(4, 4, 1), dir.path()).expect("generate");
    let mut cfg = DataConfig::for_dataset(DatasetKind::Synthetic, dir.path());
    cfg.cache_dir = Some(dir.path().join("cache"));
    (dir, cfg)
}

fn bench(c: &mut Criterion) {
    let (_dir, cfg) = setup();
    let ds = Arc::new(Dataset::open(&cfg, Split::Train).expect("open"));
    let n = ds.len() as u64;

    let mut g = c.benchmark_group("data");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n));
    g.bench_function("cache_build_train_split", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = ds.cache_dir().expect("cache").to_path_buf();
                std::fs::remove_dir_all(&dir).expect("clear cache");
                let t0 = Instant::now();
                let d = Dataset::open(&cfg, Split::Train).expect("open");
                total += t0.elapsed();
                assert_eq!(d.len() as u64, n);
            }
            total
        })
    });
    g.bench_function("get_cached_all", |b| {
        b.iter(|| {
            for i in 0..ds.len() {
                std::hint::black_box(ds.get(i).expect("get"));
            }
        })
    });
    let uncached = Dataset::open_with(&cfg, Split::Train, CacheMode::Off).expect("open");
    g.bench_function("compute_uncached_all", |b| {
        b.iter(|| {
            for i in 0..uncached.len() {
                std::hint::black_box(uncached.get(i).expect("get"));
            }
        })
    });
    for (name, views) in [
        ("loader_epoch_plain", Views::Plain),
        ("loader_epoch_augmented", Views::Augmented),
        ("loader_epoch_two_views", Views::TwoViews),
    ] {
        let lc = LoaderConfig {
            batch_size: 8,
            views,
            ..Default::default()
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                for batch in Loader::new(ds.clone(), &lc, &cfg.augment, &Device::Cpu) {
                    std::hint::black_box(batch.expect("batch"));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
