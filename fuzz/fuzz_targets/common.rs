// Shared by every fuzz target: decode `data` as `format` in bulk and by streaming with a small
// chunk and a small read size, and check both agree. Any panic, hang or out-of-memory is a bug.

use nmoco_events::{Events, Format, ReadOptions, Reader, decode_bytes};

/// A reader that hands out at most `step` bytes per call, to exercise buffer refills.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.len().min(buf.len()).min(self.step);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

pub fn check(format: Format, data: &[u8]) {
    // The first byte picks reader options, so every quirk path is fuzzed.
    let Some((&sel, data)) = data.split_first() else {
        return;
    };
    let opts = ReadOptions {
        format: Some(format),
        nbin_overflow: match sel & 3 {
            0 => nmoco_events::NbinOverflow::Tonic,
            1 => nmoco_events::NbinOverflow::Wrap23,
            _ => nmoco_events::NbinOverflow::Ignore,
        },
        aedat2_layout: match (sel >> 2) & 3 {
            0 => nmoco_events::Aedat2Layout::Auto,
            1 => nmoco_events::Aedat2Layout::Dvs128,
            2 => nmoco_events::Aedat2Layout::Davis240,
            _ => nmoco_events::Aedat2Layout::Davis346,
        },
        keep_special: sel & 16 != 0,
        keep_invalid: sel & 32 != 0,
        allow_partial_record: sel & 64 != 0,
        max_packet_bytes: 4 << 20,
        max_header_bytes: 1 << 20,
        chunk_events: 1 + (sel as usize >> 7) * 63,
        ..Default::default()
    };
    let bulk = decode_bytes(data, &opts);
    let streamed = (|| {
        let mut r = Reader::new(
            Trickle {
                data,
                step: 1 + (data.len() % 97),
            },
            &opts,
        )?;
        let mut all = Events::new();
        while r.read_chunk(&mut all)? > 0 {}
        Ok::<_, nmoco_events::Error>((all, r.skipped().clone(), r.sensor()))
    })();
    match (&bulk, &streamed) {
        (Ok(b), Ok((ev, skipped, sensor))) => {
            assert!(b.events.columns_consistent());
            assert_eq!(&b.events, ev, "bulk and streaming events differ");
            assert_eq!(&b.skipped, skipped, "bulk and streaming skip counts differ");
            assert_eq!(&b.sensor, sensor, "bulk and streaming sensor differ");
            let _ = nmoco_events::sha256_txyp(&b.events);
        }
        (Err(_), Err(_)) => {}
        (b, s) => panic!("bulk {:?} vs streaming {:?}", b.as_ref().err(), s.as_ref().err()),
    }
}
