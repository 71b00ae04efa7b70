//! Dependencies of every workspace crate against the crate table of ARCHITECTURE.md, from
//! `cargo metadata --format-version 1 --no-deps` (no network, no resolution).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::Problem;
use super::rules::{ML_CRATES, Rules};

/// One workspace member as the checks need it.
#[derive(Debug, Default, Clone)]
pub struct Member {
    pub name: String,
    /// Folder holding its Cargo.toml, relative to the repository root.
    pub dir: PathBuf,
    /// Workspace crates among its normal (and build) dependencies.
    pub deps: BTreeSet<String>,
    /// Workspace crates among its dev-dependencies.
    pub dev_deps: BTreeSet<String>,
    /// [`ML_CRATES`] among its normal (and build) dependencies, optional ones included.
    pub ml: BTreeSet<String>,
    /// Whether it builds a library (`lib`, `rlib`, `cdylib`, ...), as opposed to binaries only.
    pub is_library: bool,
    /// [`BINARY_ONLY`] crates among its normal (and build) dependencies.
    pub binary_only: BTreeSet<String>,
    /// The text of its Cargo.toml (to point problems at a line; empty when unread).
    pub manifest_text: String,
}

/// 1-based line of `dep`'s entry in a Cargo.toml (`dep = ...`, `dep.workspace = true`,
/// `[dependencies.dep]`), 0 when not found.
pub fn dep_line(manifest: &str, dep: &str) -> usize {
    manifest
        .lines()
        .position(|l| {
            let l = l.trim_start();
            let key = l.strip_prefix('[').map_or(l, |t| {
                t.split_once('.')
                    .map_or("", |(_, rest)| rest.trim_end_matches(']'))
            });
            key.strip_prefix(dep)
                .is_some_and(|r| r.is_empty() || r.starts_with([' ', '=', '.', '\t']))
        })
        .map_or(0, |i| i + 1)
}

/// Crates only binaries may depend on (outside dev-dependencies): libraries return typed errors
/// and leave installing a tracing subscriber to the binary.
pub const BINARY_ONLY: &[&str] = &["anyhow", "tracing-subscriber"];

/// The workspace members, from `cargo metadata` run in `root`.
pub fn members(root: &Path) -> anyhow::Result<Vec<Member>> {
    let out = Command::new(crate::util::cargo())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .context("failed to run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let root = root.canonicalize()?;
    parse_metadata(&json, &root)
}

fn parse_metadata(json: &serde_json::Value, root: &Path) -> anyhow::Result<Vec<Member>> {
    let packages = json["packages"]
        .as_array()
        .context("cargo metadata: no packages")?;
    let names: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut out = Vec::new();
    for p in packages {
        let name = p["name"].as_str().context("package without name")?;
        let manifest = PathBuf::from(p["manifest_path"].as_str().unwrap_or_default());
        let dir = manifest.parent().unwrap_or(Path::new(""));
        let dir = dir.strip_prefix(root).unwrap_or(dir).to_path_buf();
        let is_library = p["targets"].as_array().into_iter().flatten().any(|t| {
            t["kind"].as_array().into_iter().flatten().any(|k| {
                k.as_str().is_some_and(|k| {
                    k != "bin"
                        && !k.ends_with("test")
                        && k != "bench"
                        && k != "example"
                        && k != "custom-build"
                })
            })
        });
        let mut m = Member {
            name: name.to_string(),
            manifest_text: std::fs::read_to_string(&manifest).unwrap_or_default(),
            dir,
            is_library,
            ..Member::default()
        };
        for d in p["dependencies"].as_array().into_iter().flatten() {
            let dep = d["name"].as_str().unwrap_or_default();
            let dev = d["kind"].as_str() == Some("dev");
            if names.contains(dep) {
                if dev {
                    m.dev_deps.insert(dep.to_string());
                } else {
                    m.deps.insert(dep.to_string());
                }
            } else if !dev && ML_CRATES.contains(&dep) {
                m.ml.insert(dep.to_string());
            } else if !dev && BINARY_ONLY.contains(&dep) {
                m.binary_only.insert(dep.to_string());
            }
        }
        out.push(m);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Every member has a row, every row a member, the dependency cells are exactly the crate's
/// workspace dependencies, and the ML cell exactly the ML crates it reaches (directly or through
/// workspace crates).
pub fn check(members: &[Member], rules: &Rules, arch: &str, problems: &mut Vec<Problem>) {
    let by_name: BTreeMap<&str, &Member> = members.iter().map(|m| (m.name.as_str(), m)).collect();
    for rule in &rules.crates {
        if !by_name.contains_key(rule.name.as_str()) {
            problems.push(Problem::new(
                arch,
                rule.line,
                format!("`{}` is not a workspace crate", rule.name),
            ));
        }
    }
    // Rows are in dependency order: the table reads as layers, bottom first.
    for (i, rule) in rules.crates.iter().enumerate() {
        for dep in &rule.deps {
            if let Some(j) = rules.crates.iter().position(|r| &r.name == dep)
                && j > i
            {
                problems.push(Problem::new(
                    arch,
                    rule.line,
                    format!(
                        "`{}` depends on `{dep}`, whose row is below it (line {}): rows are in dependency order",
                        rule.name, rules.crates[j].line
                    ),
                ));
            }
        }
    }
    for m in members {
        let manifest = m.dir.join("Cargo.toml");
        let manifest = manifest.to_string_lossy();
        let Some(rule) = rules.krate(&m.name) else {
            problems.push(Problem::new(
                arch,
                0,
                format!("workspace crate `{}` has no row in the crate table", m.name),
            ));
            continue;
        };
        if m.is_library {
            for dep in &m.binary_only {
                problems.push(Problem::new(
                    &manifest,
                    dep_line(&m.manifest_text, dep),
                    format!(
                        "library `{}` depends on `{dep}`: libraries return typed errors (thiserror) and only binaries install a tracing subscriber",
                        m.name
                    ),
                ));
            }
        }
        let mut cmp = |what: &str, have: &BTreeSet<String>, allowed: &BTreeSet<String>| {
            for extra in have.difference(allowed) {
                problems.push(Problem::new(
                    &manifest,
                    dep_line(&m.manifest_text, extra),
                    format!(
                        "`{}` has the {what} `{extra}`, which ARCHITECTURE.md does not allow (line {})",
                        m.name, rule.line
                    ),
                ));
            }
            for missing in allowed.difference(have) {
                problems.push(Problem::new(
                    arch,
                    rule.line,
                    format!(
                        "`{}` lists the {what} `{missing}`, which it does not have",
                        m.name
                    ),
                ));
            }
        };
        cmp("workspace dependency", &m.deps, &rule.deps);
        cmp("workspace dev-dependency", &m.dev_deps, &rule.dev_deps);
        let reached = ml_reached(&m.name, &by_name);
        for (ml, via) in &reached {
            if !rule.ml.contains(ml) {
                let how = if via == &m.name {
                    "directly".to_string()
                } else {
                    format!("through `{via}`")
                };
                let line = if via == &m.name {
                    dep_line(&m.manifest_text, ml)
                } else {
                    0
                };
                problems.push(Problem::new(
                    &manifest,
                    line,
                    format!(
                        "`{}` reaches the ML crate `{ml}` {how}, which ARCHITECTURE.md does not allow (line {})",
                        m.name, rule.line
                    ),
                ));
            }
        }
        for missing in rule.ml.iter().filter(|ml| !reached.contains_key(*ml)) {
            problems.push(Problem::new(
                arch,
                rule.line,
                format!(
                    "`{}` lists the ML crate `{missing}`, which it does not reach",
                    m.name
                ),
            ));
        }
    }
}

/// Every ML crate `name` reaches through its normal dependencies, directly or through workspace
/// crates (transitively), with the crate that depends on it (the first found).
fn ml_reached(name: &str, by_name: &BTreeMap<&str, &Member>) -> BTreeMap<String, String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![name];
    let mut out = BTreeMap::new();
    while let Some(d) = stack.pop() {
        if !seen.insert(d) {
            continue;
        }
        if let Some(m) = by_name.get(d) {
            for ml in &m.ml {
                out.entry(ml.clone()).or_insert_with(|| d.to_string());
            }
            stack.extend(m.deps.iter().map(String::as_str));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::rules;
    use super::*;

    const META: &str = r#"{"packages": [
      {"name": "a", "manifest_path": "/r/crates/a/Cargo.toml", "targets": [{"kind": ["lib"]}, {"kind": ["test"]}], "dependencies": [
        {"name": "thiserror", "kind": null}, {"name": "b", "kind": null},
        {"name": "c", "kind": "dev"}, {"name": "candle-core", "kind": "dev"}]},
      {"name": "b", "manifest_path": "/r/crates/b/Cargo.toml", "targets": [{"kind": ["cdylib"]}], "dependencies": [
        {"name": "anyhow", "kind": "dev"},
        {"name": "gemm", "kind": null}, {"name": "cudarc", "kind": null, "optional": true}]},
      {"name": "c", "manifest_path": "/r/crates/c/Cargo.toml", "targets": [{"kind": ["bin"]}, {"kind": ["example"]}], "dependencies": [
        {"name": "anyhow", "kind": null}, {"name": "tracing-subscriber", "kind": null}]}
    ]}"#;

    fn members() -> Vec<Member> {
        parse_metadata(&serde_json::from_str(META).unwrap(), Path::new("/r")).unwrap()
    }

    fn rules(rows: &str) -> Rules {
        let doc = format!(
            "{}\n| crate | workspace dependencies | workspace dev-dependencies | ML crates | files with unsafe |\n|-|-|-|-|-|\n{rows}",
            rules::SECTION_PREFIX
        );
        rules::parse("ARCHITECTURE.md", &doc).unwrap()
    }

    fn run(rows: &str) -> Vec<String> {
        let mut p = Vec::new();
        check(&members(), &rules(rows), "ARCHITECTURE.md", &mut p);
        p.into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn dependency_lines() {
        let toml = "[package]\nname = \"x\"\n[dependencies]\ncandle-core.workspace = true\ncandle-nn = { workspace = true }\n\n[dependencies.gemm]\nversion = \"1\"\n[dev-dependencies]\nnmoco-alloc.workspace = true\n";
        assert_eq!(dep_line(toml, "candle-core"), 4);
        assert_eq!(dep_line(toml, "candle-nn"), 5);
        assert_eq!(dep_line(toml, "gemm"), 7);
        assert_eq!(dep_line(toml, "nmoco-alloc"), 10);
        assert_eq!(dep_line(toml, "candle"), 0);
        assert_eq!(dep_line(toml, "x"), 0);
    }

    #[test]
    fn metadata_is_read() {
        let m = members();
        assert_eq!(m[0].dir, Path::new("crates/a"));
        assert_eq!(m[0].deps.iter().collect::<Vec<_>>(), ["b"]);
        assert_eq!(m[0].dev_deps.iter().collect::<Vec<_>>(), ["c"]);
        assert!(
            m[0].ml.is_empty(),
            "dev-dependencies are not ML dependencies"
        );
        assert_eq!(m[1].ml.iter().collect::<Vec<_>>(), ["cudarc", "gemm"]);
        assert!(m[0].is_library && m[1].is_library && !m[2].is_library);
        assert!(
            m[1].binary_only.is_empty(),
            "dev-dependencies may use anyhow"
        );
        assert_eq!(m[2].binary_only.len(), 2);
    }

    #[test]
    fn libraries_may_not_use_anyhow() {
        let mut m = members();
        m[0].binary_only.insert("anyhow".into());
        let rows = "| b | | | gemm, cudarc | |\n| c | | | | |\n| a | b | c | gemm, cudarc | |\n";
        let mut p = Vec::new();
        check(&m, &rules(rows), "ARCHITECTURE.md", &mut p);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].to_string()
                .starts_with("crates/a/Cargo.toml: library `a` depends on `anyhow`")
        );
    }

    #[test]
    fn matching_table_passes() {
        let p = run("| b | | | gemm, cudarc | |\n| c | | | | |\n| a | b | c | gemm, cudarc | |\n");
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn forbidden_and_stale_edges_are_reported() {
        // a may not depend on b, and lists c as a normal dependency it does not have.
        let p =
            run("| b | | | gemm | |\n| c | | | candle-core | |\n| a | c | c | gemm, cudarc | |\n");
        let joined = p.join("\n");
        assert!(joined.contains("crates/a/Cargo.toml: `a` has the workspace dependency `b`"));
        assert!(joined.contains("ARCHITECTURE.md:6: `a` lists the workspace dependency `c`"));
        assert!(joined.contains("crates/b/Cargo.toml: `b` reaches the ML crate `cudarc` directly"));
        assert!(joined.contains("ARCHITECTURE.md:5: `c` lists the ML crate `candle-core`"));
        assert_eq!(p.len(), 4, "{p:?}");
    }

    #[test]
    fn ml_through_a_workspace_crate_is_reported() {
        let p = run("| b | | | gemm, cudarc | |\n| c | | | | |\n| a | b | c | | |\n");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("`a` reaches the ML crate `cudarc` through `b`"),
            "{p:?}"
        );
    }

    #[test]
    fn rows_are_in_dependency_order() {
        let p = run("| b | | | gemm, cudarc | |\n| c | | | | |\n| a | b | c | gemm, cudarc | |\n");
        assert!(p.is_empty(), "{p:?}");
        let p = run("| a | b | c | gemm, cudarc | |\n| b | | | gemm, cudarc | |\n| c | | | | |\n");
        assert_eq!(
            p,
            [
                "ARCHITECTURE.md:4: `a` depends on `b`, whose row is below it (line 5): rows are in dependency order"
            ]
        );
    }

    #[test]
    fn missing_and_unknown_rows_are_reported() {
        let p = run("| a | b | c | | |\n| b | | | gemm, cudarc | |\n| d | | | | |\n");
        let joined = p.join("\n");
        assert!(joined.contains("`d` is not a workspace crate"));
        assert!(joined.contains("`c` has no row"));
    }
}
