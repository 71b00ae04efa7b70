//! Property tests: writer → reader round-trips any event sequence in each format's domain
//! exactly, in bulk and when streamed in random chunk sizes.

use nmoco_events::{
    Compression, Event, Events, Format, NbinOverflow, ReadOptions, Reader, aedat4, decode_bytes,
    nbin,
};
use proptest::prelude::*;

fn to_events(v: Vec<(i64, u16, u16, bool)>) -> Events {
    v.into_iter()
        .map(|(t, x, y, on)| Event { t, x, y, on })
        .collect()
}

fn check(bytes: &[u8], f: Format, ev: &Events, chunk: usize) -> Result<(), TestCaseError> {
    let rec = decode_bytes(bytes, &ReadOptions::with_format(f))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&rec.events, ev);
    let o = ReadOptions {
        format: Some(f),
        chunk_events: chunk,
        ..Default::default()
    };
    let streamed = Reader::new(bytes, &o)
        .and_then(|mut r| r.read_to_end())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&streamed, ev);
    Ok(())
}

fn sorted(mut v: Vec<(i64, u16, u16, bool)>) -> Vec<(i64, u16, u16, bool)> {
    v.sort_by_key(|e| e.0);
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn nbin_round_trips(
        v in prop::collection::vec((0i64..(1 << 27), 0u16..256, (0u16..256).prop_filter("240 is the marker", |y| *y != 240), any::<bool>()), 0..600),
        chunk in 1usize..300,
    ) {
        let ev = to_events(sorted(v));
        let mut b = Vec::new();
        nbin::write(&mut b, &ev, None).unwrap();
        check(&b, Format::NBin, &ev, chunk)?;
    }

    #[test]
    fn nbin_without_overflow_round_trips_unsorted(
        v in prop::collection::vec((0i64..(1 << 23), 0u16..256, 0u16..256, any::<bool>()), 0..600),
    ) {
        let ev = to_events(v);
        let mut b = Vec::new();
        nbin::write_with(&mut b, &ev, NbinOverflow::Ignore).unwrap();
        let o = ReadOptions { format: Some(Format::NBin), nbin_overflow: NbinOverflow::Ignore, ..Default::default() };
        prop_assert_eq!(decode_bytes(&b, &o).unwrap().events, ev);
    }

    #[test]
    fn aedat2_round_trips_any_order(
        v in prop::collection::vec((0i64..=u32::MAX as i64, 0u16..128, 0u16..128, any::<bool>()), 0..600),
        chunk in 1usize..300,
    ) {
        let ev = to_events(v);
        let mut b = Vec::new();
        nmoco_events::aedat2::write(&mut b, &ev, None).unwrap();
        check(&b, Format::Aedat2, &ev, chunk)?;
    }

    #[test]
    fn aedat31_round_trips_any_order(
        v in prop::collection::vec((0i64..=i64::MAX, 0u16..=0x7FFF, 0u16..=0x7FFF, any::<bool>()), 0..600),
        chunk in 1usize..300,
    ) {
        let ev = to_events(v);
        let mut b = Vec::new();
        nmoco_events::aedat31::write(&mut b, &ev, None).unwrap();
        check(&b, Format::Aedat31, &ev, chunk)?;
    }

    #[test]
    fn aedat4_round_trips_anything(
        v in prop::collection::vec((any::<i64>(), any::<u16>(), any::<u16>(), any::<bool>()), 0..600),
        chunk in 1usize..300,
        per_packet in 1usize..200,
        comp in 0usize..5,
    ) {
        let ev = to_events(v);
        let compression = [Compression::None, Compression::Lz4, Compression::Lz4High, Compression::Zstd, Compression::ZstdHigh][comp];
        let mut b = Vec::new();
        let opts = aedat4::WriteOptions { compression, packet_events: per_packet, ..Default::default() };
        aedat4::write_with(&mut b, &ev, None, &opts).unwrap();
        check(&b, Format::Aedat4, &ev, chunk)?;
    }
}
