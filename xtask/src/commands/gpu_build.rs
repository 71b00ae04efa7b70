//! `cargo xtask gpu-build [cargo args...]`: build the `nmoco` binary with `--features cuda` on a
//! machine without a GPU or CUDA toolkit.
//!
//! It runs `cargo fetch` (the driver stub is generated from cudarc's sources), then, in one
//! bash process, sources the project's `tools/cuda-env.sh` (CUDA 13 from PyPI wheels plus a
//! link-time stub of `libcuda.so`) and runs `cargo build --release --features cuda -p nmoco-cli`
//! with any extra arguments appended. The binary then runs on a GPU machine with the CUDA 13
//! libraries on `LD_LIBRARY_PATH` (see the script's header).

use std::process::Command;

use anyhow::bail;

use crate::util::{cargo, run as exec};

pub const ENV_SCRIPT: &str = "tools/cuda-env.sh";

/// The bash script run by `gpu-build`, with `extra` shell-quoted and appended to the build.
pub fn script(extra: &[String]) -> String {
    let mut s = format!(
        "set -e; source {ENV_SCRIPT}; exec cargo build --release --features cuda -p nmoco-cli"
    );
    for a in extra {
        s.push(' ');
        s.push('\'');
        s.push_str(&a.replace('\'', r"'\''"));
        s.push('\'');
    }
    s
}

pub fn run(extra: Vec<String>) -> anyhow::Result<()> {
    if !std::path::Path::new(ENV_SCRIPT).is_file() {
        bail!("{ENV_SCRIPT} is missing: gpu-build needs the CUDA environment recipe");
    }
    exec(Command::new(cargo()).arg("fetch"))?;
    exec(Command::new("bash").arg("-c").arg(script(&extra)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn script_quotes_extra_args() {
        let s = super::script(&["--jobs".into(), "it's".into()]);
        assert!(s.starts_with("set -e; source tools/cuda-env.sh; exec cargo build --release"));
        assert!(s.ends_with(" '--jobs' 'it'\\''s'"));
    }
}
