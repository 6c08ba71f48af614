//! `${VAR}` and `${VAR:-default}` interpolation of environment variables, applied to the raw
//! text before parsing so every field can use it. `$$` escapes a dollar sign.

/// Where an interpolation failed: 1-based line and column in the raw text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolateError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Replaces `${VAR}` / `${VAR:-default}` using `lookup`; an unset variable without default is an error.
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut consumed = 0usize;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            consumed += pos + 2;
            rest = stripped;
            continue;
        }
        if !after.starts_with('{') {
            out.push('$');
            consumed += pos + 1;
            rest = after;
            continue;
        }
        let (line, column) = position(text, consumed + pos);
        let close = after.find('}').ok_or_else(|| InterpolateError {
            line,
            column,
            message: "unterminated ${...}".into(),
        })?;
        let inner = &after[1..close];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(InterpolateError {
                line,
                column,
                message: format!("invalid variable name {name:?} in ${{{inner}}}"),
            });
        }
        match lookup(name).filter(|v| !v.is_empty() || default.is_none()) {
            Some(v) => out.push_str(&v),
            None => match default {
                Some(d) => out.push_str(d),
                None => {
                    return Err(InterpolateError {
                        line,
                        column,
                        message: format!(
                            "environment variable {name} is not set (use ${{{name}:-default}} for a default)"
                        ),
                    });
                }
            },
        }
        consumed += pos + 1 + close + 1;
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn position(text: &str, byte: usize) -> (usize, usize) {
    let before = &text[..byte.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("9001".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_and_defaults() {
        assert_eq!(interpolate("a: ${PORT}", env).unwrap(), "a: 9001");
        assert_eq!(interpolate("a: ${NOPE:-x}", env).unwrap(), "a: x");
        assert_eq!(interpolate("a: ${EMPTY:-d}", env).unwrap(), "a: d");
        assert_eq!(interpolate("a: $$5 $x", env).unwrap(), "a: $5 $x");
    }

    #[test]
    fn missing_variable_is_located() {
        let e = interpolate("a: 1\nb: ${NOPE}", env).unwrap_err();
        assert_eq!((e.line, e.column), (2, 4));
        assert!(e.message.contains("NOPE"));
        assert!(interpolate("x: ${bad name}", env).is_err());
        assert!(interpolate("x: ${OPEN", env).is_err());
    }
}
