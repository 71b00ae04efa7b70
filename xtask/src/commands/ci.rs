//! `cargo xtask ci`: the CPU checks CI runs, cheapest first.

use std::process::Command;

use crate::util::{cargo, run as exec};

pub fn run_ci() -> anyhow::Result<()> {
    exec(Command::new(cargo()).args(["fmt", "--all", "--check"]))?;
    crate::commands::tidy::run()?;
    exec(Command::new(cargo()).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    exec(Command::new(cargo()).args(["test", "--workspace"]))?;
    Ok(())
}

pub fn run() -> anyhow::Result<()> {
    run_ci()
}
