//! The machine-readable section of ARCHITECTURE.md (`## Checked by `cargo xtask tidy``).
//!
//! Two markdown tables, told apart by the first header cell:
//!
//! - `crate | workspace dependencies | workspace dev-dependencies | ML crates | files with unsafe`:
//!   one row per workspace member. Cells are comma-separated lists (backticks optional); `—`,
//!   `-`, `none` or an empty cell mean none. Dependency cells name workspace crates (normal and
//!   build dependencies; dev-dependencies); the ML cell names the [`ML_CRATES`] the crate reaches
//!   through normal dependencies, directly or through workspace crates; unsafe files are paths
//!   relative to the crate folder.
//! - `file | why`: the `.rs` files allowed over the line limit (pure kernel tables), as
//!   repository paths.

use std::collections::BTreeSet;

use super::Problem;

/// The crates that make a crate an "ML" crate (candle and what it links for compute).
pub const ML_CRATES: &[&str] = &["candle-core", "candle-nn", "cudarc", "gemm"];

pub const SECTION_PREFIX: &str = "## Checked by `cargo xtask tidy`";

#[derive(Debug, Default, Clone, PartialEq)]
pub struct CrateRule {
    pub name: String,
    /// 1-based line of the row in ARCHITECTURE.md.
    pub line: usize,
    pub deps: BTreeSet<String>,
    pub dev_deps: BTreeSet<String>,
    pub ml: BTreeSet<String>,
    pub unsafe_files: BTreeSet<String>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rules {
    pub crates: Vec<CrateRule>,
    /// Repository paths allowed over the file-size limit, with their line in ARCHITECTURE.md.
    pub big_files: Vec<(String, usize)>,
}

impl Rules {
    pub fn krate(&self, name: &str) -> Option<&CrateRule> {
        self.crates.iter().find(|c| c.name == name)
    }
}

/// Parse the tidy section of `text` (the contents of `file`).
pub fn parse(file: &str, text: &str) -> Result<Rules, Problem> {
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines.iter().position(|l| l.starts_with(SECTION_PREFIX)) else {
        return Err(Problem::new(
            file,
            0,
            format!("no section headed {SECTION_PREFIX:?}"),
        ));
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with("## "))
        .map_or(lines.len(), |p| start + 1 + p);
    let mut rules = Rules::default();
    let mut seen_crate_table = false;
    let mut i = start + 1;
    while i < end {
        if !is_row(lines[i]) {
            i += 1;
            continue;
        }
        let header = cells(lines[i]);
        let first = header[0].to_ascii_lowercase();
        i += 1;
        if i < end && is_separator(lines[i]) {
            i += 1;
        }
        let table_start = i;
        while i < end && is_row(lines[i]) {
            i += 1;
        }
        let rows = (table_start..i).map(|n| (n + 1, cells(lines[n])));
        match first.as_str() {
            "crate" => {
                seen_crate_table = true;
                let col = |want: &[&str], not: &[&str]| {
                    header.iter().position(|h| {
                        let h = h.to_ascii_lowercase();
                        want.iter().all(|w| h.contains(w)) && !not.iter().any(|n| h.contains(n))
                    })
                };
                let need = |c: Option<usize>, what: &str| {
                    c.ok_or_else(|| {
                        Problem::new(
                            file,
                            table_start,
                            format!("crate table has no {what} column"),
                        )
                    })
                };
                let deps = need(col(&["depend"], &["dev"]), "`workspace dependencies`")?;
                let dev = need(col(&["dev"], &[]), "`workspace dev-dependencies`")?;
                let ml = need(col(&["ml"], &[]), "`ML crates`")?;
                let uns = need(col(&["unsafe"], &[]), "`files with unsafe`")?;
                for (line, row) in rows {
                    let get = |c: usize| list(row.get(c).map_or("", String::as_str));
                    rules.crates.push(CrateRule {
                        name: strip(&row[0]),
                        line,
                        deps: get(deps),
                        dev_deps: get(dev),
                        ml: get(ml),
                        unsafe_files: get(uns),
                    });
                }
            }
            "file" => {
                for (line, row) in rows {
                    rules.big_files.push((strip(&row[0]), line));
                }
            }
            _ => {
                return Err(Problem::new(
                    file,
                    table_start - 1,
                    format!("unknown table (first column {first:?}; expected `crate` or `file`)"),
                ));
            }
        }
    }
    if !seen_crate_table {
        return Err(Problem::new(
            file,
            start + 1,
            "section has no `crate | ...` table",
        ));
    }
    Ok(rules)
}

fn is_row(l: &str) -> bool {
    l.trim_start().starts_with('|')
}

fn is_separator(l: &str) -> bool {
    l.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '))
}

fn cells(l: &str) -> Vec<String> {
    let t = l.trim();
    let t = t.strip_prefix('|').unwrap_or(t);
    let t = t.strip_suffix('|').unwrap_or(t);
    t.split('|').map(|c| c.trim().to_string()).collect()
}

fn strip(s: &str) -> String {
    s.trim().trim_matches('`').trim().to_string()
}

fn list(cell: &str) -> BTreeSet<String> {
    cell.split(',')
        .map(strip)
        .filter(|s| !s.is_empty() && !matches!(s.as_str(), "—" | "-" | "–" | "none"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# x\n\n## Checked by `cargo xtask tidy`\n\ntext\n\n\
| crate | workspace dependencies | workspace dev-dependencies | ML crates | files with unsafe |\n\
|---|---|---|---|---|\n\
| `a` | — | `b`, `c` | — | `src/x.rs`, src/y.rs |\n\
| b | a | | candle-core | none |\n\
\n\
| file | why |\n|---|---|\n| `crates/a/src/t.rs` | table |\n\
\n## Next\n| other | table |\n";

    #[test]
    fn parses_both_tables() {
        let r = parse("A.md", DOC).unwrap();
        assert_eq!(r.crates.len(), 2);
        let a = r.krate("a").unwrap();
        assert_eq!(a.line, 9);
        assert!(a.deps.is_empty());
        assert_eq!(a.dev_deps.iter().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(a.unsafe_files.len(), 2);
        let b = r.krate("b").unwrap();
        assert_eq!(b.deps.iter().collect::<Vec<_>>(), ["a"]);
        assert!(b.unsafe_files.is_empty());
        assert_eq!(b.ml.iter().collect::<Vec<_>>(), ["candle-core"]);
        assert_eq!(r.big_files, vec![("crates/a/src/t.rs".to_string(), 14)]);
    }

    #[test]
    fn missing_section_or_column_is_a_problem() {
        let e = parse("A.md", "# x\n| crate | a |\n").unwrap_err();
        assert!(e.msg.contains("no section"), "{e}");
        let doc = DOC.replace("| ML crates ", "| AI crates ");
        let e = parse("A.md", &doc).unwrap_err();
        assert!(e.msg.contains("ML crates"), "{e}");
        let doc = DOC.replace("| file | why |", "| path | why |");
        assert!(
            parse("A.md", &doc)
                .unwrap_err()
                .msg
                .contains("unknown table")
        );
    }
}
