//! `aggregate:`, a route action: several upstream calls made in parallel, their JSON
//! bodies merged into one answer (docs/edge.md).

use crate::schema::{Config, Route};
use crate::units::{Duration, Size};
use crate::validate::Issues;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `aggregate:` of a route.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    /// `keys` (each body under its call's name, default) or `flat` (objects merged in
    /// call order, later keys win).
    #[serde(default)]
    pub merge: Merge,
    /// Longest the whole aggregation takes (default 5s); calls still running then fail
    /// as timed out.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Client headers sent on every call (default `[authorization, accept-language]`).
    #[serde(default = "default_forward_headers")]
    pub forward_headers: Vec<String>,
    /// Largest body a call may answer (default 1MiB); larger fails the call.
    #[serde(default = "default_max_body_size")]
    pub max_body_size: Size,
    /// The calls, made in parallel.
    pub calls: Vec<AggregateCall>,
}

/// How call bodies are merged.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Merge {
    /// `{ "<call name>": <body>, ... }`; a failed optional call is `null`.
    #[default]
    Keys,
    /// The objects' members merged, later calls winning; a failed optional call adds
    /// nothing.
    Flat,
}

/// One call of an aggregation.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregateCall {
    /// Its name: the key of its body, and what a failure names.
    pub name: String,
    /// The upstream called.
    pub upstream: String,
    /// Path and query of the GET sent; `{param}` takes route parameters and
    /// `{query.NAME}` the client's query parameters (percent-encoded).
    pub path: String,
    /// Longest this call may take (default: the aggregation's `timeout`).
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// A required call that fails fails the whole answer (502, or 504 on timeout).
    #[serde(default)]
    pub required: bool,
    /// Headers set on this call (values take the same placeholders as `path`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(5))
}

fn default_forward_headers() -> Vec<String> {
    vec!["authorization".into(), "accept-language".into()]
}

fn default_max_body_size() -> Size {
    Size(1024 * 1024)
}

/// Checks route `r`'s `aggregate` (at `base`, the route's path).
pub(crate) fn check(c: &Config, base: &str, r: &Route, a: &Aggregate, out: &mut Issues) {
    let at = format!("{base}.aggregate");
    if r.rewrite.is_some() {
        out.push(
            format!("{base}.rewrite"),
            "an aggregate's calls name their own paths: a rewrite does not apply",
        );
    }
    if a.calls.is_empty() {
        out.push(format!("{at}.calls"), "lists no call");
    }
    if a.timeout.get().is_zero() {
        out.push(format!("{at}.timeout"), "must be more than 0s");
    }
    for (i, h) in a.forward_headers.iter().enumerate() {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            out.push(format!("{at}.forward_headers[{i}]"), "is not a header name");
        }
    }
    let mut names = std::collections::HashSet::new();
    for (i, call) in a.calls.iter().enumerate() {
        let at = format!("{at}.calls[{i}]");
        if call.name.is_empty() {
            out.push(format!("{at}.name"), "must not be empty");
        } else if !names.insert(call.name.as_str()) {
            out.push(
                format!("{at}.name"),
                format!("{:?} names another call too", call.name),
            );
        }
        if !c.upstreams.contains_key(&call.upstream) {
            out.push(
                format!("{at}.upstream"),
                format!("no upstream named {:?}", call.upstream),
            );
        }
        if !call.path.starts_with('/') {
            out.push(format!("{at}.path"), "must start with /");
        }
        if call.timeout.is_some_and(|t| t.get().is_zero()) {
            out.push(format!("{at}.timeout"), "must be more than 0s");
        }
        for (k, v) in &call.headers {
            // Placeholders are filled per request; the rest must make a header already.
            let sample = v.replace(['{', '}'], "");
            if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || http::HeaderValue::from_str(&sample).is_err()
            {
                out.push(format!("{at}.headers.{k}"), "invalid header");
            }
        }
    }
}
