//! No `#[ignore]`, `#[should_panic]` (also through `cfg_attr`) or `dbg!` in Rust code.

use super::Problem;
use super::lexer;
use super::source::SourceFile;

pub fn check(files: &[SourceFile], problems: &mut Vec<Problem>) {
    for f in files.iter().filter(|f| f.is_rust()) {
        for (i, line) in f.code.lines().enumerate() {
            if let Some(what) = banned_in(line) {
                problems.push(Problem::new(
                    &f.path,
                    i + 1,
                    format!("{what} is not allowed"),
                ));
            }
        }
    }
}

/// The banned construct in a line of code (comments and literals blanked), if any.
pub fn banned_in(line: &str) -> Option<&'static str> {
    let squeezed: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    if squeezed.contains("#[ignore") {
        return Some("`#[ignore]`");
    }
    if squeezed.contains("#[should_panic") {
        return Some("`#[should_panic]`");
    }
    if squeezed.contains("dbg!(") {
        return Some("`dbg!`");
    }
    if squeezed.contains("#[cfg_attr(")
        && (lexer::has_word(line, "ignore") || lexer::has_word(line, "should_panic"))
    {
        return Some("`#[cfg_attr(.., ignore/should_panic)]`");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banned_constructs_are_found_in_code_only() {
        let src = "#[test]\n#[ignore = \"slow\"]\nfn a() { dbg! (1); }\n# [should_panic]\n#[cfg_attr(miri, ignore)]\n// #[ignore]\nconst S: &str = \"dbg!(x) #[should_panic]\";\nfn ignore_me() {}\n";
        let files = [SourceFile::new("crates/a/tests/t.rs", src.into())];
        let mut p = Vec::new();
        check(&files, &mut p);
        let lines: Vec<usize> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, [2, 3, 4, 5], "{p:?}");
    }
}
