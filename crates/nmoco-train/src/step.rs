//! One NeuroMoCo training step, separate from the loop so it can be tested on tiny tensors.

use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::encoder::{Encoder, EncoderPair};
use crate::error::Result;
use crate::loss::{LossParams, moco_loss};
use crate::momentum::momentum_update;
use crate::profile::Phase;
use crate::queue::Queue;
use nmoco_optim::Optimizer;

/// Per-step settings that do not change during a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepConfig {
    pub loss: LossParams,
    /// Also swap the views (query from `x_k`, key from `x_q`) and average the two losses.
    pub symmetric: bool,
    pub grad_clip: Option<f64>,
    /// Shuffled BN on the key side (`moco.shuffle_bn = "split"`); `None` = whole-batch BN.
    pub shuffle_bn: Option<ShuffleBn>,
}

/// Shuffled BN on one device: the key encoder runs on `sub_batches` sub-batches of a randomly
/// permuted batch, so each key is normalised with the statistics of its own sub-batch, and the
/// keys are put back in batch order (MoCo's `_batch_shuffle_ddp` / `_batch_unshuffle_ddp` with
/// one sub-batch per GPU). The permutation of step `s` is drawn from
/// `ChaCha8Rng::seed_from_u64(seed ^ s)`, with `s` the optimizer's applied steps, so a resumed
/// run draws the same permutations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShuffleBn {
    pub sub_batches: usize,
    pub seed: u64,
}

/// The permutation of `b` samples used by shuffled BN at `step`.
pub fn shuffle_permutation(b: usize, seed: u64, step: u64) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..b).collect();
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    perm.shuffle(&mut rng);
    perm
}

/// Sizes of `s` contiguous sub-batches of `b` samples (the first `b mod s` one larger).
pub fn sub_batch_sizes(b: usize, s: usize) -> Vec<usize> {
    let s = s.clamp(1, b.max(1));
    (0..s).map(|i| b / s + usize::from(i < b % s)).collect()
}

/// The sub-batch count actually used for a batch of `b`: at most `b / 2`, so that every
/// sub-batch holds at least two samples (batch norm needs two).
pub fn effective_sub_batches(b: usize, requested: usize) -> usize {
    requested.min(b / 2).max(1)
}

/// What one step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutput {
    pub loss: f32,
    /// Global gradient norm before clipping (0 when the step was not applied).
    pub grad_norm: f64,
    /// False when the loss was not finite: then no update, momentum step or enqueue happened.
    pub applied: bool,
}

/// What the caller needs read back from the device in this step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepSync {
    /// Read the loss back before the update and skip the update when it is not finite (one host
    /// synchronisation). When false the update is applied unconditionally and the loss stays on
    /// the device ([`StepResult::loss`]); the caller checks it later (the trainer does at log
    /// steps and at the end of each epoch).
    pub read_loss: bool,
    /// Compute the global gradient norm (one fused reduction and read-back) even when clipping
    /// is off, for logging.
    pub grad_norm: bool,
}

impl StepSync {
    /// Everything read back every step (the CPU default, where a read-back costs nothing).
    pub const ALL: Self = Self {
        read_loss: true,
        grad_norm: true,
    };
    /// Nothing read back: the step only queues device work (unless clipping needs the norm).
    pub const NONE: Self = Self {
        read_loss: false,
        grad_norm: false,
    };
}

/// What [`train_step_with`] reports.
#[derive(Debug, Clone)]
pub struct StepResult {
    /// The loss, a detached f32 scalar on the training device.
    pub loss: Tensor,
    /// The loss read back, when [`StepSync::read_loss`] asked for it.
    pub loss_value: Option<f32>,
    /// Global gradient norm before clipping, when clipping or [`StepSync::grad_norm`] needed it.
    pub grad_norm: Option<f64>,
    /// False when the loss was read back and not finite: then no update, momentum step or
    /// enqueue happened.
    pub applied: bool,
}

/// Keys of the subordinate encoder: its forward runs on detached input and its output is
/// detached, so no gradient can reach it.
fn keys<E: Encoder>(key: &E, x: &Tensor) -> Result<Tensor> {
    Ok(key.embed(&x.detach(), true)?.detach())
}

/// Keys with shuffled BN: `x` (`[T, B, ...]`) is permuted along the batch dimension with `perm`,
/// cut into `sub_batches` contiguous sub-batches (see [`sub_batch_sizes`]), each sub-batch runs
/// through the key encoder on its own (train-mode BN with that sub-batch's statistics, in the
/// backbone and in the projection head), and the keys are un-permuted. The key encoder's BN
/// running statistics end as MoCo's do on GPU 0: updated once, from the first sub-batch (the
/// updates made by the other sub-batches are undone); `key_vars` holds those statistics.
pub fn shuffled_keys<E: Encoder>(
    key: &E,
    key_vars: &VarMap,
    x: &Tensor,
    perm: &[usize],
    sub_batches: usize,
) -> Result<Tensor> {
    let b = x.dim(1)?;
    if perm.len() != b {
        return Err(crate::Error::Shape {
            what: "shuffled-BN permutation",
            expected: format!("{b} entries"),
            got: vec![perm.len()],
        });
    }
    let s = effective_sub_batches(b, sub_batches);
    if s <= 1 {
        return keys(key, x);
    }
    let device = x.device();
    let idx: Vec<u32> = perm.iter().map(|&i| i as u32).collect();
    let mut inv = vec![0u32; b];
    for (j, &i) in perm.iter().enumerate() {
        inv[i] = j as u32;
    }
    let xp = x
        .detach()
        .index_select(&Tensor::new(idx.as_slice(), device)?, 1)?;
    let sizes = sub_batch_sizes(b, s);
    let mut starts = Vec::with_capacity(s);
    let mut at = 0;
    for &n in &sizes {
        starts.push(at);
        at += n;
    }
    let buffers: Vec<Var> = crate::momentum::sorted_vars(key_vars)
        .into_iter()
        .filter(|(n, _)| nmoco_models::is_buffer(n))
        .map(|(_, v)| v)
        .collect();
    let saved: Vec<Tensor> = buffers
        .iter()
        .map(|v| v.as_detached_tensor().copy())
        .collect::<candle_core::Result<_>>()?;
    let mut outs = vec![None; s];
    for i in (1..s).chain(std::iter::once(0)) {
        if i == 0 {
            for (v, t) in buffers.iter().zip(&saved) {
                v.set(t)?;
            }
        }
        outs[i] = Some(keys(key, &xp.narrow(1, starts[i], sizes[i])?)?);
    }
    let outs: Vec<Tensor> = outs.into_iter().flatten().collect();
    let k = Tensor::cat(&outs, 1)?;
    Ok(k.index_select(&Tensor::new(inv.as_slice(), device)?, 1)?)
}

/// The keys of a step: whole-batch BN, or shuffled BN when `cfg.shuffle_bn` is set (the
/// permutation drawn for `step`).
pub fn step_keys<E: Encoder>(
    pair: &EncoderPair<E>,
    x: &Tensor,
    cfg: &StepConfig,
    step: u64,
) -> Result<Tensor> {
    match cfg.shuffle_bn {
        None => keys(&pair.key, x),
        Some(sb) => {
            let perm = shuffle_permutation(x.dim(1)?, sb.seed, step);
            shuffled_keys(&pair.key, &pair.key_vars, x, &perm, sb.sub_batches)
        }
    }
}

/// One step: both views forward (master with gradient on `x_q`, subordinate without on `x_k`),
/// the loss against the queue, backward into the master, an optimizer update with learning rate
/// `lr`, the momentum update of the subordinate encoder with coefficient `m`, and the enqueue of
/// the batch's normalised time-mean keys (of `x_k`). Reads the loss and the gradient norm back
/// ([`StepSync::ALL`]); see [`train_step_with`] for a step without host synchronisation.
pub fn train_step<E: Encoder>(
    pair: &EncoderPair<E>,
    optimizer: &mut Optimizer,
    queue: &mut Queue,
    x_q: &Tensor,
    x_k: &Tensor,
    lr: f64,
    m: f64,
    cfg: &StepConfig,
) -> Result<StepOutput> {
    let r = train_step_with(pair, optimizer, queue, x_q, x_k, lr, m, cfg, StepSync::ALL)?;
    Ok(StepOutput {
        loss: r.loss_value.unwrap_or(f32::NAN),
        grad_norm: r.grad_norm.unwrap_or(0.0),
        applied: r.applied,
    })
}

/// [`train_step`] with the read-backs chosen by `sync`. With [`StepSync::NONE`] and no clipping
/// the step queues its device work and returns without waiting for it: the queue stays on its
/// device, the loss is returned as a device scalar, and no gradient norm is computed.
pub fn train_step_with<E: Encoder>(
    pair: &EncoderPair<E>,
    optimizer: &mut Optimizer,
    queue: &mut Queue,
    x_q: &Tensor,
    x_k: &Tensor,
    lr: f64,
    m: f64,
    cfg: &StepConfig,
    sync: StepSync,
) -> Result<StepResult> {
    let mut none = |_: Phase| Ok(());
    train_step_marked(
        pair, optimizer, queue, x_q, x_k, lr, m, cfg, sync, &mut none,
    )
}

/// [`train_step_with`] calling `mark` at the end of each [`Phase`] (from
/// [`Phase::QueryForward`] to [`Phase::Enqueue`]; with a symmetric loss the forward phases and
/// the loss occur twice), e.g. [`crate::PhaseTimer::mark`]. The marks change nothing else.
pub fn train_step_marked<E: Encoder>(
    pair: &EncoderPair<E>,
    optimizer: &mut Optimizer,
    queue: &mut Queue,
    x_q: &Tensor,
    x_k: &Tensor,
    lr: f64,
    m: f64,
    cfg: &StepConfig,
    sync: StepSync,
    mark: &mut dyn FnMut(Phase) -> Result<()>,
) -> Result<StepResult> {
    let device = x_q.device();
    let negatives = queue.tensor(device)?;
    let step = optimizer.steps();
    let q = pair.master.embed(x_q, true)?;
    mark(Phase::QueryForward)?;
    let k = step_keys(pair, x_k, cfg, 2 * step)?;
    mark(Phase::KeyForward)?;
    let first = moco_loss(&q, &k, &negatives, &cfg.loss)?;
    let loss = if cfg.symmetric {
        mark(Phase::Loss)?;
        let q2 = pair.master.embed(x_k, true)?;
        mark(Phase::QueryForward)?;
        let k2 = step_keys(pair, x_q, cfg, 2 * step + 1)?;
        mark(Phase::KeyForward)?;
        let second = moco_loss(&q2, &k2, &negatives, &cfg.loss)?;
        ((first.loss + second.loss)? * 0.5)?
    } else {
        first.loss
    };
    let loss_f32 = loss.detach().to_dtype(candle_core::DType::F32)?;
    let loss_value = if sync.read_loss {
        let value = loss_f32.to_scalar::<f32>()?;
        if !value.is_finite() {
            mark(Phase::Loss)?;
            return Ok(StepResult {
                loss: loss_f32,
                loss_value: Some(value),
                grad_norm: None,
                applied: false,
            });
        }
        Some(value)
    } else {
        None
    };
    mark(Phase::Loss)?;
    let grads = loss.backward()?;
    mark(Phase::Backward)?;
    let grad_norm = optimizer.step_with(&grads, lr, cfg.grad_clip, sync.grad_norm)?;
    drop(grads);
    mark(Phase::Optimizer)?;
    momentum_update(&pair.key_vars, &pair.master_vars, m)?;
    mark(Phase::Momentum)?;
    queue.push(&first.key_mean)?;
    mark(Phase::Enqueue)?;
    Ok(StepResult {
        loss: loss_f32,
        loss_value,
        grad_norm,
        applied: true,
    })
}

#[cfg(test)]
mod tests;
