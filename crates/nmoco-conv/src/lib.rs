//! Fast CPU convolution and batch-norm custom ops for candle (forward and backward).
//!
//! candle 0.11's CPU `conv2d` unfolds whole images, runs its input gradient as a
//! direct-loop transposed convolution and reduces batch statistics on one thread.
//! This crate replaces those paths for contiguous-or-not `f32` tensors on the CPU
//! (and the convolutions on CUDA devices):
//!
//! - [`conv2d`] / [`conv2d_bias`]: tiled im2col (tiles of ~512 output pixels that
//!   stay in L2, in a per-thread reusable scratch buffer) plus the `gemm` crate,
//!   threaded over (image, group, tile) with rayon; 1×1 stride-1 convolutions skip
//!   the im2col. The input gradient of a stride-1 convolution is computed as a
//!   forward convolution of the output gradient with the flipped, transposed kernel;
//!   other strides use gemm + col2im per (image, group). The weight gradient
//!   accumulates per-thread partial products, reduced at the end.
//! - Spike inputs: an (image, group) whose input density is at most the threshold
//!   of [`sparse_thresholds`] (defaults [`DEFAULT_SPARSE_THRESHOLDS`], from the
//!   measured crossovers) skips im2col + gemm in the forward and weight-gradient
//!   products and scatters each non-zero through the kernel taps instead.
//! - [`batch_norm_train`], [`batch_norm_eval`], [`channel_affine`]: fused,
//!   multi-threaded statistics and scale-and-shift passes; [`fold_batch_norm`]
//!   folds inference batch norm into a convolution's weights and bias.
//!
//! - On CUDA (feature `cuda`), [`conv2d`], [`conv2d_bias`], [`conv2d_grad_input`] and
//!   [`conv2d_grad_weight`] run cuDNN's forward, backward-data and backward-filter
//!   convolutions (f32, bf16, f16 with f32 accumulation; TF32 for f32 as configured by
//!   [`CudaConvConfig`]), with descriptors and the algorithm choice cached per shape and a
//!   reused workspace; `NMOCO_CUDA_CONV=candle` keeps candle's own path for diagnosis.
//!
//! Every op has a reference twin built from plain candle ops ([`conv2d_reference`],
//! [`batch_norm_train_reference`], [`batch_norm_eval_reference`]) and falls back to
//! it on other devices or dtypes. Gradients are computed by dedicated custom ops and
//! are not differentiable again (no second-order graphs).
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! # fn main() -> candle_core::Result<()> {
//! let x = Var::randn(0f32, 1., (2, 4, 8, 8), &Device::Cpu)?;
//! let w = Var::randn(0f32, 0.1, (6, 4, 3, 3), &Device::Cpu)?;
//! let y = nmoco_conv::conv2d(&x, &w, 1, 1, 1)?;
//! let gamma = Var::ones(6, candle_core::DType::F32, &Device::Cpu)?;
//! let beta = Var::zeros(6, candle_core::DType::F32, &Device::Cpu)?;
//! let (z, mean, var) = nmoco_conv::batch_norm_train(&y, &gamma, &beta, 1e-5)?;
//! assert_eq!(mean.dims(), &[6]);
//! assert_eq!(var.dims(), &[6]);
//! let grads = z.sqr()?.sum_all()?.backward()?;
//! assert_eq!(grads.get(&w).map(|g| g.dims().to_vec()), Some(vec![6, 4, 3, 3]));
//! # Ok(())
//! # }
//! ```

mod bn;
mod bn_coef;
mod conv;
mod cpu_conv;
mod cuda_config;
#[cfg(feature = "cuda")]
mod cudnn;
mod error;
mod geom;
mod util;

pub use bn::{
    batch_norm_eval, batch_norm_eval_reference, batch_norm_train, batch_norm_train_reference,
    batch_stats, channel_affine, unbiased_var,
};
pub use bn_coef::{batch_norm_coef, batch_norm_dgamma, batch_norm_input_grad_coef};
pub use conv::{
    conv2d, conv2d_bias, conv2d_grad_input, conv2d_grad_weight, conv2d_reference, fold_batch_norm,
};
pub use cpu_conv::{
    DEFAULT_SPARSE_THRESHOLDS, SparseThresholds, set_sparse_thresholds, sparse_thresholds,
};
pub use cuda_config::{
    AlgoSearch, CudaConvBackend, CudaConvConfig, CudnnStats, cuda_conv_config, cudnn_stats,
    set_cuda_conv_config,
};
pub use error::ConvError;
