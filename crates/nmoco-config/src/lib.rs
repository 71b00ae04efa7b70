//! Generic TOML config plumbing shared by the pre-training config (`nmoco-train`) and the
//! evaluation configs (`nmoco-cli`): `--set a.b.c=value` overrides ([`apply_override`]) and
//! table overlays ([`merge`]). It knows no config schema: each config deserialises and
//! validates the tree afterwards.

#![forbid(unsafe_code)]

/// A `--set key=value` argument that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad override {arg:?}: {reason}")]
pub struct OverrideError {
    /// The argument as given.
    pub arg: String,
    pub reason: String,
}

/// Apply one `a.b.c=value` override to a TOML tree. The value is read as a TOML value when it
/// parses as one (integer, float, boolean, quoted string, array, inline table), else as a bare
/// string; an integer given for a key that currently holds a float becomes a float, and a value
/// given for a key that currently holds a string stays the text as written.
pub fn apply_override(root: &mut toml::Table, arg: &str) -> Result<(), OverrideError> {
    let bad = |reason: &str| OverrideError {
        arg: arg.to_string(),
        reason: reason.to_string(),
    };
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| bad("expected key=value"))?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad("empty key segment"));
    }
    let raw = raw.trim();
    let mut value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let mut table = root;
    for (i, p) in parts[..parts.len() - 1].iter().enumerate() {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| bad(&format!("{} is not a table", parts[..=i].join("."))))?;
    }
    let last = parts[parts.len() - 1];
    match (table.get(last), &value) {
        (Some(toml::Value::Float(_)), toml::Value::Integer(i)) => {
            value = toml::Value::Float(*i as f64)
        }
        (Some(toml::Value::String(_)), v) if !v.is_str() => {
            value = toml::Value::String(raw.to_string())
        }
        _ => {}
    }
    table.insert(last.to_string(), value);
    Ok(())
}

/// Overlay `top` on `base`: tables merge key by key (recursively), anything else in `top`
/// replaces what `base` has.
pub fn merge(base: &mut toml::Value, top: toml::Value) {
    match (base, top) {
        (toml::Value::Table(b), toml::Value::Table(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, t) => *b = t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_overlays_tables() {
        let mut a: toml::Value = toml::from_str("[x]\na = 1\nb = 2\n[y]\nc = 3\n").unwrap();
        let b: toml::Value = toml::from_str("[x]\nb = 5\nd = 6\n").unwrap();
        merge(&mut a, b);
        let want: toml::Value = toml::from_str("[x]\na = 1\nb = 5\nd = 6\n[y]\nc = 3\n").unwrap();
        assert_eq!(a, want);
    }

    #[test]
    fn overrides_infer_types_and_name_bad_arguments() {
        let mut t: toml::Table = toml::from_str("[a]\nf = 1.5\ns = \"x\"\n").unwrap();
        apply_override(&mut t, "a.f=2").unwrap();
        apply_override(&mut t, "a.s=3").unwrap();
        apply_override(&mut t, "b.c.d=true").unwrap();
        apply_override(&mut t, "a.bare=some text").unwrap();
        let want: toml::Table =
            toml::from_str("[a]\nf = 2.0\ns = \"3\"\nbare = \"some text\"\n[b.c]\nd = true\n")
                .unwrap();
        assert_eq!(t, want);
        let e = apply_override(&mut t, "a").unwrap_err();
        assert_eq!(e.to_string(), "bad override \"a\": expected key=value");
        let e = apply_override(&mut t, "a..b=1").unwrap_err();
        assert!(e.reason.contains("empty key segment"), "{e}");
        let e = apply_override(&mut t, "a.f.x=1").unwrap_err();
        assert!(e.reason.contains("a.f is not a table"), "{e}");
    }
}
