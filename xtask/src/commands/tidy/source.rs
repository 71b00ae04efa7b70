//! The files the checks read: every `.rs`, `.cu` and `.cuh` file under the scanned folders.

use std::path::{Path, PathBuf};

use super::lexer;

/// Folders scanned for sources, relative to the repository root.
pub const ROOTS: &[&str] = &["crates", "xtask", "fuzz"];

#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the repository root, `/`-separated.
    pub path: String,
    pub text: String,
    /// [`lexer::rust_code`] or [`lexer::c_code`] of `text`.
    pub code: String,
}

impl SourceFile {
    pub fn new(path: &str, text: String) -> Self {
        let code = if path.ends_with(".rs") {
            lexer::rust_code(&text)
        } else {
            lexer::c_code(&text)
        };
        Self {
            path: path.to_string(),
            text,
            code,
        }
    }

    pub fn is_rust(&self) -> bool {
        self.path.ends_with(".rs")
    }

    pub fn is_cuda(&self) -> bool {
        self.path.ends_with(".cu") || self.path.ends_with(".cuh")
    }

    /// Whether the file lies under `dir` (a `/`-separated repository path).
    pub fn under(&self, dir: &str) -> bool {
        dir.is_empty()
            || self
                .path
                .strip_prefix(dir)
                .is_some_and(|r| r.starts_with('/'))
    }

    /// The path relative to `dir` (which it must lie under).
    pub fn relative_to(&self, dir: &str) -> &str {
        self.path[dir.len()..].trim_start_matches('/')
    }

    /// Whether a folder of its path is called `name`.
    pub fn in_folder(&self, name: &str) -> bool {
        self.path.split('/').rev().skip(1).any(|c| c == name)
    }
}

/// Every source file under [`ROOTS`] of `root`, sorted by path; `target` folders are skipped.
pub fn collect(root: &Path) -> anyhow::Result<Vec<SourceFile>> {
    let mut paths = Vec::new();
    for r in ROOTS {
        walk(&root.join(r), &mut paths)?;
    }
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let rel = p.strip_prefix(root).unwrap_or(&p);
        let rel = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let text = std::fs::read_to_string(&p)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?;
        out.push(SourceFile::new(&rel, text));
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                walk(&path, out)?;
            }
        } else if name.ends_with(".rs") || name.ends_with(".cu") || name.ends_with(".cuh") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_folders() {
        let f = SourceFile::new("crates/a/examples/x/main.rs", String::new());
        assert!(f.under("crates/a"));
        assert!(!f.under("crates/a/ex"));
        assert_eq!(f.relative_to("crates/a"), "examples/x/main.rs");
        assert!(f.in_folder("examples"));
        assert!(!f.in_folder("main.rs"));
    }

    #[test]
    fn collect_skips_target_and_reads_kernels() {
        let dir = std::env::temp_dir().join(format!("xtask-tidy-src-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (p, t) in [
            ("crates/a/src/lib.rs", "fn a() {}"),
            ("crates/a/kernels/k.cu", "// x"),
            ("crates/a/target/debug/gen.rs", "fn b() {}"),
            ("crates/a/README.md", "x"),
        ] {
            let p = dir.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        }
        let files = collect(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["crates/a/kernels/k.cu", "crates/a/src/lib.rs"]);
    }
}
