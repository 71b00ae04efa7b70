//! The streaming reader works in bounded memory and reports metadata as it goes.

mod common;

use nmoco_events::{Compression, Events, Format, ReadOptions, Reader, SensorSize, aedat4};

#[test]
fn streaming_a_large_file_keeps_the_buffer_bounded() {
    let ev = common::events(500_000, 5, 0, 128, 128);
    for f in Format::ALL {
        let mut bytes = Vec::new();
        nmoco_events::write(&mut bytes, f, &ev, None).unwrap();
        assert!(
            bytes.len() > 2 << 20,
            "{f}: the file must exceed the buffer"
        );
        let o = ReadOptions {
            format: Some(f),
            chunk_events: 10_000,
            ..Default::default()
        };
        let mut r = Reader::new(&bytes[..], &o).unwrap();
        let mut chunk = Events::new();
        let mut total = 0;
        loop {
            chunk.clear();
            let n = r.read_chunk(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            assert!(n <= 10_000);
            assert_eq!(chunk.t[..], ev.t[total..total + n]);
            total += n;
            assert!(
                r.buffer_capacity() <= 1 << 20,
                "{f}: {}",
                r.buffer_capacity()
            );
        }
        assert_eq!(total, ev.len());
        assert_eq!(
            r.offset(),
            bytes.len() as u64
                - if f == Format::Aedat4 {
                    table_len(&bytes)
                } else {
                    0
                }
        );
    }
}

/// Length of the AEDAT 4 file data table (the bytes after the last packet).
fn table_len(bytes: &[u8]) -> u64 {
    let rec = nmoco_events::decode_bytes(bytes, &ReadOptions::with_format(Format::Aedat4)).unwrap();
    assert!(!rec.events.is_empty());
    // The IO header's file_data_position is at byte 32 of the writer's IO header, which
    // starts after the 14-byte magic and its 4-byte length.
    let fdp = i64::from_le_bytes(bytes[14 + 4 + 32..14 + 4 + 40].try_into().unwrap());
    bytes.len() as u64 - fdp as u64
}

#[test]
fn a_big_aedat4_packet_grows_the_buffer_only_to_its_size() {
    let ev = common::events(200_000, 9, 0, 64, 64);
    let mut bytes = Vec::new();
    let opts = aedat4::WriteOptions {
        compression: Compression::None,
        packet_events: 200_000,
        ..Default::default()
    };
    aedat4::write_with(
        &mut bytes,
        &ev,
        Some(SensorSize {
            width: 64,
            height: 64,
        }),
        &opts,
    )
    .unwrap();
    let o = ReadOptions {
        chunk_events: 5000,
        ..Default::default()
    };
    let mut r = Reader::new(&bytes[..], &o).unwrap();
    assert_eq!(r.format(), Format::Aedat4);
    let mut all = Events::new();
    assert_eq!(r.read_chunk(&mut all).unwrap(), 5000);
    assert_eq!(
        r.sensor(),
        Some(SensorSize {
            width: 64,
            height: 64
        })
    );
    while r.read_chunk(&mut all).unwrap() > 0 {}
    assert_eq!(all, ev);
    let packet = 200_000 * 16 + 40 + 8;
    assert!(r.buffer_capacity() >= packet && r.buffer_capacity() <= packet + (1 << 20));
    // The same packet over a lower limit is refused instead of buffered.
    let o = ReadOptions {
        max_packet_bytes: 1 << 20,
        ..Default::default()
    };
    let e = Reader::new(&bytes[..], &o)
        .unwrap()
        .read_to_end()
        .unwrap_err();
    assert!(
        matches!(e, nmoco_events::Error::TooLarge { what: "packet", .. }),
        "{e:?}"
    );
}

#[test]
fn sniffing_by_magic_then_extension() {
    use std::path::Path;
    assert_eq!(
        nmoco_events::sniff_extension(Path::new("a/b.BIN")),
        Some(Format::NBin)
    );
    assert_eq!(
        nmoco_events::sniff_extension(Path::new("x.aedat4")),
        Some(Format::Aedat4)
    );
    assert_eq!(nmoco_events::sniff_extension(Path::new("x.aedat")), None);
    let dir = tempfile::tempdir().unwrap();
    let ev = common::events(10, 1, 0, 30, 30);
    // The magic wins over a misleading extension.
    let p = dir.path().join("really_aedat3.bin");
    nmoco_events::aedat31::write_file(&p, &ev, None).unwrap();
    assert_eq!(nmoco_events::sniff_file(&p).unwrap(), Format::Aedat31);
    assert_eq!(nmoco_events::read_file(&p, None).unwrap().events, ev);
    let p = dir.path().join("plain.bin");
    nmoco_events::nbin::write_file(&p, &ev, None).unwrap();
    assert_eq!(nmoco_events::sniff_file(&p).unwrap(), Format::NBin);
    let p = dir.path().join("v2.aedat");
    nmoco_events::aedat2::write_file(&p, &ev, None).unwrap();
    assert_eq!(nmoco_events::sniff_file(&p).unwrap(), Format::Aedat2);
}

#[test]
fn a_claimed_huge_packet_does_not_allocate_before_the_bytes_arrive() {
    // An AEDAT 4 file whose only packet claims 200 MB but holds 100 bytes.
    let ev = common::events(3, 1, 0, 8, 8);
    let mut bytes = Vec::new();
    let opts = aedat4::WriteOptions {
        compression: Compression::None,
        file_data_table: false,
        ..Default::default()
    };
    aedat4::write_with(&mut bytes, &ev, None, &opts).unwrap();
    let header_end = bytes.len() - (8 + 40 + 3 * 16);
    bytes.truncate(header_end);
    bytes.extend_from_slice(&0i32.to_le_bytes());
    bytes.extend_from_slice(&200_000_000i32.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 100]);
    let mut r = Reader::new(&bytes[..], &ReadOptions::default()).unwrap();
    let mut out = Events::new();
    let e = r.read_chunk(&mut out).unwrap_err();
    assert!(
        matches!(
            e,
            nmoco_events::Error::PacketPastEnd {
                size: 200_000_008,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(r.buffer_capacity() <= 1 << 20, "{}", r.buffer_capacity());
}
