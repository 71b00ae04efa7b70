#![no_main]

#[path = "common.rs"]
mod common;

use nmoco_events::{Format, NbinOverflow, ReadOptions, decode_bytes, nbin};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::check(Format::NBin, data);
    check_tonic_records(data);
});

/// `nbin::decode_tonic_records` (the one-pass decoder into tonic's packed records, behind the
/// Python wheel's `read`) against the column decoder: the same events, skip counts and
/// success or failure. The first byte picks the options, as in `common::check`.
fn check_tonic_records(data: &[u8]) {
    let Some((&sel, data)) = data.split_first() else {
        return;
    };
    let opts = ReadOptions {
        format: Some(Format::NBin),
        nbin_overflow: match sel & 3 {
            0 => NbinOverflow::Tonic,
            1 => NbinOverflow::Wrap23,
            _ => NbinOverflow::Ignore,
        },
        allow_partial_record: sel & 64 != 0,
        ..Default::default()
    };
    let bulk = decode_bytes(data, &opts);
    let mut out = vec![0u8; data.len() / nbin::RECORD * nbin::TONIC_RECORD];
    let mut skipped = Default::default();
    let fused = nbin::decode_tonic_records(data, &opts, &mut out, &mut skipped);
    match (&bulk, &fused) {
        (Ok(rec), Ok(n)) => {
            let ev = &rec.events;
            assert_eq!(*n, ev.t.len(), "event counts differ");
            for (i, r) in out.chunks_exact(nbin::TONIC_RECORD).take(*n).enumerate() {
                let x = u16::from_le_bytes([r[0], r[1]]);
                let y = u16::from_le_bytes([r[2], r[3]]);
                let t = i64::from_le_bytes([r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11]]);
                assert_eq!(
                    (x, y, t, r[12]),
                    (ev.x[i], ev.y[i], ev.t[i], u8::from(ev.on[i]))
                );
            }
            assert_eq!(&skipped, &rec.skipped, "skip counts differ");
        }
        (Err(_), Err(_)) => {}
        (b, f) => panic!("columns {:?} vs tonic records {:?}", b.as_ref().err(), f),
    }
}
