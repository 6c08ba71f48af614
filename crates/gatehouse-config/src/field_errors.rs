//! Every field error of a config document, not only the first. A deserializer stops at
//! its first error; to report them all, the document is deserialized again one section
//! element at a time (each listener, route, upstream, policy...), each with the path of
//! its failing field, and the messages are put in the project's words.

use crate::schema::Config;
use regex::Regex;
use serde_json::{Map, Value};
use std::sync::OnceLock;

/// Sections whose entries are named maps of independent elements.
const NAMED_SECTIONS: [&str; 3] = ["upstreams", "policies", "ip_groups"];

/// `(field path, message)` for each element of `doc` that does not deserialize.
pub fn field_errors(doc: &Value) -> Vec<(String, String)> {
    let Value::Object(top) = doc else {
        return vec![(
            String::new(),
            "the config must be a mapping of settings (listeners:, routes:, ...)".into(),
        )];
    };
    let mut out = Vec::new();
    for (section, value) in top {
        match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let one = Value::Array(vec![item.clone()]);
                    if let Some((path, msg)) = check(section, one) {
                        // The element was checked alone, as index 0.
                        let prefix = format!("{section}[0]");
                        let path = match path.strip_prefix(&prefix) {
                            Some(rest) => format!("{section}[{i}]{rest}"),
                            None => path,
                        };
                        out.push((path, msg));
                    }
                }
            }
            Value::Object(entries) if NAMED_SECTIONS.contains(&section.as_str()) => {
                for (name, entry) in entries {
                    let one = Value::Object(Map::from_iter([(name.clone(), entry.clone())]));
                    out.extend(check(section, one));
                }
            }
            other => out.extend(check(section, other.clone())),
        }
    }
    out
}

/// Deserializes a config holding only `section: value`.
fn check(section: &str, value: Value) -> Option<(String, String)> {
    let doc = Value::Object(Map::from_iter([(section.to_string(), value)]));
    match serde_path_to_error::deserialize::<_, Config>(doc) {
        Ok(_) => None,
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." {
                section.to_string()
            } else {
                path
            };
            Some((path, in_our_words(&e.inner().to_string())))
        }
    }
}

/// A regex compiled on first use; `None` only if the constant pattern were invalid.
fn re(cell: &'static OnceLock<Option<Regex>>, pattern: &str) -> Option<&'static Regex> {
    cell.get_or_init(|| Regex::new(pattern).ok()).as_ref()
}

/// A deserializer's message rewritten in the project's vocabulary: lists and mappings
/// rather than sequences and structs, plain quotes, no Rust type names.
pub fn in_our_words(msg: &str) -> String {
    static UNKNOWN: OnceLock<Option<Regex>> = OnceLock::new();
    static NONE_KNOWN: OnceLock<Option<Regex>> = OnceLock::new();
    static INVALID: OnceLock<Option<Regex>> = OnceLock::new();
    static MISSING: OnceLock<Option<Regex>> = OnceLock::new();
    let msg = msg.trim();
    let caps = |cell, pattern| re(cell, pattern).and_then(|r| r.captures(msg));
    if let Some(c) = caps(
        &UNKNOWN,
        r"^unknown (field|variant) `([^`]*)`, expected (?:one of )?(.*)$",
    ) {
        let what = if &c[1] == "field" { "field" } else { "value" };
        let choices = c[3].replace('`', "");
        return format!("unknown {what} \"{}\"; expected one of: {choices}", &c[2]);
    }
    if let Some(c) = caps(
        &NONE_KNOWN,
        r"^unknown (field|variant) `([^`]*)`, there are no (?:fields|variants)$",
    ) {
        return format!("unknown {} \"{}\"", &c[1], &c[2]);
    }
    if let Some(c) = caps(&MISSING, r"^missing field `([^`]*)`$") {
        return format!("missing required field \"{}\"", &c[1]);
    }
    if let Some(c) = caps(&INVALID, r"^invalid (?:type|value): (.*), expected (.*)$") {
        return format!("expected {}, found {}", kind(&c[2]), found(&c[1]));
    }
    match msg {
        "expected sequence start" => "expected a list".into(),
        "expected mapping start" => "expected a mapping".into(),
        _ => msg.replace('`', "\""),
    }
}

/// A Rust-side expectation in config terms.
fn kind(expected: &str) -> String {
    let e = expected.trim();
    if e.starts_with("a sequence") || e.starts_with("sequence") {
        return "a list".into();
    }
    if e.starts_with("struct") || e.starts_with("a map") || e.starts_with("map") {
        return "a mapping".into();
    }
    match e {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" | "bool" => "true or false".into(),
        "a string" => "a string".into(),
        _ => e.replace('`', "\""),
    }
}

/// What was found, without Rust's words.
fn found(what: &str) -> String {
    match what {
        "null" | "unit value" => "nothing".into(),
        "sequence" => "a list".into(),
        "map" => "a mapping".into(),
        w => w.replace('`', "\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_bad_element() {
        let doc: Value = serde_json::json!({
            "routes": [
                {"name": "a", "upstrem": "x"},
                {"name": "ok", "respond": {"status": 200}},
                {"name": "b", "respond": {"status": "x"}},
            ],
            "upstreams": {"u": {"targets": [], "timeouts": {"connect": "2 parsecs"}}},
            "access_log": 5,
            "bogus": 1,
        });
        let errs = field_errors(&doc);
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        assert!(paths.contains(&"routes[0].upstrem"), "{errs:?}");
        assert!(paths.contains(&"routes[2].respond.status"), "{errs:?}");
        assert!(paths.contains(&"upstreams.u.timeouts.connect"), "{errs:?}");
        assert!(paths.contains(&"access_log"), "{errs:?}");
        assert!(paths.contains(&"bogus"), "{errs:?}");
        assert_eq!(errs.len(), 5, "{errs:?}");
    }

    #[test]
    fn messages_in_our_words() {
        assert_eq!(
            in_our_words("unknown field `upstrem`, expected one of `name`, `match`"),
            "unknown field \"upstrem\"; expected one of: name, match"
        );
        assert_eq!(
            in_our_words("invalid type: string \"x\", expected u16"),
            "expected a whole number, found string \"x\""
        );
        assert_eq!(
            in_our_words("invalid type: null, expected a sequence"),
            "expected a list, found nothing"
        );
        assert_eq!(
            in_our_words("missing field `name`"),
            "missing required field \"name\""
        );
    }
}
