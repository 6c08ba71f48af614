//! A route's API versions as the pipeline uses them: which version a request names (by
//! its sources, in order), the version's own compiled route, and the lifecycle headers
//! (`Deprecation`, RFC 9745; `Sunset`, RFC 8594; `Link rel="deprecation"`) and answers
//! (400 unknown, 308 to the default, 410 past sunset).

use crate::route::CompiledRoute;
use gatehouse_config::{
    AfterSunset, ApiVersion, PathKind, PathMatch, Route, RouteMatch, VersionSource, Versions,
    WhenMissing,
};
use gatehouse_core::{LocalResponse, Problem, problem_response};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use serde_json::json;
use std::sync::Arc;
use std::time::SystemTime;

/// One version: its name, its route (the parent's match with its own action, rewrite
/// and policies), and its lifecycle.
#[derive(Debug)]
pub struct VersionRoute {
    /// The version's name.
    pub name: Arc<str>,
    /// What serves it.
    pub route: CompiledRoute,
    deprecation: Option<HeaderValue>,
    sunset: Option<(SystemTime, HeaderValue)>,
    link: Option<HeaderValue>,
    gone_after_sunset: bool,
}

impl VersionRoute {
    /// The version `name` of `a`, served by `route`. Dates were checked by validation;
    /// one that does not parse is left out.
    pub fn new(name: &str, a: &ApiVersion, route: CompiledRoute) -> Self {
        let when = |t: &Option<String>| {
            t.as_deref()
                .and_then(|t| gatehouse_config::versions::parse_timestamp(t).ok())
        };
        let epoch = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        Self {
            name: name.into(),
            route,
            deprecation: when(&a.deprecated)
                .and_then(|t| HeaderValue::from_str(&format!("@{}", epoch(t))).ok()),
            sunset: when(&a.sunset).and_then(|t| {
                HeaderValue::from_str(&httpdate::fmt_http_date(t))
                    .ok()
                    .map(|v| (t, v))
            }),
            link: a
                .link
                .as_deref()
                .and_then(|l| HeaderValue::from_str(&format!("<{l}>; rel=\"deprecation\"")).ok()),
            gone_after_sunset: a.after_sunset == AfterSunset::Gone,
        }
    }

    /// Adds the version's lifecycle headers to a response.
    pub fn stamp(&self, headers: &mut HeaderMap) {
        if let Some(d) = &self.deprecation {
            headers.insert("deprecation", d.clone());
        }
        if let Some((_, s)) = &self.sunset {
            headers.insert("sunset", s.clone());
        }
        if let Some(l) = &self.link {
            headers.append(header::LINK, l.clone());
        }
    }

    fn retired(&self, now: SystemTime) -> bool {
        self.gone_after_sunset && self.sunset.as_ref().is_some_and(|(t, _)| *t <= now)
    }
}

/// A route's versions.
#[derive(Debug)]
pub struct VersionTable {
    sources: Vec<VersionSource>,
    default: Option<usize>,
    redirect_missing: bool,
    /// By name (the config's order, which is sorted).
    versions: Vec<VersionRoute>,
}

/// What a request to a versioned route gets.
pub enum Pick<'a> {
    /// This version (its index, itself) serves it.
    Serve(usize, &'a VersionRoute),
    /// The gateway answers it (unknown version, redirect, retired version).
    Answer(LocalResponse),
}

impl VersionTable {
    /// The table of `v`, whose versions compiled to `versions`.
    pub fn new(v: &Versions, versions: Vec<VersionRoute>) -> Self {
        let sources = v
            .from
            .iter()
            .filter_map(|s| VersionSource::parse(s).ok())
            .collect();
        let default = v
            .default
            .as_deref()
            .and_then(|d| versions.iter().position(|x| &*x.name == d));
        Self {
            sources,
            default,
            redirect_missing: v.when_missing == WhenMissing::Redirect,
            versions,
        }
    }

    /// Every version's route.
    pub fn routes(&self) -> impl Iterator<Item = &CompiledRoute> {
        self.versions.iter().map(|v| &v.route)
    }

    /// The version at `index`.
    pub fn get(&self, index: usize) -> Option<&VersionRoute> {
        self.versions.get(index)
    }

    fn find(&self, name: &str) -> Option<(usize, &VersionRoute)> {
        self.versions
            .iter()
            .enumerate()
            .find(|(_, v)| &*v.name == name)
    }

    /// The version `parts` asks for, its version segment removed from the path when it
    /// came from there; or the gateway's answer.
    pub fn pick(&self, parts: &mut http::request::Parts, request_id: &str) -> Pick<'_> {
        let mut named = None;
        for s in &self.sources {
            named = match s {
                VersionSource::Path => self.take_path_version(parts),
                VersionSource::Header(h) => parts
                    .headers
                    .get(h.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_string),
                VersionSource::Query(q) => query_value(parts.uri.query(), q),
                VersionSource::Accept { before, after } => accepted(&parts.headers, before, after),
            };
            if named.is_some() {
                break;
            }
        }
        let (index, chosen) = match &named {
            Some(n) => match self.find(n) {
                Some(found) => found,
                None => {
                    return Pick::Answer(
                        self.refuse("the requested API version is not available", request_id),
                    );
                }
            },
            None => match self.default.and_then(|d| Some((d, self.versions.get(d)?))) {
                Some((_, d)) if self.redirect_missing => {
                    return Pick::Answer(redirect_to(d, &parts.uri));
                }
                Some(found) => found,
                None => {
                    return Pick::Answer(
                        self.refuse("the request names no API version", request_id),
                    );
                }
            },
        };
        if chosen.retired(SystemTime::now()) {
            let detail = format!("API version {} is no longer served", chosen.name);
            let mut r = problem_response(&Problem::new(StatusCode::GONE, detail), request_id);
            chosen.stamp(r.headers_mut());
            return Pick::Answer(r);
        }
        Pick::Serve(index, chosen)
    }

    /// The first path segment when it names a version, which is then removed.
    fn take_path_version(&self, parts: &mut http::request::Parts) -> Option<String> {
        let path = parts.uri.path();
        let rest = path.strip_prefix('/')?;
        let (segment, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        self.find(segment)?;
        let name = segment.to_string();
        let tail = if tail.is_empty() { "/" } else { tail };
        let pq = match parts.uri.query() {
            Some(q) => format!("{tail}?{q}"),
            None => tail.to_string(),
        };
        let mut uri = http::uri::Parts::from(parts.uri.clone());
        uri.path_and_query = pq.parse().ok();
        if let Ok(u) = Uri::from_parts(uri) {
            parts.uri = u;
        }
        Some(name)
    }

    fn refuse(&self, detail: &str, request_id: &str) -> LocalResponse {
        let names: Vec<&str> = self.versions.iter().map(|v| &*v.name).collect();
        let p = Problem::new(
            StatusCode::BAD_REQUEST,
            format!("{detail}; available: {}", names.join(", ")),
        )
        .with_member("available", json!(names));
        problem_response(&p, request_id)
    }
}

/// 308 to `/VERSION/path?query`.
fn redirect_to(v: &VersionRoute, uri: &Uri) -> LocalResponse {
    let mut location = format!("/{}{}", v.name, uri.path());
    if let Some(q) = uri.query() {
        location.push('?');
        location.push_str(q);
    }
    let mut r = http::Response::new(bytes::Bytes::new());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(l) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, l);
    }
    r
}

/// The value of query parameter `name` (decoded), if present and not empty.
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    let v = gatehouse_policies::query_param::value(query?, name)?;
    (!v.is_empty()).then(|| String::from_utf8_lossy(&v).into_owned())
}

/// The version in the first `Accept` media range of the form `before{version}after`.
fn accepted(headers: &HeaderMap, before: &str, after: &str) -> Option<String> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|range| {
            let media = range.split(';').next()?.trim().to_ascii_lowercase();
            let middle = media.strip_prefix(before)?.strip_suffix(after)?;
            (!middle.is_empty()).then(|| middle.to_string())
        })
}

/// Extra match blocks for routes whose versions are read from the path: the route's
/// match with `/VERSION` before its path, one per version.
pub fn path_aliases(routes: &[Route]) -> Vec<(usize, RouteMatch)> {
    let mut out = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        let Some(v) = &r.versions else { continue };
        if !v.from.iter().any(|s| s == "path") {
            continue;
        }
        for name in v.available.keys() {
            let path = match &r.matches.path {
                None => Some(PathMatch {
                    kind: PathKind::Prefix,
                    value: format!("/{name}"),
                }),
                Some(p) if p.kind != PathKind::Regex => Some(PathMatch {
                    kind: p.kind,
                    value: format!("/{name}{}", if p.value == "/" { "" } else { &p.value }),
                }),
                Some(_) => None,
            };
            if let Some(path) = path {
                let mut m = r.matches.clone();
                m.path = Some(path);
                out.push((i, m));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_accept_sources() {
        assert_eq!(
            query_value(Some("a=1&version=v%32"), "version").as_deref(),
            Some("v2")
        );
        assert_eq!(query_value(Some("version="), "version"), None);
        assert_eq!(query_value(None, "version"), None);
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html, Application/vnd.shop.V1+json; q=0.9"),
        );
        assert_eq!(
            accepted(&h, "application/vnd.shop.", "+json").as_deref(),
            Some("v1")
        );
        assert_eq!(accepted(&h, "application/vnd.other.", "+json"), None);
    }
}
