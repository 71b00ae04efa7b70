//! Blanking of comments and literals, so that the checks see only code.
//!
//! [`rust_code`] and [`c_code`] return the source with every byte of a comment and of a string,
//! byte-string or character literal's contents replaced by a space (newlines kept, quotes kept),
//! so byte offsets and line numbers stay those of the original text.

/// Rust source with comments (line, nested block, doc) and the contents of string, raw string,
/// byte string, C string and character literals blanked. Lifetimes and labels are kept.
pub fn rust_code(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = find_byte(b, i, b'\n');
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = block_comment_end(b, i);
                blank(&mut out, i, end);
                i = end;
            }
            b'"' => i = quoted(b, &mut out, i, b'"'),
            b'r' | b'b' | b'c' if !ident_byte_before(b, i) => match raw_or_prefixed(b, i) {
                Some(Prefixed::Raw { open, hashes }) => i = raw_string(b, &mut out, open, hashes),
                Some(Prefixed::Quote(q)) if b[q] == b'"' => i = quoted(b, &mut out, q, b'"'),
                Some(Prefixed::Quote(q)) => i = quoted(b, &mut out, q, b'\''),
                None => i += 1,
            },
            b'\'' => i = char_or_lifetime(b, &mut out, i),
            _ => i += 1,
        }
    }
    String::from_utf8(out).expect("only whole UTF-8 sequences are replaced, by ASCII")
}

/// C / CUDA source with `//` and `/* */` comments and string / character contents blanked.
pub fn c_code(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = find_byte(b, i, b'\n');
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = match find_seq(b, i + 2, b"*/") {
                    Some(e) => e + 2,
                    None => b.len(),
                };
                blank(&mut out, i, end);
                i = end;
            }
            q @ (b'"' | b'\'') => i = quoted(b, &mut out, i, q),
            _ => i += 1,
        }
    }
    String::from_utf8(out).expect("only whole UTF-8 sequences are replaced, by ASCII")
}

enum Prefixed {
    /// `r"`, `r#"`, `br#"`, `cr"`: index of the opening quote, number of `#`.
    Raw { open: usize, hashes: usize },
    /// `b"`, `c"`, `b'`: index of the quote.
    Quote(usize),
}

fn raw_or_prefixed(b: &[u8], i: usize) -> Option<Prefixed> {
    let mut j = i;
    if b[j] == b'b' || b[j] == b'c' {
        j += 1;
        match b.get(j) {
            Some(b'"') => return Some(Prefixed::Quote(j)),
            Some(b'\'') if b[i] == b'b' => return Some(Prefixed::Quote(j)),
            Some(b'r') => {}
            _ => return None,
        }
    }
    // b[j] == b'r'
    j += 1;
    let mut hashes = 0;
    while b.get(j) == Some(&b'#') {
        hashes += 1;
        j += 1;
    }
    (b.get(j) == Some(&b'"')).then_some(Prefixed::Raw { open: j, hashes })
}

fn ident_byte_before(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// A literal opened by quote `q` at `open` with backslash escapes; returns the index after it.
fn quoted(b: &[u8], out: &mut [u8], open: usize, q: u8) -> usize {
    let mut j = open + 1;
    while j < b.len() && b[j] != q {
        j += if b[j] == b'\\' { 2 } else { 1 };
    }
    let end = j.min(b.len());
    blank(out, open + 1, end);
    end + 1
}

fn raw_string(b: &[u8], out: &mut [u8], open: usize, hashes: usize) -> usize {
    let mut close = Vec::with_capacity(hashes + 1);
    close.push(b'"');
    close.extend(std::iter::repeat_n(b'#', hashes));
    let end = find_seq(b, open + 1, &close).unwrap_or(b.len());
    blank(out, open + 1, end);
    end + close.len()
}

/// `'x'`, `'\n'`, `'\u{..}'`, `'é'` are character literals; `'a` (no closing quote right after
/// one character) is a lifetime or label.
fn char_or_lifetime(b: &[u8], out: &mut [u8], i: usize) -> usize {
    if b.get(i + 1) == Some(&b'\\') {
        return quoted(b, out, i, b'\'');
    }
    let Some(&first) = b.get(i + 1) else {
        return i + 1;
    };
    let len = utf8_len(first);
    if b.get(i + 1 + len) == Some(&b'\'') {
        blank(out, i + 1, i + 1 + len);
        return i + 2 + len;
    }
    i + 1
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0.. => 4,
        0xE0.. => 3,
        0xC0.. => 2,
        _ => 1,
    }
}

fn block_comment_end(b: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut j = start;
    while j + 1 < b.len() {
        if b[j] == b'/' && b[j + 1] == b'*' {
            depth += 1;
            j += 2;
        } else if b[j] == b'*' && b[j + 1] == b'/' {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return j;
            }
        } else {
            j += 1;
        }
    }
    b.len()
}

fn find_byte(b: &[u8], from: usize, x: u8) -> usize {
    b[from..]
        .iter()
        .position(|&c| c == x)
        .map_or(b.len(), |p| from + p)
}

fn find_seq(b: &[u8], from: usize, seq: &[u8]) -> Option<usize> {
    if from > b.len() {
        return None;
    }
    b[from..]
        .windows(seq.len())
        .position(|w| w == seq)
        .map(|p| from + p)
}

fn blank(out: &mut [u8], from: usize, to: usize) {
    let n = out.len();
    for c in &mut out[from.min(n)..to.min(n)] {
        if *c != b'\n' {
            *c = b' ';
        }
    }
}

/// Whether `word` occurs in `line` as a whole identifier.
pub fn has_word(line: &str, word: &str) -> bool {
    word_positions(line, word).next().is_some()
}

/// Byte offsets where `word` occurs in `text` as a whole identifier.
pub fn word_positions<'a>(text: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    let b = text.as_bytes();
    text.match_indices(word).map(|(p, _)| p).filter(move |&p| {
        let before = p > 0 && is_ident(b[p - 1]);
        let after = b.get(p + word.len()).is_some_and(|&c| is_ident(c));
        !before && !after
    })
}

pub fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// 1-based line number of byte offset `pos`.
pub fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos]
        .iter()
        .filter(|&&c| c == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_comments_and_literals_are_blanked() {
        let src =
            "let a = \"unsafe { x }\"; // unsafe\n/* unsafe /* nested */ still */ unsafe {}\n";
        let code = rust_code(src);
        assert_eq!(code.len(), src.len());
        assert_eq!(code.lines().count(), 2);
        assert_eq!(word_positions(&code, "unsafe").count(), 1);
        assert!(
            code.lines()
                .nth(1)
                .unwrap()
                .trim_start()
                .starts_with("unsafe {}")
        );
    }

    #[test]
    fn raw_strings_bytes_and_chars() {
        let src = "r#\"a \" unsafe\"#; b\"unsafe\"; br\"unsafe\"; c\"unsafe\"; b'{'; '}'; '\\''; '\\u{7b}'; 'é';";
        let code = rust_code(src);
        assert!(!code.contains("unsafe"), "{code}");
        assert!(!code.contains('{') && !code.contains('}'), "{code}");
    }

    #[test]
    fn lifetimes_and_identifiers_are_kept() {
        let src = "fn f<'a>(x: &'a str) -> &'static str { 'outer: loop { break 'outer; } x }";
        let code = rust_code(src);
        assert_eq!(code, src);
        // an identifier ending in r/b/c before a quote is not a literal prefix
        let src = "let var = \"{\"; let abc = '}';";
        assert_eq!(rust_code(src).matches(['{', '}']).count(), 0);
    }

    #[test]
    fn c_comments_are_blanked() {
        let src = "// __global__ void a()\n/* __global__ */ extern \"C\" __global__ void b() {}";
        let code = c_code(src);
        assert_eq!(word_positions(&code, "__global__").count(), 1);
    }

    #[test]
    fn whole_words_only() {
        assert!(has_word("x unsafe {", "unsafe"));
        assert!(!has_word("#![forbid(unsafe_code)]", "unsafe"));
        assert!(!has_word("not_unsafe", "unsafe"));
        assert_eq!(line_of("a\nb\nc", 4), 3);
    }
}
