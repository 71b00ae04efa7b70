//! Convolution custom ops (forward, input gradient, weight gradient) and their
//! public entry points.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use crate::cpu_conv;
use crate::cuda_config::GradNeeds;
use crate::error::ConvError;
use crate::geom::ConvGeom;
use crate::util::{Route, cpu_f32, route};

/// Hyper-parameters shared by the conv ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConvArgs {
    stride: usize,
    padding: usize,
    groups: usize,
}

/// Validates shapes and builds the convolution geometry.
fn geometry(
    op: &'static str,
    x_dims: &[usize],
    w_dims: &[usize],
    a: ConvArgs,
) -> std::result::Result<ConvGeom, ConvError> {
    let &[n, c_in, h, w] = x_dims else {
        return Err(ConvError::Rank {
            op,
            what: "input",
            expected: "4",
            shape: x_dims.to_vec(),
        });
    };
    let &[c_out, cg, kh, kw] = w_dims else {
        return Err(ConvError::Rank {
            op,
            what: "kernel",
            expected: "4",
            shape: w_dims.to_vec(),
        });
    };
    if a.stride == 0 {
        return Err(ConvError::Zero {
            op,
            what: "stride",
            value: 0,
        });
    }
    if a.groups == 0 {
        return Err(ConvError::Zero {
            op,
            what: "groups",
            value: 0,
        });
    }
    if cg * a.groups != c_in || c_out % a.groups != 0 || kh == 0 || kw == 0 {
        return Err(ConvError::Channels {
            op,
            c_in,
            kernel: w_dims.to_vec(),
            groups: a.groups,
        });
    }
    if h + 2 * a.padding < kh || w + 2 * a.padding < kw {
        return Err(ConvError::KernelTooLarge {
            op,
            h,
            w,
            padding: a.padding,
            kh,
            kw,
        });
    }
    Ok(ConvGeom {
        n,
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
        stride: a.stride,
        pad: a.padding,
        groups: a.groups,
        oh: (h + 2 * a.padding - kh) / a.stride + 1,
        ow: (w + 2 * a.padding - kw) / a.stride + 1,
    })
}

/// Forward convolution `(x, w) -> y`, gradients for both.
struct Conv2dOp(ConvArgs);

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "nmoco-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = geometry(self.name(), l1.dims(), l2.dims(), self.0)?;
        let x = cpu_f32(self.name(), "input", s1, l1)?;
        let w = cpu_f32(self.name(), "kernel", s2, l2)?;
        let mut y = vec![0.0f32; g.y_len()];
        cpu_conv::conv_forward(&g, x, w, None, &mut y);
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.c_out, g.oh, g.ow))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = geometry(self.name(), l1.dims(), l2.dims(), self.0)?;
        crate::cudnn::forward(self.name(), &g, (s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        conv_grads(x, w, dy, self.0)
    }
}

/// Forward convolution with a per-output-channel bias `(x, w, b) -> y`.
struct Conv2dBiasOp(ConvArgs);

impl CustomOp3 for Conv2dBiasOp {
    fn name(&self) -> &'static str {
        "nmoco-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = geometry(self.name(), l1.dims(), l2.dims(), self.0)?;
        let x = cpu_f32(self.name(), "input", s1, l1)?;
        let w = cpu_f32(self.name(), "kernel", s2, l2)?;
        let b = cpu_f32(self.name(), "bias", s3, l3)?;
        if b.len() != g.c_out {
            Err(ConvError::ChannelParam {
                op: self.name(),
                what: "bias",
                channels: g.c_out,
                shape: l3.dims().to_vec(),
            })?
        }
        let mut y = vec![0.0f32; g.y_len()];
        cpu_conv::conv_forward(&g, x, w, Some(b), &mut y);
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.c_out, g.oh, g.ow))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = geometry(self.name(), l1.dims(), l2.dims(), self.0)?;
        if l3.dims() != [g.c_out] {
            Err(ConvError::ChannelParam {
                op: self.name(),
                what: "bias",
                channels: g.c_out,
                shape: l3.dims().to_vec(),
            })?
        }
        crate::cudnn::forward(self.name(), &g, (s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = conv_grads(x, w, dy, self.0)?;
        let db = if b.track_op() {
            // f32 sum of the output gradient (bf16 sums would round at every step).
            Some(
                dy.to_dtype(candle_core::DType::F32)?
                    .sum_keepdim((0, 2, 3))?
                    .flatten_all()?
                    .to_dtype(b.dtype())?,
            )
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

fn conv_grads(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    a: ConvArgs,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let dy = dy.contiguous()?;
    // Only the tracked arguments get a gradient: a network input (not a variable, not computed
    // from one) gets none, so its backward-data convolution never runs.
    let needs = GradNeeds::of(x.track_op(), w.track_op());
    let dx = if needs.input {
        Some(dy.apply_op2_no_bwd(
            w,
            &ConvBwdDataOp {
                args: a,
                x_dims: x.dims().to_vec(),
            },
        )?)
    } else {
        None
    };
    let dw = if needs.weight {
        Some(x.apply_op2_no_bwd(
            &dy,
            &ConvBwdWeightOp {
                args: a,
                w_dims: w.dims().to_vec(),
            },
        )?)
    } else {
        None
    };
    Ok((dx, dw))
}

/// Input gradient `(dy, w) -> dx`.
struct ConvBwdDataOp {
    args: ConvArgs,
    x_dims: Vec<usize>,
}

impl CustomOp2 for ConvBwdDataOp {
    fn name(&self) -> &'static str {
        "nmoco-conv2d-bwd-data"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = geometry(self.name(), &self.x_dims, l2.dims(), self.args)?;
        let y_dims = [g.n, g.c_out, g.oh, g.ow];
        if l1.dims() != y_dims {
            Err(ConvError::GradShape {
                op: self.name(),
                expected: y_dims.to_vec(),
                got: l1.dims().to_vec(),
            })?
        }
        let dy = cpu_f32(self.name(), "output gradient", s1, l1)?;
        let w = cpu_f32(self.name(), "kernel", s2, l2)?;
        let mut dx = vec![0.0f32; g.x_len()];
        cpu_conv::conv_backward_data(&g, dy, w, &mut dx);
        Ok((CpuStorage::F32(dx), Shape::from(self.x_dims.clone())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = geometry(self.name(), &self.x_dims, l2.dims(), self.args)?;
        let y_dims = [g.n, g.c_out, g.oh, g.ow];
        if l1.dims() != y_dims {
            Err(ConvError::GradShape {
                op: self.name(),
                expected: y_dims.to_vec(),
                got: l1.dims().to_vec(),
            })?
        }
        crate::cudnn::backward_data(self.name(), &g, (s1, l1), (s2, l2))
    }
}

/// Weight gradient `(x, dy) -> dw`.
struct ConvBwdWeightOp {
    args: ConvArgs,
    w_dims: Vec<usize>,
}

impl CustomOp2 for ConvBwdWeightOp {
    fn name(&self) -> &'static str {
        "nmoco-conv2d-bwd-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = geometry(self.name(), l1.dims(), &self.w_dims, self.args)?;
        let y_dims = [g.n, g.c_out, g.oh, g.ow];
        if l2.dims() != y_dims {
            Err(ConvError::GradShape {
                op: self.name(),
                expected: y_dims.to_vec(),
                got: l2.dims().to_vec(),
            })?
        }
        let x = cpu_f32(self.name(), "input", s1, l1)?;
        let dy = cpu_f32(self.name(), "output gradient", s2, l2)?;
        let dw = cpu_conv::conv_backward_weight(&g, x, dy);
        Ok((CpuStorage::F32(dw), Shape::from(self.w_dims.clone())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = geometry(self.name(), l1.dims(), &self.w_dims, self.args)?;
        let y_dims = [g.n, g.c_out, g.oh, g.ow];
        if l2.dims() != y_dims {
            Err(ConvError::GradShape {
                op: self.name(),
                expected: y_dims.to_vec(),
                got: l2.dims().to_vec(),
            })?
        }
        crate::cudnn::backward_filter(self.name(), &g, (s1, l1), (s2, l2))
    }
}

/// 2-D convolution (no dilation), autograd-aware for `x` and `w`.
///
/// `x`: `[N, C_in, H, W]` f32, `w`: `[C_out, C_in/groups, KH, KW]`; the output is
/// `[N, C_out, (H+2p-KH)/s+1, (W+2p-KW)/s+1]` and contiguous, exactly as
/// `x.conv2d(w, padding, stride, 1, groups)`. A kernel of another float dtype
/// than `x` is cast (differentiably) to `x`'s dtype first, so f32 master weights
/// serve bf16 activations. On a CUDA device with f32, bf16 or f16 tensors the
/// forward and both gradients run on cuDNN (see [`crate::CudaConvConfig`];
/// `NMOCO_CUDA_CONV=candle` selects candle's path instead); on other devices or
/// dtypes it falls back to candle's own `conv2d` (same semantics). Gradients
/// are computed by dedicated custom ops, only for tracked arguments, and are not
/// themselves differentiable.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
) -> Result<Tensor> {
    let a = ConvArgs {
        stride,
        padding,
        groups,
    };
    geometry("conv2d", x.dims(), w.dims(), a)?;
    let w = &cast_like(w, x)?;
    match route(&[x, w])? {
        Route::Reference => conv2d_reference(x, w, stride, padding, groups),
        Route::Cpu | Route::Cudnn => x.contiguous()?.apply_op2(&w.contiguous()?, Conv2dOp(a)),
    }
}

/// `w` in `x`'s dtype when both are floats of different dtypes (a differentiable cast).
fn cast_like(w: &Tensor, x: &Tensor) -> Result<Tensor> {
    if w.dtype() != x.dtype() && w.dtype().is_float() && x.dtype().is_float() {
        w.to_dtype(x.dtype())
    } else {
        Ok(w.clone())
    }
}

/// [`conv2d`] followed by a per-output-channel bias `b` (`[C_out]`), fused into
/// the forward pass; autograd-aware for `x`, `w` and `b`. Use it with
/// [`crate::fold_batch_norm`] for inference.
pub fn conv2d_bias(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
) -> Result<Tensor> {
    let a = ConvArgs {
        stride,
        padding,
        groups,
    };
    let g = geometry("conv2d_bias", x.dims(), w.dims(), a)?;
    if b.dims() != [g.c_out] {
        Err(ConvError::ChannelParam {
            op: "conv2d_bias",
            what: "bias",
            channels: g.c_out,
            shape: b.dims().to_vec(),
        })?
    }
    let (w, b) = (&cast_like(w, x)?, &cast_like(b, x)?);
    match route(&[x, w, b])? {
        Route::Reference => conv2d_reference(x, w, stride, padding, groups)?
            .broadcast_add(&b.reshape((1, g.c_out, 1, 1))?),
        Route::Cpu | Route::Cudnn => {
            x.contiguous()?
                .apply_op3(&w.contiguous()?, &b.contiguous()?, Conv2dBiasOp(a))
        }
    }
}

/// Input gradient of [`conv2d`] on its own (not differentiable): `dy` is the
/// output gradient, `x_dims` the input shape. cuDNN's backward-data on CUDA
/// (f32, bf16, f16); candle's autograd off the CPU and cuDNN paths.
pub fn conv2d_grad_input(
    dy: &Tensor,
    w: &Tensor,
    x_dims: &[usize],
    stride: usize,
    padding: usize,
    groups: usize,
) -> Result<Tensor> {
    let a = ConvArgs {
        stride,
        padding,
        groups,
    };
    geometry("conv2d_grad_input", x_dims, w.dims(), a)?;
    if route(&[dy, w])? == Route::Reference {
        let x = candle_core::Var::zeros(x_dims, dy.dtype(), dy.device())?;
        let y = conv2d_reference(x.as_tensor(), &w.detach(), stride, padding, groups)?;
        let grads = (y * dy.detach())?.sum_all()?.backward()?;
        return grads.get(&x).cloned().ok_or_else(|| {
            candle_core::Error::Msg("conv2d_grad_input: no gradient for the input".into())
        });
    }
    dy.contiguous()?.apply_op2_no_bwd(
        &w.contiguous()?,
        &ConvBwdDataOp {
            args: a,
            x_dims: x_dims.to_vec(),
        },
    )
}

/// Weight gradient of [`conv2d`] on its own (not differentiable): `dy` is the
/// output gradient, `w_dims` the kernel shape. cuDNN's backward-filter on CUDA
/// (f32, bf16, f16); candle's autograd off the CPU and cuDNN paths.
pub fn conv2d_grad_weight(
    x: &Tensor,
    dy: &Tensor,
    w_dims: &[usize],
    stride: usize,
    padding: usize,
    groups: usize,
) -> Result<Tensor> {
    let a = ConvArgs {
        stride,
        padding,
        groups,
    };
    geometry("conv2d_grad_weight", x.dims(), w_dims, a)?;
    if route(&[x, dy])? == Route::Reference {
        let w = candle_core::Var::zeros(w_dims, x.dtype(), x.device())?;
        let y = conv2d_reference(&x.detach(), w.as_tensor(), stride, padding, groups)?;
        let grads = (y * dy.detach())?.sum_all()?.backward()?;
        return grads.get(&w).cloned().ok_or_else(|| {
            candle_core::Error::Msg("conv2d_grad_weight: no gradient for the kernel".into())
        });
    }
    x.contiguous()?.apply_op2_no_bwd(
        &dy.contiguous()?,
        &ConvBwdWeightOp {
            args: a,
            w_dims: w_dims.to_vec(),
        },
    )
}

/// Reference twin of [`conv2d`]: candle's own `conv2d` (dilation 1).
pub fn conv2d_reference(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
) -> Result<Tensor> {
    x.conv2d(w, padding, stride, 1, groups)
}

/// Folds inference batch norm into the preceding convolution: returns `(w', b')`
/// with `conv(x, w') + b' == bn_eval(conv(x, w) + b)`, where
/// `scale = gamma / sqrt(running_var + eps)`, `w' = w · scale[c_out]` and
/// `b' = (b - running_mean) · scale + beta` (`b` = 0 when absent).
pub fn fold_batch_norm(
    w: &Tensor,
    b: Option<&Tensor>,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor)> {
    let c_out = w.dim(0)?;
    for (what, t) in [
        ("gamma", gamma),
        ("beta", beta),
        ("running_mean", running_mean),
        ("running_var", running_var),
    ]
    .into_iter()
    .chain(b.map(|b| ("bias", b)))
    {
        if t.dims() != [c_out] {
            Err(ConvError::ChannelParam {
                op: "fold_batch_norm",
                what,
                channels: c_out,
                shape: t.dims().to_vec(),
            })?
        }
    }
    let scale = (gamma / (running_var + eps)?.sqrt()?)?;
    let mut shape = vec![1usize; w.rank()];
    shape[0] = c_out;
    let w2 = w.broadcast_mul(&scale.reshape(shape)?)?;
    let centred = match b {
        Some(b) => (b - running_mean)?,
        None => running_mean.neg()?,
    };
    let b2 = ((centred * scale)? + beta)?;
    Ok((w2, b2))
}
