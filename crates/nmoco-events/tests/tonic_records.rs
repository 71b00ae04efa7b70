//! `nbin::decode_tonic_records` (the one-pass decoder into tonic's packed 13-byte records)
//! against its reference twin, the column decoder `decode_bytes`: same events, same skipped
//! counts, same errors, on random byte strings (overflow markers frequent or rare, so that
//! both the vector kernel's marker-free groups and the scalar loop are exercised).

use nmoco_events::{Events, Format, NbinOverflow, ReadOptions, decode_bytes, nbin};
use proptest::prelude::*;

/// The columns interleaved into tonic's packed layout (x i16, y i16, t i64, p bool).
fn packed(ev: &Events) -> Vec<u8> {
    let mut out = Vec::with_capacity(ev.t.len() * nbin::TONIC_RECORD);
    for i in 0..ev.t.len() {
        out.extend_from_slice(&(ev.x[i] as i16).to_le_bytes());
        out.extend_from_slice(&(ev.y[i] as i16).to_le_bytes());
        out.extend_from_slice(&ev.t[i].to_le_bytes());
        out.push(u8::from(ev.on[i]));
    }
    out
}

fn check(data: &[u8], overflow: NbinOverflow, partial: bool) -> Result<(), TestCaseError> {
    let opts = ReadOptions {
        format: Some(Format::NBin),
        nbin_overflow: overflow,
        allow_partial_record: partial,
        ..ReadOptions::default()
    };
    let reference = decode_bytes(data, &opts);
    let mut out = vec![0xAAu8; data.len() / nbin::RECORD * nbin::TONIC_RECORD + 7];
    let mut skipped = Default::default();
    let fused = nbin::decode_tonic_records(data, &opts, &mut out, &mut skipped);
    match (reference, fused) {
        (Ok(rec), Ok(n)) => {
            prop_assert_eq!(n, rec.events.t.len());
            prop_assert_eq!(&out[..n * nbin::TONIC_RECORD], &packed(&rec.events)[..]);
            prop_assert_eq!(&skipped, &rec.skipped);
        }
        (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
        (a, b) => prop_assert!(
            false,
            "reference {:?} vs fused {:?}",
            a.map(|r| r.events.t.len()),
            b
        ),
    }
    Ok(())
}

/// A random record that is an overflow marker with probability `1 / every`.
fn record(every: u32) -> impl Strategy<Value = [u8; 5]> {
    (any::<[u8; 5]>(), 0..every).prop_map(|(mut r, k)| {
        if k == 0 {
            r[1] = nbin::OVERFLOW_Y;
        }
        r
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_column_decoder(
        recs in (prop_oneof![Just(4u32), Just(40), Just(400)])
            .prop_flat_map(|every| proptest::collection::vec(record(every), 0..300)),
        tail in proptest::collection::vec(any::<u8>(), 0..5),
        mode in 0usize..3,
        partial in any::<bool>(),
    ) {
        let mut data: Vec<u8> = recs.concat();
        data.extend_from_slice(&tail);
        let overflow = [NbinOverflow::Tonic, NbinOverflow::Wrap23, NbinOverflow::Ignore][mode];
        check(&data, overflow, partial)?;
    }
}

#[test]
fn undersized_buffer_is_an_error() {
    let data = [1u8, 2, 0, 0, 5, 3, 4, 0x80, 0, 6];
    let mut out = [0u8; 13];
    let mut skipped = Default::default();
    let r = nbin::decode_tonic_records(&data, &ReadOptions::default(), &mut out, &mut skipped);
    assert!(
        matches!(r, Err(nmoco_events::Error::TooLarge { .. })),
        "{r:?}"
    );
    let mut out = [0u8; 26];
    let n = nbin::decode_tonic_records(&data, &ReadOptions::default(), &mut out, &mut skipped);
    assert_eq!(n.ok(), Some(2));
    assert_eq!(&out[13..26], &[3, 0, 4, 0, 6, 0, 0, 0, 0, 0, 0, 0, 1]);
}
