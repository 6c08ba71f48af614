//! What the gateway adds to and strips from forwarded messages: hop-by-hop headers,
//! X-Forwarded-*, the request id, and the client IP behind trusted proxies.

use gatehouse_policies::cidr::CidrSet;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// The request id header.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the hop-by-hop headers below and every header named in `Connection`.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One scan over the names finds which hop-by-hop headers are present, so only those
    // pay a hashed removal; most messages carry none or only `Connection`.
    let mut present = 0u16;
    for name in h.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hb| *hb == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0
        && let Some(conn) = h.get(header::CONNECTION).cloned()
        && let Ok(s) = conn.to_str()
    {
        for token in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            // `close` and `keep-alive` are connection options, not header names to drop
            // (a `Keep-Alive` header is removed below anyway).
            if token.eq_ignore_ascii_case("close") || token.eq_ignore_ascii_case("keep-alive") {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(token.as_bytes()) {
                h.remove(n);
            }
        }
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(*n);
        }
    }
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1), plus the proxy credentials: a
/// `Proxy-Authorization` is for this hop and a `Proxy-Authenticate` challenge is the
/// upstream's own, so neither crosses the gateway (as in Go's reverse proxy).
static HOP_BY_HOP: [&HeaderName; 9] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
];

/// The request id: the client's when well formed (1-200 visible ASCII chars), else a new one;
/// with it as a header value, made once for both the upstream request and the response
/// (the client's own value is shared, not copied).
pub fn request_id(h: &HeaderMap) -> (String, HeaderValue) {
    if let Some(v) = h.get(&X_REQUEST_ID)
        && let Ok(s) = v.to_str()
        && (1..=200).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_graphic())
    {
        return (s.to_string(), v.clone());
    }
    let id = new_request_id();
    // Hex digits only: always a valid header value.
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"));
    (id, value)
}

/// A random 128-bit id in hex.
pub fn new_request_id() -> String {
    gatehouse_core::trace::hex(&fastrand::u128(..).to_le_bytes())
}

/// The client IP: the peer, or when the peer is a trusted proxy, the right-most
/// X-Forwarded-For entry that is not itself trusted.
pub fn client_ip(h: &HeaderMap, peer: IpAddr, trusted: &CidrSet) -> IpAddr {
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let mut ip = peer;
    let entries = h
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for e in entries.iter().rev() {
        match e.parse::<IpAddr>() {
            Ok(addr) => {
                ip = addr;
                if !trusted.contains(addr) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    ip
}

/// Sets X-Forwarded-For (appending the peer), -Proto (the connection's scheme) and -Host
/// on a request going upstream.
/// Incoming -Proto/-Host are kept only from trusted peers.
pub fn add_forwarded(
    h: &mut HeaderMap,
    peer: IpAddr,
    peer_text: &HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
    peer_trusted: bool,
) {
    match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => {
            let mut xff = format!("{prev}, ");
            push_ip(&mut xff, peer);
            // The string is already valid header text; its buffer is handed over as is.
            if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)) {
                h.insert(X_FORWARDED_FOR.clone(), v);
            }
        }
        // The usual case: the connection's own text of the peer, shared.
        _ => {
            h.insert(X_FORWARDED_FOR.clone(), peer_text.clone());
        }
    }
    if !peer_trusted || !h.contains_key(&X_FORWARDED_PROTO) {
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if (!peer_trusted || !h.contains_key(&X_FORWARDED_HOST))
        && let Some(v) = host
    {
        h.insert(X_FORWARDED_HOST.clone(), v);
    }
}

/// Appends `ip` in its canonical text form; IPv4 is written by hand because `Display`
/// goes through the formatting machinery and showed up in per-request profiles.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(_) => {
            use std::fmt::Write;
            let _ = write!(out, "{ip}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert(
            "proxy-authorization",
            HeaderValue::from_static("Basic Zm9vOmJhcg=="),
        );
        h.insert(
            "proxy-authenticate",
            HeaderValue::from_static("Basic realm=\"up\""),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn client_ip_behind_trusted_proxies() {
        let trusted = CidrSet::build(&["10.0.0.0/8".into()], &BTreeMap::new()).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 2.2.2.2, 10.0.0.5"),
        );
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(&h, peer, &trusted),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
        let untrusted: IpAddr = "3.3.3.3".parse().unwrap();
        assert_eq!(client_ip(&h, untrusted, &trusted), untrusted);
    }

    #[test]
    fn request_id_kept_or_generated() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        let (id, value) = request_id(&h);
        assert_eq!(
            (id.as_str(), value.to_str().unwrap()),
            ("abc-123", "abc-123")
        );
        h.insert("x-request-id", HeaderValue::from_static("has space"));
        let (id, value) = request_id(&h);
        assert_eq!(id.len(), 32);
        assert_eq!(
            value.to_str().unwrap(),
            id,
            "the header carries the same id"
        );
    }

    #[test]
    fn messages_without_hop_by_hop_headers_are_untouched() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("a"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        h.insert("connection", HeaderValue::from_static("close, X-Kept"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["host"]);
    }

    #[test]
    fn ip_text_matches_display() {
        let mut ips: Vec<IpAddr> = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "1.20.3.199",
            "::1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        ips.extend((0..2000).map(|_| IpAddr::from(fastrand::u32(..).to_be_bytes())));
        for ip in ips {
            let mut s = String::new();
            push_ip(&mut s, ip);
            assert_eq!(s, ip.to_string());
        }
    }
}
