//! Helpers shared by the integration tests.
#![allow(dead_code)]

use nmoco_events::{Event, Events};

/// A small deterministic generator (splitmix64) so tests need no rand dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` events with sorted timestamps starting at `t0`, x < w, y < h.
pub fn events(n: usize, seed: u64, t0: i64, w: u16, h: u16) -> Events {
    let mut r = Rng(seed);
    let mut t = t0;
    (0..n)
        .map(|_| {
            t += r.below(50) as i64;
            Event {
                t,
                x: r.below(w as u64) as u16,
                y: r.below(h as u64) as u16,
                on: r.below(2) == 1,
            }
        })
        .collect()
}
pub mod sample;
