//! Layers that run on time-folded tensors.
//!
//! Inside a backbone every activation is kept folded as `[T·B, ...]` (time major: row
//! `t·B + b`), so convolutions, batch norm and linear layers see one big batch and batch-norm
//! statistics are taken over T·B (spikingjelly's `SeqToANNContainer`). Only the spiking
//! neurons need the time axis; [`Spiking::forward_folded`] unfolds to `[T, B, ...]`, runs the
//! multi-step neuron and folds back (both reshapes are free on contiguous tensors).
//!
//! Initialisation follows PyTorch's defaults: conv and linear weights (and linear biases)
//! `U(-1/√fan_in, 1/√fan_in)`, BN weight 1, bias 0, running mean 0, running variance 1; a SEW
//! config can ask for SpikingJelly's `kaiming_normal_(mode="fan_out")` convolutions instead
//! ([`crate::ConvInit`], the `sew_resnet18` preset's choice).

use candle_core::{D, DType, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use nmoco_snn::{
    MultiStepNeuron, NeuronConfig, NeuronImpl, NeuronKind, seq_apply, seq_fold, seq_unfold,
};

use crate::config::ConvInit;
use crate::error::ModelError;

/// PyTorch's default init for conv/linear weights and linear biases.
fn fan_in_uniform(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

pub(crate) fn bad_input(layer: &'static str, x: &Tensor, reason: String) -> candle_core::Error {
    ModelError::BadInput {
        layer,
        shape: x.dims().to_vec(),
        reason,
    }
    .into_candle()
}

/// 2-D convolution without bias on `[N, C, H, W]` (variable `weight`, `[C_out, C_in/groups, k, k]`).
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
}

impl Conv2d {
    /// A `k×k` convolution with the given stride and padding (PyTorch's default init).
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder<'_>,
    ) -> Result<Self> {
        Self::new_with_init(
            c_in,
            c_out,
            kernel,
            stride,
            padding,
            ConvInit::UniformFanIn,
            vb,
        )
    }

    /// [`Conv2d::new`] with the given weight initialisation.
    pub fn new_with_init(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        init: ConvInit,
        vb: VarBuilder<'_>,
    ) -> Result<Self> {
        let hint = match init {
            ConvInit::UniformFanIn => fan_in_uniform(c_in * kernel * kernel),
            ConvInit::KaimingNormalFanOut => Init::Randn {
                mean: 0.0,
                stdev: (2.0 / (c_out * kernel * kernel).max(1) as f64).sqrt(),
            },
        };
        let weight = vb.get_with_hints((c_out, c_in, kernel, kernel), "weight", hint)?;
        Ok(Self {
            weight,
            stride,
            padding,
            groups: 1,
        })
    }

    /// The weight tensor.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Applies the convolution to `[N, C, H, W]`, in `x`'s dtype (the f32 weight is cast to it
    /// for bf16/f16 mixed precision; its gradient comes back in f32).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = cast_like(&self.weight, x)?;
        nmoco_conv::conv2d(x, &w, self.stride, self.padding, self.groups)
    }

    /// Applies the convolution followed by eval-mode `bn`, as one convolution with the batch
    /// norm folded into its weight and a bias (inference: one pass over the output, not two).
    pub fn forward_bn_eval(&self, x: &Tensor, bn: &BatchNorm) -> Result<Tensor> {
        let (w, b) = bn.fold_into(&self.weight)?;
        let (w, b) = (cast_like(&w, x)?, cast_like(&b, x)?);
        nmoco_conv::conv2d_bias(x, &w, &b, self.stride, self.padding, self.groups)
    }

    /// Applies the convolution to `[T, B, C, H, W]` by folding time into the batch.
    pub fn forward_seq(&self, x: &Tensor) -> Result<Tensor> {
        seq_apply(x, |x| self.forward(x))
    }
}

/// Fully connected layer `y = x Wᵀ + b` on `[..., in]` (variables `weight` `[out, in]`, and
/// `bias` `[out]` when enabled).
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// A linear layer with or without bias.
    pub fn new(d_in: usize, d_out: usize, bias: bool, vb: VarBuilder<'_>) -> Result<Self> {
        let init = fan_in_uniform(d_in);
        let weight = vb.get_with_hints((d_out, d_in), "weight", init)?;
        let bias = if bias {
            Some(vb.get_with_hints(d_out, "bias", init)?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// Applies the layer to the last dimension of `x` (any rank ≥ 1).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let d_in = self.weight.dim(1)?;
        if dims.last() != Some(&d_in) {
            return Err(bad_input("linear", x, format!("last dim must be {d_in}")));
        }
        let rows = dims[..dims.len() - 1].iter().product::<usize>();
        let w = cast_like(&self.weight, x)?;
        let y = x.reshape((rows, d_in))?.matmul(&w.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(&cast_like(b, x)?)?,
            None => y,
        };
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = self.weight.dim(0)?;
        y.reshape(out)
    }
}

/// Batch normalisation over channel dim 1 of `[N, C, ...]`, with running statistics kept as
/// variables (`running_mean`, `running_var`) next to `weight` and `bias`.
///
/// Train mode normalises with the batch statistics (biased variance) over every dim but 1 and
/// updates the running statistics in place with momentum 0.1, using the unbiased variance as
/// PyTorch does. Eval mode normalises with the (detached) running statistics.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    channels: usize,
    eps: f64,
    momentum: f64,
}

impl BatchNorm {
    /// BN over `channels` features, eps 1e-5, momentum 0.1.
    pub fn new(channels: usize, vb: VarBuilder<'_>) -> Result<Self> {
        let weight = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
        let rm = vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?;
        let rv = vb.get_with_hints(channels, "running_var", Init::Const(1.0))?;
        Ok(Self {
            weight,
            bias,
            // Shares storage with the VarMap entry when `vb` is VarMap-backed, so `Var::set`
            // here is visible to checkpoints and EMA updates by name.
            running_mean: Var::from_tensor(&rm)?,
            running_var: Var::from_tensor(&rv)?,
            channels,
            eps: 1e-5,
            momentum: 0.1,
        })
    }

    /// The running mean variable.
    pub fn running_mean(&self) -> &Var {
        &self.running_mean
    }

    /// The running variance variable.
    pub fn running_var(&self) -> &Var {
        &self.running_var
    }

    /// Eval mode folded into the preceding convolution's weight `w` (`[C, ...]`, no bias):
    /// `(w · γ/√(σ² + ε), β − μ·γ/√(σ² + ε))` with the running statistics, for
    /// `nmoco_conv::conv2d_bias`. Gradients flow to `w`, γ and β, not to the statistics.
    pub fn fold_into(&self, w: &Tensor) -> Result<(Tensor, Tensor)> {
        nmoco_conv::fold_batch_norm(
            w,
            None,
            &self.weight,
            &self.bias,
            &self.running_mean.as_tensor().detach(),
            &self.running_var.as_tensor().detach(),
            self.eps,
        )
    }

    /// Normalises `[N, C, ...]`; see the type docs for train vs eval. A bf16/f16 input is
    /// normalised in f32 (statistics, running statistics and the affine map) and the result cast
    /// back to its dtype.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if x.dtype() != DType::F32 {
            return self
                .forward(&x.to_dtype(DType::F32)?, train)?
                .to_dtype(x.dtype());
        }
        let (x4, count) = self.view_nchw(x)?;
        let y = if train {
            self.check_train_count(x, count)?;
            let (y, mean, var) =
                nmoco_conv::batch_norm_train(&x4, &self.weight, &self.bias, self.eps)?;
            self.update_running(&mean, &var, count)?;
            y
        } else {
            nmoco_conv::batch_norm_eval(
                &x4,
                &self.weight,
                &self.bias,
                &self.running_mean.as_tensor().detach(),
                &self.running_var.as_tensor().detach(),
                self.eps,
            )?
        };
        y.reshape(x.shape())
    }
}

static BN_LIF_FUSION: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns the fused training batch norm + IF/LIF op on or off process-wide (on by default; see
/// [`BatchNorm::forward_train_spiking`]). Results are the same either way (tested); meant for
/// benchmarks and debugging.
pub fn set_bn_lif_fusion(enabled: bool) {
    BN_LIF_FUSION.store(enabled, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the fused batch norm + IF/LIF op is enabled (see [`set_bn_lif_fusion`]).
pub fn bn_lif_fusion() -> bool {
    BN_LIF_FUSION.load(std::sync::atomic::Ordering::Relaxed)
}

impl BatchNorm {
    /// `[N, C, ...]` viewed as NCHW with H·W = the product of the trailing dims, and the
    /// number of values per channel.
    fn view_nchw(&self, x: &Tensor) -> Result<(Tensor, usize)> {
        let dims = x.dims();
        if dims.len() < 2 || dims[1] != self.channels {
            return Err(bad_input(
                "batch_norm",
                x,
                format!("expected [N, {}, ...]", self.channels),
            ));
        }
        let spatial = dims[2..].iter().product::<usize>();
        let x4 = x.reshape((dims[0], self.channels, spatial, 1))?;
        Ok((x4, dims[0] * spatial))
    }

    fn check_train_count(&self, x: &Tensor, n: usize) -> Result<()> {
        if n < 2 {
            return Err(bad_input(
                "batch_norm",
                x,
                "train mode needs more than one value per channel".into(),
            ));
        }
        Ok(())
    }

    /// Running statistics update from the batch's mean and biased variance over `n` values
    /// per channel (momentum, unbiased variance as PyTorch).
    fn update_running(&self, mean: &Tensor, var: &Tensor, n: usize) -> Result<()> {
        let m = self.momentum;
        let mean = mean.detach().flatten_all()?;
        let unbiased = (var.detach().flatten_all()? * (n as f64 / (n as f64 - 1.0)))?;
        let rm = ((self.running_mean.as_tensor().detach() * (1.0 - m))? + (mean * m)?)?;
        let rv = ((self.running_var.as_tensor().detach() * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)?;
        Ok(())
    }

    /// Train-mode BN of a time-folded `x: [T·B, C, ...]` followed by the neuron `sn` over
    /// `T = t`, returning the spikes (same layout). Fused into one op (the normalised tensor is
    /// never written) for fused IF/LIF neurons on CPU f32 ([`nmoco_snn::bn_lif_multistep`], the
    /// statistics read back to the host) and on CUDA f32/bf16
    /// ([`nmoco_snn::bn_lif_multistep_stats`] with [`nmoco_snn::bn_batch_stats`]: statistics,
    /// spikes and gradients computed on the device with no host copy; compile-tested only until
    /// nmoco-snn's `examples/gpu_check.rs` runs on a device); otherwise BN then the neuron. Same
    /// results either way (on the CPU the neuron sees bit-identical inputs; gradients agree to
    /// rounding), same running-statistics update.
    pub fn forward_train_spiking(&self, x: &Tensor, sn: &Spiking, t: usize) -> Result<Tensor> {
        let fused_cfg = sn.bn_fusable_config();
        let supported = match x.device() {
            candle_core::Device::Cpu => x.dtype() == DType::F32,
            candle_core::Device::Cuda(_) => matches!(x.dtype(), DType::F32 | DType::BF16),
            _ => false,
        };
        let (Some(cfg), true) = (fused_cfg, supported && bn_lif_fusion()) else {
            return sn.forward_folded(&self.forward(x, true)?, t);
        };
        let (x4, count) = self.view_nchw(x)?;
        self.check_train_count(x, count)?;
        let (mean, var) = nmoco_snn::bn_batch_stats(&x4)?;
        self.update_running(&mean, &var, count)?;
        let s = nmoco_snn::bn_lif_multistep_stats(
            &x4,
            t,
            &self.weight,
            &self.bias,
            &mean,
            &var,
            self.eps,
            cfg,
        )?;
        let s = s.reshape(x.shape())?;
        sn.record(&s, t)?;
        Ok(s)
    }
}

/// A multi-step spiking neuron layer (parameters, if any, under its own prefix: PLIF's `w`).
#[derive(Debug)]
pub struct Spiking {
    neuron: MultiStepNeuron,
    /// The variable prefix it was built under (e.g. `backbone.stem.sn`), for [`record_spikes`].
    name: String,
}

thread_local! {
    static SPIKE_RECORDER: std::cell::RefCell<Option<Vec<(String, Tensor)>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` and returns, next to its result, the output of every neuron layer that ran on this
/// thread meanwhile, in call order, as `(prefix, spikes)` with the layer's variable prefix (e.g.
/// `backbone.stages.0.blocks.1.sn2`) and the spikes detached and flattened to `[T, rest]`
/// (`rest` in the layer's own row-major order: `[B, C, H, W]` for convolutional units, `[B, N,
/// D]` for Spikformer's token units). For comparisons with other implementations (the oracle
/// tests); costs nothing when not recording.
pub fn record_spikes<R>(f: impl FnOnce() -> R) -> (R, Vec<(String, Tensor)>) {
    let previous = SPIKE_RECORDER.with(|r| r.borrow_mut().replace(Vec::new()));
    let out = f();
    let spikes = SPIKE_RECORDER.with(|r| std::mem::replace(&mut *r.borrow_mut(), previous));
    (out, spikes.unwrap_or_default())
}

impl Spiking {
    /// Builds the neuron from its config.
    pub fn new(cfg: &NeuronConfig, vb: VarBuilder<'_>) -> Result<Self> {
        let name = vb.prefix();
        Ok(Self {
            neuron: MultiStepNeuron::new(cfg, vb)?,
            name,
        })
    }

    /// The variable prefix the layer was built under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Hands time-folded spikes `[T·B, ...]` to [`record_spikes`] when it is recording.
    fn record(&self, s: &Tensor, t: usize) -> Result<()> {
        let recording = SPIKE_RECORDER.with(|r| r.borrow().is_some());
        if recording {
            let flat = s.detach().reshape((t, s.elem_count() / t.max(1)))?;
            SPIKE_RECORDER.with(|r| {
                if let Some(v) = r.borrow_mut().as_mut() {
                    v.push((self.name.clone(), flat));
                }
            });
        }
        Ok(())
    }

    /// Runs the neuron on `[T, ...]`. The CPU kernels are f32-only: a 16-bit input is run in f32
    /// there and the spikes (exact in any float dtype) cast back.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() != DType::F32 {
            return self
                .neuron
                .forward(&x.to_dtype(DType::F32)?)?
                .to_dtype(x.dtype());
        }
        self.neuron.forward(x)
    }

    /// The config when the neuron can take a fused batch norm in front of it (fused IF/LIF).
    pub fn bn_fusable_config(&self) -> Option<&NeuronConfig> {
        let cfg = self.neuron.config();
        (cfg.kind != NeuronKind::Plif && cfg.implementation == NeuronImpl::Fused).then_some(cfg)
    }

    /// Runs the neuron on a time-folded `[T·B, ...]` tensor and returns the same layout.
    pub fn forward_folded(&self, x: &Tensor, t: usize) -> Result<Tensor> {
        let s = seq_fold(&self.forward(&seq_unfold(x, t)?)?)?;
        self.record(&s, t)?;
        Ok(s)
    }
}

/// Max-pool 3×3, stride 2, padding 1 on `[N, C, H, W]` (output `⌈H/2⌉ × ⌈W/2⌉`), as PyTorch's
/// `max_pool2d(x, 3, 2, 1)`: the padding never wins and each window's gradient goes to its first
/// maximal element. One fused op with a saved argmax ([`nmoco_snn::max_pool_3x3_s2`]: CPU f32,
/// CUDA f32/f16/bf16; its plain-candle twin elsewhere).
pub fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    nmoco_snn::max_pool_3x3_s2(x)
}

/// Global average pool over the trailing spatial dims: `[N, C, H, W]` → `[N, C]`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(2)?.mean(D::Minus1)
}

/// `x` cast to `dtype` if needed (a no-op clone otherwise).
pub(crate) fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    if x.dtype() == dtype {
        Ok(x.clone())
    } else {
        x.to_dtype(dtype)
    }
}

/// A parameter `p` in the dtype of the activation `x` (mixed precision: f32 master weights,
/// bf16/f16 compute). The cast is differentiable, so the gradient reaches `p` in f32.
pub(crate) fn cast_like(p: &Tensor, x: &Tensor) -> Result<Tensor> {
    cast(p, x.dtype())
}
