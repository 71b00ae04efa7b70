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
}
