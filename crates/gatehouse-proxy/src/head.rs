//! Request-head checks (RFC 9112, RFC 9110) made before routing: one valid Host, the
//! authority that wins (absolute-form target or HTTP/2 `:authority` over a Host header),
//! transfer codings the gateway can frame, and the methods it refuses by default. Each
//! failure is a client error with a precise status; none reaches an upstream.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Version};

/// The authority a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// Host for matching: lower case, without port or one trailing dot.
    pub host: String,
    /// Port, when one was given.
    pub port: Option<u16>,
    /// The authority as sent (with its port): the Host sent upstream and X-Forwarded-Host.
    pub raw: HeaderValue,
}

/// A request head the gateway refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// HTTP/1.1 without Host.
    #[error("the request has no Host header")]
    MissingHost,
    /// More than one Host field.
    #[error("the request has more than one Host header")]
    DuplicateHost,
    /// A Host (or authority) that is not `host[:port]`.
    #[error("the Host header is not a valid host name")]
    InvalidHost,
    /// `chunked` more than once (in one field or across fields).
    #[error("the request repeats the chunked transfer coding")]
    RepeatedChunked,
    /// A transfer coding other than chunked.
    #[error("the request uses a transfer coding the gateway does not implement")]
    UnsupportedCoding,
}

impl HeadError {
    /// The status answered for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Methods refused unless a route lists them in `match.methods` (TRACE), or always
/// (CONNECT: the gateway does not tunnel).
pub fn is_guarded_method(m: &Method) -> bool {
    *m == Method::TRACE || *m == Method::CONNECT
}

/// Checks the framing headers: `Transfer-Encoding` may only be a single `chunked`.
pub fn check_transfer_encoding(h: &HeaderMap) -> Result<(), HeadError> {
    let mut fields = h.get_all(header::TRANSFER_ENCODING).iter();
    let Some(first) = fields.next() else {
        return Ok(());
    };
    let mut chunked = 0;
    for v in std::iter::once(first).chain(fields) {
        let s = v.to_str().map_err(|_| HeadError::UnsupportedCoding)?;
        for coding in s.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if coding.eq_ignore_ascii_case("chunked") {
                chunked += 1;
            } else {
                return Err(HeadError::UnsupportedCoding);
            }
        }
    }
    if chunked > 1 {
        return Err(HeadError::RepeatedChunked);
    }
    Ok(())
}

/// The request's authority: the target's (absolute-form, `:authority`) when present,
/// else the single Host header. `None` for HTTP/1.0 without either.
pub fn authority(
    uri: &http::Uri,
    headers: &HeaderMap,
    version: Version,
) -> Result<Option<Authority>, HeadError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(HeadError::DuplicateHost);
    }
    if let Some(a) = uri.authority() {
        let raw = HeaderValue::from_str(a.as_str()).map_err(|_| HeadError::InvalidHost)?;
        return parse(raw).map(Some);
    }
    match host_header {
        Some(v) => parse(v.clone()).map(Some),
        None if version == Version::HTTP_10 || version == Version::HTTP_09 => Ok(None),
        None => Err(HeadError::MissingHost),
    }
}

/// Parses `host[:port]`: a DNS-style name, an IPv4 address or a bracketed IPv6 literal.
pub fn parse(raw: HeaderValue) -> Result<Authority, HeadError> {
    let s = raw.to_str().map_err(|_| HeadError::InvalidHost)?;
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (ip, tail) = rest.split_once(']').ok_or(HeadError::InvalidHost)?;
            if ip.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(HeadError::InvalidHost);
            }
            (ip, tail)
        }
        None => match s.bytes().position(|b| b == b':') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        },
    };
    let port = tail_port(port)?;
    if !s.starts_with('[') && !is_reg_name(host) {
        return Err(HeadError::InvalidHost);
    }
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    Ok(Authority { host, port, raw })
}

/// `""`, `":"` or `":digits"` after the host.
fn tail_port(tail: &str) -> Result<Option<u16>, HeadError> {
    if tail.is_empty() {
        return Ok(None);
    }
    let digits = tail.strip_prefix(':').ok_or(HeadError::InvalidHost)?;
    if digits.is_empty() {
        return Ok(None);
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeadError::InvalidHost);
    }
    digits.parse().map(Some).map_err(|_| HeadError::InvalidHost)
}

/// Letters, digits, `-`, `_` and `.` between non-empty labels (one trailing dot allowed).
/// One pass over the bytes: it runs on every request.
fn is_reg_name(h: &str) -> bool {
    let b = h.strip_suffix('.').unwrap_or(h).as_bytes();
    if b.is_empty() || b.len() > 253 {
        return false;
    }
    let mut label = 0usize;
    for &c in b {
        if c == b'.' {
            if label == 0 {
                return false;
            }
            label = 0;
        } else if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
            label += 1;
            if label > 63 {
                return false;
            }
        } else {
            return false;
        }
    }
    label > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> Result<(String, Option<u16>), HeadError> {
        parse(HeaderValue::from_str(s).unwrap()).map(|a| (a.host, a.port))
    }

    #[test]
    fn hosts() {
        let ok = |s: &str, h: &str, p: Option<u16>| assert_eq!(host(s), Ok((h.into(), p)), "{s}");
        ok("example.com", "example.com", None);
        ok("ADMIN.example.", "admin.example", None);
        ok("a.b:8080", "a.b", Some(8080));
        ok("a.b:", "a.b", None);
        ok("127.0.0.1:80", "127.0.0.1", Some(80));
        ok("[::1]:8080", "::1", Some(8080));
        ok("[::1]", "::1", None);
        ok("my_host", "my_host", None);
        for bad in [
            "a, b", "a/evil", "a b", "", ".", "a..b", "a:x", "a:99999", "[::1", "[zz]", "u@a",
            "a\\b", "a:1:2", "[::1]x", "a.b..",
        ] {
            assert!(host(bad).is_err(), "{bad:?} should be invalid");
        }
        // Label and name lengths.
        let label63 = "a".repeat(63);
        ok(&format!("{label63}.com"), &format!("{label63}.com"), None);
        assert!(host(&format!("{label63}a.com")).is_err(), "a 64-byte label");
        let long = ["abcdefghi"; 26].join(".");
        assert!(long.len() > 253);
        assert!(host(&long).is_err(), "a name over 253 bytes");
        assert!(host(".a").is_err() && host("a..").is_err() && host("-a").is_ok());
    }

    #[test]
    fn authority_rules() {
        let mut h = HeaderMap::new();
        let origin: http::Uri = "/x".parse().unwrap();
        assert_eq!(
            authority(&origin, &h, Version::HTTP_11),
            Err(HeadError::MissingHost)
        );
        assert_eq!(authority(&origin, &h, Version::HTTP_10), Ok(None));
        h.append(header::HOST, HeaderValue::from_static("a"));
        h.append(header::HOST, HeaderValue::from_static("a"));
        assert_eq!(
            authority(&origin, &h, Version::HTTP_11),
            Err(HeadError::DuplicateHost)
        );
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("public.example"));
        let absolute: http::Uri = "http://Admin.Example:81/x".parse().unwrap();
        let a = authority(&absolute, &h, Version::HTTP_11).unwrap().unwrap();
        assert_eq!(a.host, "admin.example");
        assert_eq!(a.port, Some(81));
        assert_eq!(a.raw, "Admin.Example:81");
    }

    #[test]
    fn transfer_codings() {
        let te = |vals: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in vals {
                h.append(header::TRANSFER_ENCODING, HeaderValue::from_static(v));
            }
            check_transfer_encoding(&h)
        };
        assert_eq!(te(&[]), Ok(()));
        assert_eq!(te(&["chunked"]), Ok(()));
        assert_eq!(te(&["Chunked"]), Ok(()));
        assert_eq!(te(&["chunked, chunked"]), Err(HeadError::RepeatedChunked));
        assert_eq!(te(&["chunked", "chunked"]), Err(HeadError::RepeatedChunked));
        assert_eq!(te(&["gzip, chunked"]), Err(HeadError::UnsupportedCoding));
        assert_eq!(te(&["identity"]), Err(HeadError::UnsupportedCoding));
    }
}
