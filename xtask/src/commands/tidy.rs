//! `cargo xtask tidy`: the invariants a program can check, each a module with its unit tests.
//!
//! Architecture facts are read from ARCHITECTURE.md's section "Checked by `cargo xtask tidy`"
//! ([`rules`]): allowed workspace and ML dependencies per crate ([`deps`]), the files that may
//! hold `unsafe` and `#![forbid(unsafe_code)]` elsewhere ([`unsafe_code`]), the files allowed
//! over the size limit ([`sizes`]). Rules that are not per-crate facts live here: CUDA kernel
//! names in both directions ([`kernels`]), function length ([`sizes`]), paths named in the docs
//! ([`paths`]), banned attributes and macros ([`banned`]). Every problem is printed as
//! `file:line: message`; any problem makes the command fail.

mod banned;
mod deps;
mod kernels;
mod lexer;
mod paths;
mod rules;
mod sizes;
mod source;
mod unsafe_code;

use std::fmt;
use std::path::Path;

use anyhow::bail;

pub const ARCHITECTURE: &str = "ARCHITECTURE.md";

/// One finding: where (file, 1-based line or 0 for the whole file) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub path: String,
    pub line: usize,
    pub msg: String,
}

impl Problem {
    pub fn new(path: &str, line: usize, msg: impl Into<String>) -> Self {
        Self {
            path: path.to_string(),
            line,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path, self.msg)
        } else {
            write!(f, "{}:{}: {}", self.path, self.line, self.msg)
        }
    }
}

/// How many problems each check found, in check order.
pub type Counts = Vec<(&'static str, usize)>;

/// Every problem in the repository at `root`, and how many each check found.
pub fn check(root: &Path) -> anyhow::Result<(Vec<Problem>, Counts)> {
    let mut problems = Vec::new();
    let mut counts = Vec::new();
    let mut tally = |name: &'static str, problems: &Vec<Problem>| {
        let before: usize = counts.iter().map(|(_, n)| n).sum();
        counts.push((name, problems.len() - before));
    };
    let arch_text = std::fs::read_to_string(root.join(ARCHITECTURE))?;
    let rules = match rules::parse(ARCHITECTURE, &arch_text) {
        Ok(r) => Some(r),
        Err(p) => {
            problems.push(p);
            None
        }
    };
    tally("tidy section", &problems);
    let members = deps::members(root)?;
    let files = source::collect(root)?;
    if let Some(rules) = &rules {
        deps::check(&members, rules, ARCHITECTURE, &mut problems);
        tally("dependencies", &problems);
        unsafe_code::check(&members, rules, &files, ARCHITECTURE, &mut problems);
        tally("unsafe", &problems);
        sizes::check_files(&files, &rules.big_files, ARCHITECTURE, &mut problems);
        tally("file length", &problems);
    }
    kernels::check(&members, &files, &mut problems);
    tally("kernel names", &problems);
    sizes::check_functions(&files, &mut problems);
    tally("function length", &problems);
    banned::check(&files, &mut problems);
    tally("banned attributes", &problems);
    let crate_dir = |word: &str| {
        members
            .iter()
            .find(|m| m.name == word)
            .map(|m| m.dir.to_string_lossy().replace('\\', "/"))
    };
    for doc in paths::doc_files(root) {
        let Ok(text) = std::fs::read_to_string(root.join(&doc)) else {
            continue;
        };
        paths::check_doc(root, &doc, &text, &crate_dir, &mut problems);
    }
    tally("doc paths", &problems);
    Ok((problems, counts))
}

pub fn run() -> anyhow::Result<()> {
    let (problems, counts) = check(Path::new("."))?;
    for p in &problems {
        println!("{p}");
    }
    if !problems.is_empty() {
        let by_check: Vec<String> = counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{n} {name}"))
            .collect();
        bail!(
            "tidy found {} problem(s): {}",
            problems.len(),
            by_check.join(", ")
        );
    }
    println!(
        "tidy: ok ({})",
        counts
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, files: &[(&str, &str)]) {
        for (p, t) in files {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        }
    }

    /// The whole pipeline on a two-crate workspace in a temp dir (`cargo metadata` included).
    #[test]
    fn check_on_a_constructed_workspace() {
        let root = std::env::temp_dir().join(format!("xtask-tidy-ws-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let package = |name: &str, deps: &str| {
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\n{deps}"
            )
        };
        let arch = format!(
            "# arch\n\n{}\n\n| crate | workspace dependencies | workspace dev-dependencies | ML crates | files with unsafe |\n|---|---|---|---|---|\n| a | — | — | — | — |\n| b | a | — | — | `src/raw.rs` |\n\n## a\n\n`src/lib.rs` is the crate root.\n",
            rules::SECTION_PREFIX
        );
        write(
            &root,
            &[
                (
                    "Cargo.toml",
                    "[workspace]\nresolver = \"3\"\nmembers = [\"crates/*\"]\n",
                ),
                ("crates/a/Cargo.toml", &package("a", "")),
                (
                    "crates/a/src/lib.rs",
                    "//! a\n\n#![forbid(unsafe_code)]\npub fn f() {}\n",
                ),
                (
                    "crates/b/Cargo.toml",
                    &package("b", "a = { path = \"../a\" }\n"),
                ),
                ("crates/b/src/lib.rs", "mod raw;\n"),
                (
                    "crates/b/src/raw.rs",
                    "pub fn g(p: *const u8) -> u8 {\n    // SAFETY: test\n    unsafe { *p }\n}\n",
                ),
                ("ARCHITECTURE.md", &arch),
                ("README.md", "See `crates/b/src/raw.rs`.\n"),
            ],
        );
        let (problems, counts) = check(&root).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(counts.len(), 8);

        write(
            &root,
            &[
                ("crates/a/src/lib.rs", "//! a\npub fn f() {}\n"),
                ("README.md", "See `crates/b/src/gone.rs`.\n"),
            ],
        );
        let (problems, counts) = check(&root).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(shown[0].starts_with("crates/a/src/lib.rs:1: `a` has no `unsafe`"));
        assert_eq!(
            shown[1],
            "README.md:1: `crates/b/src/gone.rs` does not exist"
        );
        let nonzero: Vec<_> = counts.into_iter().filter(|(_, n)| *n > 0).collect();
        assert_eq!(nonzero, [("unsafe", 1), ("doc paths", 1)]);
    }
}
