//! Process-wide settings of the loop on an accelerator: TF32, and whether losses stay on the
//! device until log steps.

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::Device;

use crate::error::Result;

/// Lets f32 convolutions (cuDNN) and matmuls (cuBLAS) on CUDA use TF32 tensor cores, or not.
/// Both are process-wide settings; nothing changes on the CPU.
pub fn set_tf32(device: &Device, enabled: bool) -> Result<()> {
    if device.is_cuda() {
        // One switch for both: cuDNN convolutions and cuBLAS matmuls of f32 tensors. The rest of
        // the convolution settings (backend, search, workspace) keep their environment values.
        let mut c = nmoco_conv::cuda_conv_config()?;
        c.conv_tf32 = enabled;
        c.matmul_tf32 = enabled;
        nmoco_conv::set_cuda_conv_config(c);
        tracing::info!(tf32 = enabled, "f32 convolutions and matmuls on CUDA");
    }
    Ok(())
}

static DEFER_LOSSES: AtomicU8 = AtomicU8::new(0);

/// Overrides, process-wide, whether [`pretrain`](super::pretrain) leaves losses on the device until log steps:
/// `None` (the default) defers on accelerators and reads every loss on the CPU. Results are the
/// same either way unless a loss is not finite (tested on the CPU); meant for tests and
/// benchmarks.
pub fn set_defer_losses(mode: Option<bool>) {
    let v = match mode {
        None => 0,
        Some(true) => 1,
        Some(false) => 2,
    };
    DEFER_LOSSES.store(v, Ordering::Relaxed);
}

/// Whether the loop leaves losses on the device until log steps: on accelerators unless
/// [`set_defer_losses`] says otherwise.
pub(super) fn defer_losses(device: &Device) -> bool {
    match DEFER_LOSSES.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => !device.is_cpu(),
    }
}
