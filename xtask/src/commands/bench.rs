//! `cargo xtask bench [NAME...]`: the project's benchmarks, one after another (they are
//! benchmarks, not tests: run them on a quiet machine and compare with the anchor scripts run in
//! the same minutes, see docs/benchmarks.md). Without names, all of them.

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

pub fn run(names: Vec<String>) -> anyhow::Result<()> {
    for n in &names {
        if !BENCHES.iter().any(|(b, _, _)| b == n) {
            let known: Vec<&str> = BENCHES.iter().map(|(b, _, _)| *b).collect();
            bail!("unknown benchmark {n:?}; known: {}", known.join(", "));
        }
    }
    for (name, args, what) in BENCHES {
        if !names.is_empty() && !names.iter().any(|n| n == name) {
            continue;
        }
        eprintln!("== bench {name}: {what}");
        exec(Command::new(cargo()).args(*args))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn unknown_names_are_rejected_before_anything_runs() {
        let err = super::run(vec!["nope".into()]).unwrap_err().to_string();
        assert!(err.contains("unknown benchmark \"nope\"") && err.contains("moco-step"));
    }
}
