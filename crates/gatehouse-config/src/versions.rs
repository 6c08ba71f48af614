//! API versions, a route form: the version a request asks for (path segment, header,
//! query parameter or media type) picks one of the route's versions, each with its own
//! action, rewrite and policies, and its deprecation and sunset dates (docs/routing.md).

use crate::schema::{Config, PathKind, Redirect, Respond, Rewrite, Route, SplitEntry};
use crate::validate::{ActionFields, Issues};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `versions:` of a route.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Versions {
    /// Where the version is read, tried in order: `path` (`/v1/orders`, the segment
    /// removed upstream), `header:NAME`, `query:NAME`, `accept:TYPE` with `{version}`
    /// in it (`accept:application/vnd.shop.{version}+json`). Default `[path]`.
    #[serde(default = "default_from")]
    pub from: Vec<String>,
    /// The version served when the request names none.
    #[serde(default)]
    pub default: Option<String>,
    /// A request naming no version: `serve` the default (default), or `redirect` (308)
    /// to the default's path (`/v2/...`, query kept).
    #[serde(default)]
    pub when_missing: WhenMissing,
    /// The versions, by name (one path segment: letters, digits, `.`, `_`, `-`).
    pub available: BTreeMap<String, ApiVersion>,
}

fn default_from() -> Vec<String> {
    vec!["path".into()]
}

/// What a request naming no version gets.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WhenMissing {
    /// The default version serves it.
    #[default]
    Serve,
    /// 308 to the default version's path.
    Redirect,
}

/// What a request to a version past its sunset gets.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AfterSunset {
    /// 410 Gone.
    #[default]
    Gone,
    /// Served as before (still with its `Sunset` header).
    Serve,
}

/// One version: exactly one action, optional rewrite and policies, its lifecycle.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiVersion {
    /// Action: proxy to one upstream.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Action: weighted split over upstreams.
    #[serde(default)]
    pub split: Option<Vec<SplitEntry>>,
    /// A split side with no healthy target hands its requests to another; default true.
    #[serde(default = "crate::schema::default_true")]
    pub split_fallback: bool,
    /// Keeps one client on one split side (as a route's `split_hash_on`).
    #[serde(default)]
    pub split_hash_on: Option<String>,
    /// Action: redirect the client.
    #[serde(default)]
    pub redirect: Option<Redirect>,
    /// Action: answer with a fixed response.
    #[serde(default)]
    pub respond: Option<Respond>,
    /// Path rewrite for this version (instead of the route's).
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    /// Policies run after the route's own.
    #[serde(default)]
    pub policies: Vec<String>,
    /// When it was (or will be) deprecated, RFC 3339: responses carry `Deprecation`.
    #[serde(default)]
    pub deprecated: Option<String>,
    /// When it stops, RFC 3339: responses carry `Sunset`; after it, `after_sunset`.
    #[serde(default)]
    pub sunset: Option<String>,
    /// Where its deprecation is explained: `Link: <url>; rel="deprecation"`.
    #[serde(default)]
    pub link: Option<String>,
    /// After `sunset`: `gone` (410, default) or `serve`.
    #[serde(default)]
    pub after_sunset: AfterSunset,
}

/// Where a version is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSource {
    /// The first path segment.
    Path,
    /// A request header (lower case).
    Header(String),
    /// A query parameter.
    Query(String),
    /// A media range of `Accept`: the text around `{version}`.
    Accept {
        /// Before `{version}` (lower case).
        before: String,
        /// After `{version}` (lower case).
        after: String,
    },
}

impl VersionSource {
    /// Parses one `from` entry.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid version source {s:?}: expected path | header:NAME | query:NAME | accept:TYPE with {{version}}"
            )
        };
        if s == "path" {
            return Ok(Self::Path);
        }
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        if rest.is_empty() {
            return Err(bad());
        }
        match kind {
            "header" if http::HeaderName::from_bytes(rest.as_bytes()).is_ok() => {
                Ok(Self::Header(rest.to_ascii_lowercase()))
            }
            "query" => Ok(Self::Query(rest.to_string())),
            "accept" => {
                let (before, after) = rest.split_once("{version}").ok_or_else(bad)?;
                if before.is_empty() || after.contains("{version}") {
                    return Err(bad());
                }
                Ok(Self::Accept {
                    before: before.to_ascii_lowercase(),
                    after: after.to_ascii_lowercase(),
                })
            }
            _ => Err(bad()),
        }
    }
}

/// Whether `name` can be a version: one path segment of letters, digits, `.`, `_`, `-`.
pub fn is_version_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses an RFC 3339 timestamp (`2026-12-31T00:00:00Z`).
pub fn parse_timestamp(s: &str) -> Result<std::time::SystemTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(std::time::SystemTime::from)
        .map_err(|e| format!("{s:?} is not an RFC 3339 timestamp ({e})"))
}

/// Checks route `r`'s `versions` (at `base`, the route's path).
pub(crate) fn check(c: &Config, base: &str, r: &Route, v: &Versions, out: &mut Issues) {
    let base = format!("{base}.versions");
    let mut sources = Vec::new();
    for (i, s) in v.from.iter().enumerate() {
        match VersionSource::parse(s) {
            Ok(src) => sources.push(src),
            Err(e) => out.push(format!("{base}.from[{i}]"), e),
        }
    }
    if v.from.is_empty() {
        out.push(format!("{base}.from"), "lists no source");
    }
    let by_path = sources.contains(&VersionSource::Path);
    if by_path
        && r.matches
            .path
            .as_ref()
            .is_some_and(|p| p.kind == PathKind::Regex)
    {
        out.push(
            format!("{base}.from"),
            "`path` needs a prefix, exact or template path match (a regex cannot take a version segment)",
        );
    }
    if v.available.is_empty() {
        out.push(format!("{base}.available"), "lists no version");
    }
    match &v.default {
        Some(d) if !v.available.contains_key(d) => out.push(
            format!("{base}.default"),
            format!("{d:?} is not one of the available versions"),
        ),
        None if v.when_missing == WhenMissing::Redirect => out.push(
            format!("{base}.when_missing"),
            "`redirect` needs a `default` version",
        ),
        _ => {}
    }
    if v.when_missing == WhenMissing::Redirect && !by_path {
        out.push(
            format!("{base}.when_missing"),
            "`redirect` sends clients to /VERSION/...: `from` must list `path`",
        );
    }
    for (name, a) in &v.available {
        let at = format!("{base}.available.{name}");
        if !is_version_name(name) {
            out.push(
                at.clone(),
                "a version name is one path segment of letters, digits, `.`, `_` or `-`",
            );
        }
        crate::validate::action(
            c,
            &at,
            ActionFields {
                upstream: &a.upstream,
                split: &a.split,
                split_hash_on: &a.split_hash_on,
                redirect: &a.redirect,
                respond: &a.respond,
                versions: None,
                aggregate: false,
            },
            out,
        );
        if let Some(rw) = &a.rewrite {
            crate::validate::rewrite(&format!("{at}.rewrite"), rw, &r.matches, out);
        }
        for (j, p) in a.policies.iter().enumerate() {
            if !c.policies.contains_key(p) {
                out.push(
                    format!("{at}.policies[{j}]"),
                    format!("no policy named {p:?}"),
                );
            }
        }
        let mut dates = Vec::new();
        for (field, value) in [("deprecated", &a.deprecated), ("sunset", &a.sunset)] {
            if let Some(t) = value {
                match parse_timestamp(t) {
                    Ok(t) => dates.push(t),
                    Err(e) => out.push(format!("{at}.{field}"), e),
                }
            }
        }
        if let [deprecated, sunset] = dates[..]
            && sunset < deprecated
        {
            out.push(format!("{at}.sunset"), "is before `deprecated`");
        }
        if let Some(l) = &a.link
            && (l.contains(['<', '>', '"']) || http::HeaderValue::from_str(l).is_err())
        {
            out.push(format!("{at}.link"), "is not a URL a Link header can carry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(VersionSource::parse("path"), Ok(VersionSource::Path));
        assert_eq!(
            VersionSource::parse("header:API-Version"),
            Ok(VersionSource::Header("api-version".into()))
        );
        assert_eq!(
            VersionSource::parse("query:v"),
            Ok(VersionSource::Query("v".into()))
        );
        assert_eq!(
            VersionSource::parse("accept:application/vnd.shop.{version}+json"),
            Ok(VersionSource::Accept {
                before: "application/vnd.shop.".into(),
                after: "+json".into()
            })
        );
        for bad in [
            "",
            "paths",
            "header:",
            "header:a b",
            "cookie:x",
            "accept:application/json",
            "accept:{version}",
        ] {
            assert!(VersionSource::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_timestamps() {
        assert!(is_version_name("v1") && is_version_name("2024-01-01") && is_version_name("v1.2"));
        assert!(!is_version_name("") && !is_version_name("a/b") && !is_version_name(".."));
        let t = parse_timestamp("2026-12-31T00:00:00Z").unwrap();
        assert_eq!(httpdate::fmt_http_date(t), "Thu, 31 Dec 2026 00:00:00 GMT");
        assert!(parse_timestamp("2026-12-31").is_err());
    }
}
