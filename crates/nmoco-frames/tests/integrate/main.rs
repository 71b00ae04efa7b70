//! Golden hand-made cases for every slicing mode, resize mode and option.

mod options;
mod resize;
mod slicing;

use nmoco_events::{Events, SensorSize};
use nmoco_frames::{FrameConfig, Frames, Slicing};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Events from `(t, x, y, on)` tuples, in the given (file) order.
fn ev(list: &[(i64, u16, u16, bool)]) -> Events {
    Events {
        t: list.iter().map(|e| e.0).collect(),
        x: list.iter().map(|e| e.1).collect(),
        y: list.iter().map(|e| e.2).collect(),
        on: list.iter().map(|e| e.3).collect(),
    }
}

fn sensor(width: u16, height: u16) -> SensorSize {
    SensorSize { width, height }
}

fn cfg(t: usize, h: usize, w: usize, slicing: Slicing) -> FrameConfig {
    FrameConfig {
        t,
        slicing,
        height: h,
        width: w,
        ..FrameConfig::default()
    }
}

/// Frames from explicit `(ti, c, y, x, value)` entries on a zero background.
fn frames_with(
    t: usize,
    h: usize,
    w: usize,
    entries: &[(usize, usize, usize, usize, f32)],
) -> Frames {
    let mut f = Frames::zeros(t, h, w);
    for &(ti, c, y, x, v) in entries {
        let i = f.index(ti, c, y, x);
        f.data[i] += v;
    }
    f
}

/// Per-frame sums.
fn frame_sums(f: &Frames) -> Vec<f32> {
    (0..f.t).map(|i| f.frame(i).iter().sum()).collect()
}

fn random_events(n: usize, w: u16, h: u16, seed: u64) -> Events {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut e = Events::with_capacity(n);
    for i in 0..n {
        e.t.push(i as i64 * 3 + rng.random_range(0..3));
        e.x.push(rng.random_range(0..w));
        e.y.push(rng.random_range(0..h));
        e.on.push(rng.random());
    }
    e
}
