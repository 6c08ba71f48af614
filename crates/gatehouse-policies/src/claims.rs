//! Claims of a verified credential (a JWT's payload, an introspection answer): read by
//! dotted path (`realm_access.roles`), forwarded upstream as headers (`forward_claims`),
//! and read as scopes and roles by `rbac`.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

/// The claim at `path`: a top-level name, or names joined by dots into nested objects
/// (a claim whose own name has a dot is found first).
pub fn lookup<'a>(claims: &'a BTreeMap<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.get(p)?;
    }
    Some(v)
}

/// The words of a claim: a space-separated string (OAuth2 `scope`) or an array of
/// strings (`scp`, `roles`).
pub fn words(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => s.split_ascii_whitespace().collect(),
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// A claim as a header value: a string as it is, an array of scalars joined by commas,
/// anything else as compact JSON; `None` when it cannot be a header value.
fn header_value(v: &Value) -> Option<HeaderValue> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Null => return None,
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    HeaderValue::from_str(&text).ok()
}

/// `forward_claims`: request headers set from claims.
#[derive(Debug, Clone, Default)]
pub struct ForwardClaims(Vec<(HeaderName, String)>);

impl ForwardClaims {
    /// Compiles `header: claim path` pairs; the error names the bad header.
    pub fn new(map: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut v = Vec::with_capacity(map.len());
        for (h, claim) in map {
            let name = HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| format!("{h:?} is not a header name"))?;
            v.push((name, claim.clone()));
        }
        Ok(Self(v))
    }

    /// The headers to set for `claims` (claims that are absent set none).
    pub fn headers(&self, claims: &BTreeMap<String, Value>) -> Vec<(HeaderName, HeaderValue)> {
        self.0
            .iter()
            .filter_map(|(h, c)| Some((h.clone(), header_value(lookup(claims, c)?)?)))
            .collect()
    }

    /// Removes the client's own headers of these names: a client must not be able to
    /// claim what only a verified credential may say (`Policy::scrub`).
    pub fn scrub(&self, headers: &mut HeaderMap) {
        for (h, _) in &self.0 {
            headers.remove(h);
        }
    }

    /// Adds `set` (from [`ForwardClaims::headers`]) to a request already scrubbed.
    pub fn set(headers: &mut HeaderMap, set: &[(HeaderName, HeaderValue)]) {
        for (h, v) in set {
            headers.insert(h.clone(), v.clone());
        }
    }
}

/// The scopes a credential grants: the `scope` claim (RFC 8693, space-separated) and
/// the `scp` claim (an array, as some providers write it).
pub fn scopes(claims: &BTreeMap<String, Value>) -> HashSet<&str> {
    ["scope", "scp"]
        .iter()
        .filter_map(|c| claims.get(*c))
        .flat_map(words)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn claims_are_found_by_dotted_path_and_forwarded_as_headers() {
        let c = claims(
            json!({"sub": "u1", "a.b": 1, "realm_access": {"roles": ["x", "y"]},
            "n": 3, "o": {"k": true}, "bad": "line\nbreak"}),
        );
        assert_eq!(lookup(&c, "a.b"), Some(&json!(1)));
        assert_eq!(lookup(&c, "realm_access.roles"), Some(&json!(["x", "y"])));
        assert_eq!(lookup(&c, "realm_access.nope"), None);
        let map: BTreeMap<String, String> = [
            ("x-user", "sub"),
            ("x-roles", "realm_access.roles"),
            ("x-n", "n"),
            ("x-o", "o"),
            ("x-bad", "bad"),
            ("x-none", "missing"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let f = ForwardClaims::new(&map).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("forged"));
        h.insert("x-none", HeaderValue::from_static("forged"));
        f.scrub(&mut h);
        ForwardClaims::set(&mut h, &f.headers(&c));
        assert_eq!(h["x-user"], "u1");
        assert_eq!(h["x-roles"], "x,y");
        assert_eq!(h["x-n"], "3");
        assert_eq!(h["x-o"], r#"{"k":true}"#);
        assert!(!h.contains_key("x-bad") && !h.contains_key("x-none"));
        assert!(ForwardClaims::new(&[("bad name".to_string(), "sub".to_string())].into()).is_err());
    }

    #[test]
    fn scopes_come_from_scope_and_scp() {
        let c = claims(json!({"scope": "a b  c", "scp": ["d"]}));
        let s = scopes(&c);
        assert_eq!(s.len(), 4);
        assert!(s.contains("a") && s.contains("d"));
    }
}
