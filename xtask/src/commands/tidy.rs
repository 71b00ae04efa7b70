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

/// Every problem in the repository at `root`, in check order.
pub fn check(root: &Path) -> anyhow::Result<Vec<Problem>> {
    let mut problems = Vec::new();
    let arch_text = std::fs::read_to_string(root.join(ARCHITECTURE))?;
    let rules = match rules::parse(ARCHITECTURE, &arch_text) {
        Ok(r) => Some(r),
        Err(p) => {
            problems.push(p);
            None
        }
    };
    let members = deps::members(root)?;
    let files = source::collect(root)?;
    if let Some(rules) = &rules {
        deps::check(&members, rules, ARCHITECTURE, &mut problems);
        unsafe_code::check(&members, rules, &files, ARCHITECTURE, &mut problems);
        sizes::check_files(&files, &rules.big_files, ARCHITECTURE, &mut problems);
    }
    kernels::check(&members, &files, &mut problems);
    sizes::check_functions(&files, &mut problems);
    banned::check(&files, &mut problems);
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
    Ok(problems)
}

pub fn run() -> anyhow::Result<()> {
    let problems = check(Path::new("."))?;
    for p in &problems {
        println!("{p}");
    }
    if !problems.is_empty() {
        bail!("tidy found {} problem(s)", problems.len());
    }
    println!("tidy: ok");
    Ok(())
}
