//! `cargo xtask tidy`: mechanical architecture invariants.
//!
//! - `nmoco-events` depends on no workspace crate and no ML crate; `nmoco-frames` and
//!   `nmoco-synth` depend on no ML crate.
//! - No `#[ignore]`, `#[should_panic]` or `dbg!` in the sources.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::util::cargo;

const ML_CRATES: &[&str] = &["candle-core", "candle-nn", "cudarc", "gemm"];

pub fn run() -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for (krate, no_workspace) in [
        ("nmoco-events", true),
        ("nmoco-frames", false),
        ("nmoco-synth", false),
    ] {
        let tree = normal_deps(krate)?;
        for line in tree.lines().skip(1) {
            let name = line.split_whitespace().next().unwrap_or("");
            if ML_CRATES.contains(&name) {
                problems.push(format!("{krate} depends on the ML crate {name}"));
            }
            if no_workspace && name.starts_with("nmoco-") {
                problems.push(format!("{krate} depends on the workspace crate {name}"));
            }
        }
    }
    scan_sources(Path::new("crates"), &mut problems)?;
    scan_sources(Path::new("xtask/src"), &mut problems)?;
    if !problems.is_empty() {
        bail!(
            "tidy found {} problem(s):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
    println!("tidy: ok");
    Ok(())
}

/// `cargo tree -p KRATE -e normal --prefix none --all-features`: every crate it links.
fn normal_deps(krate: &str) -> anyhow::Result<String> {
    let out = Command::new(cargo())
        .args([
            "tree",
            "-p",
            krate,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--all-features",
        ])
        .output()
        .context("failed to run cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree -p {krate} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn scan_sources(dir: &Path, problems: &mut Vec<String>) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            scan_sources(&path, problems)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            if path.ends_with("tidy.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            for (i, line) in text.lines().enumerate() {
                for banned in ["#[ignore", "#[should_panic", "dbg!("] {
                    if line.contains(banned) {
                        problems.push(format!("{}:{}: {banned}", path.display(), i + 1));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// `cargo test` enforces the same invariants as `cargo xtask tidy`.
    #[test]
    fn tidy() {
        std::env::set_current_dir(crate::util::project_root()).unwrap();
        super::run().unwrap();
    }
}
