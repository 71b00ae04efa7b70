//! Every bad-input path gives a typed error with the right offset and value, never a panic,
//! never an allocation sized by an unchecked length.

mod common;

use nmoco_events::{
    Compression, Error, Events, Format, ReadOptions, Reader, SensorSize, aedat2, aedat4, aedat31,
    decode_bytes, nbin, read_file,
};

fn opts(f: Format) -> ReadOptions {
    ReadOptions::with_format(f)
}

fn bulk(b: &[u8], f: Format) -> Error {
    decode_bytes(b, &opts(f)).expect_err("decoding should fail")
}

/// The same input through the streaming reader must fail too.
fn streamed(b: &[u8], f: Format) -> Error {
    let mut o = opts(f);
    o.chunk_events = 3;
    match Reader::new(b, &o) {
        Err(e) => e,
        Ok(mut r) => r.read_to_end().expect_err("streaming should fail"),
    }
}

fn both(b: &[u8], f: Format) -> (Error, Error) {
    (bulk(b, f), streamed(b, f))
}

fn sample(f: Format) -> Vec<u8> {
    let ev = common::events(50, 1, 0, 100, 100);
    let mut v = Vec::new();
    nmoco_events::write(&mut v, f, &ev, None).unwrap();
    v
}

// ---------------------------------------------------------------------------------------------

#[test]
fn nbin_length_not_a_multiple_of_five() {
    let mut b = sample(Format::NBin);
    b.extend_from_slice(&[1, 2, 3]);
    for e in [bulk(&b, Format::NBin), streamed(&b, Format::NBin)] {
        match e {
            Error::PartialRecord {
                offset,
                record_size: 5,
                remainder: 3,
            } => assert_eq!(offset, 250),
            e => panic!("{e:?}"),
        }
    }
    let mut o = opts(Format::NBin);
    o.allow_partial_record = true;
    let rec = decode_bytes(&b, &o).unwrap();
    assert_eq!(rec.events.len(), 50);
    assert_eq!(rec.skipped["partial_record"], 1);
}

#[test]
fn aedat2_truncated_record_bad_magic_and_versions() {
    let mut b = sample(Format::Aedat2);
    let header = b.len() - 400;
    b.truncate(b.len() - 3);
    let (e1, e2) = both(&b, Format::Aedat2);
    for e in [e1, e2] {
        match e {
            Error::PartialRecord {
                offset,
                record_size: 8,
                remainder: 5,
            } => {
                assert_eq!(offset as usize, header + 49 * 8)
            }
            e => panic!("{e:?}"),
        }
    }
    let (e1, e2) = both(b"#!AER-DAT3.0\r\n", Format::Aedat2);
    assert!(
        matches!(e1, Error::UnsupportedVersion { ref version, .. } if version == "3.0"),
        "{e1:?}"
    );
    assert!(matches!(e2, Error::UnsupportedVersion { .. }));
    let (e1, e2) = both(b"\x00\x00\x00\x01\x00\x00\x00\x02", Format::Aedat2);
    assert!(matches!(e1, Error::BadMagic { offset: 0, .. }), "{e1:?}");
    assert!(matches!(e2, Error::BadMagic { .. }), "{e2:?}");
    let (e1, _) = both(b"# just a comment\r\n", Format::Aedat2);
    assert!(matches!(e1, Error::BadMagic { .. }), "{e1:?}");
    assert!(matches!(bulk(b"", Format::Aedat2), Error::BadMagic { .. }));
}

#[test]
fn oversized_text_header_is_refused() {
    let mut b = b"#!AER-DAT2.0\r\n#".to_vec();
    b.extend(std::iter::repeat_n(b'a', 5000));
    b.extend_from_slice(b"\r\n");
    let mut o = opts(Format::Aedat2);
    o.max_header_bytes = 1000;
    let e = decode_bytes(&b, &o).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooLarge {
                what: "text header",
                size: 5017,
                limit: 1000,
                ..
            }
        ),
        "{e:?}"
    );
    let e = Reader::new(&b[..], &o).unwrap().read_to_end().unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
}

// ---------------------------------------------------------------------------------------------

fn a31(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut b = b"#!AER-DAT3.1\r\n#!END-HEADER\r\n".to_vec();
    for p in packets {
        b.extend_from_slice(p);
    }
    b
}

fn pk(ty: i16, size: i32, ts_off: i32, cap: i32, num: i32, payload: Vec<u8>) -> Vec<u8> {
    aedat31::RawPacket {
        event_type: ty,
        event_source: 1,
        event_size: size,
        ts_offset: ts_off,
        ts_overflow: 0,
        capacity: cap,
        number: num,
        valid: num,
        payload,
    }
    .to_bytes()
}

const H31: u64 = 28; // text header length of `a31`

#[test]
fn aedat31_truncated_packet_header_and_payload() {
    let good = pk(1, 8, 4, 2, 2, vec![1; 16]);
    let b = a31(&[good.clone(), good[..10].to_vec()]);
    let (e1, e2) = both(&b, Format::Aedat31);
    for e in [e1, e2] {
        assert!(
            matches!(e, Error::Truncated { offset, what: "packet header", needed: 28, available: 10 } if offset == H31 + 44),
            "{e:?}"
        );
    }
    // Payload shorter than capacity × size: past the end in bulk, truncated when streaming.
    let b = a31(&[pk(1, 8, 4, 4, 4, vec![1; 20])]);
    let e = bulk(&b, Format::Aedat31);
    assert!(
        matches!(
            e,
            Error::PacketPastEnd {
                offset: H31,
                size: 60,
                available: 48
            }
        ),
        "{e:?}"
    );
    let e = streamed(&b, Format::Aedat31);
    assert!(
        matches!(e, Error::Truncated { .. } | Error::PacketPastEnd { .. }),
        "{e:?}"
    );
}

#[test]
fn aedat31_absurd_capacity_does_not_allocate() {
    for (ty, cap) in [(1, i32::MAX), (2, i32::MAX), (1, 1 << 28)] {
        let b = a31(&[pk(ty, 8, 4, cap, cap, vec![1; 16])]);
        let e = bulk(&b, Format::Aedat31);
        assert!(
            matches!(e, Error::PacketPastEnd { size, .. } if size == 28 + cap as u64 * 8),
            "{e:?}"
        );
        let e = streamed(&b, Format::Aedat31);
        assert!(
            matches!(e, Error::Truncated { .. } | Error::PacketPastEnd { .. }),
            "{e:?}"
        );
    }
}

#[test]
fn aedat31_bad_header_fields() {
    let cases: [(Vec<u8>, &str, i64, u64); 7] = [
        (pk(1, 4096, 4, 1, 1, vec![0; 4096]), "eventSize", 4096, 4),
        (pk(1, 0, 4, 1, 1, vec![]), "eventSize", 0, 4),
        (pk(2, -8, 4, 1, 1, vec![]), "eventSize", -8, 4),
        (pk(1, 8, 4, -1, 1, vec![]), "eventCapacity", -1, 16),
        (pk(1, 8, 4, 1, -5, vec![0; 8]), "eventNumber", -5, 20),
        (pk(1, 4, 0, 1, 1, vec![0; 4]), "eventSize", 4, 4),
        (pk(1, 8, 6, 1, 1, vec![0; 8]), "eventTSOffset", 6, 8),
    ];
    for (p, field, value, rel) in cases {
        let b = a31(&[p]);
        for e in [bulk(&b, Format::Aedat31), streamed(&b, Format::Aedat31)] {
            match e {
                Error::BadField {
                    offset,
                    field: f,
                    value: v,
                    ..
                } => {
                    assert_eq!((f, v, offset), (field, value, H31 + rel))
                }
                e => panic!("{field}: {e:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------

fn a4(compression: i32, fdp: i64, packets: &[(i32, Vec<u8>)]) -> Vec<u8> {
    let d = r#"<dv version="2.0"><node name="outInfo"><node name="0"><attr key="typeIdentifier" type="string">EVTS</attr><node name="info"><attr key="sizeX" type="int">8</attr><attr key="sizeY" type="int">8</attr></node></node></node></dv>"#;
    let io = fixtures_io(compression, fdp, d);
    let mut b = b"#!AER-DAT4.0\r\n".to_vec();
    b.extend_from_slice(&(io.len() as u32).to_le_bytes());
    b.extend_from_slice(&io);
    for (id, p) in packets {
        b.extend_from_slice(&id.to_le_bytes());
        b.extend_from_slice(&(p.len() as i32).to_le_bytes());
        b.extend_from_slice(p);
    }
    b
}

fn fixtures_io(compression: i32, fdp: i64, desc: &str) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&20u32.to_le_bytes());
    v.extend_from_slice(b"IOHE");
    for x in [10u16, 24, 4, 8, 16] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&12i32.to_le_bytes());
    v.extend_from_slice(&compression.to_le_bytes());
    v.extend_from_slice(&fdp.to_le_bytes());
    v.extend_from_slice(&8u32.to_le_bytes());
    v.extend_from_slice(&[0; 4]);
    v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    v.extend_from_slice(desc.as_bytes());
    v.push(0);
    v
}

fn evts(count: u32, n_real: usize) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&8u32.to_le_bytes());
    v.extend_from_slice(b"EVTS");
    v.extend_from_slice(&(-8i32).to_le_bytes());
    v.extend_from_slice(&12u32.to_le_bytes());
    v.extend_from_slice(&[6, 0, 8, 0, 4, 0, 0, 0]);
    v.extend_from_slice(&count.to_le_bytes());
    v.extend(std::iter::repeat_n(1u8, 16 * n_real));
    let n = v.len() as u32 - 4;
    v[..4].copy_from_slice(&n.to_le_bytes());
    v
}

#[test]
fn aedat4_header_errors() {
    let (e1, e2) = both(b"#!AER-DAT4.0\r\n\xff\xff\xff\xff", Format::Aedat4);
    assert!(
        matches!(
            e1,
            Error::TooLarge {
                offset: 14,
                what: "IO header",
                size: 0xFFFF_FFFF,
                ..
            }
        ),
        "{e1:?}"
    );
    assert!(matches!(e2, Error::TooLarge { .. }), "{e2:?}");
    let (e1, e2) = both(b"#!AER-DAT4.0\r\n\x10\x00\x00\x00abc", Format::Aedat4);
    assert!(
        matches!(
            e1,
            Error::Truncated {
                offset: 18,
                needed: 16,
                available: 3,
                ..
            }
        ),
        "{e1:?}"
    );
    assert!(matches!(e2, Error::Truncated { .. }), "{e2:?}");
    let (e1, _) = both(b"#!AER-DAT4.0\r", Format::Aedat4);
    assert!(matches!(e1, Error::BadMagic { .. }), "{e1:?}");
    let (e1, _) = both(b"#!AER-DAT4.1\r\n", Format::Aedat4);
    assert!(matches!(e1, Error::UnsupportedVersion { .. }), "{e1:?}");
    // Root offset pointing outside the header.
    let mut b = a4(0, -1, &[]);
    b[18..22].copy_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(
        bulk(&b, Format::Aedat4),
        Error::CorruptHeader { offset: 18, .. }
    ));
    // Unknown compression code.
    let b = a4(9, -1, &[]);
    let e = bulk(&b, Format::Aedat4);
    assert!(
        matches!(
            e,
            Error::BadField {
                field: "compression",
                value: 9,
                ..
            }
        ),
        "{e:?}"
    );
    // file_data_position inside the header, or beyond the end of the file.
    let e = bulk(&a4(0, 5, &[]), Format::Aedat4);
    assert!(
        matches!(
            e,
            Error::BadField {
                field: "file_data_position",
                value: 5,
                ..
            }
        ),
        "{e:?}"
    );
    let b = a4(0, 100_000, &[]);
    let (e1, e2) = both(&b, Format::Aedat4);
    assert!(matches!(e1, Error::Truncated { .. }), "{e1:?}");
    assert!(matches!(e2, Error::Truncated { .. }), "{e2:?}");
    // A description without streams.
    let mut b = b"#!AER-DAT4.0\r\n".to_vec();
    let io = fixtures_io(0, -1, "<dv></dv>");
    b.extend_from_slice(&(io.len() as u32).to_le_bytes());
    b.extend_from_slice(&io);
    assert!(matches!(
        bulk(&b, Format::Aedat4),
        Error::CorruptHeader { .. }
    ));
}

#[test]
fn aedat4_packet_errors() {
    let base = a4(0, -1, &[]).len() as u64;
    // Packet size past the end of the file, or past file_data_position.
    let mut b = a4(0, -1, &[(0, evts(1, 1))]);
    b.truncate(b.len() - 5);
    let e = bulk(&b, Format::Aedat4);
    assert!(
        matches!(e, Error::PacketPastEnd { offset, .. } if offset == base),
        "{e:?}"
    );
    assert!(matches!(
        streamed(&b, Format::Aedat4),
        Error::PacketPastEnd { .. }
    ));
    let b = a4(0, base as i64 + 10, &[(0, evts(1, 1))]);
    assert!(matches!(
        bulk(&b, Format::Aedat4),
        Error::PacketPastEnd {
            size: 56,
            available: 10,
            ..
        }
    ));
    // Negative size, negative or undeclared stream id.
    let mut b = a4(0, -1, &[(0, vec![])]);
    let n = b.len();
    b[n - 4..].copy_from_slice(&(-3i32).to_le_bytes());
    assert!(matches!(
        bulk(&b, Format::Aedat4),
        Error::BadField {
            field: "packet size",
            value: -3,
            ..
        }
    ));
    let b = a4(0, -1, &[(-1, vec![])]);
    assert!(matches!(
        bulk(&b, Format::Aedat4),
        Error::BadField {
            field: "stream id",
            value: -1,
            ..
        }
    ));
    let b = a4(0, -1, &[(7, evts(0, 0))]);
    assert!(matches!(
        bulk(&b, Format::Aedat4),
        Error::BadField {
            field: "stream id",
            value: 7,
            ..
        }
    ));
    // A vector count far beyond the payload, and an absurd one.
    for count in [2, u32::MAX] {
        let b = a4(0, -1, &[(0, evts(count, 1))]);
        let e = bulk(&b, Format::Aedat4);
        assert!(
            matches!(e, Error::Flatbuffer { offset, .. } if offset == base),
            "{e:?}"
        );
    }
    // Wrong identifier.
    let mut p = evts(1, 1);
    p[8..12].copy_from_slice(b"FRME");
    assert!(matches!(
        bulk(&a4(0, -1, &[(0, p)]), Format::Aedat4),
        Error::Flatbuffer { .. }
    ));
    // Packet larger than the limit.
    let b = a4(0, -1, &[(0, evts(1000, 1000))]);
    let mut o = opts(Format::Aedat4);
    o.max_packet_bytes = 1000;
    let e = decode_bytes(&b, &o).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooLarge {
                what: "packet",
                limit: 1000,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn aedat4_decompression_errors_and_bombs() {
    let base = a4(1, -1, &[]).len() as u64;
    let b = a4(
        1,
        -1,
        &[(0, vec![0x04, 0x22, 0x4D, 0x18, 0x00, 0x01, 0x02])],
    );
    let e = bulk(&b, Format::Aedat4);
    assert!(
        matches!(e, Error::Decompress { offset, .. } if offset == base),
        "{e:?}"
    );
    let b = a4(3, -1, &[(0, vec![0x28, 0xB5, 0x2F, 0xFD, 0xFF])]);
    assert!(matches!(bulk(&b, Format::Aedat4), Error::Decompress { .. }));
    // 64 MiB of zeros compress to a few KiB; the limit stops the expansion.
    let zeros = vec![0u8; 64 << 20];
    let bomb = zstd::stream::encode_all(&zeros[..], 3).unwrap();
    assert!(bomb.len() < 1 << 16);
    let b = a4(3, -1, &[(0, bomb)]);
    let mut o = opts(Format::Aedat4);
    o.max_packet_bytes = 1 << 20;
    let e = decode_bytes(&b, &o).unwrap_err();
    assert!(
        matches!(e, Error::TooLarge { what: "decompressed packet", size, limit, .. } if size == limit + 1),
        "{e:?}"
    );
}

// ---------------------------------------------------------------------------------------------

#[test]
fn sniffing_and_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mystery.xyz");
    std::fs::write(&p, [1u8, 2, 3]).unwrap();
    let e = read_file(&p, None).unwrap_err();
    assert!(matches!(e.kind(), Error::UnknownFormat { .. }), "{e:?}");
    assert!(e.to_string().contains("mystery.xyz"));
    let p = dir.path().join("old.aedat");
    std::fs::write(&p, b"#!AER-DAT1.0\r\n").unwrap();
    assert!(matches!(
        read_file(&p, None).unwrap_err().kind(),
        Error::UnsupportedVersion { .. }
    ));
    let missing = dir.path().join("missing.bin");
    let e = read_file(&missing, None).unwrap_err();
    assert!(matches!(e.kind(), Error::Io { .. }));
    assert!(e.to_string().contains("missing.bin"));
    let p = dir.path().join("cut.bin");
    std::fs::write(&p, [0u8; 12]).unwrap();
    let e = read_file(&p, None).unwrap_err();
    assert_eq!(e.offset(), Some(10));
    assert!(
        std::error::Error::source(&e)
            .unwrap()
            .to_string()
            .contains("at byte 10")
    );
    assert!("aedat5".parse::<Format>().is_err());
    assert_eq!("aedat3".parse::<Format>().unwrap(), Format::Aedat31);
    for f in Format::ALL {
        assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
    }
    // A stream without magic needs an explicit format.
    assert!(matches!(
        Reader::new(&[1u8, 2, 3][..], &ReadOptions::default()),
        Err(Error::UnknownFormat { .. })
    ));
}

#[test]
fn read_errors_from_the_underlying_stream_carry_the_offset() {
    struct Failing(usize);
    impl std::io::Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("disk on fire"));
            }
            let n = self.0.min(buf.len());
            buf[..n].fill(7);
            self.0 -= n;
            Ok(n)
        }
    }
    let mut r = Reader::new(Failing(12), &opts(Format::NBin)).unwrap();
    let mut out = Events::new();
    let e = r.read_chunk(&mut out).unwrap_err();
    assert!(matches!(e, Error::Io { offset: 12, .. }), "{e:?}");
}

#[test]
fn writers_refuse_unrepresentable_events() {
    let one = |t, x, y| -> Events {
        [nmoco_events::Event { t, x, y, on: true }]
            .into_iter()
            .collect()
    };
    let mut sink = Vec::new();
    let cases: Vec<(Format, Events, &str)> = vec![
        (Format::NBin, one(0, 256, 0), "x"),
        (Format::NBin, one(0, 0, 240), "y"),
        (Format::NBin, one(-1, 0, 0), "t"),
        (Format::NBin, one(i64::MAX, 0, 0), "t"),
        (Format::Aedat2, one(0, 128, 0), "x"),
        (Format::Aedat2, one(1 << 32, 0, 0), "t"),
        (Format::Aedat31, one(0, 0, 1 << 15), "y"),
        (Format::Aedat31, one(-5, 0, 0), "t"),
    ];
    for (f, ev, field) in cases {
        match nmoco_events::write(&mut sink, f, &ev, None) {
            Err(Error::Unrepresentable {
                format,
                field: got,
                index: 0,
                ..
            }) => {
                assert_eq!((format, got), (f, field))
            }
            r => panic!("{f} {field}: {r:?}"),
        }
    }
    // Once an overflow record has been written, earlier times can no longer be expressed.
    let unsorted: Events = [((1 << 23) + 9, 1, 1), (3, 1, 1)]
        .into_iter()
        .map(|(t, x, y)| nmoco_events::Event { t, x, y, on: false })
        .collect();
    assert!(nbin::write(&mut sink, &unsorted, None).is_err());
    assert!(
        aedat2::write(
            &mut sink,
            &unsorted,
            Some(SensorSize {
                width: 346,
                height: 260
            })
        )
        .is_err()
    );
    let mut bad = common::events(3, 1, 0, 10, 10);
    bad.x.pop();
    for f in Format::ALL {
        assert!(nmoco_events::write(&mut sink, f, &bad, None).is_err());
    }
    assert!(aedat4::write(&mut sink, &bad, None, Compression::None).is_err());
}
