//! The FIFO queue of negative keys.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};

/// `K` normalised keys of dimension `C` (f32, row-major `[K, C]`), written in FIFO order: each
/// enqueued row overwrites the oldest one. Rows are written in order at `ptr` (mod `K`), so
/// batches of any size wrap around correctly, also when `K` is not a multiple of them.
///
/// The keys live in a tensor on the training device ([`Queue::to_device`]): enqueueing splices
/// the batch's keys in with device copies and [`Queue::tensor`] hands out the stored tensor, so a
/// step never round-trips the queue through the host. Only the write pointer is kept here.
#[derive(Debug, Clone)]
pub struct Queue {
    len: usize,
    dim: usize,
    keys: Tensor,
    ptr: usize,
}

impl PartialEq for Queue {
    /// Same shape, pointer and key bits (reads the keys back; meant for tests).
    fn eq(&self, other: &Self) -> bool {
        let bits = |q: &Queue| {
            q.keys()
                .map(|k| k.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
                .ok()
        };
        self.len == other.len
            && self.dim == other.dim
            && self.ptr == other.ptr
            && bits(self).is_some()
            && bits(self) == bits(other)
    }
}

impl Queue {
    /// A queue filled with random unit vectors drawn from `seed` (as MoCo initialises it), on
    /// the CPU.
    pub fn random(len: usize, dim: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut keys: Vec<f32> = (0..len * dim)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        for row in keys.chunks_mut(dim.max(1)) {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|x| *x /= n);
        }
        Self::from_parts(len, dim, keys, 0).expect("random queue has a consistent shape")
    }

    /// Rebuild a queue from its stored rows and write pointer (checkpoint loading), on the CPU.
    pub fn from_parts(len: usize, dim: usize, keys: Vec<f32>, ptr: usize) -> Result<Self> {
        if keys.len() != len * dim || (len > 0 && ptr >= len) {
            return Err(Error::Shape {
                what: "queue state",
                expected: format!("{len}x{dim} keys and ptr < {len}"),
                got: vec![keys.len(), ptr],
            });
        }
        Ok(Self {
            len,
            dim,
            keys: Tensor::from_vec(keys, (len, dim), &Device::Cpu)?,
            ptr,
        })
    }

    /// The same queue with its keys on `device` (one copy; none when already there).
    pub fn to_device(self, device: &Device) -> Result<Self> {
        Ok(Self {
            keys: self.keys.to_device(device)?,
            ..self
        })
    }

    /// Number of keys `K`.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Key dimension `C`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Index of the next row to be overwritten (the oldest key).
    pub fn ptr(&self) -> usize {
        self.ptr
    }

    /// The stored rows, row-major `[K, C]`, read back to the host (checkpoints, tests).
    pub fn keys(&self) -> Result<Vec<f32>> {
        Ok(self.keys.flatten_all()?.to_vec1::<f32>()?)
    }

    /// Enqueue `rows` (row-major, a multiple of `C` long), dequeuing the oldest keys.
    pub fn push_rows(&mut self, rows: &[f32]) -> Result<()> {
        if self.dim == 0 || !rows.len().is_multiple_of(self.dim) {
            return Err(Error::Shape {
                what: "enqueued keys",
                expected: format!("rows of {}", self.dim),
                got: vec![rows.len()],
            });
        }
        let n = rows.len() / self.dim;
        let t = Tensor::from_slice(rows, (n, self.dim), self.keys.device())?;
        self.push(&t)
    }

    /// Enqueue a `[B, C]` tensor of keys (any float dtype, stored as f32; moved to the queue's
    /// device if it is elsewhere). On the queue's device this is a few copies and no read-back.
    pub fn push(&mut self, keys: &Tensor) -> Result<()> {
        if keys.rank() != 2 || keys.dim(1)? != self.dim || self.dim == 0 {
            return Err(Error::Shape {
                what: "enqueued keys",
                expected: format!("[B, {}]", self.dim),
                got: keys.dims().to_vec(),
            });
        }
        if self.len == 0 || keys.dim(0)? == 0 {
            return Ok(());
        }
        let mut rows = keys
            .detach()
            .to_dtype(candle_core::DType::F32)?
            .to_device(self.keys.device())?;
        let mut n = rows.dim(0)?;
        if n > self.len {
            // Only the last K rows survive; writing them from where the earlier ones would have
            // ended keeps the FIFO order.
            self.ptr = (self.ptr + n - self.len) % self.len;
            rows = rows.narrow(0, n - self.len, self.len)?;
            n = self.len;
        }
        let first = n.min(self.len - self.ptr);
        let mut parts: Vec<Tensor> = Vec::with_capacity(4);
        if first < n {
            // Wraps: rows[first..] go to the start, rows[..first] to the end.
            parts.push(rows.narrow(0, first, n - first)?);
            let mid = self.ptr - (n - first);
            if mid > 0 {
                parts.push(self.keys.narrow(0, n - first, mid)?);
            }
            parts.push(rows.narrow(0, 0, first)?);
        } else {
            if self.ptr > 0 {
                parts.push(self.keys.narrow(0, 0, self.ptr)?);
            }
            parts.push(rows);
            let rest = self.len - self.ptr - n;
            if rest > 0 {
                parts.push(self.keys.narrow(0, self.ptr + n, rest)?);
            }
        }
        self.keys = Tensor::cat(&parts, 0)?;
        self.ptr = (self.ptr + n) % self.len;
        Ok(())
    }

    /// The queue as a `[K, C]` f32 tensor on `device`: the stored tensor itself when it is
    /// already there (no copy), else a copy.
    pub fn tensor(&self, device: &Device) -> Result<Tensor> {
        if self.keys.device().same_device(device) {
            Ok(self.keys.clone())
        } else {
            Ok(self.keys.to_device(device)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(vals: &[f32]) -> Vec<f32> {
        vals.iter().flat_map(|&v| [v, -v]).collect()
    }

    #[test]
    fn random_rows_are_unit_vectors_and_seeded() {
        let q = Queue::random(5, 3, 7);
        for r in q.keys().unwrap().chunks(3) {
            let n: f32 = r.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-5);
        }
        assert_eq!(q, Queue::random(5, 3, 7));
        assert_ne!(q, Queue::random(5, 3, 8));
    }

    #[test]
    fn fifo_with_wrap_around_and_batches_that_do_not_divide_k() {
        let mut q = Queue::random(5, 2, 0);
        q.push_rows(&rows(&[1., 2., 3.])).unwrap();
        assert_eq!(q.ptr(), 3);
        // A batch of 3 into K = 5 wraps: rows 3, 4, then 0.
        q.push_rows(&rows(&[4., 5., 6.])).unwrap();
        assert_eq!(q.ptr(), 1);
        assert_eq!(q.keys().unwrap(), rows(&[6., 2., 3., 4., 5.]));
        // The oldest key (2) is the next to go.
        q.push_rows(&rows(&[7.])).unwrap();
        assert_eq!(q.keys().unwrap(), rows(&[6., 7., 3., 4., 5.]));
        // A batch longer than the queue keeps only its last K rows.
        q.push_rows(&rows(&[10., 11., 12., 13., 14., 15., 16.]))
            .unwrap();
        let mut sorted: Vec<f32> = q.keys().unwrap().chunks(2).map(|r| r[0]).collect();
        sorted.sort_by(f32::total_cmp);
        assert_eq!(sorted, vec![12., 13., 14., 15., 16.]);
    }

    #[test]
    fn tensor_round_trip_and_shape_errors() {
        let dev = Device::Cpu;
        let mut q = Queue::random(4, 2, 1);
        let t = Tensor::new(&[[1f32, 0.], [0., 1.]], &dev).unwrap();
        q.push(&t).unwrap();
        let back = q.tensor(&dev).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(back[0], vec![1., 0.]);
        assert_eq!(back[1], vec![0., 1.]);
        let bad = Tensor::new(&[[1f32, 0., 0.]], &dev).unwrap();
        assert!(q.push(&bad).is_err());
        assert!(Queue::from_parts(4, 2, vec![0.; 7], 0).is_err());
        assert!(Queue::from_parts(4, 2, vec![0.; 8], 4).is_err());
        let r = Queue::from_parts(4, 2, q.keys().unwrap(), q.ptr()).unwrap();
        assert_eq!(r, q);
    }

    /// The reference FIFO: one row at a time at `ptr`.
    fn reference_push(keys: &mut [f32], ptr: &mut usize, len: usize, dim: usize, rows: &[f32]) {
        for row in rows.chunks(dim) {
            keys[*ptr * dim..(*ptr + 1) * dim].copy_from_slice(row);
            *ptr = (*ptr + 1) % len;
        }
    }

    #[test]
    fn spliced_pushes_match_the_row_by_row_fifo() {
        use rand::Rng;
        let (len, dim) = (7, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut q = Queue::random(len, dim, 2);
        let (mut keys, mut ptr) = (q.keys().unwrap(), 0usize);
        // Batch sizes around every boundary: empty, exact fit, wrapping, longer than K.
        for &b in &[3usize, 4, 0, 2, 7, 5, 9, 1, 6, 15, 3] {
            let rows: Vec<f32> = (0..b * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            let t = Tensor::from_vec(rows.clone(), (b, dim), &Device::Cpu).unwrap();
            q.push(&t).unwrap();
            reference_push(&mut keys, &mut ptr, len, dim, &rows);
            assert_eq!(q.ptr(), ptr, "after a batch of {b}");
            assert_eq!(q.keys().unwrap(), keys, "after a batch of {b}");
        }
        // f64 keys are stored as f32; a key with a graph is detached.
        let w = candle_core::Var::new(&[[0.5f64, 0.25, 1.0]], &Device::Cpu).unwrap();
        let k = (w.as_tensor() * 2.0).unwrap();
        q.push(&k).unwrap();
        assert!(!q.tensor(&Device::Cpu).unwrap().track_op());
        let at = ((q.ptr() + len - 1) % len) * dim;
        assert_eq!(&q.keys().unwrap()[at..at + dim], &[1.0f32, 0.5, 2.0]);
    }
}
