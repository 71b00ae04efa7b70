//! The fused training batch norm + IF/LIF kernels (`kernels/bn_lif.cu`): sources, NVRTC
//! options, module and kernel names, and the chunking of its two-stage reductions. Outside the
//! `cuda` feature, like its parent, so that the NVRTC compile test checks exactly what the GPU
//! path loads.

use super::{COMMON_SRC, DTYPE_SRC, KernelDtype, Variant, pool_options};

/// The kernel source, compiled as two kinds of module: the reductions ([`bn_reduce_source`], one module per dtype) and the neuron kernels
/// ([`BnLifVariant`], one module per neuron variant).
pub const BN_LIF_SRC: &str = include_str!("../../kernels/bn_lif.cu");

pub const KERNEL_BN_STATS_PARTIAL: &str = "nmoco_bn_stats_partial";
pub const KERNEL_BN_STATS_FINISH: &str = "nmoco_bn_stats_finish";
pub const KERNEL_BN_COEF: &str = "nmoco_bn_coef";
pub const KERNEL_BN_GRAD_PARTIAL: &str = "nmoco_bn_grad_partial";
pub const KERNEL_BN_GRAD_FINISH: &str = "nmoco_bn_grad_finish";
pub const KERNEL_BN_INPUT_GRAD: &str = "nmoco_bn_input_grad";
/// Every entry point of the reduction module ([`bn_reduce_source`]).
pub const BN_REDUCE_KERNELS: [&str; 6] = [
    KERNEL_BN_STATS_PARTIAL,
    KERNEL_BN_STATS_FINISH,
    KERNEL_BN_COEF,
    KERNEL_BN_GRAD_PARTIAL,
    KERNEL_BN_GRAD_FINISH,
    KERNEL_BN_INPUT_GRAD,
];
pub const KERNEL_BN_LIF_FWD: &str = "nmoco_bn_lif_fwd";
pub const KERNEL_BN_LIF_BWD: &str = "nmoco_bn_lif_bwd";
/// Every entry point of a [`BnLifVariant`] module.
pub const BN_LIF_KERNELS: [&str; 2] = [KERNEL_BN_LIF_FWD, KERNEL_BN_LIF_BWD];

/// Storage dtypes the fused batch norm + neuron op supports on CUDA (the compile test covers
/// exactly these).
pub const BN_LIF_DTYPES: [KernelDtype; 2] = [KernelDtype::F32, KernelDtype::Bf16];

/// Threads per block of the reduction kernels (`NMOCO_BN_THREADS` in `bn_lif.cu`).
pub const BN_THREADS: usize = 256;

/// The reduction module's source (no neuron code: `dtype.cuh` then `bn_lif.cu`).
pub fn bn_reduce_source() -> String {
    format!("{DTYPE_SRC}\n{BN_LIF_SRC}")
}

/// Module name of the reduction kernels for `dtype`, e.g. `nmoco_bnred_bf16`.
pub fn bn_reduce_module_name(dtype: KernelDtype) -> String {
    format!("nmoco_bnred_{}", dtype.name())
}

/// NVRTC options of the reduction kernels for `dtype` on `compute_<arch>`.
pub fn bn_reduce_options(dtype: KernelDtype, arch: u32) -> Vec<String> {
    let mut o = pool_options(dtype, arch);
    o.push("-DNMOCO_BN_PART=0".into());
    o
}

/// Chunking of a per-channel reduction over `m` values (stage 1 of the two-stage reductions):
/// `(chunks, len)`, block `j` covering values `[j·len, min((j+1)·len, m))`; about 32 values per
/// thread, every value in exactly one chunk, no empty chunk (`chunks = 1`, `len = 0` for
/// `m = 0`).
pub fn bn_reduce_chunks(m: usize) -> (usize, usize) {
    const PER_BLOCK: usize = BN_THREADS * 32;
    if m == 0 {
        return (1, 0);
    }
    let chunks = m.div_ceil(PER_BLOCK).min(65_535);
    let len = m.div_ceil(chunks);
    (m.div_ceil(len), len)
}

/// The neuron kernels of the fused batch norm + IF/LIF op: a neuron [`Variant`] (never PLIF)
/// compiled from `bn_lif.cu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BnLifVariant(pub Variant);

impl BnLifVariant {
    /// Every IF/LIF variant in [`BN_LIF_DTYPES`], `T` a kernel argument.
    pub fn all() -> Vec<BnLifVariant> {
        Variant::all()
            .into_iter()
            .filter(|v| !v.plif && BN_LIF_DTYPES.contains(&v.dtype))
            .map(BnLifVariant)
            .collect()
    }

    /// Module name, e.g. `nmoco_bnlif_f32_decay_hard_detach_atan_t16`.
    pub fn module_name(&self) -> String {
        let name = self.0.module_name();
        format!("nmoco_bn{}", name.strip_prefix("nmoco_").unwrap_or(&name))
    }

    /// The neuron variant's options plus `-DNMOCO_BN_PART=1`.
    pub fn options(&self, arch: u32) -> Vec<String> {
        let mut o = self.0.options(arch);
        o.push("-DNMOCO_BN_PART=1".into());
        o
    }

    /// `dtype.cuh`, `neuron_common.cuh`, then `bn_lif.cu`.
    pub fn source(&self) -> String {
        format!("{DTYPE_SRC}\n{COMMON_SRC}\n{BN_LIF_SRC}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_chunks_cover_every_value_once() {
        for m in [
            0usize,
            1,
            2,
            255,
            256,
            8191,
            8192,
            8193,
            100_000,
            2_097_152,
            1 << 40,
        ] {
            let (chunks, len) = bn_reduce_chunks(m);
            assert!((1..=65_535).contains(&chunks), "m={m}: {chunks} chunks");
            if m == 0 {
                assert_eq!(len, 0);
                continue;
            }
            // Every value covered, no chunk empty.
            assert!(chunks * len >= m, "m={m}: {chunks}x{len}");
            assert!((chunks - 1) * len < m, "m={m}: empty last chunk");
            assert!(len <= BN_THREADS * 32 || chunks == 65_535 || m <= BN_THREADS * 32);
        }
    }

    #[test]
    fn bn_lif_variants_are_the_non_plif_f32_bf16_ones() {
        let all = BnLifVariant::all();
        assert_eq!(all.len(), 2 * 3 * 2 * 2 * super::super::SG_NAMES.len());
        assert!(
            all.iter()
                .all(|v| !v.0.plif && v.0.dtype != KernelDtype::F16)
        );
        let v = all[0].0.with_t_static(16);
        assert!(
            BnLifVariant(v)
                .module_name()
                .starts_with("nmoco_bnlif_f32_")
        );
        assert!(BnLifVariant(v).module_name().ends_with("_t16"));
        assert!(
            BnLifVariant(v)
                .options(90)
                .contains(&"-DNMOCO_BN_PART=1".to_string())
        );
        assert_ne!(
            bn_reduce_module_name(KernelDtype::F32),
            bn_reduce_module_name(KernelDtype::Bf16)
        );
    }

    /// A host model of `nmoco_bn_stats_partial` + `nmoco_bn_stats_finish` for channel `c` of
    /// `x: [rows, c_len, sdim]`: the same chunking, the same incremental `(row, s)` walk per
    /// thread, per-thread shifted f32 sums, the f32 Chan tree per block and the f64 merge. Returns
    /// `(mean, biased var)` and how often each of the channel's values was visited. It checks the
    /// algorithm (coverage of the walk, numerical soundness), not the CUDA code itself.
    fn model_stats(
        x: &[f32],
        rows: usize,
        c_len: usize,
        sdim: usize,
        c: usize,
    ) -> (f64, f64, Vec<u32>) {
        fn merge<F>(a: (F, F, F), b: (F, F, F)) -> (F, F, F)
        where
            F: Copy
                + PartialEq
                + Default
                + std::ops::Add<Output = F>
                + std::ops::Sub<Output = F>
                + std::ops::Mul<Output = F>
                + std::ops::Div<Output = F>,
        {
            let zero = F::default();
            if b.0 == zero {
                return a;
            }
            if a.0 == zero {
                return b;
            }
            let n = a.0 + b.0;
            let delta = b.1 - a.1;
            let fb = b.0 / n;
            (n, a.1 + delta * fb, a.2 + b.2 + delta * delta * a.0 * fb)
        }
        let m = rows * sdim;
        let (chunks, len) = bn_reduce_chunks(m);
        let addr = |row: usize, s: usize| (row * c_len + c) * sdim + s;
        let shift = x[addr(0, 0)];
        let mut visits = vec![0u32; m];
        let mut total = (0f64, 0f64, 0f64);
        for j in 0..chunks {
            let (q0, q1) = (j * len, ((j + 1) * len).min(m));
            let mut block: Vec<(f32, f32, f32)> = (0..BN_THREADS)
                .map(|tid| {
                    let (mut cnt, mut s1, mut s2) = (0f32, 0f32, 0f32);
                    let mut q = q0 + tid;
                    if q < q1 {
                        let (mut row, mut s) = (q / sdim, q % sdim);
                        let (step_rows, step_s) = (BN_THREADS / sdim, BN_THREADS % sdim);
                        while q < q1 {
                            visits[row * sdim + s] += 1;
                            let v = x[addr(row, s)] - shift;
                            cnt += 1.0;
                            s1 += v;
                            s2 += v * v;
                            row += step_rows;
                            s += step_s;
                            if s >= sdim {
                                s -= sdim;
                                row += 1;
                            }
                            q += BN_THREADS;
                        }
                    }
                    if cnt > 0.0 {
                        let d = s1 / cnt;
                        (cnt, shift + d, (s2 - s1 * d).max(0.0))
                    } else {
                        (0.0, 0.0, 0.0)
                    }
                })
                .collect();
            let mut h = BN_THREADS / 2;
            while h > 0 {
                for t in 0..h {
                    block[t] = merge(block[t], block[t + h]);
                }
                h /= 2;
            }
            let (n, mean, m2) = block[0];
            total = merge(total, (f64::from(n), f64::from(mean), f64::from(m2)));
        }
        (total.1, total.2 / total.0, visits)
    }

    #[test]
    fn model_of_the_stats_kernels_covers_every_value_once_and_does_not_cancel() {
        // (rows, channels, positions per channel, offset): S = 1 (tokens), S < and > the
        // block size, many chunks per channel, a large offset against a unit spread.
        for &(rows, c_len, sdim, offset) in &[
            (64usize, 3usize, 1usize, 0f32),
            (7, 2, 37, 0.0),
            (5, 2, 300, 1000.0),
            (40, 1, 1024, 100.0),
        ] {
            let n = rows * c_len * sdim;
            // Uniform in [-1, 1) + offset (xorshift; no dependency).
            let mut st = 0x9E37_79B9_7F4A_7C15u64 ^ rows as u64;
            let x: Vec<f32> = (0..n)
                .map(|_| {
                    st ^= st << 13;
                    st ^= st >> 7;
                    st ^= st << 17;
                    (st >> 40) as f32 / (1u64 << 23) as f32 - 1.0 + offset
                })
                .collect();
            for c in 0..c_len {
                let (mean, var, visits) = model_stats(&x, rows, c_len, sdim, c);
                assert!(
                    visits.iter().all(|&v| v == 1),
                    "{rows}x{c_len}x{sdim} c={c}"
                );
                let vals: Vec<f64> = (0..rows * sdim)
                    .map(|q| f64::from(x[((q / sdim) * c_len + c) * sdim + q % sdim]))
                    .collect();
                let em = vals.iter().sum::<f64>() / vals.len() as f64;
                let ev = vals.iter().map(|v| (v - em).powi(2)).sum::<f64>() / vals.len() as f64;
                assert!(
                    (mean - em).abs() <= 1e-6 * em.abs().max(1.0),
                    "mean {mean} vs {em}"
                );
                assert!(
                    (var - ev).abs() <= 1e-5 * ev,
                    "{rows}x{sdim}+{offset}: var {var} vs {ev}"
                );
            }
        }
    }
}
