//! The FIFO queue of negative keys.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};

/// `K` normalised keys of dimension `C`, stored row-major on the host, written in FIFO order:
/// each enqueued row overwrites the oldest one. Rows are written one by one at `ptr` (mod `K`),
/// so batches of any size wrap around correctly, also when `K` is not a multiple of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    len: usize,
    dim: usize,
    keys: Vec<f32>,
    ptr: usize,
}

impl Queue {
    /// A queue filled with random unit vectors drawn from `seed` (as MoCo initialises it).
    pub fn random(len: usize, dim: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut keys: Vec<f32> = (0..len * dim)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        for row in keys.chunks_mut(dim.max(1)) {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|x| *x /= n);
        }
        Self {
            len,
            dim,
            keys,
            ptr: 0,
        }
    }

    /// Rebuild a queue from its stored rows and write pointer (checkpoint loading).
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
            keys,
            ptr,
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

    /// The stored rows, row-major `[K, C]`.
    pub fn keys(&self) -> &[f32] {
        &self.keys
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
        if self.len == 0 {
            return Ok(());
        }
        for row in rows.chunks(self.dim) {
            let at = self.ptr * self.dim;
            self.keys[at..at + self.dim].copy_from_slice(row);
            self.ptr = (self.ptr + 1) % self.len;
        }
        Ok(())
    }

    /// Enqueue a `[B, C]` tensor of keys.
    pub fn push(&mut self, keys: &Tensor) -> Result<()> {
        if keys.rank() != 2 || keys.dim(1)? != self.dim {
            return Err(Error::Shape {
                what: "enqueued keys",
                expected: format!("[B, {}]", self.dim),
                got: keys.dims().to_vec(),
            });
        }
        let v = keys
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        self.push_rows(&v)
    }

    /// The queue as a `[K, C]` tensor on `device`.
    pub fn tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.keys,
            (self.len, self.dim),
            device,
        )?)
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
        for r in q.keys().chunks(3) {
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
        assert_eq!(q.keys(), &rows(&[6., 2., 3., 4., 5.])[..]);
        // The oldest key (2) is the next to go.
        q.push_rows(&rows(&[7.])).unwrap();
        assert_eq!(q.keys(), &rows(&[6., 7., 3., 4., 5.])[..]);
        // A batch longer than the queue keeps only its last K rows.
        q.push_rows(&rows(&[10., 11., 12., 13., 14., 15., 16.]))
            .unwrap();
        let mut sorted: Vec<f32> = q.keys().chunks(2).map(|r| r[0]).collect();
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
        let r = Queue::from_parts(4, 2, q.keys().to_vec(), q.ptr()).unwrap();
        assert_eq!(r, q);
    }
}
