//! `cargo xtask ci [--no-python]`: the one definition of what CI checks, cheapest first.
//!
//! 1. `cargo fmt --all --check`
//! 2. `cargo xtask tidy` (run in-process)
//! 3. `cargo clippy --workspace --all-targets -- -D warnings`
//! 4. `cargo test --workspace` (the README's test command). With `NMOCO_REQUIRE_NVRTC=1` the
//!    NVRTC kernel compile test (`crates/nmoco-snn/tests/nvrtc_compile.rs`) fails instead of
//!    passing unrun when NVRTC is missing; `.ci/run` sets it, with `NMOCO_NVRTC_LIB` and
//!    `NMOCO_PTXAS` from PyPI wheels.
//! 5. Python steps, with the interpreter `$NMOCO_PY` (`.ci/run` exports its cached venv's):
//!    the `nmoco_events` wheel built by `cargo xtask wheel`, installed into that Python, its
//!    pytest suite (`crates/nmoco-py/pytests`, `NMOCO_WHEEL` = the wheel); the debug `nmoco`
//!    binary and the PyTorch oracle tests (`tests/oracle`, `NMOCO_BIN`, `OMP_NUM_THREADS=2`).
//!
//! Without `NMOCO_PY`, `ci` stops before running anything, saying how to set it, unless
//! `--no-python` is given: then it runs steps 1–4 and names the steps it skipped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::util::{cargo, run as exec};

const WHEEL_DIR: &str = "target/wheels";

/// What one step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run a program with arguments and extra environment variables.
    Run {
        program: OsString,
        args: Vec<OsString>,
        env: Vec<(String, OsString)>,
    },
    /// `cargo xtask tidy`, in-process.
    Tidy,
    /// Remove old `nmoco_events-*.whl` from [`WHEEL_DIR`] and build the wheel with `python`.
    BuildWheel { python: PathBuf },
    /// `python -m pip install --force-reinstall --no-deps <the wheel>`.
    InstallWheel { python: PathBuf },
    /// `python -m pytest -q -p no:cacheprovider <dir>` with `NMOCO_WHEEL` = the wheel.
    PytestWithWheel { python: PathBuf, dir: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: &'static str,
    pub action: Action,
}

/// The steps CI runs, and the names of the steps left out (`--no-python`).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub skipped: Vec<&'static str>,
}

fn run_step(name: &'static str, program: impl Into<OsString>, args: &[&str]) -> Step {
    Step {
        name,
        action: Action::Run {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            env: Vec::new(),
        },
    }
}

/// The plan for `python` (`$NMOCO_PY`) and `--no-python`; `cargo` is the cargo to run.
pub fn plan(cargo: &str, python: Option<PathBuf>, no_python: bool) -> anyhow::Result<Plan> {
    let mut steps = vec![
        run_step("fmt", cargo, &["fmt", "--all", "--check"]),
        Step {
            name: "tidy",
            action: Action::Tidy,
        },
        run_step(
            "clippy",
            cargo,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        run_step("test", cargo, &["test", "--workspace"]),
    ];
    let python_steps = [
        "wheel build",
        "wheel install",
        "wheel pytest",
        "nmoco-cli build",
        "oracle pytest",
    ];
    let python = match (python, no_python) {
        (_, true) => {
            return Ok(Plan {
                steps,
                skipped: python_steps.to_vec(),
            });
        }
        (Some(p), false) => p,
        (None, false) => bail!(
            "NMOCO_PY is not set: the Python steps ({}) need an interpreter with torch, \
             spikingjelly, tonic, numpy, safetensors, pytest, maturin and aedat. Run `bash .ci/run` \
             (it builds that venv under ~/.cache/nmoco-ci and exports NMOCO_PY), or set \
             NMOCO_PY=/path/to/python yourself, or pass --no-python to run only the Rust checks",
            python_steps.join(", ")
        ),
    };
    steps.push(Step {
        name: python_steps[0],
        action: Action::BuildWheel {
            python: python.clone(),
        },
    });
    steps.push(Step {
        name: python_steps[1],
        action: Action::InstallWheel {
            python: python.clone(),
        },
    });
    steps.push(Step {
        name: python_steps[2],
        action: Action::PytestWithWheel {
            python: python.clone(),
            dir: "crates/nmoco-py/pytests".into(),
        },
    });
    steps.push(run_step(
        python_steps[3],
        cargo,
        &["build", "--quiet", "-p", "nmoco-cli"],
    ));
    let bin = std::env::current_dir()
        .unwrap_or_default()
        .join("target/debug/nmoco");
    steps.push(Step {
        name: python_steps[4],
        action: Action::Run {
            program: python.into_os_string(),
            args: [
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/oracle",
            ]
            .iter()
            .map(OsString::from)
            .collect(),
            env: vec![
                ("OMP_NUM_THREADS".into(), "2".into()),
                ("NMOCO_BIN".into(), bin.into_os_string()),
            ],
        },
    });
    Ok(Plan {
        steps,
        skipped: Vec::new(),
    })
}

/// The one `nmoco_events-*.whl` in `dir`.
fn the_wheel(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut wheels: Vec<PathBuf> = wheels_in(dir);
    match wheels.len() {
        1 => Ok(std::path::absolute(wheels.remove(0))?),
        n => bail!(
            "expected one nmoco_events wheel in {}, found {n}",
            dir.display()
        ),
    }
}

fn wheels_in(dir: &Path) -> Vec<PathBuf> {
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

fn perform(action: &Action) -> anyhow::Result<()> {
    let wheel_dir = Path::new(WHEEL_DIR);
    match action {
        Action::Run { program, args, env } => {
            let mut cmd = Command::new(program);
            cmd.args(args);
            for (k, v) in env {
                cmd.env(k, v);
            }
            exec(&mut cmd)
        }
        Action::Tidy => crate::commands::tidy::run(),
        Action::BuildWheel { python } => {
            for w in wheels_in(wheel_dir) {
                std::fs::remove_file(&w).with_context(|| format!("removing {}", w.display()))?;
            }
            crate::commands::wheel::run(Some(python.clone()), wheel_dir.to_path_buf())
        }
        Action::InstallWheel { python } => exec(
            Command::new(python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(["--force-reinstall", "--no-deps"])
                .arg(the_wheel(wheel_dir)?),
        ),
        Action::PytestWithWheel { python, dir } => exec(
            Command::new(python)
                .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", dir])
                .env("NMOCO_WHEEL", the_wheel(wheel_dir)?),
        ),
    }
}

pub fn run(no_python: bool) -> anyhow::Result<()> {
    let start = Instant::now();
    let python = std::env::var_os("NMOCO_PY")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let plan = plan(&cargo(), python, no_python)?;
    let nvrtc = match std::env::var("NMOCO_REQUIRE_NVRTC").as_deref() {
        Ok("1") => "required (NMOCO_REQUIRE_NVRTC=1)",
        _ => {
            "not required: it passes unrun without NVRTC (set NMOCO_REQUIRE_NVRTC=1, as .ci/run does)"
        }
    };
    println!("ci: NVRTC kernel compile test {nvrtc}");
    let n = plan.steps.len();
    for (i, step) in plan.steps.iter().enumerate() {
        println!("ci: [{}/{n}] {}", i + 1, step.name);
        let t = Instant::now();
        perform(&step.action).with_context(|| format!("ci step `{}` failed", step.name))?;
        println!(
            "ci: [{}/{n}] {} ok ({:.0} s)",
            i + 1,
            step.name,
            t.elapsed().as_secs_f64()
        );
    }
    if !plan.skipped.is_empty() {
        println!("ci: skipped (--no-python): {}", plan.skipped.join(", "));
    }
    println!("ci: done in {:.0} s", start.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &Plan) -> Vec<&str> {
        p.steps.iter().map(|s| s.name).collect()
    }

    #[test]
    fn rust_checks_come_first_in_order() {
        let p = plan("cargo", Some("/venv/bin/python".into()), false).unwrap();
        assert_eq!(
            names(&p),
            [
                "fmt",
                "tidy",
                "clippy",
                "test",
                "wheel build",
                "wheel install",
                "wheel pytest",
                "nmoco-cli build",
                "oracle pytest"
            ]
        );
        assert!(p.skipped.is_empty());
        let Action::Run { args, .. } = &p.steps[3].action else {
            panic!("test is a command");
        };
        assert_eq!(args, &["test", "--workspace"]);
        let Action::Run { program, env, .. } = &p.steps[8].action else {
            panic!("oracle is a command");
        };
        assert_eq!(program, "/venv/bin/python");
        assert!(env.iter().any(|(k, v)| k == "OMP_NUM_THREADS" && v == "2"));
        assert!(env.iter().any(|(k, _)| k == "NMOCO_BIN"));
    }

    #[test]
    fn without_python_it_fails_unless_told_to_skip() {
        let e = plan("cargo", None, false).unwrap_err().to_string();
        assert!(e.contains("NMOCO_PY is not set"), "{e}");
        assert!(e.contains(".ci/run") && e.contains("--no-python"), "{e}");
        let p = plan("cargo", None, true).unwrap();
        assert_eq!(names(&p), ["fmt", "tidy", "clippy", "test"]);
        assert_eq!(p.skipped.len(), 5);
        assert!(p.skipped.contains(&"oracle pytest"));
    }

    #[test]
    fn wheel_lookup_needs_exactly_one() {
        let dir = std::env::temp_dir().join(format!("xtask-ci-wheels-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(the_wheel(&dir).is_err());
        std::fs::write(
            dir.join("nmoco_events-0.1.0-cp39-abi3-linux_x86_64.whl"),
            "",
        )
        .unwrap();
        std::fs::write(dir.join("other-1.0.whl"), "").unwrap();
        assert!(
            the_wheel(&dir)
                .unwrap()
                .ends_with("nmoco_events-0.1.0-cp39-abi3-linux_x86_64.whl")
        );
        std::fs::write(
            dir.join("nmoco_events-0.2.0-cp39-abi3-linux_x86_64.whl"),
            "",
        )
        .unwrap();
        assert!(the_wheel(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
