//! Helpers shared by the subcommands: project root, forwarding to the `nmoco` binary.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// Arguments passed through untouched to the `nmoco` binary.
#[derive(clap::Args, Debug, Default)]
pub struct Forward {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the root")
        .to_path_buf()
}

/// Run `cargo run --release -p nmoco-cli -- <sub> <args>`; `--cuda` in `args` enables the
/// `cuda` feature (and is passed on so the binary picks the GPU).
pub fn forward(sub: &str, fwd: Forward) -> anyhow::Result<()> {
    let cuda = fwd.args.iter().any(|a| a == "--cuda");
    let mut cmd = Command::new(cargo());
    cmd.args(["run", "--release", "--quiet", "-p", "nmoco-cli"]);
    if cuda {
        cmd.args(["--features", "cuda"]);
    }
    cmd.arg("--").arg(sub).args(&fwd.args);
    // The binary has already printed its error: pass its exit status on without adding ours.
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Run a command, inheriting stdio, and fail with its exit status.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} exited with {status}");
    }
    Ok(())
}
