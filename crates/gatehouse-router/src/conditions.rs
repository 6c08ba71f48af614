//! Method, header and query conditions: the checks that follow a path hit.

use gatehouse_config::{RouteMatch, ValueKind, ValueMatch};
use http::{HeaderMap, HeaderName, Method};
use regex::Regex;
use std::borrow::Cow;

/// The parts of a request the router looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Host without port, lower case.
    pub host: &'a str,
    /// Path without the query.
    pub path: &'a str,
    /// Method.
    pub method: &'a Method,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Raw query string, without `?`.
    pub query: Option<&'a str>,
}

#[derive(Debug)]
enum ValueCheck {
    Exact(String),
    Regex(Regex),
    Present,
}

impl ValueCheck {
    fn build(m: &ValueMatch) -> Result<Self, String> {
        let value = m.value.clone().unwrap_or_default();
        Ok(match m.kind {
            ValueKind::Exact => Self::Exact(value),
            ValueKind::Present => Self::Present,
            ValueKind::Regex => Self::Regex(
                Regex::new(&format!("^(?:{value})$")).map_err(|e| format!("invalid regex: {e}"))?,
            ),
        })
    }

    fn check(&self, v: &str) -> bool {
        match self {
            Self::Exact(want) => v == want,
            Self::Regex(re) => re.is_match(v),
            Self::Present => true,
        }
    }
}

/// Compiled method/header/query conditions of one route.
#[derive(Debug)]
pub struct Conditions {
    methods: Vec<Method>,
    headers: Vec<(HeaderName, ValueCheck)>,
    query: Vec<(String, ValueCheck)>,
}

impl Conditions {
    /// Compiles the non-path conditions of a route.
    pub fn build(m: &RouteMatch) -> Result<Self, String> {
        let methods = m
            .methods
            .iter()
            .map(|s| Method::from_bytes(s.as_bytes()).map_err(|_| format!("invalid method {s:?}")))
            .collect::<Result<_, _>>()?;
        let headers = m
            .headers
            .iter()
            .map(|h| {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| format!("invalid header name {:?}", h.name))?;
                Ok((name, ValueCheck::build(h)?))
            })
            .collect::<Result<_, String>>()?;
        let query = m
            .query
            .iter()
            .map(|q| Ok((q.name.clone(), ValueCheck::build(q)?)))
            .collect::<Result<_, String>>()?;
        Ok(Self {
            methods,
            headers,
            query,
        })
    }

    /// Whether the request satisfies every condition.
    pub fn is_match(&self, req: &RequestView<'_>) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(req.method) {
            return false;
        }
        for (name, check) in &self.headers {
            // Any one of the header's values may satisfy the condition.
            let hit = req
                .headers
                .get_all(name)
                .iter()
                .any(|v| v.to_str().map(|s| check.check(s)).unwrap_or(false));
            if !hit {
                return false;
            }
        }
        for (name, check) in &self.query {
            let hit = query_values(req.query, name).any(|v| check.check(&v));
            if !hit {
                return false;
            }
        }
        true
    }
}

/// Decoded values of query parameter `name` (form encoding: `+` is a space).
pub fn query_values<'a>(
    query: Option<&'a str>,
    name: &'a str,
) -> impl Iterator<Item = Cow<'a, str>> {
    query.unwrap_or("").split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

fn decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = Some("a=1&b=hello+world&c=%41%zz&a=2&flag");
        assert_eq!(query_values(q, "a").collect::<Vec<_>>(), vec!["1", "2"]);
        assert_eq!(query_values(q, "b").next().unwrap(), "hello world");
        assert_eq!(query_values(q, "c").next().unwrap(), "A%zz");
        assert_eq!(query_values(q, "flag").next().unwrap(), "");
        assert_eq!(query_values(None, "a").count(), 0);
        assert_eq!(query_values(Some("x=%4"), "x").next().unwrap(), "%4");
    }
}
