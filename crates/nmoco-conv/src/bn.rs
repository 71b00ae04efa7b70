//! Batch norm (training and inference) and per-channel affine maps as fused,
//! multi-threaded CPU custom ops.
//!
//! Layout: `[N, C, ...]`, contiguous; channel `c` of image `n` is the segment
//! `x[(n·C + c)·S .. (n·C + c + 1)·S]` with `S` the product of the trailing dims.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::bn_coef::{batch_norm_coef, batch_norm_dgamma, batch_norm_input_grad_coef};
use crate::error::ConvError;
use crate::util::{cpu_f32, is_cpu_f32};

/// `(N, C, S)` of a `[N, C, ...]` tensor.
fn ncs(op: &'static str, dims: &[usize]) -> std::result::Result<(usize, usize, usize), ConvError> {
    if dims.len() < 2 {
        return Err(ConvError::Rank {
            op,
            what: "input",
            expected: "at least 2",
            shape: dims.to_vec(),
        });
    }
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}

fn check_channel_param(
    op: &'static str,
    what: &'static str,
    t: &Tensor,
    c: usize,
) -> std::result::Result<(), ConvError> {
    if t.dims() != [c] {
        return Err(ConvError::ChannelParam {
            op,
            what,
            channels: c,
            shape: t.dims().to_vec(),
        });
    }
    Ok(())
}

const LANES: usize = 16;

/// `(Σ (x-k), Σ (x-k)²)` of one segment.
fn seg_shifted_sums(x: &[f32], k: f32) -> (f64, f64) {
    let mut s1 = [0.0f32; LANES];
    let mut s2 = [0.0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for ch in &mut chunks {
        for l in 0..LANES {
            let v = ch[l] - k;
            s1[l] += v;
            s2[l] += v * v;
        }
    }
    let (mut t1, mut t2) = (0.0f64, 0.0f64);
    for &v in chunks.remainder() {
        let v = f64::from(v - k);
        t1 += v;
        t2 += v * v;
    }
    for l in 0..LANES {
        t1 += f64::from(s1[l]);
        t2 += f64::from(s2[l]);
    }
    (t1, t2)
}

/// `(Σ dy, Σ dy·(x-m))` of one segment.
fn seg_grad_sums(x: &[f32], dy: &[f32], m: f32) -> (f64, f64) {
    let mut s1 = [0.0f32; LANES];
    let mut s2 = [0.0f32; LANES];
    let mut cx = x.chunks_exact(LANES);
    let mut cd = dy.chunks_exact(LANES);
    for (a, d) in (&mut cx).zip(&mut cd) {
        for l in 0..LANES {
            s1[l] += d[l];
            s2[l] += d[l] * (a[l] - m);
        }
    }
    let (mut t1, mut t2) = (0.0f64, 0.0f64);
    for (&a, &d) in cx.remainder().iter().zip(cd.remainder()) {
        t1 += f64::from(d);
        t2 += f64::from(d) * f64::from(a - m);
    }
    for l in 0..LANES {
        t1 += f64::from(s1[l]);
        t2 += f64::from(s2[l]);
    }
    (t1, t2)
}

/// Per-channel pair of sums over all `(n, segment)`: `seg(c, offset)` reduces
/// one segment. Parallel over channels and blocks of images.
fn channel_reduce(
    n: usize,
    c: usize,
    s: usize,
    seg: impl Fn(usize, usize) -> (f64, f64) + Sync,
) -> Vec<(f64, f64)> {
    // Enough items to balance a small pool, each spanning at least ~16K elements.
    // The split depends on the shape only (never on the thread count), and partial
    // sums are combined in order, so the statistics are bitwise reproducible.
    let want_blocks = 16usize.div_ceil(c.max(1));
    let min_imgs = (16_384 / s.max(1)).max(1);
    let blocks = want_blocks.min(n.div_ceil(min_imgs)).max(1);
    let per = n.div_ceil(blocks).max(1);
    let blocks = n.div_ceil(per).max(1);
    let partial: Vec<(f64, f64)> = (0..c * blocks)
        .into_par_iter()
        .map(|i| {
            let (ch, blk) = (i / blocks, i % blocks);
            let (mut a, mut b) = (0.0, 0.0);
            for img in blk * per..((blk + 1) * per).min(n) {
                let (u, v) = seg(ch, (img * c + ch) * s);
                a += u;
                b += v;
            }
            (a, b)
        })
        .collect();
    partial
        .chunks(blocks)
        .map(|p| p.iter().fold((0.0, 0.0), |(a, b), (u, v)| (a + u, b + v)))
        .collect()
}

/// `out = a[c]·u + b[c]·v + d[c]` per element (`v` optional), parallel.
fn channel_affine_kernel(
    u: &[f32],
    v: Option<&[f32]>,
    c: usize,
    s: usize,
    coef: &AffineCoef,
) -> Vec<f32> {
    let mut out = vec![0.0f32; u.len()];
    if u.is_empty() {
        return out;
    }
    let segs_per_chunk = (16_384 / s.max(1)).max(1);
    let chunk = segs_per_chunk * s;
    out.par_chunks_mut(chunk).enumerate().for_each(|(ci, o)| {
        let base = ci * chunk;
        for (si, oseg) in o.chunks_mut(s).enumerate() {
            let off = base + si * s;
            let ch = (off / s) % c;
            let (a, d) = (coef.a[ch], coef.d[ch]);
            let useg = &u[off..off + oseg.len()];
            match v {
                Some(v) => {
                    let b = coef.b[ch];
                    let vseg = &v[off..off + oseg.len()];
                    for ((o, &x), &y) in oseg.iter_mut().zip(useg).zip(vseg) {
                        *o = a * x + b * y + d;
                    }
                }
                None => {
                    for (o, &x) in oseg.iter_mut().zip(useg) {
                        *o = a * x + d;
                    }
                }
            }
        }
    });
    out
}

/// Per-channel coefficients of `a·u + b·v + d`.
#[derive(Debug, Clone)]
struct AffineCoef {
    a: Vec<f32>,
    b: Vec<f32>,
    d: Vec<f32>,
}

/// `u -> a[c]·u + d[c]` (no backward).
struct Affine1Op(AffineCoef);

impl CustomOp1 for Affine1Op {
    fn name(&self) -> &'static str {
        "nmoco-channel-affine1"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, c, sz) = ncs(self.name(), l.dims())?;
        let u = cpu_f32(self.name(), "input", s, l)?;
        let out = channel_affine_kernel(u, None, c, sz, &self.0);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// `(u, v) -> a[c]·u + b[c]·v + d[c]` (no backward).
struct Affine2Op(AffineCoef);

impl CustomOp2 for Affine2Op {
    fn name(&self) -> &'static str {
        "nmoco-channel-affine2"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, sz) = ncs(self.name(), l1.dims())?;
        if l1.dims() != l2.dims() {
            Err(ConvError::GradShape {
                op: self.name(),
                expected: l1.dims().to_vec(),
                got: l2.dims().to_vec(),
            })?
        }
        let u = cpu_f32(self.name(), "first input", s1, l1)?;
        let v = cpu_f32(self.name(), "second input", s2, l2)?;
        let out = channel_affine_kernel(u, Some(v), c, sz, &self.0);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `x -> [2, C]`: batch mean and biased variance per channel (no backward).
struct StatsOp;

impl CustomOp1 for StatsOp {
    fn name(&self) -> &'static str {
        "nmoco-bn-stats"
    }
    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, s) = ncs(self.name(), l.dims())?;
        let x = cpu_f32(self.name(), "input", st, l)?;
        let m = (n * s) as f64;
        if x.is_empty() {
            return Ok((CpuStorage::F32(vec![0.0; 2 * c]), Shape::from((2, c))));
        }
        // Shift by the channel's first element against cancellation.
        let sums = channel_reduce(n, c, s, |ch, off| {
            seg_shifted_sums(&x[off..off + s], x[ch * s])
        });
        let mut out = vec![0.0f32; 2 * c];
        for (ch, (s1, s2)) in sums.into_iter().enumerate() {
            let k = f64::from(x[ch * s]);
            let mean_shift = s1 / m;
            out[ch] = (k + mean_shift) as f32;
            out[c + ch] = (s2 / m - mean_shift * mean_shift).max(0.0) as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }
}

/// `(x, dy) -> [2, C]`: `Σ dy` and `Σ dy·(x - mean[c])` per channel (no backward).
struct GradSumsOp {
    mean: Vec<f32>,
}

impl CustomOp2 for GradSumsOp {
    fn name(&self) -> &'static str {
        "nmoco-bn-grad-sums"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, s) = ncs(self.name(), l1.dims())?;
        if l1.dims() != l2.dims() {
            Err(ConvError::GradShape {
                op: self.name(),
                expected: l1.dims().to_vec(),
                got: l2.dims().to_vec(),
            })?
        }
        let x = cpu_f32(self.name(), "input", s1, l1)?;
        let dy = cpu_f32(self.name(), "output gradient", s2, l2)?;
        let sums = channel_reduce(n, c, s, |ch, off| {
            seg_grad_sums(&x[off..off + s], &dy[off..off + s], self.mean[ch])
        });
        let mut out = vec![0.0f32; 2 * c];
        for (ch, (a, b)) in sums.into_iter().enumerate() {
            out[ch] = a as f32;
            out[c + ch] = b as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }
}

/// Training batch norm `(x, gamma, beta) -> y` with precomputed batch statistics.
struct BnTrainOp {
    mean: Vec<f32>,
    invstd: Vec<f64>,
}

impl CustomOp3 for BnTrainOp {
    fn name(&self) -> &'static str {
        "nmoco-batch-norm-train"
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
        let (_, c, s) = ncs(self.name(), l1.dims())?;
        let x = cpu_f32(self.name(), "input", s1, l1)?;
        let gamma = cpu_f32(self.name(), "gamma", s2, l2)?;
        let beta = cpu_f32(self.name(), "beta", s3, l3)?;
        let (a, d) = batch_norm_coef(gamma, beta, &self.mean, &self.invstd);
        let coef = AffineCoef {
            a,
            b: Vec::new(),
            d,
        };
        let out = channel_affine_kernel(x, None, c, s, &coef);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, s) = ncs(self.name(), x.dims())?;
        let dy = dy.contiguous()?;
        let sums = x
            .apply_op2_no_bwd(
                &dy,
                &GradSumsOp {
                    mean: self.mean.clone(),
                },
            )?
            .to_vec2::<f32>()?;
        let m = (n * s).max(1) as f64;
        let dbeta: Vec<f32> = sums[0].clone();
        let sum_dy_xc: Vec<f64> = sums[1].iter().map(|&v| f64::from(v)).collect();
        let dgamma = batch_norm_dgamma(&sum_dy_xc, &self.invstd);
        let dx = if x.track_op() {
            let g = gamma.to_vec1::<f32>()?;
            let sum_dy: Vec<f64> = dbeta.iter().map(|&v| f64::from(v)).collect();
            let (a, b, d) =
                batch_norm_input_grad_coef(&g, &self.mean, &self.invstd, &dgamma, &sum_dy, m);
            let coef = AffineCoef { a, b, d };
            Some(dy.apply_op2_no_bwd(x, &Affine2Op(coef))?)
        } else {
            None
        };
        let dev = x.device();
        let dgamma = if gamma.track_op() {
            let v: Vec<f32> = dgamma.iter().map(|&v| v as f32).collect();
            Some(Tensor::from_vec(v, c, dev)?)
        } else {
            None
        };
        let dbeta = if beta.track_op() {
            Some(Tensor::from_vec(dbeta, c, dev)?)
        } else {
            None
        };
        Ok((dx, dgamma, dbeta))
    }
}

/// Per-channel affine map `(x, scale, shift) -> scale[c]·x + shift[c]`.
struct ChannelAffineOp;

impl CustomOp3 for ChannelAffineOp {
    fn name(&self) -> &'static str {
        "nmoco-channel-affine"
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
        let (_, c, s) = ncs(self.name(), l1.dims())?;
        let x = cpu_f32(self.name(), "input", s1, l1)?;
        let scale = cpu_f32(self.name(), "scale", s2, l2)?;
        let shift = cpu_f32(self.name(), "shift", s3, l3)?;
        let coef = AffineCoef {
            a: scale.to_vec(),
            b: Vec::new(),
            d: shift.to_vec(),
        };
        let out = channel_affine_kernel(x, None, c, s, &coef);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, c, _) = ncs(self.name(), x.dims())?;
        let dy = dy.contiguous()?;
        let dx = if x.track_op() {
            let coef = AffineCoef {
                a: scale.to_vec1::<f32>()?,
                b: Vec::new(),
                d: vec![0.0; c],
            };
            Some(dy.apply_op1_no_bwd(&Affine1Op(coef))?)
        } else {
            None
        };
        let (dscale, dshift) = if scale.track_op() || shift.track_op() {
            let sums = x.apply_op2_no_bwd(&dy, &GradSumsOp { mean: vec![0.0; c] })?;
            (
                scale.track_op().then(|| sums.get(1)).transpose()?,
                shift.track_op().then(|| sums.get(0)).transpose()?,
            )
        } else {
            (None, None)
        };
        Ok((dx, dscale, dshift))
    }
}

/// `scale[c]·x + shift[c]` over `[N, C, ...]` in one fused pass, autograd-aware
/// for all three arguments (falls back to broadcast ops off the CPU f32 path).
pub fn channel_affine(x: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    let (_, c, _) = ncs("channel_affine", x.dims())?;
    check_channel_param("channel_affine", "scale", scale, c)?;
    check_channel_param("channel_affine", "shift", shift, c)?;
    if !is_cpu_f32(&[x, scale, shift]) {
        let shape = channel_shape(x.rank(), c);
        return x
            .broadcast_mul(&scale.reshape(shape.clone())?)?
            .broadcast_add(&shift.reshape(shape)?);
    }
    x.contiguous()?
        .apply_op3(&scale.contiguous()?, &shift.contiguous()?, ChannelAffineOp)
}

/// `[1, C, 1, ...]` with `rank` dims.
fn channel_shape(rank: usize, c: usize) -> Vec<usize> {
    let mut shape = vec![1usize; rank];
    shape[1] = c;
    shape
}

/// Training-mode batch norm over every dim but 1 of `[N, C, H, W]` (or `[N, C]`),
/// with affine `gamma`/`beta` (`[C]`).
///
/// Returns `(y, batch_mean [C], batch_var_biased [C])`; `y` is autograd-aware
/// for `x`, `gamma` and `beta`, mean and variance are detached (the caller
/// updates running statistics, with the unbiased variance as PyTorch does).
/// One fused, multi-threaded statistics pass and one normalisation pass forward;
/// one reduction pass and one elementwise pass backward.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (_, c, _) = ncs("batch_norm_train", x.dims())?;
    check_channel_param("batch_norm_train", "gamma", gamma, c)?;
    check_channel_param("batch_norm_train", "beta", beta, c)?;
    if !is_cpu_f32(&[x, gamma, beta]) {
        return batch_norm_train_reference(x, gamma, beta, eps);
    }
    let x = x.contiguous()?;
    let stats = x.apply_op1_no_bwd(&StatsOp)?;
    let sv = stats.to_vec2::<f32>()?;
    let mean = sv[0].clone();
    let invstd = sv[1]
        .iter()
        .map(|&v| 1.0 / (f64::from(v) + eps).sqrt())
        .collect();
    let y = x.apply_op3(
        &gamma.contiguous()?,
        &beta.contiguous()?,
        BnTrainOp { mean, invstd },
    )?;
    Ok((y, stats.get(0)?, stats.get(1)?))
}

/// The batch statistics of training-mode batch norm over every dim but 1 of `[N, C, H, W]`:
/// `(mean [C], var_biased [C])`, detached, computed exactly as [`batch_norm_train`] does (one
/// fused multi-threaded pass on CPU f32; plain ops elsewhere). For callers that fuse the
/// normalisation into the next op (e.g. `nmoco_snn::bn_lif_multistep`).
pub fn batch_stats(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let (_, c, _) = ncs("batch_stats", x.dims())?;
    if !is_cpu_f32(&[x]) {
        let dims: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
        let x = x.detach();
        let mean = x.mean_keepdim(dims.clone())?;
        let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(dims)?;
        return Ok((mean.reshape(c)?, var.reshape(c)?));
    }
    let stats = x.contiguous()?.apply_op1_no_bwd(&StatsOp)?;
    Ok((stats.get(0)?, stats.get(1)?))
}

/// Inference batch norm with running statistics, fused into one scale-and-shift
/// pass: `y = (x - mean)/sqrt(var + eps)·gamma + beta`; autograd-aware for all
/// tensor arguments.
pub fn batch_norm_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let (_, c, _) = ncs("batch_norm_eval", x.dims())?;
    for (what, t) in [
        ("gamma", gamma),
        ("beta", beta),
        ("running_mean", running_mean),
        ("running_var", running_var),
    ] {
        check_channel_param("batch_norm_eval", what, t, c)?;
    }
    let scale = (gamma / (running_var + eps)?.sqrt()?)?;
    let shift = (beta - (running_mean * &scale)?)?;
    channel_affine(x, &scale, &shift)
}

/// Reference twin of [`batch_norm_train`] built from plain candle ops.
pub fn batch_norm_train_reference(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (_, c, _) = ncs("batch_norm_train_reference", x.dims())?;
    let rank = x.rank();
    let dims: Vec<usize> = (0..rank).filter(|&d| d != 1).collect();
    let mean = x.mean_keepdim(dims.clone())?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(dims)?;
    let shape = channel_shape(rank, c);
    let y = centred
        .broadcast_div(&(&var + eps)?.sqrt()?)?
        .broadcast_mul(&gamma.reshape(shape.clone())?)?
        .broadcast_add(&beta.reshape(shape)?)?;
    Ok((y, mean.flatten_all()?.detach(), var.flatten_all()?.detach()))
}

/// Reference twin of [`batch_norm_eval`] built from plain candle ops.
pub fn batch_norm_eval_reference(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let (_, c, _) = ncs("batch_norm_eval_reference", x.dims())?;
    let shape = channel_shape(x.rank(), c);
    let r = |t: &Tensor| t.reshape(shape.clone());
    x.broadcast_sub(&r(running_mean)?)?
        .broadcast_div(&r(&(running_var + eps)?.sqrt()?)?)?
        .broadcast_mul(&r(gamma)?)?
        .broadcast_add(&r(beta)?)
}

/// Unbiased variance from a biased one over `count` samples (`var · m/(m-1)`),
/// for running-statistics updates as PyTorch does them.
pub fn unbiased_var(var_biased: &Tensor, count: usize) -> Result<Tensor> {
    let m = count as f64;
    var_biased.affine(if count > 1 { m / (m - 1.0) } else { 1.0 }, 0.0)
}
