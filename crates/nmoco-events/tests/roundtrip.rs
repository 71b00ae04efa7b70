//! Writer → reader round trips for every format, through every access path.

mod common;

use nmoco_events::{
    Compression, Events, Format, ReadOptions, Reader, SensorSize, aedat2, aedat4, aedat31,
    decode_bytes, nbin, read_file, sha256_txyp,
};

fn write(format: Format, ev: &Events, sensor: Option<SensorSize>) -> Vec<u8> {
    let mut v = Vec::new();
    nmoco_events::write(&mut v, format, ev, sensor).unwrap();
    v
}

fn stream(bytes: &[u8], format: Format, chunk: usize) -> Events {
    let opts = ReadOptions {
        format: Some(format),
        chunk_events: chunk,
        ..Default::default()
    };
    let mut r = Reader::new(bytes, &opts).unwrap();
    let mut all = Events::new();
    loop {
        let n = r.read_chunk(&mut all).unwrap();
        assert!(n <= chunk);
        if n == 0 {
            break;
        }
    }
    all
}

#[test]
fn every_format_round_trips_through_bulk_stream_and_iterator() {
    let ev = common::events(20_000, 7, 1000, 128, 128);
    let s128 = Some(SensorSize {
        width: 128,
        height: 128,
    });
    for f in Format::ALL {
        let bytes = write(f, &ev, s128);
        let rec = decode_bytes(&bytes, &ReadOptions::with_format(f)).unwrap();
        assert_eq!(rec.events, ev, "{f} bulk");
        for chunk in [1, 7, 4096, 1 << 20] {
            assert_eq!(stream(&bytes, f, chunk), ev, "{f} stream chunk {chunk}");
        }
        let mut r = Reader::new(&bytes[..], &ReadOptions::with_format(f)).unwrap();
        let it: Vec<_> = r.events().map(|e| e.unwrap()).collect();
        assert_eq!(it.len(), ev.len());
        assert!(it.iter().zip(ev.iter()).all(|(a, b)| *a == b));
        if f != Format::NBin {
            assert_eq!(rec.sensor, s128, "{f} sensor");
            assert_eq!(sniff_or_none(&bytes), Some(f));
        } else {
            assert_eq!(rec.sensor, None);
        }
        assert_eq!(sha256_txyp(&rec.events), sha256_txyp(&ev));
    }
}

fn sniff_or_none(b: &[u8]) -> Option<Format> {
    nmoco_events::sniff_bytes(b).unwrap()
}

#[test]
fn aedat4_every_compression_round_trips() {
    let ev = common::events(10_000, 3, 1_600_000_000_000_000, 346, 260);
    let s = Some(SensorSize {
        width: 346,
        height: 260,
    });
    for c in [
        Compression::None,
        Compression::Lz4,
        Compression::Lz4High,
        Compression::Zstd,
        Compression::ZstdHigh,
    ] {
        let mut v = Vec::new();
        aedat4::write(&mut v, &ev, s, c).unwrap();
        let rec = decode_bytes(&v, &ReadOptions::default()).unwrap();
        assert_eq!(rec.events, ev, "{c:?}");
        assert_eq!(rec.sensor, s);
        assert_eq!(stream(&v, Format::Aedat4, 1000), ev, "{c:?} stream");
    }
}

#[test]
fn files_round_trip_small_and_memory_mapped() {
    let dir = tempfile::tempdir().unwrap();
    for (n, name) in [(100usize, "small"), (300_000, "large")] {
        let ev = common::events(n, 11, 0, 34, 34);
        for f in Format::ALL {
            let ext = match f {
                Format::NBin => "bin",
                Format::Aedat4 => "aedat4",
                _ => "aedat",
            };
            let p = dir.path().join(format!("{name}_{f}.{ext}"));
            nmoco_events::write_file(
                &p,
                f,
                &ev,
                Some(SensorSize {
                    width: 34,
                    height: 34,
                }),
            )
            .unwrap();
            let rec = read_file(&p, None).unwrap();
            assert_eq!(rec.events, ev, "{name} {f}");
        }
    }
    let _ = (aedat2::RECORD, aedat31::PACKET_HEADER, nbin::RECORD);
}
