//! Size limits: no `.rs` file over [`MAX_FILE_LINES`] lines unless ARCHITECTURE.md names it
//! (pure kernel tables), no function over [`MAX_FN_LINES`] lines outside `examples/`.

use super::Problem;
use super::lexer;
use super::source::SourceFile;

pub const MAX_FILE_LINES: usize = 600;
pub const MAX_FN_LINES: usize = 150;

pub fn check_files(
    files: &[SourceFile],
    allowed: &[(String, usize)],
    arch: &str,
    problems: &mut Vec<Problem>,
) {
    for f in files.iter().filter(|f| f.is_rust()) {
        let n = f.text.lines().count();
        if n > MAX_FILE_LINES && !allowed.iter().any(|(p, _)| *p == f.path) {
            problems.push(Problem::new(
                &f.path,
                0,
                format!("{n} lines (at most {MAX_FILE_LINES}; only kernel tables listed in ARCHITECTURE.md may be longer)"),
            ));
        }
    }
    for (path, line) in allowed {
        match files.iter().find(|f| f.path == *path) {
            None => problems.push(Problem::new(
                arch,
                *line,
                format!("`{path}` is allowed over {MAX_FILE_LINES} lines but does not exist"),
            )),
            Some(f) if f.text.lines().count() <= MAX_FILE_LINES => problems.push(Problem::new(
                arch,
                *line,
                format!("`{path}` is allowed over {MAX_FILE_LINES} lines but is not that long: drop the entry"),
            )),
            Some(_) => {}
        }
    }
}

pub fn check_functions(files: &[SourceFile], problems: &mut Vec<Problem>) {
    for f in files
        .iter()
        .filter(|f| f.is_rust() && !f.in_folder("examples"))
    {
        for (name, line, n) in long_functions(&f.code, MAX_FN_LINES) {
            problems.push(Problem::new(
                &f.path,
                line,
                format!("fn `{name}` is {n} lines (at most {MAX_FN_LINES} outside examples/)"),
            ));
        }
    }
}

/// `(name, first line, lines)` of every function in `code` (comments and literals already
/// blanked) longer than `max` lines, counted from the line of `fn` to its closing brace.
pub fn long_functions(code: &str, max: usize) -> Vec<(String, usize, usize)> {
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(code.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let mut out = Vec::new();
    for (li, &start) in line_starts.iter().enumerate() {
        let end = line_starts.get(li + 1).map_or(code.len(), |&e| e - 1);
        let line = &code[start..end];
        let Some((name, fn_at)) = fn_start(line) else {
            continue;
        };
        if let Some(close) = body_end(code, start + fn_at) {
            let n = lexer::line_of(code, close) - li;
            if n > max {
                out.push((name.to_string(), li + 1, n));
            }
        }
    }
    out
}

/// If the line starts a function item (`[pub[(..)]] [const] [async] [unsafe] [extern "C"] fn
/// name`), its name and the offset of `fn` in the line.
fn fn_start(line: &str) -> Option<(&str, usize)> {
    let mut rest = line.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("pub(") {
            rest = r.split_once(')')?.1.trim_start();
            continue;
        }
        let word_len = rest.bytes().take_while(|&c| lexer::is_ident(c)).count();
        let word = &rest[..word_len];
        match word {
            "pub" | "const" | "async" | "unsafe" | "default" | "safe" => {
                rest = rest[word_len..].trim_start();
            }
            "extern" => {
                rest = rest[word_len..].trim_start();
                if let Some(r) = rest.strip_prefix('"') {
                    rest = r.split_once('"')?.1.trim_start();
                }
            }
            "fn" => {
                let after = rest[2..].trim_start();
                let n = after.bytes().take_while(|&c| lexer::is_ident(c)).count();
                if n == 0 || after.len() == rest.len() - 2 {
                    return None;
                }
                let at = line.len() - rest.len();
                return Some((&after[..n], at));
            }
            _ => return None,
        }
    }
}

/// Offset of the `}` closing the body of the function whose `fn` is at `from`; `None` for a
/// declaration without a body (`;` outside brackets before any `{`).
fn body_end(code: &str, from: usize) -> Option<usize> {
    let b = code.as_bytes();
    let mut round_square = 0i32;
    let mut depth = 0i32;
    for (i, &c) in b.iter().enumerate().skip(from) {
        match c {
            b'(' | b'[' if depth == 0 => round_square += 1,
            b')' | b']' if depth == 0 => round_square -= 1,
            b';' if depth == 0 && round_square == 0 => return None,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(lines: usize) -> String {
        (0..lines)
            .map(|i| format!("    let x{i} = {i};\n"))
            .collect()
    }

    #[test]
    fn long_function_is_found_with_its_length() {
        // fn line + 149 body lines + closing brace = 151 lines.
        let src = format!(
            "/// doc\npub(crate) const unsafe fn long(a: [u8; 4]) -> u8 {{\n{}}}\nfn short() {{ }}\n",
            body(149)
        );
        let code = lexer::rust_code(&src);
        assert_eq!(long_functions(&code, 150), [("long".to_string(), 2, 151)]);
        let src = format!("fn ok() {{\n{}}}\n", body(148));
        assert!(long_functions(&lexer::rust_code(&src), 150).is_empty());
    }

    #[test]
    fn braces_in_comments_strings_and_chars_do_not_count() {
        let src =
            "fn f() {\n    let s = \"}}}\";\n    let c = '}';\n    // }\n    /* } */\n    x\n}\n";
        assert_eq!(
            long_functions(&lexer::rust_code(src), 1),
            [("f".to_string(), 1, 7)]
        );
    }

    #[test]
    fn declarations_and_nested_functions() {
        let src = "trait T {\n    fn decl(&self, a: [u8; 2]);\n    fn with_body(&self) {\n        fn inner() {\n        }\n    }\n}\nextern \"C\" fn cb() {\n}\n";
        let found = long_functions(&lexer::rust_code(src), 1);
        assert_eq!(
            found,
            [
                ("with_body".to_string(), 3, 4),
                ("inner".to_string(), 4, 2),
                ("cb".to_string(), 8, 2)
            ]
        );
        assert!(fn_start("let f: fn(u8) = g;").is_none());
        assert!(fn_start("    fn(u8) -> u8,").is_none());
        assert!(fn_start("pub(in crate::a) async fn x()").is_some());
    }

    #[test]
    fn file_limit_and_examples() {
        let long = "fn f() {\n".to_string() + &body(160) + "}\n";
        let files = [
            SourceFile::new("crates/a/src/big.rs", "//\n".repeat(601)),
            SourceFile::new("crates/a/src/table.rs", "//\n".repeat(700)),
            SourceFile::new("crates/a/src/small.rs", "//\n".repeat(600)),
            SourceFile::new("crates/a/examples/long.rs", long.clone()),
            SourceFile::new("crates/a/tests/long.rs", long),
        ];
        let allowed = vec![
            ("crates/a/src/table.rs".to_string(), 7),
            ("crates/a/src/small.rs".to_string(), 8),
            ("crates/a/src/gone.rs".to_string(), 9),
        ];
        let mut p = Vec::new();
        check_files(&files, &allowed, "ARCHITECTURE.md", &mut p);
        check_functions(&files, &mut p);
        let p: Vec<String> = p.into_iter().map(|p| p.to_string()).collect();
        let joined = p.join("\n");
        assert!(
            joined.contains("crates/a/src/big.rs: 601 lines"),
            "{joined}"
        );
        assert!(
            joined.contains("ARCHITECTURE.md:8: `crates/a/src/small.rs` is allowed"),
            "{joined}"
        );
        assert!(
            joined.contains("ARCHITECTURE.md:9: `crates/a/src/gone.rs`"),
            "{joined}"
        );
        assert!(
            joined.contains("crates/a/tests/long.rs:1: fn `f` is 162 lines"),
            "{joined}"
        );
        assert_eq!(p.len(), 4, "{p:?}");
    }
}
