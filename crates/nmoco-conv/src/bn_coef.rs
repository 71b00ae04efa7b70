//! Batch norm's per-channel coefficients, the one definition of its maths: the forward as an
//! affine map of the input and the backward's input gradient as an affine map of the output
//! gradient and the input. [`crate::batch_norm_train`] and nmoco-snn's fused batch-norm +
//! neuron op (`bn_lif_multistep`) both call these, so the two agree by construction.

/// Training batch norm's output as a per-channel affine map `y = a[c]·x + d[c]` of its input:
/// `a = γ·invstd`, `d = β − μ·γ·invstd` (`invstd` = 1/√(σ² + ε)), computed in f64 and rounded
/// to f32. The one definition of these coefficients: [`crate::batch_norm_train`] and the fused
/// batch-norm + neuron op of nmoco-snn both call it, so their outputs agree bit for bit.
/// All slices have one entry per channel.
pub fn batch_norm_coef(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    invstd: &[f64],
) -> (Vec<f32>, Vec<f32>) {
    (0..gamma.len())
        .map(|ch| {
            let scale = f64::from(gamma[ch]) * invstd[ch];
            (
                scale as f32,
                (f64::from(beta[ch]) - f64::from(mean[ch]) * scale) as f32,
            )
        })
        .unzip()
}

/// `dL/dγ` of training batch norm per channel, from `Σ dL/dy·(x − μ)`: `Σ dL/dy·(x − μ)·invstd`.
pub fn batch_norm_dgamma(sum_dy_xc: &[f64], invstd: &[f64]) -> Vec<f64> {
    sum_dy_xc
        .iter()
        .zip(invstd)
        .map(|(&s, &inv)| s * inv)
        .collect()
}

/// The input gradient of training batch norm (statistics of the batch itself, `m` samples per
/// channel) as a per-channel affine map `dL/dx = ka[c]·dL/dy + kb[c]·x + kd[c]`, from `γ`, the
/// statistics, `dL/dγ` ([`batch_norm_dgamma`]) and `Σ dL/dy` (= `dL/dβ`); in f64, rounded to
/// f32. Returns `(ka, kb, kd)`. Shared by [`crate::batch_norm_train`]'s backward and nmoco-snn's fused
/// batch-norm + neuron backward.
pub fn batch_norm_input_grad_coef(
    gamma: &[f32],
    mean: &[f32],
    invstd: &[f64],
    dgamma: &[f64],
    sum_dy: &[f64],
    m: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = gamma.len();
    let (mut ka, mut kb, mut kd) = (vec![0f32; c], vec![0f32; c], vec![0f32; c]);
    for ch in 0..c {
        let k = f64::from(gamma[ch]) * invstd[ch];
        let bx = -k * invstd[ch] * dgamma[ch] / m;
        ka[ch] = k as f32;
        kb[ch] = bx as f32;
        kd[ch] = (-k * sum_dy[ch] / m - bx * f64::from(mean[ch])) as f32;
    }
    (ka, kb, kd)
}
