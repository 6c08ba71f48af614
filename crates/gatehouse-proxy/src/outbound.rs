//! The request as it leaves for the upstream and the response as it comes back: hop-by-hop
//! headers stripped, forwarding headers and the request id added, the path rewritten, the
//! target in the form the upstream protocol wants; on the way back the attempts header and
//! the sticky cookie.

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::forwarded::{self, X_REQUEST_ID};
use crate::route::CompiledRoute;
use gatehouse_core::RequestCtx;
use gatehouse_policies::cidr::CidrSet;
use gatehouse_upstream::balancer::Pick;
use gatehouse_upstream::{TargetState, UpstreamState};
use http::{HeaderValue, Response, StatusCode, Version, header};

/// Tries counted on every proxied response, retries included.
pub static X_GATEHOUSE_ATTEMPTS: http::HeaderName =
    http::HeaderName::from_static("x-gatehouse-attempts");

/// The value of `x-gatehouse-attempts`: a static value for the counts retries can reach
/// (at most 10 tries), so the header costs no formatting and no allocation per response.
pub fn attempts_value(n: u32) -> HeaderValue {
    const COUNTS: [&str; 11] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];
    match COUNTS.get(n as usize) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
}

/// Who the gateway authenticated, for the upstream.
pub static X_CONSUMER: http::HeaderName = http::HeaderName::from_static("x-consumer");
/// The authenticated consumer's groups, comma-separated.
pub static X_CONSUMER_GROUPS: http::HeaderName = http::HeaderName::from_static("x-consumer-groups");

/// Sets `x-consumer` and `x-consumer-groups` from the authenticated consumer, and always
/// drops the client's own: an upstream that trusts them must only ever see ours.
fn consumer_headers(headers: &mut http::HeaderMap, ctx: &RequestCtx) {
    headers.remove(&X_CONSUMER);
    headers.remove(&X_CONSUMER_GROUPS);
    let Some(c) = &ctx.consumer else { return };
    if let Ok(v) = HeaderValue::from_str(&c.name) {
        headers.insert(X_CONSUMER.clone(), v);
    }
    if !c.groups.is_empty()
        && let Ok(v) = HeaderValue::from_str(&c.groups.join(","))
    {
        headers.insert(X_CONSUMER_GROUPS.clone(), v);
    }
}

/// Rewrites the client's request head into the one sent to `up`.
pub fn rewrite_request(
    parts: &mut http::request::Parts,
    route: &CompiledRoute,
    up: &UpstreamState,
    ctx: &RequestCtx,
    trusted: &CidrSet,
    request_id: &HeaderValue,
) -> Result<(), ProxyError> {
    let is_upgrade = crate::upgrade::is_upgrade(parts);
    let rewritten = route.rewritten_path(parts.uri.path(), &ctx.params);
    let upgrade_headers = is_upgrade.then(|| {
        (
            parts.headers.get(header::UPGRADE).cloned(),
            parts.headers.get(header::CONNECTION).cloned(),
        )
    });
    forwarded::strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::EXPECT);
    consumer_headers(&mut parts.headers, ctx);
    if let Some((Some(u), _)) = upgrade_headers {
        parts.headers.insert(header::UPGRADE, u);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let peer = ctx.conn.peer.ip();
    let peer_trusted = !trusted.is_empty() && trusted.contains(peer);
    // The Host the pipeline settled on, port included, is also X-Forwarded-Host.
    let host = parts.headers.get(header::HOST).cloned();
    let proto = ctx.conn.scheme.as_str();
    let peer_text = &ctx.conn.peer_ip;
    forwarded::add_forwarded(
        &mut parts.headers,
        peer,
        peer_text,
        proto,
        host,
        peer_trusted,
    );
    parts
        .headers
        .insert(X_REQUEST_ID.clone(), request_id.clone());
    if matches!(
        up.config.protocol,
        gatehouse_config::UpstreamProtocol::H2c | gatehouse_config::UpstreamProtocol::H2
    ) {
        // gRPC needs `te: trailers` end to end; HTTP/2 carries the host as :authority.
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
        let pq = path_and_query(rewritten, &parts.uri).map_err(|_| bad_uri(up))?;
        let scheme = if up.config.uses_tls() {
            "https"
        } else {
            "http"
        };
        parts.uri = format!("{scheme}://{}{pq}", authority(parts))
            .parse()
            .map_err(|_| bad_uri(up))?;
        parts.headers.remove(header::HOST);
        parts.version = Version::HTTP_2;
    } else {
        parts.uri = path_and_query(rewritten, &parts.uri)
            .map_err(|_| bad_uri(up))?
            .into();
        parts.version = Version::HTTP_11;
    }
    Ok(())
}

/// Rewrites the upstream's response head for the client.
pub fn rewrite_response(
    resp: &mut Response<ProxyBody>,
    up: &UpstreamState,
    target: &TargetState,
    pick: Pick,
    attempts: u32,
) {
    // After a 101 the Connection and Upgrade headers are the handshake itself.
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        forwarded::strip_hop_by_hop(resp.headers_mut());
    }
    resp.headers_mut()
        .insert(X_GATEHOUSE_ATTEMPTS.clone(), attempts_value(attempts));
    if pick.set_cookie
        && let Some(name) = up.sticky_cookie()
    {
        let id = gatehouse_upstream::balancer::sticky_id(&target.address);
        let max_age = up
            .config
            .sticky
            .ttl
            .map(|t| format!("; Max-Age={}", t.get().as_secs()))
            .unwrap_or_default();
        if let Ok(v) = HeaderValue::from_str(&format!("{name}={id}; Path=/; HttpOnly{max_age}")) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
}

/// The origin-form target sent upstream: the rewritten path with the original query, or
/// the client's own path and query untouched (no copy) when nothing was rewritten.
fn path_and_query(
    rewritten: Option<String>,
    uri: &http::Uri,
) -> Result<http::uri::PathAndQuery, http::uri::InvalidUri> {
    match (rewritten, uri.path_and_query()) {
        (None, Some(pq)) => Ok(pq.clone()),
        (None, None) => Ok(http::uri::PathAndQuery::from_static("/")),
        (Some(path), _) => match uri.query() {
            Some(q) => format!("{path}?{q}").parse(),
            None => path.parse(),
        },
    }
}

fn bad_uri(up: &UpstreamState) -> ProxyError {
    ProxyError::NoTarget {
        upstream: up.name.clone(),
    }
}

/// The authority for an HTTP/2 upstream: the Host the pipeline settled on.
fn authority(parts: &http::request::Parts) -> &str {
    parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost")
}
