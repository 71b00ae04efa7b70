//! `cargo xtask bench [NAME...]`: the project's benchmarks, one after another (they are
//! benchmarks, not tests: run them on a quiet machine and compare with the anchor scripts run in
//! the same minutes, see docs/benchmarks.md). Without names, all of the CPU ones; `gpu-step`
//! runs only when named (it builds with `--features cuda` and needs a GPU; arguments after `--`
//! go to it, e.g. `cargo xtask bench gpu-step -- --model spikformer --precision bf16`).

use std::process::Command;

use anyhow::bail;

use crate::util::{cargo, run as exec};

/// (name, cargo arguments, what it measures).
pub const BENCHES: &[(&str, &[&str], &str)] = &[
    (
        "decode",
        &["bench", "-p", "nmoco-events", "--bench", "decode"],
        "event decoding, all formats (anchor: decode_bench.py)",
    ),
    (
        "frames",
        &["bench", "-p", "nmoco-frames", "--bench", "frames"],
        "event -> frame integration (anchor: SpikingJelly/tonic figures in results.md)",
    ),
    (
        "lif",
        &["bench", "-p", "nmoco-snn", "--bench", "lif"],
        "fused multi-step LIF, T = 16, N = 2 Mi (anchor: lif_bench.py)",
    ),
    (
        "conv",
        &[
            "run",
            "--profile",
            "bench",
            "-p",
            "nmoco-conv",
            "--example",
            "cpu_time",
            "--",
            "conv",
        ],
        "conv2d 3x3 [128,32,64,64] forward/backward (anchor: conv_bench.py)",
    ),
    (
        "sew-step",
        &["bench", "-p", "nmoco-models", "--bench", "sew_step"],
        "one SEW training step + per-layer profile (anchor: sew_step.py)",
    ),
    (
        "moco-step",
        &["bench", "-p", "nmoco-train", "--bench", "moco_step"],
        "one NeuroMoCo step, two views, K = 4096 (anchor: moco_step.py)",
    ),
];

/// The GPU benchmark: one NeuroMoCo step of SEW-ResNet-18 (or, with `--model spikformer`,
/// Spikformer-2-256) at T = 16, 2×128×128, batch 32, K = 1024 on CUDA device 0, one JSON line
/// (step ms, samples/s, peak GPU memory, precision, model). Built with `tools/cuda-env.sh`
/// sourced, as `gpu-build` does.
pub const GPU_STEP: (&str, &str) = (
    "gpu-step",
    "one NeuroMoCo step on CUDA, T = 16, 2x128x128, batch 32, K = 1024 (anchor: gpu_moco_step.py)",
);

/// The bash script that builds and runs the GPU step with `extra` arguments (shell-quoted).
pub fn gpu_step_script(extra: &[String]) -> String {
    let mut s = format!(
        "set -e; if [ -f {env} ] && ! command -v nvcc >/dev/null; then source {env}; fi; \
         exec cargo run --release --features cuda -p nmoco-train --example gpu_step --",
        env = super::gpu_build::ENV_SCRIPT
    );
    for a in extra {
        s.push_str(" '");
        s.push_str(&a.replace('\'', r"'\''"));
        s.push('\'');
    }
    s
}

pub fn run(names: Vec<String>, extra: Vec<String>) -> anyhow::Result<()> {
    for n in &names {
        if n != GPU_STEP.0 && !BENCHES.iter().any(|(b, _, _)| b == n) {
            let mut known: Vec<&str> = BENCHES.iter().map(|(b, _, _)| *b).collect();
            known.push(GPU_STEP.0);
            bail!("unknown benchmark {n:?}; known: {}", known.join(", "));
        }
    }
    if !extra.is_empty() && !names.iter().any(|n| n == GPU_STEP.0) {
        bail!("arguments after `--` are for gpu-step only: name it");
    }
    for (name, args, what) in BENCHES {
        if !names.is_empty() && !names.iter().any(|n| n == name) {
            continue;
        }
        eprintln!("== bench {name}: {what}");
        exec(Command::new(cargo()).args(*args))?;
    }
    if names.iter().any(|n| n == GPU_STEP.0) {
        eprintln!("== bench {}: {}", GPU_STEP.0, GPU_STEP.1);
        exec(Command::new("bash").arg("-c").arg(gpu_step_script(&extra)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn unknown_names_are_rejected_before_anything_runs() {
        let err = super::run(vec!["nope".into()], vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown benchmark \"nope\"") && err.contains("moco-step"));
        assert!(err.contains("gpu-step"));
        let err = super::run(vec!["decode".into()], vec!["--x".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("gpu-step only"), "{err}");
    }

    #[test]
    fn gpu_step_script_builds_with_cuda_and_quotes_arguments() {
        let s = super::gpu_step_script(&["--model".into(), "it's".into()]);
        assert!(
            s.contains("cargo run --release --features cuda -p nmoco-train --example gpu_step --")
        );
        assert!(s.contains("source tools/cuda-env.sh"));
        assert!(s.ends_with(" '--model' 'it'\\''s'"), "{s}");
    }
}
