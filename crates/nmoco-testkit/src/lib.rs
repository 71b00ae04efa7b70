//! Helpers shared by the workspace's parity tests, benchmarks' checks and device checks
//! (`examples/gpu_check/`, `examples/gpu_conv_check.rs`): deterministic pseudo-random inputs,
//! tensors flattened to `Vec<f32>`, error measures and a synchronised median timer.
//!
//! Only ever a dev-dependency (or behind a `testing` feature that only dev-dependencies turn
//! on): nothing here is compiled into a release build of the libraries or the binary.

#![forbid(unsafe_code)]

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};

/// A xorshift64 generator: hermetic, reproducible test data with no RNG crate.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from a small seed (spread over the state by a multiplication; never 0).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A generator starting from the raw state `state` (must not be 0).
    pub fn from_state(state: u64) -> Self {
        Self(state)
    }

    /// The next raw 64-bit state.
    pub fn next_u64(&mut self) -> u64 {
        let mut s = self.0;
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        self.0 = s;
        s
    }

    /// The next value in `[0, 1)` (24 random bits, exact in f32).
    pub fn next_unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A 64-bit linear congruential generator (Knuth's MMIX constants), the other generator the
/// tests draw from.
#[derive(Clone, Debug)]
pub struct Lcg(u64);

impl Lcg {
    /// The multiplier.
    pub const A: u64 = 6364136223846793005;
    /// The increment.
    pub const C: u64 = 1442695040888963407;

    /// A generator whose state starts at one step from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(Self::A).wrapping_add(Self::C))
    }

    /// A generator starting from the raw state `state`.
    pub fn from_state(state: u64) -> Self {
        Self(state)
    }

    /// The next raw 64-bit state.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(Self::A).wrapping_add(Self::C);
        self.0
    }

    /// The next value in `[0, 1)` (24 random bits, exact in f32).
    pub fn next_unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// `n` deterministic pseudo-random values in `[lo, hi)` from `seed` (xorshift).
pub fn rand_vec(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut rng = XorShift::new(seed);
    (0..n).map(|_| lo + (hi - lo) * rng.next_unit()).collect()
}

/// A CPU f32 tensor of [`rand_vec`] values.
pub fn rand_tensor(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Result<Tensor> {
    let n = shape.iter().product();
    Tensor::from_vec(rand_vec(n, lo, hi, seed), shape, &Device::Cpu)
}

/// All elements of `t` (any dtype, any device) as f32, in row-major order.
pub fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()
}

/// Largest `|a - b|` relative to `max(1, max |b|)`.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

/// The median wall time in ms of `reps` runs of `f` after `warmup` runs, each run bracketed by
/// device synchronisation; `f`'s result is dropped after the synchronisation.
pub fn median_ms<T>(
    dev: &Device,
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> Result<T>,
) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    dev.synchronize()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        let out = f()?;
        dev.synchronize()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        drop(out);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rand_vec_is_reproducible_and_in_range() {
        let a = rand_vec(1000, -1.0, 3.0, 5);
        assert_eq!(a, rand_vec(1000, -1.0, 3.0, 5));
        assert_ne!(a, rand_vec(1000, -1.0, 3.0, 6));
        assert!(a.iter().all(|&v| (-1.0..3.0).contains(&v)));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!((mean - 1.0).abs() < 0.2, "{mean}");
    }

    #[test]
    fn rel_err_scales_by_the_reference() {
        assert_eq!(rel_err(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert_eq!(rel_err(&[0.5], &[0.0]), 0.5);
        assert_eq!(rel_err(&[9.0, 1.0], &[10.0, 1.0]), 0.1);
    }
}
