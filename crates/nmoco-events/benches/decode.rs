//! Bulk decode throughput per format on 10 M events written by the crate's own writers, next to
//! a plain copy of the same bytes (the memory-bandwidth ceiling); then `decode_into` alone on
//! 300 k events (`<format>-300k`), a file size whose columns stay in the cache.
//!
//! `cargo bench -p nmoco-events --bench decode`. Throughput is in bytes of the encoded file;
//! events/s = bytes/s × events / file bytes (the bench prints both sizes).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nmoco_events::{Compression, Event, Events, Format, ReadOptions, Recording, decode_into};

const N: usize = 10_000_000;
/// A file of N-Caltech101 size, whose decoded columns (3.9 MB) stay in the cache: the path
/// with ordinary stores (see `nmoco_events`' `simd` module).
const N_SMALL: usize = 300_000;

/// `n` events with monotone timestamps spread over 0..2^23 µs (so the N-binary file needs no
/// overflow records, like tonic's synthetic anchor file), x and y uniform in 0..128.
fn events(n: usize) -> Events {
    let mut s: u64 = 0x1234_5678;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            Event {
                t: (i as i64 * ((1 << 23) - 1)) / n as i64,
                x: ((s >> 8) % 128) as u16,
                y: ((s >> 24) % 128) as u16,
                on: s >> 63 == 1,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let ev = events(N);
    let cases: Vec<(&str, Format, Vec<u8>)> = {
        let mut v = Vec::new();
        for f in [Format::NBin, Format::Aedat2, Format::Aedat31] {
            let mut b = Vec::new();
            nmoco_events::write(&mut b, f, &ev, None).unwrap();
            v.push((f.name(), f, b));
        }
        for (name, comp) in [
            ("aedat4-lz4", Compression::Lz4),
            ("aedat4-none", Compression::None),
        ] {
            let mut b = Vec::new();
            nmoco_events::aedat4::write(&mut b, &ev, None, comp).unwrap();
            v.push((name, Format::Aedat4, b));
        }
        v
    };
    for (name, format, bytes) in &cases {
        println!("{name}: {N} events, {} bytes", bytes.len());
        let mut g = c.benchmark_group(*name);
        g.sample_size(10);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        let mut dst = vec![0u8; bytes.len()];
        g.bench_function("copy", |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(bytes));
                black_box(&dst);
            })
        });
        let opts = ReadOptions::with_format(*format);
        let mut rec = Recording::default();
        decode_into(bytes, *format, &opts, &mut rec).unwrap();
        assert_eq!(rec.events.len(), N);
        g.bench_function("decode_reuse", |b| {
            b.iter(|| {
                decode_into(black_box(bytes), *format, &opts, &mut rec).unwrap();
                black_box(rec.events.len());
            })
        });
        g.bench_function("decode_fresh", |b| {
            b.iter(|| {
                let r = nmoco_events::decode_bytes(black_box(bytes), &opts).unwrap();
                black_box(r.events.len());
            })
        });
        g.finish();
    }
    let ev = events(N_SMALL);
    for f in [Format::NBin, Format::Aedat2, Format::Aedat31] {
        let mut bytes = Vec::new();
        nmoco_events::write(&mut bytes, f, &ev, None).unwrap();
        let mut g = c.benchmark_group(format!("{}-300k", f.name()));
        g.sample_size(20);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        let opts = ReadOptions::with_format(f);
        let mut rec = Recording::default();
        decode_into(&bytes, f, &opts, &mut rec).unwrap();
        assert_eq!(rec.events.len(), N_SMALL);
        g.bench_function("decode_reuse", |b| {
            b.iter(|| {
                decode_into(black_box(&bytes), f, &opts, &mut rec).unwrap();
                black_box(rec.events.len());
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
