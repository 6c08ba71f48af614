//! `type: cache`: an RFC 9111 shared cache in front of a route. A fresh entry answers
//! from the request phase (`x-cache: HIT`, with `Age`, and 304 to a matching
//! conditional); a stale one is revalidated with its validators (`REVALIDATED`) or,
//! when the upstream fails within `stale_if_error`, served (`STALE`); cacheable answers
//! are stored as they stream to the client (`MISS`); other requests pass (`BYPASS`).

use crate::cache_store::{CacheStore, Entry, Join, vary_values};
use crate::freshness::{Directives, http_date, initial_age};
use crate::{Build, BuildResult, Kind};
use bytes::{Bytes, BytesMut};
use gatehouse_core::{
    BodyFilter, BodyNeeds, FilterError, Fingerprint, Flow, LocalResponse, Policy, RequestBodyNeed,
    RequestCtx, ResponseBodyNeed,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime};

/// `type: cache`.
pub const KIND: Kind = Kind {
    name: "cache",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// The settings of `type: cache`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CachePolicy")]
pub struct Config {
    /// Bound on what entries take: bodies, headers and keys (default 256MiB).
    #[serde(default = "default_memory")]
    pub memory: gatehouse_config::Size,
    /// Larger responses stream through unstored (default 2MiB).
    #[serde(default = "default_max_entry_size")]
    pub max_entry_size: gatehouse_config::Size,
    /// Freshness of a response of `statuses` whose upstream gives none (default 60s).
    #[serde(default = "default_ttl")]
    pub ttl: gatehouse_config::Duration,
    /// Longest any response stays fresh (default 1d).
    #[serde(default = "default_max_ttl")]
    pub max_ttl: gatehouse_config::Duration,
    /// Methods answered from the cache (default GET, HEAD; HEAD is answered from GET's
    /// entry). Others pass (`BYPASS`).
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Statuses that get `ttl` when the upstream gives no freshness (others are stored
    /// only with explicit freshness).
    #[serde(default = "default_statuses")]
    pub statuses: Vec<u16>,
    /// Added to method, host, path and sorted query: `header:NAME`, `cookie:NAME`,
    /// `consumer`.
    #[serde(default)]
    pub key: Vec<String>,
    /// Query parameters left out of the key.
    #[serde(default)]
    pub ignore_query: Vec<String>,
    /// How long past its freshness an entry answers when the upstream fails (5xx,
    /// timeout, refused), when the response gives no `stale-if-error` (default 0s).
    #[serde(default = "zero")]
    pub stale_if_error: gatehouse_config::Duration,
    /// How long past its freshness an entry is served at once (`STALE`) while one
    /// background request refreshes it, when the response gives no
    /// `stale-while-revalidate` (default 0s).
    #[serde(default = "zero")]
    pub stale_while_revalidate: gatehouse_config::Duration,
    /// How long concurrent misses on a key wait for the one request that went
    /// upstream (default 5s; 0s: no coalescing).
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: gatehouse_config::Duration,
    /// Response header holding surrogate keys (tags, split on spaces and commas),
    /// removed before the client sees the response (default `surrogate-key`).
    #[serde(default = "default_tag_header")]
    pub tag_header: String,
    /// `true`: `ttl` decides freshness whatever the upstream says; `Set-Cookie` and
    /// `private` responses are still never stored.
    #[serde(default)]
    pub ignore_cache_control: bool,
}

fn default_memory() -> gatehouse_config::Size {
    gatehouse_config::Size(256 * 1024 * 1024)
}
fn default_max_entry_size() -> gatehouse_config::Size {
    gatehouse_config::Size(2 * 1024 * 1024)
}
fn default_ttl() -> gatehouse_config::Duration {
    gatehouse_config::Duration(Duration::from_secs(60))
}
fn default_max_ttl() -> gatehouse_config::Duration {
    gatehouse_config::Duration(Duration::from_secs(86_400))
}
fn default_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into()]
}
fn default_statuses() -> Vec<u16> {
    vec![200, 203, 204, 300, 301, 308, 404, 410]
}
fn default_lock_timeout() -> gatehouse_config::Duration {
    gatehouse_config::Duration(Duration::from_secs(5))
}
fn zero() -> gatehouse_config::Duration {
    gatehouse_config::Duration(Duration::ZERO)
}
fn default_tag_header() -> String {
    "surrogate-key".into()
}

/// A part of the key beyond method, host, path and query.
#[derive(Debug, Clone)]
enum KeyPart {
    Header(HeaderName),
    Cookie(String),
    Consumer,
}

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    let mut issues = Vec::new();
    let mut methods = Vec::new();
    for (i, m) in c.methods.iter().enumerate() {
        match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(m) if m == Method::GET || m == Method::HEAD => methods.push(m),
            _ => issues.push(b.issue(
                Some(&format!("methods[{i}]")),
                "a cache answers GET and HEAD only",
            )),
        }
    }
    let mut statuses = Vec::new();
    for (i, s) in c.statuses.iter().enumerate() {
        match StatusCode::from_u16(*s) {
            Ok(s) if s != StatusCode::PARTIAL_CONTENT && s.as_u16() >= 200 => statuses.push(s),
            _ => issues.push(b.issue(
                Some(&format!("statuses[{i}]")),
                "must be a final status other than 206",
            )),
        }
    }
    let mut key = Vec::new();
    for (i, k) in c.key.iter().enumerate() {
        let part = match k.split_once(':') {
            None if k == "consumer" => Some(KeyPart::Consumer),
            Some(("header", h)) => HeaderName::from_bytes(h.as_bytes())
                .ok()
                .map(KeyPart::Header),
            Some(("cookie", n)) if !n.is_empty() => Some(KeyPart::Cookie(n.to_string())),
            _ => None,
        };
        match part {
            Some(p) => key.push(p),
            None => issues.push(b.issue(
                Some(&format!("key[{i}]")),
                format!("{k:?}: expected header:NAME, cookie:NAME or consumer"),
            )),
        }
    }
    let tag_header = match HeaderName::from_bytes(c.tag_header.as_bytes()) {
        Ok(h) => h,
        Err(_) => {
            issues.push(b.issue(Some("tag_header"), "is not a header name"));
            HeaderName::from_static("surrogate-key")
        }
    };
    if c.memory.0 == 0 {
        issues.push(b.issue(Some("memory"), "must be more than 0"));
    }
    if c.max_entry_size.0 > c.memory.0 {
        issues.push(b.issue(Some("max_entry_size"), "is larger than `memory`"));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    // Kept by name: entries survive reloads; a new `memory` bound applies at once.
    let store = b.state.get_or_build("cache", b.name, Fingerprint(0), |_| {
        CacheStore::new(c.memory.0)
    });
    store.set_memory(c.memory.0);
    // With a Redis link, purges made through any gateway reach this one.
    let cluster = b.config.cluster.redis.as_ref().and_then(|redis| {
        match &gatehouse_cluster::Cluster::staged(b.state, redis, b.dir).0 {
            Ok(c) => Some(Arc::clone(c)),
            // The link's own error is reported at `cluster.redis`.
            Err(_) => None,
        }
    });
    let relay = store.share_purges(cluster.as_ref(), b.name);
    Ok(Arc::new(Cache {
        name: b.name.to_string(),
        store,
        relay,
        max_entry: c.max_entry_size.0,
        ttl: c.ttl.get(),
        max_ttl: c.max_ttl.get(),
        methods,
        statuses,
        shared_by_consumer: key.iter().any(|k| matches!(k, KeyPart::Consumer)),
        key,
        ignore_query: c.ignore_query,
        stale_if_error: c.stale_if_error.get(),
        lock_timeout: c.lock_timeout.get(),
        stale_while_revalidate: c.stale_while_revalidate.get(),
        tag_header,
        ignore_cache_control: c.ignore_cache_control,
    }))
}

/// A compiled `cache` policy.
#[derive(Debug)]
pub struct Cache {
    name: String,
    store: Arc<CacheStore>,
    relay: Option<Arc<crate::purge_relay::PurgeRelay>>,
    max_entry: u64,
    ttl: Duration,
    max_ttl: Duration,
    methods: Vec<Method>,
    statuses: Vec<StatusCode>,
    key: Vec<KeyPart>,
    shared_by_consumer: bool,
    ignore_query: Vec<String>,
    stale_if_error: Duration,
    lock_timeout: Duration,
    stale_while_revalidate: Duration,
    tag_header: HeaderName,
    ignore_cache_control: bool,
}

const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// What the request phase found, for the response phase.
#[derive(Clone)]
enum Seen {
    /// Answered from the cache.
    Served,
    /// Not a request the cache answers.
    Bypass,
    /// An unsafe method (RFC 9111 4.4): a non-error answer invalidates what is stored
    /// for its target, `Location` and `Content-Location` on the same host.
    Unsafe {
        /// The request's host.
        host: String,
        /// Its path and query.
        target: String,
        /// The key parts after path and query, as the request gives them.
        parts: String,
    },
    /// Went upstream.
    Upstream {
        key: Arc<str>,
        /// The stale entry the request matched, if any.
        stale: Option<Arc<Entry>>,
        /// Whether the cache added that entry's validators to the request.
        revalidating: bool,
        /// The request carried `Authorization` (and the key has no consumer).
        auth: bool,
        /// Request headers `Vary` may name, kept for the stored variant.
        request: Arc<HeaderMap>,
        host: String,
        path_and_query: String,
    },
}

/// Marks the background request that refreshes a stale entry; holds the key's claim
/// until that request ends.
#[derive(Debug, Clone)]
struct Refresh {
    /// Held, never read: dropping the last copy ends the claim.
    _claim: Arc<crate::cache_store::Refreshing>,
}

/// Whether `e` may still be served stale, `window` past its freshness (RFC 5861), its
/// own directive winning over `default`; never when it must be revalidated.
fn stale_usable(e: &Entry, own: impl Fn(&Directives) -> Option<u64>, default: Duration) -> bool {
    let d = Directives::for_shared_cache(&e.headers);
    if d.must_revalidate || d.no_cache {
        return false;
    }
    let window = own(&d).map_or(default, Duration::from_secs);
    !window.is_zero() && e.staleness(Instant::now()) <= window
}

/// The request that refreshes `req`'s entry: the same target and headers, without the
/// client's conditionals and request id.
fn refresh_request(
    req: &http::request::Parts,
    claim: Arc<crate::cache_store::Refreshing>,
) -> http::request::Parts {
    let mut r = http::Request::new(());
    *r.method_mut() = Method::GET;
    *r.uri_mut() = req.uri.clone();
    *r.version_mut() = req.version;
    let mut headers = req.headers.clone();
    for h in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
        headers.remove(h);
    }
    headers.remove("x-request-id");
    *r.headers_mut() = headers;
    r.extensions_mut().insert(Refresh { _claim: claim });
    r.into_parts().0
}

/// One request's look into the store, by its key.
struct Lookup {
    store: Arc<CacheStore>,
    key: Arc<str>,
    auth: bool,
    host: String,
}

impl Lookup {
    /// The entry for this request, if any (and allowed for an `Authorization`).
    fn entry(&self, req: &http::request::Parts) -> Option<Arc<Entry>> {
        self.store
            .get(&self.key)?
            .select(&req.headers)
            .filter(|e| !self.auth || e.shared_with_auth)
            .cloned()
    }

    /// The answer from a fresh entry, if there is one.
    fn fresh(&self, req: &http::request::Parts, ctx: &mut RequestCtx) -> Option<Flow> {
        let e = self.entry(req)?;
        if !e.is_fresh(Instant::now()) {
            return None;
        }
        self.store.hit();
        ctx.extensions.insert(Seen::Served);
        Some(Flow::respond(
            "cache_hit",
            Cache::answer_with(&e, req, "HIT"),
        ))
    }

    /// Sends the request upstream; a stale entry's validators go with it when the
    /// client sent none of its own, so a 304 can refresh it.
    fn upstream(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        let entry = self.entry(req);
        let mut revalidating = false;
        if let Some(e) = &entry
            && !req.headers.contains_key(header::IF_NONE_MATCH)
            && !req.headers.contains_key(header::IF_MODIFIED_SINCE)
        {
            if let Some(etag) = e.headers.get(header::ETAG) {
                req.headers.insert(header::IF_NONE_MATCH, etag.clone());
                revalidating = true;
            }
            if let Some(lm) = e.headers.get(header::LAST_MODIFIED) {
                req.headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
                revalidating = true;
            }
        }
        self.store.miss();
        let path_and_query = req
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        ctx.extensions.insert(Seen::Upstream {
            key: Arc::clone(&self.key),
            stale: entry,
            revalidating,
            auth: self.auth,
            request: Arc::new(req.headers.clone()),
            host: self.host.clone(),
            path_and_query,
        });
        Flow::Continue
    }
}

impl Cache {
    /// The key: method (HEAD as GET), host, path, sorted query without
    /// `ignore_query`, and the configured parts.
    fn key(&self, req: &http::request::Parts, ctx: &RequestCtx, host: &str) -> String {
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        self.key_for(host, target, &self.key_parts(req, ctx))
    }

    /// The key of `target` (path and query) on `host`, with key `parts` as
    /// [`Cache::key_parts`] gave them.
    fn key_for(&self, host: &str, target: &str, parts: &str) -> String {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let mut k = String::with_capacity(64);
        k.push_str("GET\n");
        k.push_str(host);
        k.push('\n');
        k.push_str(path);
        if let Some(q) = query {
            let mut pairs: Vec<&str> = q
                .split('&')
                .filter(|p| !p.is_empty())
                .filter(|p| {
                    let name = p.split_once('=').map_or(*p, |(n, _)| n);
                    !self.ignore_query.iter().any(|i| i == name)
                })
                .collect();
            pairs.sort_unstable();
            k.push('?');
            k.push_str(&pairs.join("&"));
        }
        k.push_str(parts);
        k
    }

    /// The configured key parts as this request gives them.
    fn key_parts(&self, req: &http::request::Parts, ctx: &RequestCtx) -> String {
        let mut k = String::new();
        for part in &self.key {
            k.push('\n');
            match part {
                KeyPart::Header(h) => {
                    for v in req.headers.get_all(h) {
                        k.push_str(&String::from_utf8_lossy(v.as_bytes()));
                        k.push(',');
                    }
                }
                KeyPart::Cookie(name) => {
                    if let Some(v) = cookie(&req.headers, name) {
                        k.push_str(v);
                    }
                }
                KeyPart::Consumer => {
                    if let Some(c) = &ctx.consumer {
                        k.push_str(&c.name);
                    }
                }
            }
        }
        k
    }

    /// After a non-error answer to an unsafe request: drops what is stored for its
    /// target, and for the `Location` and `Content-Location` it names on the same
    /// host (RFC 9111 4.4; another host's URIs are never touched).
    fn invalidate(&self, resp: &http::response::Parts, host: &str, target: &str, parts: &str) {
        if !(resp.status.is_success() || resp.status.is_redirection()) {
            return;
        }
        self.store.invalidate(&self.key_for(host, target, parts));
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(reference) = resp.headers.get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            if let Some(other) = same_host_target(reference, host, target) {
                self.store.invalidate(&self.key_for(host, &other, parts));
            }
        }
    }

    /// A stored entry as the answer to `req`: 304 when its conditionals match.
    fn answer_with(e: &Entry, req: &http::request::Parts, state: &'static str) -> LocalResponse {
        let now = Instant::now();
        let mut headers = e.headers.clone();
        headers.insert(header::AGE, HeaderValue::from(e.age(now).as_secs()));
        headers.insert(X_CACHE, HeaderValue::from_static(state));
        if not_modified(&req.headers, &e.headers) {
            headers.remove(header::CONTENT_LENGTH);
            let mut r = http::Response::new(Bytes::new());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            *r.headers_mut() = headers;
            return r;
        }
        let mut r = http::Response::new(e.body.clone());
        *r.status_mut() = e.status;
        *r.headers_mut() = headers;
        r
    }

    /// How long a response with these directives and headers stays fresh, or `None`
    /// when it may not be stored at all.
    fn lifetime(&self, status: StatusCode, d: &Directives, h: &HeaderMap) -> Option<Duration> {
        let by_status = self.statuses.contains(&status);
        let life = if self.ignore_cache_control {
            by_status.then_some(self.ttl)?
        } else if d.no_cache {
            Duration::ZERO
        } else {
            match d.explicit_lifetime(h) {
                Some(l) => l,
                None => by_status.then_some(self.ttl)?,
            }
        };
        Some(life.min(self.max_ttl))
    }

    /// The entry to store for this response, if it may be stored.
    fn storable(
        &self,
        resp: &http::response::Parts,
        auth: bool,
        request: &HeaderMap,
        host: &str,
        path_and_query: &str,
        tags: Vec<String>,
    ) -> Option<(Vec<HeaderName>, Entry)> {
        let h = &resp.headers;
        if resp.status == StatusCode::PARTIAL_CONTENT
            || h.contains_key(header::CONTENT_RANGE)
            || h.contains_key(header::SET_COOKIE)
        {
            return None;
        }
        let d = Directives::for_shared_cache(h);
        let cc = Directives::of(h, &header::CACHE_CONTROL).unwrap_or_default();
        if cc.private || d.private || (!self.ignore_cache_control && d.no_store) {
            return None;
        }
        let shared_with_auth =
            self.shared_by_consumer || d.public || d.s_maxage.is_some() || d.must_revalidate;
        if auth && !shared_with_auth {
            return None;
        }
        let names = vary_names(h)?;
        let fresh_for = self.lifetime(resp.status, &d, h)?;
        let arrived_aged = initial_age(h, SystemTime::now());
        let validators = h.contains_key(header::ETAG) || h.contains_key(header::LAST_MODIFIED);
        // Stale on arrival (its `Age` already spent its lifetime) and nothing to
        // revalidate it with: storing it could never answer a request.
        if fresh_for <= arrived_aged && !validators {
            return None;
        }
        if content_length(h).is_some_and(|n| n > self.max_entry) {
            return None;
        }
        // Copied value by value: the upstream's header values are slices of hyper's read
        // buffer, and keeping them would keep that whole buffer (body bytes included)
        // alive for as long as the entry lives.
        let mut headers = HeaderMap::with_capacity(h.len());
        for (name, value) in h {
            if let Ok(v) = HeaderValue::from_bytes(value.as_bytes()) {
                headers.append(name.clone(), v);
            }
        }
        for name in [
            header::AGE,
            header::CONNECTION,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
            header::TE,
            header::TRAILER,
            X_CACHE,
            SURROGATE_CONTROL,
            HeaderName::from_static("keep-alive"),
            HeaderName::from_static("x-request-id"),
        ] {
            headers.remove(name);
        }
        Some((
            names.clone(),
            Entry {
                status: resp.status,
                headers,
                body: Bytes::new(),
                vary: vary_values(&names, request),
                host: host.to_string(),
                path_and_query: path_and_query.to_string(),
                tags,
                stored: Instant::now(),
                initial_age: arrived_aged,
                fresh_for,
                shared_with_auth,
                invalidated: AtomicBool::new(false),
            },
        ))
    }

    /// Replaces the response with entry `e` (head now, body through a filter).
    fn replace(
        &self,
        resp: &mut http::response::Parts,
        ctx: &mut RequestCtx,
        e: &Entry,
        state: &'static str,
    ) {
        resp.status = e.status;
        resp.headers = e.headers.clone();
        resp.headers.insert(
            header::AGE,
            HeaderValue::from(e.age(Instant::now()).as_secs()),
        );
        resp.headers
            .insert(X_CACHE, HeaderValue::from_static(state));
        ctx.bodies()
            .filters
            .push(Box::new(Replace(Some(e.body.clone()))));
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The header names `Vary` lists (lower case, sorted out of duplicates); `None` for
/// `Vary: *`, which no request can match.
fn vary_names(h: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for v in h.get_all(header::VARY) {
        for n in v.to_str().unwrap_or("").split(',') {
            let n = n.trim();
            if n == "*" {
                return None;
            }
            if let Ok(name) = HeaderName::from_bytes(n.as_bytes())
                && !names.contains(&name)
            {
                names.push(name);
            }
        }
    }
    Some(names)
}

/// Whether the request's conditionals match the stored response (RFC 9110 13.2.2:
/// If-None-Match first, weak comparison; else If-Modified-Since).
fn not_modified(req: &HeaderMap, stored: &HeaderMap) -> bool {
    let weak = |t: &str| t.trim().trim_start_matches("W/").to_string();
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        return inm.trim() == "*" || inm.split(',').any(|t| weak(t) == weak(etag));
    }
    let (Some(ims), Some(lm)) = (
        req.get(header::IF_MODIFIED_SINCE).and_then(http_date),
        stored.get(header::LAST_MODIFIED).and_then(http_date),
    ) else {
        return false;
    };
    lm <= ims
}

/// The path and query a `Location`/`Content-Location` value names, resolved against
/// the request's `target`, when it is on `host` (absolute URIs on another host, or
/// another scheme's, are not this cache's to invalidate).
fn same_host_target(reference: &str, host: &str, target: &str) -> Option<String> {
    let reference = reference.trim();
    if reference.starts_with("//") || reference.contains("://") {
        // A network-path reference (`//host/p`) keeps the request's scheme; either does.
        let uri: http::Uri = match reference.strip_prefix("//") {
            Some(rest) => format!("http://{rest}").parse().ok()?,
            None => reference.parse().ok()?,
        };
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return None;
        }
        let same = uri.host().is_some_and(|h| h.eq_ignore_ascii_case(host));
        return same.then(|| uri.path_and_query().map_or("/", |p| p.as_str()).to_string());
    }
    if reference.starts_with('/') {
        return Some(reference.to_string());
    }
    // Relative to the request's path: its directory, then the reference.
    let path = target.split('?').next().unwrap_or(target);
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    Some(format!(
        "{}{reference}",
        if dir.is_empty() { "/" } else { dir }
    ))
}

/// The request host, lower case, without port (an IPv6 literal keeps its brackets).
fn host_of(req: &http::request::Parts) -> String {
    let h = req
        .uri
        .host()
        .or_else(|| req.headers.get(header::HOST).and_then(|v| v.to_str().ok()))
        .unwrap_or("");
    let h = match h.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((addr, _)) => &h[..addr.len() + 2],
        None => h.split(':').next().unwrap_or(h),
    };
    h.to_ascii_lowercase()
}

impl Policy for Cache {
    fn name(&self) -> &str {
        &self.name
    }

    fn body_needs(&self) -> BodyNeeds {
        BodyNeeds {
            request: RequestBodyNeed::Untouched,
            response: ResponseBodyNeed::Filtered,
        }
    }

    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        // Serving: others' purges are read from here on.
        if let Some(r) = &self.relay {
            r.ensure_started(&self.store);
        }
        if !self.methods.contains(&req.method) {
            let safe = [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE];
            ctx.extensions.insert(if safe.contains(&req.method) {
                Seen::Bypass
            } else {
                Seen::Unsafe {
                    host: host_of(req),
                    target: req
                        .uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_string(),
                    parts: self.key_parts(req, ctx),
                }
            });
            return Flow::Continue;
        }
        let host = host_of(req);
        let key: Arc<str> = self.key(req, ctx, &host).into();
        let auth = req.headers.contains_key(header::AUTHORIZATION) && !self.shared_by_consumer;
        let lookup = Lookup {
            store: Arc::clone(&self.store),
            key,
            auth,
            host,
        };
        // The background refresh of a stale entry: straight upstream (with the stored
        // validators), holding the key's claim until it ends.
        if let Some(refresh) = req.extensions.remove::<Refresh>() {
            ctx.extensions.insert(refresh);
            return lookup.upstream(req, ctx);
        }
        if let Some(flow) = lookup.fresh(req, ctx) {
            return flow;
        }
        // Within stale-while-revalidate: the stale entry at once, and one background
        // request refreshes it.
        if let Some(dispatch) = &ctx.conn.dispatch
            && let Some(e) = lookup.entry(req)
            && stale_usable(
                &e,
                |d| d.stale_while_revalidate,
                self.stale_while_revalidate,
            )
        {
            if let Some(claim) = self.store.begin_refresh(&lookup.key) {
                dispatch.dispatch(refresh_request(req, claim));
            }
            self.store.hit();
            ctx.extensions.insert(Seen::Served);
            return Flow::respond("cache_stale", Cache::answer_with(&e, req, "STALE"));
        }
        // A miss others may share: the first goes upstream, the rest wait for what it
        // stores (at most `lock_timeout`), unless the key is known not to be cacheable.
        if !auth && !self.lock_timeout.is_zero() && !self.store.is_hit_for_miss(&lookup.key) {
            match self.store.join(&lookup.key) {
                Join::Leader(leader) => {
                    ctx.extensions.insert(leader);
                }
                Join::Follower(fill) => {
                    let within = self.lock_timeout;
                    return Flow::wait(async move {
                        fill.wait(within).await;
                        Ok(Box::new(
                            move |req: &mut http::request::Parts, ctx: &mut RequestCtx| {
                                lookup
                                    .fresh(req, ctx)
                                    .unwrap_or_else(|| lookup.upstream(req, ctx))
                            },
                        ) as gatehouse_core::Resume)
                    });
                }
            }
        }
        lookup.upstream(req, ctx)
    }

    fn on_response(&self, resp: &mut http::response::Parts, ctx: &mut RequestCtx) {
        let seen = ctx.extensions.get::<Seen>().cloned();
        let Some(Seen::Upstream {
            key,
            stale,
            revalidating,
            auth,
            request,
            host,
            path_and_query,
        }) = seen
        else {
            if let Some(Seen::Unsafe {
                host,
                target,
                parts,
            }) = &seen
            {
                self.invalidate(resp, host, target, parts);
            }
            if let Some(Seen::Bypass | Seen::Unsafe { .. }) = seen {
                resp.headers
                    .insert(X_CACHE, HeaderValue::from_static("BYPASS"));
            }
            return;
        };
        let tags = take_tags(&mut resp.headers, &self.tag_header);
        if let Some(e) = &stale {
            // The upstream failed (5xx, timeout, refused): within stale-if-error, the
            // stale entry answers.
            if resp.status.is_server_error()
                && stale_usable(e, |d| d.stale_if_error, self.stale_if_error)
            {
                self.replace(resp, ctx, e, "STALE");
                return;
            }
            // Not modified: the stored body with the new head's freshness.
            if resp.status == StatusCode::NOT_MODIFIED && revalidating {
                // RFC 9111 4.3.4: the stored head, updated with the 304's fields.
                let update = std::mem::take(&mut resp.headers);
                let mut headers = e.headers.clone();
                for name in update.keys() {
                    if *name != header::CONTENT_LENGTH {
                        headers.remove(name);
                    }
                }
                for (name, value) in &update {
                    if *name != header::CONTENT_LENGTH {
                        headers.append(name.clone(), value.clone());
                    }
                }
                resp.status = e.status;
                resp.headers = headers;
                if let Some((names, mut fresh)) =
                    self.storable(resp, auth, &request, &host, &path_and_query, e.tags.clone())
                {
                    fresh.body = e.body.clone();
                    self.store.insert(&key, names, fresh);
                }
                resp.headers.remove(SURROGATE_CONTROL);
                resp.headers
                    .insert(X_CACHE, HeaderValue::from_static("REVALIDATED"));
                resp.headers.insert(header::AGE, HeaderValue::from(0u64));
                ctx.bodies()
                    .filters
                    .push(Box::new(Replace(Some(e.body.clone()))));
                return;
            }
        }
        resp.headers
            .insert(X_CACHE, HeaderValue::from_static("MISS"));
        let stored = self.storable(resp, auth, &request, &host, &path_and_query, tags);
        // Meant for this cache only: not forwarded, as a surrogate does.
        resp.headers.remove(SURROGATE_CONTROL);
        if stored.is_none() && !auth {
            // Not cacheable: the next misses on this key go upstream side by side
            // rather than queue behind one another (hit-for-miss), for `ttl`.
            self.store.mark_hit_for_miss(&key, self.ttl);
        }
        if let Some((names, entry)) = stored {
            // No body follows a 204, so no body filter would see its end: stored now.
            if resp.status == StatusCode::NO_CONTENT {
                self.store.insert(&key, names, entry);
                return;
            }
            // Sized once when the length is known: a doubling buffer would keep up to
            // twice the body for as long as the entry lives.
            let len = content_length(&resp.headers).unwrap_or(0);
            ctx.bodies().filters.push(Box::new(Tee {
                store: Arc::clone(&self.store),
                key,
                names,
                entry: Some(entry),
                buf: BytesMut::with_capacity(usize::try_from(len).unwrap_or(0)),
                max: usize::try_from(self.max_entry).unwrap_or(usize::MAX),
            }));
        }
    }
}

/// Removes the tag header from `h` and returns its tags.
fn take_tags(h: &mut HeaderMap, name: &HeaderName) -> Vec<String> {
    let mut tags = Vec::new();
    for v in h.get_all(name) {
        for t in v.to_str().unwrap_or("").split([' ', ',']) {
            if !t.is_empty() && !tags.iter().any(|x| x == t) {
                tags.push(t.to_string());
            }
        }
    }
    h.remove(name);
    tags
}

/// Copies the body into the entry as it streams to the client; stores it at the end
/// unless it grew past `max`.
struct Tee {
    store: Arc<CacheStore>,
    key: Arc<str>,
    names: Vec<HeaderName>,
    entry: Option<Entry>,
    buf: BytesMut,
    max: usize,
}

impl BodyFilter for Tee {
    fn on_data(&mut self, data: Bytes) -> Result<Bytes, FilterError> {
        if self.entry.is_some() {
            if self.buf.len() + data.len() > self.max {
                // Too large to keep: it streams on, unstored.
                self.entry = None;
                self.buf = BytesMut::new();
            } else {
                self.buf.extend_from_slice(&data);
            }
        }
        Ok(data)
    }

    fn on_end(&mut self) -> Result<Bytes, FilterError> {
        if let Some(mut e) = self.entry.take() {
            let buf = std::mem::take(&mut self.buf);
            // Only what the body holds stays allocated (a length unknown in advance
            // left slack in the buffer).
            e.body = if buf.capacity() == buf.len() {
                buf.freeze()
            } else {
                Bytes::copy_from_slice(&buf)
            };
            self.store
                .insert(&self.key, std::mem::take(&mut self.names), e);
        }
        Ok(Bytes::new())
    }
}

/// Sends a stored body instead of the upstream's.
struct Replace(Option<Bytes>);

impl BodyFilter for Replace {
    fn on_data(&mut self, _data: Bytes) -> Result<Bytes, FilterError> {
        Ok(Bytes::new())
    }

    fn on_end(&mut self) -> Result<Bytes, FilterError> {
        Ok(self.0.take().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_target_on_its_host_only() {
        let t = |r: &str| same_host_target(r, "example.com", "/a/b/c?q=1");
        assert_eq!(t("d").as_deref(), Some("/a/b/d"));
        assert_eq!(t("/x?y=2").as_deref(), Some("/x?y=2"));
        assert_eq!(t("https://EXAMPLE.com:8443/z").as_deref(), Some("/z"));
        assert_eq!(t("http://example.com").as_deref(), Some("/"));
        assert_eq!(t("//example.com/w").as_deref(), Some("/w"));
        assert_eq!(t("http://other.example/z"), None);
        assert_eq!(t("ftp://example.com/z"), None);
    }

    #[test]
    fn hosts_lose_their_port_and_case() {
        let host = |h: &str| {
            let mut req = http::Request::new(());
            req.headers_mut()
                .insert(header::HOST, HeaderValue::from_str(h).unwrap());
            host_of(&req.into_parts().0)
        };
        assert_eq!(host("Example.COM:8080"), "example.com");
        assert_eq!(host("example.com"), "example.com");
        assert_eq!(host("[::1]:8080"), "[::1]");
        assert_eq!(host("[::1]"), "[::1]");
    }
}
