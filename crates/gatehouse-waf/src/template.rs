//! Texts with macros (`%{tx.critical_anomaly_score}`, `%{MATCHED_VAR}`,
//! `%{request_headers.host}`) as rules write them in `msg`, `setvar` and operator
//! arguments: split into their parts once, at load, so a request expands them without
//! searching or lower-casing names.

use crate::request;

/// A text with macros, split at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template(Vec<Part>);

/// A piece of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    /// Text as written.
    Text(String),
    /// `%{tx.name}` (the name in lower case).
    Tx(String),
    /// `%{MATCHED_VAR}`.
    MatchedVar,
    /// `%{MATCHED_VAR_NAME}`.
    MatchedVarName,
    /// `%{request_headers.host}`, `%{REQUEST_LINE}`: the first value of a request
    /// collection (with that name, without case, when one is given).
    Request { slot: usize, key: String },
    /// A macro the engine does not know (`%{rule.id}`): nothing.
    Nothing,
}

impl Template {
    /// Splits `s` at its macros; an unclosed `%{` is text.
    pub(crate) fn parse(s: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find("%{") {
            let Some(end) = rest[i..].find('}') else {
                break;
            };
            if i > 0 {
                parts.push(Part::Text(rest[..i].to_string()));
            }
            parts.push(Part::of(&rest[i + 2..i + end].to_ascii_lowercase()));
            rest = &rest[i + end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Template(parts)
    }

    /// The text, when it has no macro.
    pub(crate) fn literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// Its parts, in order.
    pub(crate) fn parts(&self) -> &[Part] {
        &self.0
    }

    /// A regex (without case) every expansion of it matches: its text escaped, each
    /// macro any text.
    pub(crate) fn shape(&self) -> String {
        let mut shape = String::from("(?i)^");
        for p in &self.0 {
            match p {
                Part::Text(t) => shape.push_str(&regex::escape(t)),
                _ => shape.push_str(".*"),
            }
        }
        shape.push('$');
        shape
    }
}

impl Part {
    /// The part a macro name (lower case) stands for.
    fn of(name: &str) -> Self {
        match name {
            "matched_var" => Self::MatchedVar,
            "matched_var_name" => Self::MatchedVarName,
            n => match n.strip_prefix("tx.") {
                Some(k) => Self::Tx(k.to_string()),
                None => {
                    let (collection, key) = n.split_once('.').unwrap_or((n, ""));
                    match request::slot(&collection.to_ascii_uppercase()) {
                        Some(slot) => Self::Request {
                            slot,
                            key: key.to_string(),
                        },
                        None => Self::Nothing,
                    }
                }
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn macros_are_split_once() {
        let t = Template::parse("+%{TX.Critical_Anomaly_Score}");
        assert_eq!(
            t.parts(),
            [
                Part::Text("+".into()),
                Part::Tx("critical_anomaly_score".into())
            ]
        );
        assert_eq!(Template::parse("plain").literal(), Some("plain"));
        assert_eq!(Template::parse("").literal(), Some(""));
        assert_eq!(
            Template::parse("a %{b").literal(),
            Some("a %{b"),
            "unclosed"
        );
        let t = Template::parse("%{rule.id}-OWASP_CRS/%{MATCHED_VAR_NAME}");
        assert_eq!(
            t.parts(),
            [
                Part::Nothing,
                Part::Text("-OWASP_CRS/".into()),
                Part::MatchedVarName
            ]
        );
        let shape = regex::Regex::new(&t.shape()).unwrap();
        assert!(shape.is_match("942100-owasp_crs/ARGS:q"));
        assert!(!shape.is_match("executing_paranoia_level"));
        let t = Template::parse("%{request_headers.host}");
        let slot = request::slot("REQUEST_HEADERS").unwrap();
        assert_eq!(
            t.parts(),
            [Part::Request {
                slot,
                key: "host".into()
            }]
        );
    }
}
