//! Count-split integration of 20 M random events into 16 × 2 × 128 × 128 frames.
//!
//! `cargo bench -p nmoco-frames --bench frames` (set `NMOCO_BENCH_EVENTS` to change the event
//! count). Throughput is reported by criterion in elements (= events) per second.
//! Anchors (docs/benchmarks.md): SpikingJelly ≈ 45 M events/s, tonic `ToFrame` ≈ 12 M events/s.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nmoco_events::{Events, SensorSize};
use nmoco_frames::{
    AugmentConfig, FrameConfig, Resize, Slicing, integrate, integrate_batch, integrate_batch_into,
    two_views,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_events(n: usize, seed: u64) -> Events {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ev = Events::with_capacity(n);
    let mut t = 0i64;
    for _ in 0..n {
        t += rng.random_range(0..3);
        ev.t.push(t);
        ev.x.push(rng.random_range(0..128));
        ev.y.push(rng.random_range(0..128));
        ev.on.push(rng.random());
    }
    ev
}

fn bench(c: &mut Criterion) {
    let n: usize = std::env::var("NMOCO_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000_000);
    let sensor = SensorSize {
        width: 128,
        height: 128,
    };
    let ev = random_events(n, 7);
    let cfg = FrameConfig::default(); // T = 16, 128 × 128, event-count split

    let mut g = c.benchmark_group("integrate");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("count_split_20M_one_core", |b| {
        b.iter(|| integrate(black_box(&ev), sensor, &cfg).expect("valid events"))
    });
    let time_cfg = FrameConfig {
        slicing: Slicing::EqualTime,
        ..FrameConfig::default()
    };
    g.bench_function("equal_time_20M_one_core", |b| {
        b.iter(|| integrate(black_box(&ev), sensor, &time_cfg).expect("valid events"))
    });
    g.finish();

    // Batched: the same events as 40 samples of n/40 events, over all cores.
    let k = 40;
    let parts: Vec<Events> = (0..k)
        .map(|i| ev.slice(i * n / k..(i + 1) * n / k))
        .collect();
    let samples: Vec<(&Events, SensorSize)> = parts.iter().map(|e| (e, sensor)).collect();
    let mut g = c.benchmark_group("integrate_batch");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(
        format!(
            "count_split_20M_as_{k}_samples_{}_threads",
            rayon::current_num_threads()
        ),
        |b| b.iter(|| integrate_batch(black_box(&samples), &cfg).expect("valid events")),
    );
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("thread pool");
    g.bench_function(format!("count_split_20M_as_{k}_samples_1_thread"), |b| {
        b.iter(|| one.install(|| integrate_batch(black_box(&samples), &cfg).expect("valid events")))
    });
    // Into one reused [B, T, 2, H, W] buffer: no per-sample allocation.
    let mut buf = vec![0.0f32; k * cfg.t * 2 * cfg.height * cfg.width];
    g.bench_function(
        format!(
            "count_split_20M_as_{k}_samples_into_buffer_{}_threads",
            rayon::current_num_threads()
        ),
        |b| {
            b.iter(|| {
                integrate_batch_into(black_box(&samples), &cfg, &mut buf).expect("valid events")
            })
        },
    );
    g.bench_function(
        format!("count_split_20M_as_{k}_samples_into_buffer_1_thread"),
        |b| {
            b.iter(|| {
                one.install(|| {
                    integrate_batch_into(black_box(&samples), &cfg, &mut buf).expect("valid events")
                })
            })
        },
    );
    g.finish();
}

/// N-Caltech101-sized sample (300 k events on a 240 × 180 sensor) to 16 × 2 × 128 × 128 by
/// coordinate mapping and by area pooling; and the two-view augmentation of one sample.
fn bench_resize_and_views(c: &mut Criterion) {
    let n = 300_000;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut ev = Events::with_capacity(n);
    for i in 0..n {
        ev.t.push(i as i64);
        ev.x.push(rng.random_range(0..240));
        ev.y.push(rng.random_range(0..180));
        ev.on.push(rng.random());
    }
    let sensor = SensorSize {
        width: 240,
        height: 180,
    };
    let mut g = c.benchmark_group("ncaltech_sample_300k");
    g.sample_size(20);
    g.throughput(Throughput::Elements(n as u64));
    for resize in [Resize::Events, Resize::Pool] {
        let cfg = FrameConfig {
            resize,
            ..FrameConfig::default()
        };
        g.bench_function(format!("{resize:?}_240x180_to_128x128"), |b| {
            b.iter(|| integrate(black_box(&ev), sensor, &cfg).expect("valid events"))
        });
    }
    g.finish();

    let frames = integrate(
        &ev,
        sensor,
        &FrameConfig {
            resize: Resize::Events,
            ..FrameConfig::default()
        },
    )
    .expect("valid events");
    let all_on = AugmentConfig {
        crop_p: 1.0,
        hflip_p: 1.0,
        translate_p: 1.0,
        rotate_p: 1.0,
        cutout_p: 1.0,
        drop_p: 1.0,
        time_shift_p: 1.0,
        ..AugmentConfig::default()
    };
    let mut g = c.benchmark_group("two_views_16x2x128x128");
    g.sample_size(20);
    g.bench_function("default_config", |b| {
        let mut seed = 0u64;
        b.iter(|| {
            seed += 1;
            two_views(black_box(&frames), &AugmentConfig::default(), seed)
        })
    });
    g.bench_function("every_transform_on", |b| {
        let mut seed = 0u64;
        b.iter(|| {
            seed += 1;
            two_views(black_box(&frames), &all_on, seed)
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_resize_and_views);
criterion_main!(benches);
