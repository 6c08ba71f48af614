//! Path helpers: segment splitting, prefix normalization and template parsing.

/// `/api/` and `/api` are the same prefix; `/` stays `/`.
pub fn normalize_prefix(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() { "/" } else { t }
}

/// Segments of a normalized prefix: `/` has none, `/a/b` has `a`, `b`.
pub fn prefix_segments(p: &str) -> impl Iterator<Item = &str> {
    normalize_prefix(p)
        .split('/')
        .skip(1)
        .filter(|s| !s.is_empty())
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSegment {
    /// Must equal this text.
    Literal(String),
    /// `{name}`: any one non-empty segment.
    Param(String),
    /// `{*name}`: the rest of the path (possibly empty); always last.
    CatchAll(String),
}

/// Parses `/users/{id}/files/{*rest}`.
pub fn parse_template(t: &str) -> Result<Vec<TemplateSegment>, String> {
    let body = t
        .strip_prefix('/')
        .ok_or_else(|| "a template must start with /".to_string())?;
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = body.split('/').collect();
    let mut out = Vec::with_capacity(parts.len());
    let mut names = std::collections::HashSet::new();
    for (i, seg) in parts.iter().enumerate() {
        if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let (catch_all, name) = match inner.strip_prefix('*') {
                Some(n) => (true, n),
                None => (false, inner),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid parameter name {name:?} in {t:?}"));
            }
            if !names.insert(name.to_string()) {
                return Err(format!("parameter {name:?} appears twice in {t:?}"));
            }
            if catch_all {
                if i + 1 != parts.len() {
                    return Err(format!("{{*{name}}} must be the last segment of {t:?}"));
                }
                out.push(TemplateSegment::CatchAll(name.to_string()));
            } else {
                out.push(TemplateSegment::Param(name.to_string()));
            }
        } else if seg.contains('{') || seg.contains('}') {
            return Err(format!(
                "segment {seg:?} of {t:?} mixes text and a parameter; a parameter takes a whole segment"
            ));
        } else {
            out.push(TemplateSegment::Literal((*seg).to_string()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(normalize_prefix("/api/"), "/api");
        assert_eq!(normalize_prefix("/"), "/");
        assert_eq!(prefix_segments("/a/b/").collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(prefix_segments("/").count(), 0);
    }

    #[test]
    fn templates() {
        use TemplateSegment::*;
        assert_eq!(
            parse_template("/users/{id}/f/{*rest}").unwrap(),
            vec![
                Literal("users".into()),
                Param("id".into()),
                Literal("f".into()),
                CatchAll("rest".into())
            ]
        );
        assert!(parse_template("/a/{*r}/b").is_err());
        assert!(parse_template("/a/x{id}").is_err());
        assert!(parse_template("/a/{id}/{id}").is_err());
        assert!(parse_template("a").is_err());
    }
}
