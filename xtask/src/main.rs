//! `cargo xtask <command>`: the project's entry point for users and CI.
//!
//! User commands (`inspect`, `pretrain`, `linear-probe`, ...) forward to the `nmoco` binary
//! (package `nmoco-cli`), built in release mode, with `--features cuda` when `--cuda` is given.
//! Maintenance commands (`tidy`, `ci`, `gpu-build`, `wheel`) run here. This crate depends on no workspace
//! crate, so it never compiles candle.

#![forbid(unsafe_code)]

mod commands;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "nmoco project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Decode an event file and print a summary (format, counts, ranges, sha256_txyp)
    Inspect(util::Forward),
    /// Generate the synthetic dataset ([--out DIR] [--seed N] [--classes K] [--per-class N])
    MakeSynthetic(util::Forward),
    /// Verify a dataset root: `data check --dataset NAME --root DIR [--deep] [--partial]`
    Data(util::Forward),
    /// Render frames of an event file or dataset sample as a PNG grid (FILE --out grid.png)
    Show(util::Forward),
    /// NeuroMoCo pre-training ([--config FILE] [--set k=v ...] [--cuda] [--resume | --resume-from epoch-NNNN]
    /// [--name RUN])
    Pretrain(util::Forward),
    /// Linear probe + kNN of a pre-trained encoder, with the random-init baseline
    /// ([--checkpoint PATH] [--config FILE] [--label-fraction F] [--set k=v ...] [--cuda])
    LinearProbe(util::Forward),
    /// Fine-tune a pre-trained encoder, with the supervised-from-scratch baseline
    /// ([--checkpoint PATH] [--label-fraction F] [--set k=v ...] [--cuda])
    Finetune(util::Forward),
    /// Write an encoder as a PyTorch state dict (CHECKPOINT --to spikingjelly --out FILE.safetensors)
    Export(util::Forward),
    /// Features of frames in a .npy file (--checkpoint CK | --init-from FILE) --input X.npy --out Y.npy
    Embed(util::Forward),
    /// Run the benchmarks (all CPU ones, or by name: decode frames lif conv sew-step moco-step
    /// gpu-step); arguments after `--` go to gpu-step
    Bench {
        names: Vec<String>,
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// Run the tidy checks (architecture invariants, kernel names, banned attributes)
    Tidy,
    /// What CI runs: fmt --check, tidy, clippy -D warnings, the test suite, then the Python
    /// steps with $NMOCO_PY (wheel + its pytest suite, the PyTorch oracle tests)
    Ci {
        /// Run only the Rust checks when NMOCO_PY is not set (names the skipped steps)
        #[arg(long)]
        no_python: bool,
        /// Print the steps and their commands without running them
        #[arg(long)]
        list: bool,
    },
    /// Build the `nmoco_events` Python wheel (maturin, abi3 for CPython >= 3.9) into target/wheels
    Wheel {
        /// Python whose maturin builds it (`PY -m maturin`); default $NMOCO_PY, else `maturin`
        #[arg(long)]
        python: Option<std::path::PathBuf>,
        /// Output folder for the wheel
        #[arg(long, default_value = "target/wheels")]
        out: std::path::PathBuf,
    },
    /// Build `nmoco` with `--features cuda` here (no GPU needed): sources tools/cuda-env.sh
    GpuBuild {
        /// Extra arguments for `cargo build`
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    std::env::set_current_dir(util::project_root())?;
    match cli.cmd {
        Cmd::Inspect(a) => commands::inspect::run(a),
        Cmd::MakeSynthetic(a) => commands::make_synthetic::run(a),
        Cmd::Data(a) => commands::data::run(a),
        Cmd::Show(a) => commands::show::run(a),
        Cmd::Pretrain(a) => commands::pretrain::run(a),
        Cmd::LinearProbe(a) => commands::linear_probe::run(a),
        Cmd::Finetune(a) => commands::finetune::run(a),
        Cmd::Export(a) => util::forward("export", a),
        Cmd::Embed(a) => util::forward("embed", a),
        Cmd::Bench { names, extra } => commands::bench::run(names, extra),
        Cmd::Tidy => {
            // The problems are already printed, one per line: end with the summary, no backtrace.
            if let Err(e) = commands::tidy::run() {
                eprintln!("{e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Ci { no_python, list } => commands::ci::run(no_python, list),
        Cmd::GpuBuild { args } => commands::gpu_build::run(args),
        Cmd::Wheel { python, out } => commands::wheel::run(python, out),
    }
}
