//! Hand-built byte fixtures, one or more per format, with the values the format definition
//! (and the established readers, where they agree) gives for them.

use nmoco_events::{
    Aedat2Layout, Dvs128Polarity, Event, Events, Format, NbinOverflow, ReadOptions, SensorSize,
    aedat2, aedat31, decode_bytes,
};

fn ev(list: &[(i64, u16, u16, bool)]) -> Events {
    list.iter()
        .map(|&(t, x, y, on)| Event { t, x, y, on })
        .collect()
}

fn opts(format: Format) -> ReadOptions {
    ReadOptions::with_format(format)
}

// ---------------------------------------------------------------------------------------------
// N-binary

const NBIN: [u8; 20] = [
    3, 4, 0x81, 0x23, 0x45, // x 3, y 4, ON, t 0x012345
    9, 240, 0x00, 0x00, 0x00, // overflow marker (y == 240)
    255, 7, 0x00, 0x00, 0x0A, // x 255, y 7, OFF, t 10
    0, 240, 0x80, 0x00, 0x01, // another marker (x, p, t ignored)
];

#[test]
fn nbin_tonic_overflow_drops_markers_and_adds_8192() {
    let rec = decode_bytes(&NBIN, &opts(Format::NBin)).unwrap();
    assert_eq!(
        rec.events,
        ev(&[(0x012345, 3, 4, true), (10 + 8192, 255, 7, false)])
    );
    assert_eq!(rec.skipped.get("overflow"), Some(&2));
    assert_eq!(rec.sensor, None);
}

#[test]
fn nbin_overflow_conventions_are_selectable() {
    let mut o = opts(Format::NBin);
    o.nbin_overflow = NbinOverflow::Wrap23;
    let rec = decode_bytes(&NBIN, &o).unwrap();
    assert_eq!(rec.events.t, vec![0x012345, 10 + (1 << 23)]);
    o.nbin_overflow = NbinOverflow::Ignore;
    let rec = decode_bytes(&NBIN, &o).unwrap();
    assert_eq!(
        rec.events,
        ev(&[
            (0x012345, 3, 4, true),
            (0, 9, 240, false),
            (10, 255, 7, false),
            (1, 0, 240, true)
        ])
    );
    assert!(rec.skipped.is_empty());
}

#[test]
fn nbin_writer_inserts_markers_the_reader_removes() {
    let e = ev(&[
        (5, 1, 1, true),
        ((1 << 23) + 100, 2, 2, false),
        (3 << 23, 3, 3, true),
    ]);
    let mut v = Vec::new();
    nmoco_events::nbin::write(&mut v, &e, None).unwrap();
    let markers = v.chunks(5).filter(|r| r[1] == 240).count();
    // (2^23 + 100 - (2^23 - 1)) / 8192 rounded up = 1, then up to 3*2^23 - 2^23 + 1 more.
    assert!(markers > 1);
    let rec = decode_bytes(&v, &opts(Format::NBin)).unwrap();
    assert_eq!(rec.events, e);
    assert_eq!(rec.skipped["overflow"], markers as u64);
}

// ---------------------------------------------------------------------------------------------
// AEDAT 2.0

fn aedat2_bytes(chip: Option<&str>, words: &[(u32, u32)]) -> Vec<u8> {
    let mut v = b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n".to_vec();
    if let Some(c) = chip {
        v.extend_from_slice(format!("# AEChip: {c}\r\n").as_bytes());
    }
    v.extend_from_slice(b"#<prefs><entry key=\"x\"/>\r\n");
    for &(a, t) in words {
        v.extend_from_slice(&a.to_be_bytes());
        v.extend_from_slice(&t.to_be_bytes());
    }
    v
}

#[test]
fn aedat2_dvs128_raw_fields_polarity_and_specials() {
    let words = [
        ((5 << 8) | (9 << 1) | 1, 0x8000_0001), // X 9, Y 5, bit0 1, t above 2^31 (unsigned)
        (127 << 8, 7),                          // X 0, Y 127, bit0 0
        (0x8000 | (3 << 8), 8),                 // bit 15: special/sync
        (0x8000_0000, 9),                       // bit 31: special
    ];
    let b = aedat2_bytes(Some("ch.unizh.ini.jaer.chip.retina.DVS128"), &words);
    let rec = decode_bytes(&b, &opts(Format::Aedat2)).unwrap();
    assert_eq!(
        rec.events,
        ev(&[(0x8000_0001, 9, 5, true), (7, 0, 127, false)])
    );
    assert_eq!(rec.skipped.get("special"), Some(&2));
    assert_eq!(
        rec.sensor,
        Some(SensorSize {
            width: 128,
            height: 128
        })
    );
    // jAER / spikingjelly polarity sense.
    let mut o = opts(Format::Aedat2);
    o.dvs128_polarity = Dvs128Polarity::Jaer;
    assert_eq!(decode_bytes(&b, &o).unwrap().events.on, vec![false, true]);
    // tonic and spikingjelly keep sync words.
    o.keep_special = true;
    let rec = decode_bytes(&b, &o).unwrap();
    assert_eq!(rec.events.len(), 4);
    assert_eq!((rec.events.x[2], rec.events.y[2]), (0, 3));
    // Without an AEChip line the layout defaults to DVS128 but the sensor is unknown.
    let b = aedat2_bytes(None, &words[..2]);
    let rec = decode_bytes(&b, &opts(Format::Aedat2)).unwrap();
    assert_eq!(rec.events.x, vec![9, 0]);
    assert_eq!(rec.sensor, None);
}

#[test]
fn aedat2_dvs128_matches_spikingjelly_cifar10dvs_after_documented_flips() {
    // spikingjelly: x = 127 - Y, y = 127 - X, p = 1 - bit0.
    let words = [((5 << 8) | (9 << 1) | 1, 1), ((100 << 8) | (2 << 1), 2)];
    let rec = decode_bytes(&aedat2_bytes(None, &words), &opts(Format::Aedat2)).unwrap();
    let sj: Vec<(u16, u16, u8)> = rec
        .events
        .iter()
        .map(|e| (127 - e.y, 127 - e.x, 1 - e.on as u8))
        .collect();
    assert_eq!(sj, vec![(122, 118, 0), (27, 125, 1)]);
}

#[test]
fn aedat2_davis_layouts_skip_and_count_non_dvs_words() {
    let words = [
        ((100 << 22) | (200 << 12) | 0x800, 10),           // DVS ON
        ((179 << 22) | (239 << 12), 11),                   // DVS OFF
        ((1 << 22) | (2 << 12) | 0x400, 12),               // external event (bit 10)
        (0x8000_0000 | (3 << 22) | (4 << 12) | 0x155, 13), // APS
        (0x8000_0C00 | (5 << 28) | (0x1234 << 12), 14),    // IMU
        ((1 << 22) | (2 << 12) | 0xC00, 15),               // bits 11-10 = 11: external, not ON
    ];
    let b = aedat2_bytes(Some("eu.seebetter.ini.chips.davis.DAVIS240C"), &words);
    let rec = decode_bytes(&b, &opts(Format::Aedat2)).unwrap();
    assert_eq!(
        rec.events,
        ev(&[(10, 200, 100, true), (11, 239, 179, false)])
    );
    assert_eq!(rec.skipped.get("special"), Some(&2));
    assert_eq!(rec.skipped.get("aps"), Some(&1));
    assert_eq!(rec.skipped.get("imu"), Some(&1));
    assert_eq!(
        rec.sensor,
        Some(SensorSize {
            width: 240,
            height: 180
        })
    );
    let b = aedat2_bytes(Some("eu.seebetter.ini.chips.davis.DAVIS346B"), &words[..1]);
    assert_eq!(
        decode_bytes(&b, &opts(Format::Aedat2)).unwrap().sensor,
        Some(SensorSize {
            width: 346,
            height: 260
        })
    );
    // An explicit layout overrides the header.
    let mut o = opts(Format::Aedat2);
    o.aedat2_layout = Aedat2Layout::Dvs128;
    let rec = decode_bytes(&b, &o).unwrap();
    assert_eq!(
        rec.sensor,
        Some(SensorSize {
            width: 128,
            height: 128
        })
    );
    // keep_special decodes every word with the DVS masks (tonic's unfiltered reader).
    let mut o = opts(Format::Aedat2);
    o.keep_special = true;
    let b = aedat2_bytes(Some("DAVIS240C"), &words);
    assert_eq!(decode_bytes(&b, &o).unwrap().events.len(), 6);
}

#[test]
fn aedat2_writer_matches_the_hand_built_bytes() {
    let e = ev(&[(0x8000_0001, 9, 5, true), (7, 0, 127, false)]);
    let mut v = Vec::new();
    aedat2::write(&mut v, &e, None).unwrap();
    let body = &v[v.len() - 16..];
    assert_eq!(
        body,
        &[0, 0, 5, 19, 0x80, 0, 0, 1, 0, 0, 127, 0, 0, 0, 0, 7]
    );
}

// ---------------------------------------------------------------------------------------------
// AEDAT 3.1

fn aedat31_header() -> Vec<u8> {
    b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#Start-Time: 2017-01-01 00:00:00 (TZ+0000)\r\n#!END-HEADER\r\n".to_vec()
}

fn pol(x: u32, y: u32, on: bool, valid: bool, t: u32) -> Vec<u8> {
    let d = (x << 17) | (y << 2) | ((on as u32) << 1) | valid as u32;
    [d.to_le_bytes(), t.to_le_bytes()].concat()
}

fn packet(
    ty: i16,
    size: i32,
    ts_off: i32,
    ovf: i32,
    cap: i32,
    num: i32,
    payload: Vec<u8>,
) -> Vec<u8> {
    aedat31::RawPacket {
        event_type: ty,
        event_source: 1,
        event_size: size,
        ts_offset: ts_off,
        ts_overflow: ovf,
        capacity: cap,
        number: num,
        valid: num,
        payload,
    }
    .to_bytes()
}

fn aedat31_fixture() -> Vec<u8> {
    let mut b = aedat31_header();
    // A special packet (timestamp reset) whose bytes would decode as events if misread.
    b.extend(packet(
        0,
        8,
        4,
        0,
        1,
        1,
        [3u32.to_le_bytes(), 5u32.to_le_bytes()].concat(),
    ));
    // A polarity packet with overflow 1: valid ON, invalid, valid OFF at the 15-bit limits.
    let payload = [
        pol(17, 33, true, true, 100),
        pol(1, 1, true, false, 101),
        pol(32767, 0, false, true, 0x7FFF_FFFF),
    ]
    .concat();
    b.extend(packet(1, 8, 4, 1, 3, 3, payload));
    // A frame packet with a 4-byte event size: skipped whole.
    b.extend(packet(2, 4, 0, 0, 2, 2, vec![0xEE; 8]));
    // A polarity packet with a 12-byte stride, timestamp at offset 8, one slack slot.
    let mut p = pol(2, 3, false, true, 0xDEAD);
    p.extend_from_slice(&77u32.to_le_bytes());
    p[4..8].copy_from_slice(&[0xAA; 4]);
    p.extend_from_slice(&[0u8; 12]);
    let mut q = vec![0u8; 12];
    q[..4].copy_from_slice(&((2u32 << 17) | (3 << 2) | 1).to_le_bytes());
    q[8..].copy_from_slice(&77u32.to_le_bytes());
    q.extend_from_slice(&[0u8; 12]);
    b.extend(packet(1, 12, 8, 0, 2, 1, q));
    b
}

#[test]
fn aedat31_packets_validity_overflow_and_stride() {
    let b = aedat31_fixture();
    let rec = decode_bytes(&b, &opts(Format::Aedat31)).unwrap();
    assert_eq!(
        rec.events,
        ev(&[
            ((1 << 31) | 100, 17, 33, true),
            ((1 << 31) | 0x7FFF_FFFF, 32767, 0, false),
            (77, 2, 3, false),
        ])
    );
    assert_eq!(rec.skipped.get("invalid"), Some(&1));
    assert_eq!(rec.skipped.get("packet:special"), Some(&1));
    assert_eq!(rec.skipped.get("packet:frame"), Some(&1));
    assert_eq!(
        rec.sensor,
        Some(SensorSize {
            width: 128,
            height: 128
        })
    );
    // spikingjelly keeps invalid events.
    let mut o = opts(Format::Aedat31);
    o.keep_invalid = true;
    let rec = decode_bytes(&b, &o).unwrap();
    assert_eq!(rec.events.len(), 4);
    assert_eq!(
        rec.events.get(1),
        Some(Event {
            t: (1 << 31) | 101,
            x: 1,
            y: 1,
            on: true
        })
    );
}

#[test]
fn aedat31_streams_identically_in_tiny_reads() {
    let b = aedat31_fixture();
    let bulk = decode_bytes(&b, &opts(Format::Aedat31)).unwrap();
    struct OneByte<'a>(&'a [u8]);
    impl std::io::Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }
    let mut o = opts(Format::Aedat31);
    o.chunk_events = 1;
    let mut r = nmoco_events::Reader::new(OneByte(&b), &o).unwrap();
    let evs = r.read_to_end().unwrap();
    assert_eq!(evs, bulk.events);
    assert_eq!(r.skipped(), &bulk.skipped);
    assert_eq!(r.sensor(), bulk.sensor);
}

#[test]
fn aedat31_header_without_end_line_ends_at_first_binary_byte() {
    let mut b = b"#!AER-DAT3.1\r\n#Source 1: DAVIS346B\r\n".to_vec();
    b.extend(packet(1, 8, 4, 0, 1, 1, pol(300, 200, true, true, 5)));
    let rec = decode_bytes(&b, &opts(Format::Aedat31)).unwrap();
    assert_eq!(rec.events, ev(&[(5, 300, 200, true)]));
    assert_eq!(
        rec.sensor,
        Some(SensorSize {
            width: 346,
            height: 260
        })
    );
}

// ---------------------------------------------------------------------------------------------
// AEDAT 4.0, built by hand (independently of the writer's code)

pub fn flat_io_header(compression: i32, fdp: i64, desc: &str) -> Vec<u8> {
    // vtable first, then the table, then the string.
    let mut v = Vec::new();
    v.extend_from_slice(&20u32.to_le_bytes()); // root at 20
    v.extend_from_slice(b"IOHE");
    for x in [10u16, 24, 4, 8, 16] {
        v.extend_from_slice(&x.to_le_bytes()); // vtable at 8
    }
    v.extend_from_slice(&[0, 0]); // 18..20
    v.extend_from_slice(&12i32.to_le_bytes()); // table at 20, vtable at 8
    v.extend_from_slice(&compression.to_le_bytes()); // 24
    v.extend_from_slice(&fdp.to_le_bytes()); // 28..36
    v.extend_from_slice(&8u32.to_le_bytes()); // 36: string at 44
    v.extend_from_slice(&[0; 4]);
    v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    v.extend_from_slice(desc.as_bytes());
    v.push(0);
    v
}

pub fn flat_events(events: &[(i64, i16, i16, u8)]) -> Vec<u8> {
    // size prefix, root offset, identifier, table with the vtable *after* it (negative soffset).
    let mut v = Vec::new();
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&8u32.to_le_bytes()); // root at 4 + 8 = 12
    v.extend_from_slice(b"EVTS");
    v.extend_from_slice(&(-8i32).to_le_bytes()); // table at 12, vtable at 20
    v.extend_from_slice(&12u32.to_le_bytes()); // field at 16 -> vector at 28
    v.extend_from_slice(&[6, 0, 8, 0, 4, 0]); // vtable at 20
    v.extend_from_slice(&[0, 0]); // 26..28
    v.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for &(t, x, y, on) in events {
        v.extend_from_slice(&t.to_le_bytes());
        v.extend_from_slice(&x.to_le_bytes());
        v.extend_from_slice(&y.to_le_bytes());
        v.extend_from_slice(&[on, 0xCC, 0xCC, 0xCC]);
    }
    let n = v.len() as u32 - 4;
    v[..4].copy_from_slice(&n.to_le_bytes());
    v
}

pub fn desc(streams: &[(u32, &str, u16, u16)]) -> String {
    let mut s = String::from(
        "<dv version=\"2.0\">\n  <node name=\"outInfo\" path=\"/mainloop/Recorder/outInfo/\">\n",
    );
    for &(id, ty, w, h) in streams {
        s.push_str(&format!(
            "    <node name=\"{id}\" path=\"/x/{id}/\">\n      <attr key=\"compression\" type=\"string\">NONE</attr>\n      <attr key=\"typeIdentifier\" type=\"string\">{ty}</attr>\n      <node name=\"info\" path=\"/x/{id}/info/\">\n        <attr key=\"sizeX\" type=\"int\">{w}</attr>\n        <attr key=\"sizeY\" type=\"int\">{h}</attr>\n      </node>\n    </node>\n"
        ));
    }
    s.push_str("  </node>\n</dv>\n");
    s
}

/// magic, IO header, a frame packet, two event packets of stream 2, an event packet of stream
/// 5, and a trailer at file_data_position that is not a packet.
pub fn aedat4_fixture() -> (Vec<u8>, Events) {
    let d = desc(&[
        (1, "FRME", 640, 480),
        (2, "EVTS", 640, 480),
        (5, "EVTS", 32, 32),
    ]);
    let mut packets = Vec::new();
    let mut add = |id: i32, payload: Vec<u8>| {
        packets.extend_from_slice(&id.to_le_bytes());
        packets.extend_from_slice(&(payload.len() as i32).to_le_bytes());
        packets.extend_from_slice(&payload);
    };
    add(1, vec![0x55; 40]);
    add(
        2,
        flat_events(&[
            (1_600_000_000_000_000, 639, 479, 1),
            (1_600_000_000_000_007, 0, 1, 0),
        ]),
    );
    add(5, flat_events(&[(1, 1, 1, 1)]));
    add(2, flat_events(&[(1_600_000_000_000_009, -1, 300, 2)]));
    let io_len = flat_io_header(0, 0, &d).len();
    let fdp = (14 + 4 + io_len + packets.len()) as i64;
    let io = flat_io_header(0, fdp, &d);
    let mut b = b"#!AER-DAT4.0\r\n".to_vec();
    b.extend_from_slice(&(io.len() as u32).to_le_bytes());
    b.extend_from_slice(&io);
    b.extend_from_slice(&packets);
    b.extend_from_slice(&[0x04, 0x22, 0x4D, 0x18, 0xFF, 0xFF, 0xFF]); // trailer, not a packet
    let expected = ev(&[
        (1_600_000_000_000_000, 639, 479, true),
        (1_600_000_000_000_007, 0, 1, false),
        (1_600_000_000_000_009, 65535, 300, true),
    ]);
    (b, expected)
}

#[test]
fn aedat4_hand_built_file_uncompressed() {
    let (b, expected) = aedat4_fixture();
    let rec = decode_bytes(&b, &ReadOptions::default()).unwrap();
    assert_eq!(rec.events, expected);
    assert_eq!(
        rec.sensor,
        Some(SensorSize {
            width: 640,
            height: 480
        })
    );
    assert_eq!(rec.skipped.get("packet:frame"), Some(&1));
    assert_eq!(rec.skipped.get("packet:events"), Some(&1));
    let mut o = opts(Format::Aedat4);
    o.aedat4_stream = Some(5);
    let rec = decode_bytes(&b, &o).unwrap();
    assert_eq!(rec.events, ev(&[(1, 1, 1, true)]));
    assert_eq!(
        rec.sensor,
        Some(SensorSize {
            width: 32,
            height: 32
        })
    );
    o.aedat4_stream = Some(1);
    assert!(decode_bytes(&b, &o).is_err());
}

#[test]
fn aedat4_hand_built_file_lz4_and_zstd() {
    use std::io::Write;
    let events = [(42i64, 3i16, 4i16, 1u8), (43, 5, 6, 0)];
    let raw = flat_events(&events);
    let lz4 = {
        let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
        e.write_all(&raw).unwrap();
        e.finish().unwrap()
    };
    assert_eq!(&lz4[..4], &[0x04, 0x22, 0x4D, 0x18]);
    let zst = zstd::stream::encode_all(&raw[..], 1).unwrap();
    for (code, payload) in [(1, lz4.clone()), (2, lz4), (3, zst.clone()), (4, zst)] {
        let d = desc(&[(0, "EVTS", 128, 128)]);
        let io = flat_io_header(code, -1, &d);
        let mut b = b"#!AER-DAT4.0\r\n".to_vec();
        b.extend_from_slice(&(io.len() as u32).to_le_bytes());
        b.extend_from_slice(&io);
        b.extend_from_slice(&0i32.to_le_bytes());
        b.extend_from_slice(&(payload.len() as i32).to_le_bytes());
        b.extend_from_slice(&payload);
        let rec = decode_bytes(&b, &ReadOptions::default()).unwrap();
        assert_eq!(
            rec.events,
            ev(&[(42, 3, 4, true), (43, 5, 6, false)]),
            "compression {code}"
        );
    }
}

#[test]
fn inspect_summaries_of_the_hand_built_fixtures() {
    use nmoco_events::Summary;
    let s = Summary::new(
        Format::NBin,
        &decode_bytes(&NBIN, &opts(Format::NBin)).unwrap(),
    );
    assert_eq!((s.events, s.on, s.off), (2, 1, 1));
    assert_eq!((s.t_min, s.t_max), (Some(10 + 8192), Some(0x012345)));
    assert_eq!(
        (s.x_min, s.x_max, s.y_min, s.y_max),
        (Some(3), Some(255), Some(4), Some(7))
    );
    assert_eq!((s.sensor, s.skipped.get("overflow")), (None, Some(&2)));
    let s = Summary::new(
        Format::Aedat31,
        &decode_bytes(&aedat31_fixture(), &opts(Format::Aedat31)).unwrap(),
    );
    assert_eq!((s.events, s.on, s.off), (3, 1, 2));
    assert_eq!(
        (s.t_min, s.t_max),
        (Some(77), Some((1 << 31) | 0x7FFF_FFFF))
    );
    assert_eq!(
        (s.x_min, s.x_max, s.y_min, s.y_max),
        (Some(2), Some(32767), Some(0), Some(33))
    );
    assert_eq!(s.skipped.len(), 3);
    let (b, expected) = aedat4_fixture();
    let s = Summary::new(
        Format::Aedat4,
        &decode_bytes(&b, &ReadOptions::default()).unwrap(),
    );
    assert_eq!(s.sha256_txyp, nmoco_events::sha256_txyp(&expected));
    assert_eq!((s.x_min, s.x_max), (Some(0), Some(65535)));
    let empty = Summary::new(
        Format::Aedat2,
        &decode_bytes(b"#!AER-DAT2.0\r\n", &opts(Format::Aedat2)).unwrap(),
    );
    assert_eq!((empty.events, empty.t_min, empty.x_max), (0, None, None));
    // The digest of no events is the sha256 of the empty string.
    assert_eq!(
        empty.sha256_txyp,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn sha256_txyp_layout_is_four_little_endian_i64_columns() {
    use sha2::{Digest, Sha256};
    let e = ev(&[(-1, 2, 3, true), (1 << 40, 65535, 0, false)]);
    let mut bytes = Vec::new();
    for v in [-1i64, 1 << 40, 2, 65535, 3, 0, 1, 0] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let want: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(nmoco_events::sha256_txyp(&e), want);
}
