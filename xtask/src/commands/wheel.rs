//! `cargo xtask wheel`: builds the `nmoco_events` Python wheel (crate `crates/nmoco-py`) with
//! maturin, in release mode, as an abi3 wheel for CPython >= 3.9, into `target/wheels/`.
//!
//! maturin comes from `--python PY` (run as `PY -m maturin`, and the wheel is tagged for that
//! interpreter's platform), else `$NMOCO_PY` (what `.ci/run` exports), else `maturin` on PATH.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::util::run as exec;

pub fn run(python: Option<PathBuf>, out: PathBuf) -> anyhow::Result<()> {
    let python = python.or_else(|| std::env::var_os("NMOCO_PY").map(PathBuf::from));
    let mut cmd = match &python {
        Some(py) => {
            let mut c = Command::new(py);
            c.args(["-m", "maturin"]);
            c
        }
        None => Command::new("maturin"),
    };
    cmd.args([
        "build",
        "--release",
        "--manifest-path",
        "crates/nmoco-py/Cargo.toml",
    ])
    .arg("--out")
    .arg(&out);
    if let Some(py) = &python {
        cmd.arg("--interpreter").arg(py);
    }
    exec(&mut cmd).context("building the wheel (is maturin installed? `pip install maturin`)")?;
    let mut wheels = wheels_in(&out);
    wheels.sort();
    for w in wheels {
        println!("{}", w.display());
    }
    Ok(())
}

/// The `nmoco_events-*.whl` files in `dir` (none when it cannot be read).
pub fn wheels_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("nmoco_events-") && n.ends_with(".whl"))
        })
        .collect()
}
