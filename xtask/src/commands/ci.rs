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
//! `--no-python` is given: then it runs steps 1–4 and names the steps it skipped. Before the
//! first step it checks that `$NMOCO_PY` and, when the NVRTC test is required, `$NMOCO_NVRTC_LIB`
//! exist. `--list` prints the steps without running them.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::commands::wheel::wheels_in;
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
    // The oracle tests run `target/debug/nmoco`. Built with the test step's feature unification
    // (whole workspace, test targets included), it reuses that step's artifacts and only links
    // the binary; `-p nmoco-cli` alone resolves other features and rebuilds the ML stack.
    steps.push(run_step(
        python_steps[3],
        cargo,
        &["build", "--quiet", "--workspace", "--bins", "--tests"],
    ));
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    let bin = std::path::absolute(target.join("debug/nmoco")).unwrap_or_default();
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

/// Run one step; wheels are built into and looked up in `wheel_dir`.
fn perform(action: &Action, wheel_dir: &Path) -> anyhow::Result<()> {
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

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wheel = format!("{WHEEL_DIR}/nmoco_events-*.whl");
        match self {
            Action::Run { program, args, env } => {
                for (k, v) in env {
                    write!(f, "{k}={} ", v.to_string_lossy())?;
                }
                write!(f, "{}", program.to_string_lossy())?;
                for a in args {
                    write!(f, " {}", a.to_string_lossy())?;
                }
                Ok(())
            }
            Action::Tidy => write!(f, "cargo xtask tidy (in-process)"),
            Action::BuildWheel { python } => write!(
                f,
                "rm -f {wheel}; cargo xtask wheel --python {} --out {WHEEL_DIR}",
                python.display()
            ),
            Action::InstallWheel { python } => write!(
                f,
                "{} -m pip install --force-reinstall --no-deps {wheel}",
                python.display()
            ),
            Action::PytestWithWheel { python, dir } => write!(
                f,
                "NMOCO_WHEEL={wheel} {} -m pytest -q -p no:cacheprovider {dir}",
                python.display()
            ),
        }
    }
}

/// Fails naming what is missing: an `NMOCO_PY` that does not exist, or a required NVRTC
/// library (`NMOCO_NVRTC_LIB`) that does not exist.
fn preflight(
    python: Option<&Path>,
    require_nvrtc: bool,
    nvrtc_lib: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(py) = python
        && !py.exists()
    {
        bail!("NMOCO_PY={} does not exist", py.display());
    }
    if require_nvrtc
        && let Some(lib) = nvrtc_lib
        && !lib.exists()
    {
        bail!(
            "NMOCO_REQUIRE_NVRTC=1 but NMOCO_NVRTC_LIB={} does not exist",
            lib.display()
        );
    }
    Ok(())
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

pub fn run(no_python: bool, list: bool) -> anyhow::Result<()> {
    let start = Instant::now();
    let python = env_path("NMOCO_PY");
    let plan = plan(&cargo(), python.clone(), no_python)?;
    let require_nvrtc = std::env::var("NMOCO_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
    if require_nvrtc {
        println!("ci: NVRTC kernel compile test required (NMOCO_REQUIRE_NVRTC=1)");
    } else {
        println!(
            "ci: NVRTC kernel compile test not required: without NVRTC it passes unrun \
             (NMOCO_REQUIRE_NVRTC=1 requires it, as .ci/run sets)"
        );
    }
    if !plan.skipped.is_empty() {
        println!("ci: skipping (--no-python): {}", plan.skipped.join(", "));
    }
    let n = plan.steps.len();
    if list {
        for (i, step) in plan.steps.iter().enumerate() {
            println!("ci: [{}/{n}] {}: {}", i + 1, step.name, step.action);
        }
        return Ok(());
    }
    preflight(
        python.as_deref(),
        require_nvrtc,
        env_path("NMOCO_NVRTC_LIB").as_deref(),
    )?;
    for (i, step) in plan.steps.iter().enumerate() {
        println!("ci: [{}/{n}] {}: {}", i + 1, step.name, step.action);
        let t = Instant::now();
        perform(&step.action, Path::new(WHEEL_DIR))
            .with_context(|| format!("ci step `{}` failed", step.name))?;
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
    fn preflight_names_what_is_missing() {
        let here = Path::new(".");
        let gone = Path::new("/nonexistent/nmoco/python");
        assert!(preflight(Some(here), true, Some(here)).is_ok());
        assert!(preflight(None, false, Some(gone)).is_ok());
        let e = preflight(Some(gone), false, None).unwrap_err().to_string();
        assert!(e.contains("NMOCO_PY=/nonexistent/nmoco/python"), "{e}");
        let e = preflight(None, true, Some(gone)).unwrap_err().to_string();
        assert!(e.contains("NMOCO_NVRTC_LIB"), "{e}");
    }

    #[test]
    fn steps_print_as_commands() {
        let p = plan("cargo", Some("/py".into()), false).unwrap();
        let shown: Vec<String> = p.steps.iter().map(|s| s.action.to_string()).collect();
        assert_eq!(shown[0], "cargo fmt --all --check");
        assert_eq!(shown[3], "cargo test --workspace");
        assert!(
            shown[8].starts_with("OMP_NUM_THREADS=2 NMOCO_BIN="),
            "{}",
            shown[8]
        );
        assert!(shown[8].ends_with("/py -m pytest -q -p no:cacheprovider tests/oracle"));
    }

    /// The Python steps run against a fake interpreter (a shell script that logs its
    /// arguments and `NMOCO_WHEEL`, and "builds" a wheel into `--out`).
    #[cfg(unix)]
    #[test]
    fn python_steps_run_the_expected_commands() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("xtask-ci-py-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let wheels = dir.join("wheels");
        std::fs::create_dir_all(&wheels).unwrap();
        let old = wheels.join("nmoco_events-0.0.1-cp39-abi3-linux_x86_64.whl");
        std::fs::write(&old, "").unwrap();
        let py = dir.join("python");
        let script = "#!/bin/sh\n\
            echo \"$* | NMOCO_WHEEL=${NMOCO_WHEEL:-} OMP=${OMP_NUM_THREADS:-}\" >> \"$(dirname \"$0\")/log\"\n\
            prev=\n\
            for a in \"$@\"; do\n\
              if [ \"$prev\" = --out ]; then : > \"$a/nmoco_events-0.1.0-cp39-abi3-linux_x86_64.whl\"; fi\n\
              prev=$a\n\
            done\n";
        std::fs::write(&py, script).unwrap();
        std::fs::set_permissions(&py, std::fs::Permissions::from_mode(0o755)).unwrap();

        let p = plan("cargo", Some(py.clone()), false).unwrap();
        for step in &p.steps[4..7] {
            perform(&step.action, &wheels).unwrap();
        }
        let Action::Run { args, env, .. } = &p.steps[8].action else {
            panic!("oracle is a command");
        };
        let oracle = Action::Run {
            program: py.clone().into_os_string(),
            args: args.clone(),
            env: env.clone(),
        };
        perform(&oracle, &wheels).unwrap();
        let log = std::fs::read_to_string(dir.join("log")).unwrap();
        assert!(!old.exists(), "old wheels are removed before the build");
        let new = wheels.join("nmoco_events-0.1.0-cp39-abi3-linux_x86_64.whl");
        let new = std::path::absolute(new).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(lines.len(), 4, "{log}");
        // command | environment the fake saw
        let split: Vec<(&str, &str)> = lines.iter().map(|l| l.split_once(" | ").unwrap()).collect();
        assert!(
            split[0].0.starts_with(
                "-m maturin build --release --manifest-path crates/nmoco-py/Cargo.toml --out "
            ),
            "{log}"
        );
        assert!(
            split[0]
                .0
                .ends_with(&format!("--interpreter {}", py.display())),
            "{log}"
        );
        assert_eq!(
            split[1].0,
            format!(
                "-m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps {}",
                new.display()
            )
        );
        assert_eq!(
            split[2].0,
            "-m pytest -q -p no:cacheprovider crates/nmoco-py/pytests"
        );
        assert!(
            split[2]
                .1
                .starts_with(&format!("NMOCO_WHEEL={} ", new.display())),
            "{log}"
        );
        assert_eq!(split[3].0, "-m pytest -q -p no:cacheprovider tests/oracle");
        assert!(split[3].1.ends_with(" OMP=2"), "{log}");
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
