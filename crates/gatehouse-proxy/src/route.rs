//! A compiled route: its policy chain, rewrite, limits and action.

use bytes::Bytes;
use gatehouse_config::validate::HashOn;
use gatehouse_config::{Redirect, Rewrite};
use gatehouse_core::{BodyNeeds, LocalResponse, Policy};
use gatehouse_upstream::UpstreamState;
use gatehouse_upstream::upstream::request_hash;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use std::net::IpAddr;
use std::sync::Arc;

/// What a route does once its request policies let the request through.
#[derive(Debug)]
pub enum Action {
    /// Proxy to one upstream.
    Upstream(Arc<UpstreamState>),
    /// Proxy to one of several upstreams by weight.
    Split(Split),
    /// Redirect the client.
    Redirect(Redirect),
    /// Answer with a fixed response.
    Respond {
        /// Status.
        status: StatusCode,
        /// Headers.
        headers: HeaderMap,
        /// Body.
        body: Bytes,
    },
    /// API versions: the one the request names serves it (its own route).
    Versions(Box<crate::api_versions::VersionTable>),
    /// Parallel upstream calls merged into one JSON answer.
    Aggregate(Box<crate::aggregate::AggregatePlan>),
}

/// A weighted split over upstreams (canary releases).
#[derive(Debug)]
pub struct Split {
    /// Branches with weight above 0, in config order.
    pub branches: Vec<(Arc<UpstreamState>, u32)>,
    /// Sum of the weights.
    pub total: u32,
    /// Move a request whose side has no healthy target to a side that has one.
    pub fallback: bool,
    /// What keeps a client on one side; random per request when absent.
    pub hash_on: Option<HashOn>,
}

impl Split {
    /// The branch for this request: by the client's hash when `hash_on` finds a key,
    /// else at random, both by weight; then, when that side has no healthy target and
    /// fallback is on, the first side by the same order that has one.
    pub fn pick(
        &self,
        req: &http::request::Parts,
        client_ip: IpAddr,
    ) -> Option<&Arc<UpstreamState>> {
        let total = self.total.max(1);
        let point = match self
            .hash_on
            .as_ref()
            .and_then(|on| request_hash(on, req, client_ip))
        {
            Some(h) => (h % u64::from(total)) as u32,
            None => fastrand::u32(..total),
        };
        let mut r = point;
        let mut chosen = self.branches.len().saturating_sub(1);
        for (i, (_, w)) in self.branches.iter().enumerate() {
            if r < *w {
                chosen = i;
                break;
            }
            r -= w;
        }
        let first = &self.branches.get(chosen)?.0;
        if !self.fallback || first.any_healthy() {
            return Some(first);
        }
        // The sides after the chosen one, wrapping: a stable order per client, so a
        // sticky client also falls back to the same side every time.
        let n = self.branches.len();
        let other = (1..n)
            .map(|k| &self.branches[(chosen + k) % n].0)
            .find(|u| u.any_healthy());
        match other {
            Some(u) => {
                tracing::debug!(from = %first.name, to = %u.name, "split side has no healthy target; falling back");
                Some(u)
            }
            None => Some(first),
        }
    }
}

/// One policy of a route's chain, with the bound on its waits.
#[derive(Debug, Clone)]
pub struct Step {
    /// The policy.
    pub policy: Arc<dyn Policy>,
    /// Its name, shared (a metric label).
    pub name: Arc<str>,
    /// Longest it may wait before the request is answered (its `timeout`).
    pub timeout: std::time::Duration,
}

/// A route as the pipeline uses it.
#[derive(Debug)]
pub struct CompiledRoute {
    /// Route name.
    pub name: Arc<str>,
    /// default_policies then the route's own, in config order.
    pub policies: Vec<Step>,
    /// How its authenticating policies combine.
    pub auth_mode: gatehouse_config::AuthMode,
    /// What the chain needs of the bodies, folded over its policies.
    pub needs: BodyNeeds,
    /// Path rewrite.
    pub rewrite: Option<Rewrite>,
    /// The route's matched prefix (for replace_prefix).
    pub prefix: Option<String>,
    /// Body limit.
    pub max_body_size: Option<u64>,
    /// The action.
    pub action: Action,
    /// Upgrade protocols forwarded, lower case; any other `Upgrade` is stripped.
    pub upgrades: Vec<Box<str>>,
    /// Whether `match.methods` lists TRACE, which is otherwise answered 405.
    pub allows_trace: bool,
    /// Its apdex target (`analytics.latency_target`, or its own).
    pub latency_target: std::time::Duration,
    /// Host sent upstream for a request that named none (HTTP/1.0 without Host): the
    /// route's first exact host, as nginx uses its first `server_name`.
    pub default_host: Option<HeaderValue>,
}

impl CompiledRoute {
    /// The upstream for this request (a split picks its branch).
    pub fn upstream(
        &self,
        req: &http::request::Parts,
        client_ip: IpAddr,
    ) -> Option<&Arc<UpstreamState>> {
        match &self.action {
            Action::Upstream(u) => Some(u),
            Action::Split(split) => split.pick(req, client_ip),
            _ => None,
        }
    }

    /// Every upstream the route may send to (all sides of a split, all versions).
    pub fn upstreams(&self) -> Vec<Arc<UpstreamState>> {
        match &self.action {
            Action::Upstream(u) => vec![Arc::clone(u)],
            Action::Split(s) => s.branches.iter().map(|(u, _)| Arc::clone(u)).collect(),
            Action::Versions(t) => t.routes().flat_map(CompiledRoute::upstreams).collect(),
            Action::Aggregate(a) => a.upstreams().cloned().collect(),
            Action::Redirect(_) | Action::Respond { .. } => Vec::new(),
        }
    }

    /// Drops the upgrade protocols this route does not allow from `headers`; when none is
    /// left, the `Upgrade` header and the `upgrade` connection option go too, so the
    /// request travels as a plain one (never as a tunnel past routing).
    pub fn filter_upgrade(&self, headers: &mut HeaderMap) {
        let Some(offered) = headers.get(header::UPGRADE) else {
            return;
        };
        let offered = offered.to_str().unwrap_or("");
        let allowed = |p: &str| {
            // `websocket` and `WebSocket/13` both name the websocket protocol.
            let name = p.split('/').next().unwrap_or("").trim();
            self.upgrades.iter().any(|u| u.eq_ignore_ascii_case(name))
        };
        let kept: Vec<&str> = offered
            .split(',')
            .map(str::trim)
            .filter(|p| allowed(p))
            .collect();
        if kept.len() == offered.split(',').count() {
            return;
        }
        match HeaderValue::from_str(&kept.join(", ")) {
            Ok(v) if !kept.is_empty() => {
                headers.insert(header::UPGRADE, v);
            }
            _ => {
                headers.remove(header::UPGRADE);
                let rest = headers
                    .get(header::CONNECTION)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| {
                        v.split(',')
                            .map(str::trim)
                            .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("upgrade"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    });
                match rest.and_then(|r| HeaderValue::from_str(&r).ok()) {
                    Some(v) if !v.is_empty() => {
                        headers.insert(header::CONNECTION, v);
                    }
                    _ => {
                        headers.remove(header::CONNECTION);
                    }
                }
            }
        }
    }

    /// The path to send upstream after the rewrite.
    pub fn rewritten_path(&self, path: &str, params: &[(String, String)]) -> Option<String> {
        let rw = self.rewrite.as_ref()?;
        if let Some(strip) = &rw.strip_prefix {
            return Some(replace_prefix(path, strip, "/"));
        }
        if let (Some(to), Some(prefix)) = (&rw.replace_prefix, &self.prefix) {
            return Some(replace_prefix(path, prefix, to));
        }
        rw.replace_path.as_ref().map(|t| fill(t, params))
    }
}

/// Replaces `prefix` (segment-wise) at the start of `path` with `to`; keeps the path otherwise.
fn replace_prefix(path: &str, prefix: &str, to: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    let rest = match path.strip_prefix(prefix) {
        Some(r) if r.is_empty() || r.starts_with('/') => r,
        _ => return path.to_string(),
    };
    let to = to.trim_end_matches('/');
    let joined = format!("{to}{rest}");
    if joined.is_empty() {
        "/".into()
    } else if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

/// Substitutes `{name}` with captured parameters.
pub fn fill(template: &str, params: &[(String, String)]) -> String {
    let mut out = template.to_string();
    for (k, v) in params {
        out = out
            .replace(&format!("{{{k}}}"), v)
            .replace(&format!("{{*{k}}}"), v);
    }
    out
}

/// Builds the redirect response for a request.
pub fn redirect_response(
    rd: &Redirect,
    host: &str,
    port: Option<u16>,
    path: &str,
    query: Option<&str>,
    params: &[(String, String)],
) -> LocalResponse {
    let location = match &rd.to {
        Some(to) => {
            let mut p = params.to_vec();
            p.push((
                "scheme".into(),
                rd.scheme.clone().unwrap_or_else(|| "http".into()),
            ));
            p.push(("host".into(), host.to_string()));
            p.push(("path".into(), path.to_string()));
            p.push(("query".into(), query.unwrap_or("").to_string()));
            let base = fill(to, &p);
            // `{path}` without `{query}` still keeps the query, like the field form.
            match query {
                Some(q) if !to.contains("{query}") && !q.is_empty() => format!("{base}?{q}"),
                _ => base,
            }
        }
        None => {
            let scheme = rd.scheme.as_deref().unwrap_or("http");
            let host = rd.host.as_deref().unwrap_or(host);
            let port = rd.port.or(if rd.scheme.is_some() || rd.host.is_some() {
                None
            } else {
                port
            });
            let port = match (scheme, port) {
                (_, None) | ("http", Some(80)) | ("https", Some(443)) => String::new(),
                (_, Some(p)) => format!(":{p}"),
            };
            let path = rd
                .path
                .as_deref()
                .map(|p| fill(p, params))
                .unwrap_or_else(|| path.to_string());
            match query {
                Some(q) if !q.is_empty() => format!("{scheme}://{host}{port}{path}?{q}"),
                _ => format!("{scheme}://{host}{port}{path}"),
            }
        }
    };
    let mut resp = http::Response::new(Bytes::new());
    *resp.status_mut() = StatusCode::from_u16(rd.status).unwrap_or(StatusCode::FOUND);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_replacement_is_segment_wise() {
        assert_eq!(replace_prefix("/v2/users/1", "/v2", "/"), "/users/1");
        assert_eq!(replace_prefix("/v2", "/v2", "/"), "/");
        assert_eq!(replace_prefix("/v2x/a", "/v2", "/"), "/v2x/a");
        assert_eq!(replace_prefix("/old/a", "/old", "/new"), "/new/a");
        assert_eq!(replace_prefix("/old/a", "/old/", "/new/"), "/new/a");
    }

    #[test]
    fn redirects_keep_path_and_query() {
        let rd = Redirect {
            scheme: Some("https".into()),
            status: 308,
            ..Default::default()
        };
        let r = redirect_response(&rd, "api.example.com", Some(8080), "/a/b", Some("x=1"), &[]);
        assert_eq!(r.status(), 308);
        assert_eq!(r.headers()["location"], "https://api.example.com/a/b?x=1");
        let rd = Redirect {
            to: Some("https://new.example.com/u/{id}".into()),
            status: 301,
            ..Default::default()
        };
        let r = redirect_response(
            &rd,
            "h",
            None,
            "/users/7",
            Some("q=2"),
            &[("id".into(), "7".into())],
        );
        assert_eq!(r.headers()["location"], "https://new.example.com/u/7?q=2");
        let rd = Redirect {
            path: Some("/moved".into()),
            ..Default::default()
        };
        let r = redirect_response(&rd, "h", Some(8080), "/x", None, &[]);
        assert_eq!(r.headers()["location"], "http://h:8080/moved");
    }
}
