//! CUDA kernel names in both directions, per crate, without NVRTC: every kernel name the Rust
//! side loads (a `const KERNEL_…: &str = "name"`) is an `extern "C" __global__` function of the
//! crate's `.cu`/`.cuh` sources, and every `__global__` function there is named by such a const.

use std::collections::BTreeMap;

use super::Problem;
use super::deps::Member;
use super::lexer;
use super::source::SourceFile;

/// `(name, line)` of every `const KERNEL_…: &str = "name"` in `f`.
pub fn rust_names(f: &SourceFile) -> Vec<(String, usize)> {
    let code = f.code.as_bytes();
    let mut out = Vec::new();
    for p in lexer::word_positions(&f.code, "const") {
        let mut i = p + 5;
        while i < code.len() && code[i].is_ascii_whitespace() {
            i += 1;
        }
        if !f.code[i..].starts_with("KERNEL_") {
            continue;
        }
        let Some(eq) = f.code[i..].find('=').map(|e| i + e) else {
            continue;
        };
        let ty = &f.code[i..eq];
        if !ty.contains("str") {
            continue;
        }
        let rest = f.code[eq + 1..].trim_start();
        if !rest.starts_with('"') {
            continue;
        }
        let open = f.code.len() - rest.len();
        let Some(close) = f.code[open + 1..].find('"').map(|c| open + 1 + c) else {
            continue;
        };
        out.push((
            f.text[open + 1..close].to_string(),
            lexer::line_of(&f.code, p),
        ));
    }
    out
}

/// `(name, line, is extern "C")` of every `__global__` function in a CUDA source.
pub fn cuda_kernels(f: &SourceFile) -> Vec<(String, usize, bool)> {
    let code = f.code.as_bytes();
    let mut out = Vec::new();
    for p in lexer::word_positions(&f.code, "__global__") {
        let Some(paren) = f.code[p..].find('(').map(|q| p + q) else {
            continue;
        };
        let mut end = paren;
        while end > p && code[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
        let mut start = end;
        while start > p && lexer::is_ident(code[start - 1]) {
            start -= 1;
        }
        // The declaration starts after the previous `;`, `}` or preprocessor line.
        let decl_start = f.code[..p].rfind([';', '}', '#']).map_or(0, |q| q + 1);
        let is_extern_c = lexer::has_word(&f.code[decl_start..p], "extern");
        out.push((
            f.code[start..end].to_string(),
            lexer::line_of(&f.code, p),
            is_extern_c,
        ));
    }
    out
}

pub fn check(members: &[Member], files: &[SourceFile], problems: &mut Vec<Problem>) {
    for m in members {
        let dir = m.dir.to_string_lossy().replace('\\', "/");
        let mut rust: BTreeMap<String, (String, usize)> = BTreeMap::new();
        let mut cuda: BTreeMap<String, (String, usize)> = BTreeMap::new();
        for f in files.iter().filter(|f| f.under(&dir)) {
            if f.is_rust() {
                for (name, line) in rust_names(f) {
                    rust.entry(name).or_insert((f.path.clone(), line));
                }
            } else if f.is_cuda() {
                for (name, line, extern_c) in cuda_kernels(f) {
                    if !extern_c {
                        problems.push(Problem::new(
                            &f.path,
                            line,
                            format!(
                                "kernel `{name}` is not `extern \"C\"` (its name would be mangled)"
                            ),
                        ));
                    }
                    cuda.entry(name).or_insert((f.path.clone(), line));
                }
            }
        }
        for (name, (path, line)) in &rust {
            if !cuda.contains_key(name) {
                problems.push(Problem::new(
                    path,
                    *line,
                    format!("kernel `{name}` is loaded here but no `__global__` in {dir}'s .cu sources defines it"),
                ));
            }
        }
        for (name, (path, line)) in &cuda {
            if !rust.contains_key(name) {
                problems.push(Problem::new(
                    path,
                    *line,
                    format!("kernel `{name}` is named by no `const KERNEL_…: &str` in {dir}"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RS: &str = "/// a\npub const KERNEL_FWD: &str = \"k_fwd\";\n// const KERNEL_OLD: &str = \"gone\";\npub const KERNEL_BWD: &'static str =\n    \"k_bwd\";\nconst OTHER: &str = \"x\";\n";
    const CU: &str = "#include \"a.cuh\"\n// extern \"C\" __global__ void commented() {}\nextern \"C\" __global__ void k_fwd(const float* x) {}\n\nextern \"C\" __global__ void\n  BOUNDS k_bwd (float* g) {}\n";

    fn run(files: &[(&str, &str)]) -> Vec<String> {
        let files: Vec<_> = files
            .iter()
            .map(|(p, t)| SourceFile::new(p, t.to_string()))
            .collect();
        let m = Member {
            name: "a".into(),
            dir: "crates/a".into(),
            ..Member::default()
        };
        let mut p = Vec::new();
        check(&[m], &files, &mut p);
        p.into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn names_are_read() {
        let f = SourceFile::new("a.rs", RS.into());
        assert_eq!(
            rust_names(&f),
            [("k_fwd".to_string(), 2), ("k_bwd".to_string(), 4)]
        );
        let f = SourceFile::new("a.cu", CU.into());
        assert_eq!(
            cuda_kernels(&f),
            [
                ("k_fwd".to_string(), 3, true),
                ("k_bwd".to_string(), 5, true)
            ]
        );
    }

    #[test]
    fn matching_tables_pass() {
        let p = run(&[("crates/a/src/k.rs", RS), ("crates/a/kernels/k.cu", CU)]);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn both_directions_are_reported() {
        let cu = CU.replace("k_bwd", "k_back") + "__global__ void plain() {}\n";
        let p = run(&[("crates/a/src/k.rs", RS), ("crates/a/kernels/k.cu", &cu)]);
        let joined = p.join("\n");
        assert!(
            joined.contains("crates/a/src/k.rs:4: kernel `k_bwd` is loaded here"),
            "{joined}"
        );
        assert!(
            joined.contains("crates/a/kernels/k.cu:5: kernel `k_back` is named by no"),
            "{joined}"
        );
        assert!(
            joined.contains("crates/a/kernels/k.cu:7: kernel `plain` is not `extern \"C\"`"),
            "{joined}"
        );
        assert!(joined.contains("kernel `plain` is named by no"), "{joined}");
        assert_eq!(p.len(), 4, "{p:?}");
    }

    #[test]
    fn other_crates_do_not_count() {
        let p = run(&[("crates/a/src/k.rs", RS), ("crates/b/kernels/k.cu", CU)]);
        assert_eq!(p.len(), 2, "{p:?}");
    }
}
