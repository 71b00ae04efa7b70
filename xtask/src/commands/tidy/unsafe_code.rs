//! Which files hold `unsafe` (any `unsafe` keyword in code: blocks, functions, impls, traits,
//! extern blocks, unsafe attributes), against ARCHITECTURE.md's `files with unsafe` cells; and
//! `#![forbid(unsafe_code)]` at the root of every library or binary whose `src/` has none.

use std::collections::BTreeSet;

use super::Problem;
use super::deps::Member;
use super::lexer;
use super::rules::Rules;
use super::source::SourceFile;

pub const FORBID: &str = "#![forbid(unsafe_code)]";

/// 1-based line of the first `unsafe` keyword in the code of `f`.
pub fn first_unsafe(f: &SourceFile) -> Option<usize> {
    lexer::word_positions(&f.code, "unsafe")
        .next()
        .map(|p| lexer::line_of(&f.code, p))
}

pub fn check(
    members: &[Member],
    rules: &Rules,
    files: &[SourceFile],
    arch: &str,
    problems: &mut Vec<Problem>,
) {
    for m in members {
        let dir = m.dir.to_string_lossy().replace('\\', "/");
        let allowed = rules
            .krate(&m.name)
            .map(|r| (r.unsafe_files.clone(), r.line))
            .unwrap_or_default();
        let mut found = BTreeSet::new();
        let mut src_has_unsafe = false;
        for f in files.iter().filter(|f| f.is_rust() && f.under(&dir)) {
            let Some(line) = first_unsafe(f) else {
                continue;
            };
            let rel = f.relative_to(&dir).to_string();
            src_has_unsafe |= rel.starts_with("src/");
            if !allowed.0.contains(&rel) {
                problems.push(Problem::new(
                    &f.path,
                    line,
                    format!(
                        "`unsafe` in a file ARCHITECTURE.md does not list for `{}` (add `{rel}` to its `files with unsafe` cell, line {})",
                        m.name, allowed.1
                    ),
                ));
            }
            found.insert(rel);
        }
        for stale in allowed.0.difference(&found) {
            problems.push(Problem::new(
                arch,
                allowed.1,
                format!(
                    "`{}` lists `{stale}` as holding `unsafe`, but it has none (or does not exist)",
                    m.name
                ),
            ));
        }
        if !src_has_unsafe {
            for root in ["src/lib.rs", "src/main.rs"] {
                let path = format!("{dir}/{root}");
                if let Some(f) = files.iter().find(|f| f.path == path)
                    && !f.code.contains(FORBID)
                {
                    problems.push(Problem::new(
                        &f.path,
                        1,
                        format!(
                            "`{}` has no `unsafe` in src/: its crate root needs `{FORBID}`",
                            m.name
                        ),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::rules;
    use super::*;

    fn member(name: &str) -> Member {
        Member {
            name: name.into(),
            dir: format!("crates/{name}").into(),
            ..Member::default()
        }
    }

    fn run(rows: &str, files: &[(&str, &str)]) -> Vec<String> {
        let doc = format!(
            "{}\n| crate | workspace dependencies | workspace dev-dependencies | ML crates | files with unsafe |\n|-|-|-|-|-|\n{rows}",
            rules::SECTION_PREFIX
        );
        let rules = rules::parse("ARCHITECTURE.md", &doc).unwrap();
        let files: Vec<_> = files
            .iter()
            .map(|(p, t)| SourceFile::new(p, t.to_string()))
            .collect();
        let mut p = Vec::new();
        check(
            &[member("a"), member("b")],
            &rules,
            &files,
            "ARCHITECTURE.md",
            &mut p,
        );
        p.into_iter().map(|p| p.to_string()).collect()
    }

    const A_LIB: &str = "mod raw;\npub fn f() {}\n";
    const A_RAW: &str = "// unsafe in a comment\npub fn g(p: *const u8) -> u8 {\n    // SAFETY: ...\n    unsafe { *p }\n}\n";
    const B_LIB: &str = "#![forbid(unsafe_code)]\nconst S: &str = \"unsafe {\";\n";

    #[test]
    fn listed_unsafe_and_forbid_pass() {
        let p = run(
            "| a | | | | `src/raw.rs` |\n| b | | | | |\n",
            &[
                ("crates/a/src/lib.rs", A_LIB),
                ("crates/a/src/raw.rs", A_RAW),
                ("crates/b/src/lib.rs", B_LIB),
            ],
        );
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn unlisted_unsafe_is_reported_with_its_line() {
        let p = run(
            "| a | | | | |\n| b | | | | |\n",
            &[
                ("crates/a/src/lib.rs", A_LIB),
                ("crates/a/src/raw.rs", A_RAW),
                ("crates/b/src/lib.rs", B_LIB),
            ],
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("crates/a/src/raw.rs:4: `unsafe` in a file"),
            "{p:?}"
        );
    }

    #[test]
    fn unsafe_impl_and_attribute_count() {
        for text in [
            "unsafe impl Send for X {}",
            "#[unsafe(no_mangle)]\nfn f() {}",
        ] {
            let p = run(
                "| a | | | | |\n| b | | | | |\n",
                &[
                    ("crates/a/src/lib.rs", text),
                    ("crates/b/src/lib.rs", B_LIB),
                ],
            );
            assert_eq!(p.len(), 1, "{text}: {p:?}");
        }
    }

    #[test]
    fn stale_entry_and_missing_forbid_are_reported() {
        let p = run(
            "| a | | | | src/raw.rs |\n| b | | | | |\n",
            &[
                ("crates/a/src/lib.rs", A_LIB),
                ("crates/a/src/raw.rs", "pub fn g() {}"),
                ("crates/b/src/main.rs", "fn main() {}"),
                ("crates/b/tests/t.rs", "#[test] fn t() { unsafe {} }"),
            ],
        );
        let joined = p.join("\n");
        assert!(
            joined.contains("ARCHITECTURE.md:4: `a` lists `src/raw.rs`"),
            "{joined}"
        );
        assert!(
            joined.contains("crates/a/src/lib.rs:1: `a` has no `unsafe` in src/"),
            "{joined}"
        );
        assert!(
            joined.contains("crates/b/src/main.rs:1: `b` has no `unsafe`"),
            "{joined}"
        );
        assert!(
            joined.contains("crates/b/tests/t.rs:1: `unsafe` in a file"),
            "{joined}"
        );
        assert_eq!(p.len(), 4, "{p:?}");
    }
}
