//! Repository paths named in the documentation exist.
//!
//! In README.md, ARCHITECTURE.md and docs/*.md, every path starting with one of [`ROOT_PREFIXES`]
//! must exist relative to the repository root; `tests/…` may also be relative to the crate of the
//! enclosing section (a `#` heading whose first word is a workspace crate, as in
//! ARCHITECTURE.md), and in such a section paths starting with [`CRATE_PREFIXES`] must exist in
//! that crate. The tidy section of ARCHITECTURE.md is left out (its own checks read it). Paths
//! followed by a placeholder (`<name>`, `{a,b}`, `*`, `…`) are not checked.

use std::path::Path;

use super::Problem;
use super::rules::SECTION_PREFIX;

pub const ROOT_PREFIXES: &[&str] = &["crates/", "xtask/", "scripts/", "configs/", "tests/"];
pub const CRATE_PREFIXES: &[&str] = &["src/", "tests/", "benches/", "examples/", "kernels/"];

/// The documentation files checked, relative to `root`.
pub fn doc_files(root: &Path) -> Vec<String> {
    let mut out = vec!["README.md".to_string(), "ARCHITECTURE.md".to_string()];
    if let Ok(rd) = std::fs::read_dir(root.join("docs")) {
        let mut docs: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| n.ends_with(".md"))
            .map(|n| format!("docs/{n}"))
            .collect();
        docs.sort();
        out.extend(docs);
    }
    out
}

/// Check the paths named in `text` (the file `doc`); `crate_dir` maps a crate name to its
/// folder (None for other words).
pub fn check_doc(
    root: &Path,
    doc: &str,
    text: &str,
    crate_dir: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    let mut section_crate: Option<String> = None;
    let mut in_fence = false;
    // The tidy section's tables are checked against the code by the other checks.
    let mut in_tidy_section = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        if !in_fence && line.starts_with('#') {
            let first = line.trim_start_matches('#').split_whitespace().next();
            section_crate = first.map(|w| w.trim_matches('`')).and_then(crate_dir);
            in_tidy_section = line.starts_with(SECTION_PREFIX);
        }
        if in_tidy_section {
            continue;
        }
        for (path, prefix) in paths_in(line) {
            let at_root = root.join(path).exists();
            let in_crate = section_crate
                .as_ref()
                .is_some_and(|d| root.join(d).join(path).exists());
            let ok = if ROOT_PREFIXES.contains(&prefix) {
                at_root || (prefix == "tests/" && in_crate)
            } else {
                section_crate.is_none() || in_crate
            };
            if !ok {
                let where_ = match (&section_crate, ROOT_PREFIXES.contains(&prefix)) {
                    (Some(d), false) => format!(" in {d}"),
                    (Some(d), true) if prefix == "tests/" => format!(" (nor in {d})"),
                    _ => String::new(),
                };
                problems.push(Problem::new(
                    doc,
                    n + 1,
                    format!("`{path}` does not exist{where_}"),
                ));
            }
        }
    }
}

/// `(path, prefix)` for every path-like word in `line` that starts with a known prefix.
fn paths_in(line: &str) -> Vec<(&str, &'static str)> {
    let b = line.as_bytes();
    let path_byte = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'/');
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !path_byte(b[i]) || (i > 0 && path_byte(b[i - 1])) {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < b.len() && path_byte(b[end]) {
            end += 1;
        }
        let word = &line[i..end];
        i = end;
        let Some(prefix) = ROOT_PREFIXES
            .iter()
            .chain(CRATE_PREFIXES)
            .find(|p| word.starts_with(**p))
        else {
            continue;
        };
        let next = line[end..].chars().next();
        if matches!(next, Some('<' | '{' | '*' | '…' | '$')) || word.contains("..") {
            continue;
        }
        let path = word.trim_end_matches(['.', ',']);
        if path.len() > prefix.len() {
            out.push((path, *prefix));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_extracted() {
        let l = "see `crates/a/src/x.rs`, crates/<name>/x, https://h/crates/b, src/y.rs: and tests/z.rs. datasets/{a,b}.rs crates/*";
        let got: Vec<_> = paths_in(l).into_iter().map(|(p, _)| p).collect();
        assert_eq!(got, ["crates/a/src/x.rs", "src/y.rs", "tests/z.rs"]);
    }

    #[test]
    fn missing_paths_are_reported() {
        let root = std::env::temp_dir().join(format!("xtask-tidy-paths-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for p in ["crates/a/src/lib.rs", "crates/a/tests/t.rs", "scripts/s.sh"] {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let doc = "# Top\n`scripts/s.sh`, `scripts/gone.sh`, src/free.rs\n\n## a\n`src/lib.rs` `tests/t.rs` `src/old.rs`\n```\ncrates/a/src/lib.rs\n# not a heading\ncrates/a/none.rs\n```\n## Other\n`tests/t.rs`\n## Checked by `cargo xtask tidy`\n| a | src/none.rs |\n";
        let dirs = |w: &str| (w == "a").then(|| "crates/a".to_string());
        let mut p = Vec::new();
        check_doc(&root, "DOC.md", doc, &dirs, &mut p);
        std::fs::remove_dir_all(&root).unwrap();
        let p: Vec<String> = p.into_iter().map(|p| p.to_string()).collect();
        assert_eq!(
            p,
            [
                "DOC.md:2: `scripts/gone.sh` does not exist",
                "DOC.md:5: `src/old.rs` does not exist in crates/a",
                "DOC.md:9: `crates/a/none.rs` does not exist",
                "DOC.md:12: `tests/t.rs` does not exist",
            ]
        );
    }
}
