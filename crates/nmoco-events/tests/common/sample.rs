//! The committed sample recording `datasets/sample/sample.aedat`: a bar sweeping across a
//! 128x128 DVS128 sensor, 4000 events over 0.4 s, written as AEDAT 3.1. Deterministic: the
//! example `make_sample` and the test `sample` both build it from this function.

use nmoco_events::{Event, Events, SensorSize};

pub const SENSOR: SensorSize = SensorSize {
    width: 128,
    height: 128,
};

pub fn sample_events() -> Events {
    let mut state: u64 = 0x5EED;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut t = 1_000i64;
    (0..4000)
        .map(|_| {
            t += 50 + (next() % 101) as i64;
            // The bar's leading edge (ON) and trailing edge (OFF) move right over time.
            let edge = ((t - 1_000) / 3_000) % 128;
            let on = next() % 2 == 0;
            let x = if on { edge } else { (edge + 120) % 128 };
            let jitter = (next() % 3) as i64 - 1;
            let y = 32 + (next() % 64) as i64;
            Event {
                t,
                x: (x + jitter).rem_euclid(128) as u16,
                y: y as u16,
                on,
            }
        })
        .collect()
}
