//! RFC 9111 as a shared cache reads a response: its cache directives (from
//! `Surrogate-Control` or `CDN-Cache-Control`, RFC 9213, when present, else
//! `Cache-Control`), whether it may be stored, and for how long it is fresh.

use http::{HeaderMap, HeaderValue, header};
use std::time::{Duration, SystemTime};

/// The directives of one cache-control field that a shared cache acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// `no-store`.
    pub no_store: bool,
    /// `private` (with or without field names: a shared cache stores none of it).
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `no-cache` (stored, but revalidated before every use).
    pub no_cache: bool,
    /// `must-revalidate` / `proxy-revalidate`.
    pub must_revalidate: bool,
    /// `s-maxage`.
    pub s_maxage: Option<u64>,
    /// `max-age`.
    pub max_age: Option<u64>,
    /// `stale-while-revalidate` (RFC 5861).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error` (RFC 5861).
    pub stale_if_error: Option<u64>,
}

impl Directives {
    /// Parses every value of field `name` in `headers` (directives are
    /// case-insensitive; a malformed number voids only its directive).
    pub fn of(headers: &HeaderMap, name: &http::HeaderName) -> Option<Self> {
        let mut found = false;
        let mut d = Self::default();
        for v in headers.get_all(name) {
            found = true;
            let Ok(text) = v.to_str() else { continue };
            for item in text.split(',') {
                let (key, value) = match item.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
                    None => (item.trim(), None),
                };
                let secs = || value.and_then(|v| v.parse::<u64>().ok());
                match key.to_ascii_lowercase().as_str() {
                    "no-store" => d.no_store = true,
                    "private" => d.private = true,
                    "public" => d.public = true,
                    "no-cache" => d.no_cache = true,
                    "must-revalidate" | "proxy-revalidate" => d.must_revalidate = true,
                    "s-maxage" => d.s_maxage = secs().or(d.s_maxage),
                    "max-age" => d.max_age = secs().or(d.max_age),
                    "stale-while-revalidate" => {
                        d.stale_while_revalidate = secs().or(d.stale_while_revalidate);
                    }
                    "stale-if-error" => d.stale_if_error = secs().or(d.stale_if_error),
                    _ => {}
                }
            }
        }
        found.then_some(d)
    }

    /// The directives this cache obeys: `Surrogate-Control`, else `CDN-Cache-Control`
    /// (RFC 9213: a targeted field replaces `Cache-Control`), else `Cache-Control`.
    pub fn for_shared_cache(headers: &HeaderMap) -> Self {
        const SURROGATE: http::HeaderName = http::HeaderName::from_static("surrogate-control");
        const CDN: http::HeaderName = http::HeaderName::from_static("cdn-cache-control");
        Self::of(headers, &SURROGATE)
            .or_else(|| Self::of(headers, &CDN))
            .or_else(|| Self::of(headers, &header::CACHE_CONTROL))
            .unwrap_or_default()
    }

    /// The explicit freshness lifetime: `s-maxage`, `max-age`, or `Expires` - `Date`.
    pub fn explicit_lifetime(&self, headers: &HeaderMap) -> Option<Duration> {
        if let Some(s) = self.s_maxage.or(self.max_age) {
            return Some(Duration::from_secs(s));
        }
        let expires = headers.get(header::EXPIRES)?;
        // An invalid Expires (`0`, garbage) means already expired (RFC 9111 5.3).
        let Some(expires) = http_date(expires) else {
            return Some(Duration::ZERO);
        };
        let date = headers
            .get(header::DATE)
            .and_then(http_date)
            .unwrap_or_else(SystemTime::now);
        Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
    }
}

/// An HTTP-date.
pub fn http_date(v: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(v.to_str().ok()?).ok()
}

/// The age a response already had when it arrived (RFC 9111 4.2.3): its `Age`, or how
/// far its `Date` is behind now, whichever is larger.
pub fn initial_age(headers: &HeaderMap, now: SystemTime) -> Duration {
    let age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let apparent = headers
        .get(header::DATE)
        .and_then(http_date)
        .and_then(|d| now.duration_since(d).ok())
        .unwrap_or(Duration::ZERO);
    age.max(apparent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn directives_parse_case_and_quotes() {
        let h = headers(&[
            ("cache-control", "Public, MAX-AGE=\"60\", s-maxage=x"),
            ("cache-control", "stale-if-error=300, must-revalidate"),
        ]);
        let d = Directives::for_shared_cache(&h);
        assert!(d.public && d.must_revalidate && !d.no_store);
        assert_eq!(
            (d.max_age, d.s_maxage, d.stale_if_error),
            (Some(60), None, Some(300))
        );
    }

    #[test]
    fn targeted_fields_replace_cache_control() {
        let h = headers(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=30"),
        ]);
        let d = Directives::for_shared_cache(&h);
        assert!(!d.no_store);
        assert_eq!(d.max_age, Some(30));
        let h = headers(&[
            ("cdn-cache-control", "max-age=30"),
            ("surrogate-control", "max-age=5"),
        ]);
        assert_eq!(Directives::for_shared_cache(&h).max_age, Some(5));
    }

    #[test]
    fn lifetimes_prefer_s_maxage_then_max_age_then_expires() {
        let h = headers(&[("cache-control", "max-age=10, s-maxage=20")]);
        let d = Directives::for_shared_cache(&h);
        assert_eq!(d.explicit_lifetime(&h), Some(Duration::from_secs(20)));
        let h = headers(&[
            ("date", "Tue, 01 Dec 2026 00:00:00 GMT"),
            ("expires", "Tue, 01 Dec 2026 00:01:40 GMT"),
        ]);
        let d = Directives::for_shared_cache(&h);
        assert_eq!(d.explicit_lifetime(&h), Some(Duration::from_secs(100)));
        let h = headers(&[("expires", "0")]);
        assert_eq!(
            Directives::default().explicit_lifetime(&h),
            Some(Duration::ZERO)
        );
        assert_eq!(
            Directives::default().explicit_lifetime(&HeaderMap::new()),
            None
        );
    }

    #[test]
    fn initial_age_takes_the_larger_of_age_and_date() {
        let now = httpdate::parse_http_date("Tue, 01 Dec 2026 00:01:00 GMT").unwrap();
        let h = headers(&[("age", "5"), ("date", "Tue, 01 Dec 2026 00:00:50 GMT")]);
        assert_eq!(initial_age(&h, now), Duration::from_secs(10));
        let h = headers(&[("age", "30"), ("date", "Tue, 01 Dec 2026 00:00:50 GMT")]);
        assert_eq!(initial_age(&h, now), Duration::from_secs(30));
    }
}
