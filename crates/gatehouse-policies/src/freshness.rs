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
    /// Parses every value of field `name` in `headers` with the `Cache-Control` grammar
    /// (RFC 9111 5.2: `token [ "=" ( token / quoted-string ) ]`, names case-insensitive).
    /// A directive that breaks the grammar (`max-age =100`, `max-age= 100`) or whose
    /// number is malformed is ignored, not guessed at: a cache that reads more freshness
    /// than the origin meant serves stale content.
    pub fn of(headers: &HeaderMap, name: &http::HeaderName) -> Option<Self> {
        let mut found = false;
        let mut d = Self::default();
        for v in headers.get_all(name) {
            found = true;
            let Ok(text) = v.to_str() else { continue };
            for (key, value) in directives(text) {
                d.apply(&key.to_ascii_lowercase(), value.as_deref().map(Value::Text));
            }
        }
        found.then_some(d)
    }

    /// Parses `CDN-Cache-Control` (RFC 9213): a Structured Fields Dictionary. A value
    /// that does not parse voids the whole field (the cache then reads the next one);
    /// a member of the wrong type (`max-age="60"`) is ignored.
    fn of_structured(headers: &HeaderMap, name: &http::HeaderName) -> Option<Self> {
        let mut joined = Vec::new();
        for v in headers.get_all(name) {
            if !joined.is_empty() {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(v.as_bytes());
        }
        if joined.is_empty() {
            return None;
        }
        let dict = sfv::Parser::new(&joined).parse::<sfv::Dictionary>().ok()?;
        let mut d = Self::default();
        for (key, member) in &dict {
            let sfv::ListEntry::Item(item) = member else {
                continue;
            };
            let value = if let Some(b) = item.bare_item.as_boolean() {
                if !b {
                    continue;
                }
                None
            } else if let Some(n) = item.bare_item.as_integer() {
                Some(Value::Number(i64::from(n)))
            } else {
                Some(Value::Other)
            };
            d.apply(key.as_str(), value);
        }
        Some(d)
    }

    /// Records directive `key` (lowercase) with its value, if it is one this cache uses.
    fn apply(&mut self, key: &str, value: Option<Value<'_>>) {
        let secs = || value.as_ref().and_then(Value::seconds);
        match key {
            "no-store" => self.no_store = true,
            "private" => self.private = true,
            "public" => self.public = true,
            "no-cache" => self.no_cache = true,
            "must-revalidate" | "proxy-revalidate" => self.must_revalidate = true,
            "s-maxage" => self.s_maxage = secs().or(self.s_maxage),
            "max-age" => self.max_age = secs().or(self.max_age),
            "stale-while-revalidate" => {
                self.stale_while_revalidate = secs().or(self.stale_while_revalidate);
            }
            "stale-if-error" => self.stale_if_error = secs().or(self.stale_if_error),
            _ => {}
        }
    }

    /// The directives this cache obeys: `Surrogate-Control`, else `CDN-Cache-Control`
    /// (RFC 9213: a targeted field replaces `Cache-Control`), else `Cache-Control`.
    pub fn for_shared_cache(headers: &HeaderMap) -> Self {
        const SURROGATE: http::HeaderName = http::HeaderName::from_static("surrogate-control");
        const CDN: http::HeaderName = http::HeaderName::from_static("cdn-cache-control");
        Self::of(headers, &SURROGATE)
            .or_else(|| Self::of_structured(headers, &CDN))
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

/// A directive's value as written.
enum Value<'a> {
    /// `Cache-Control` syntax: a token, or a quoted string without its quotes.
    Text(&'a str),
    /// A Structured Fields integer.
    Number(i64),
    /// Any other Structured Fields item.
    Other,
}

impl Value<'_> {
    /// The value as delta-seconds (RFC 9111 1.2.2: digits only).
    fn seconds(&self) -> Option<u64> {
        match self {
            Value::Text(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
                // More digits than a u64 holds: as long as the cache will ever keep it.
                Some(t.parse().unwrap_or(u64::MAX))
            }
            Value::Number(n) => u64::try_from(*n).ok(),
            _ => None,
        }
    }
}

/// The directives of a `Cache-Control`-syntax field value, in order: name and value
/// (unquoted). Items that break the grammar are skipped up to the next comma outside
/// quotes.
fn directives(text: &str) -> Vec<(&str, Option<std::borrow::Cow<'_, str>>)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    while i < bytes.len() {
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b',') {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && is_tchar(bytes[i]) {
            i += 1;
        }
        let key = &text[start..i];
        let mut value = None;
        let mut valid = !key.is_empty();
        if valid && i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            if i < bytes.len() && bytes[i] == b'"' {
                let mut unquoted = String::new();
                i += 1;
                let mut closed = false;
                while i < bytes.len() {
                    match bytes[i] {
                        b'"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        b'\\' if i + 1 < bytes.len() => {
                            unquoted.push(bytes[i + 1] as char);
                            i += 2;
                        }
                        b => {
                            unquoted.push(b as char);
                            i += 1;
                        }
                    }
                }
                valid = closed;
                value = Some(std::borrow::Cow::Owned(unquoted));
            } else {
                let vstart = i;
                while i < bytes.len() && is_tchar(bytes[i]) {
                    i += 1;
                }
                valid = i > vstart;
                value = Some(std::borrow::Cow::Borrowed(&text[vstart..i]));
            }
        }
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t') {
            i += 1;
        }
        if i < bytes.len() && bytes[i] != b',' {
            // Not a directive: skip it, quotes included, to the next separator.
            valid = false;
            let mut quoted = false;
            while i < bytes.len() && (quoted || bytes[i] != b',') {
                if bytes[i] == b'"' {
                    quoted = !quoted;
                }
                i += 1;
            }
        }
        if valid {
            out.push((key, value));
        }
    }
    out
}

/// An HTTP-date. Day and month names in another case (`THU`, `AUG`, `gMT`) are read
/// too, as RFC 9110 5.6.7 asks recipients to be robust; other deviations are not.
pub fn http_date(v: &HeaderValue) -> Option<SystemTime> {
    let text = v.to_str().ok()?;
    httpdate::parse_http_date(text).ok().or_else(|| {
        // Title case for every word of letters, GMT in capitals.
        let mut fixed = String::with_capacity(text.len());
        let mut word_start = true;
        for c in text.chars() {
            if c.is_ascii_alphabetic() {
                fixed.push(if word_start {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                });
                word_start = false;
            } else {
                fixed.push(c);
                word_start = true;
            }
        }
        let fixed = fixed.replace("Gmt", "GMT");
        (fixed != text)
            .then(|| httpdate::parse_http_date(&fixed).ok())
            .flatten()
    })
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
    fn directives_that_break_the_grammar_are_ignored() {
        let d = |v: &str| Directives::of(&headers(&[("cache-control", v)]), &header::CACHE_CONTROL);
        for v in [
            "max-age =100",
            "max-age= 100",
            "max-age='100'",
            "max-age=-1",
            "max-age=1a",
            "max-age",
        ] {
            assert_eq!(d(v).unwrap().max_age, None, "{v}");
        }
        // A quoted string is one value, commas and directive names inside it included.
        let x = d("ext=\"max-age=100, no-store\", max-age=1").unwrap();
        assert_eq!((x.max_age, x.no_store), (Some(1), false));
        let x = d("no-cache=\"a, b\", private=\"c\", s-maxage=9").unwrap();
        assert!(x.no_cache && x.private);
        assert_eq!(x.s_maxage, Some(9));
        // Past u64: as long as anything can be kept.
        assert_eq!(
            d("max-age=99999999999999999999999").unwrap().max_age,
            Some(u64::MAX)
        );
        // A broken item does not take its neighbours with it.
        let x = d("max-age =5, public, foo bar, no-store").unwrap();
        assert!(x.public && x.no_store);
    }

    #[test]
    fn cdn_cache_control_is_a_structured_field() {
        let d = |cdn: &str| {
            Directives::for_shared_cache(&headers(&[
                ("cache-control", "max-age=7"),
                ("cdn-cache-control", cdn),
            ]))
        };
        assert_eq!(d("foobar, max-age=60").max_age, Some(60));
        assert!(d("no-store").no_store && !d("no-store=?0").no_store);
        // Not a Dictionary: the field is ignored and Cache-Control rules.
        for bad in ["max-age=60, &&&", "MaX-aGe=60", "max-age =60"] {
            assert_eq!(d(bad).max_age, Some(7), "{bad}");
        }
        // A member of the wrong type is ignored; the field still replaces Cache-Control.
        assert_eq!(d("max-age=\"60\"").max_age, None);
    }

    #[test]
    fn http_dates_in_another_case_are_read_other_deviations_are_not() {
        let v = |s: &str| http_date(&HeaderValue::from_str(s).unwrap());
        let want = v("Thu, 18 Aug 2050 02:01:18 GMT").unwrap();
        for s in [
            "THU, 18 Aug 2050 02:01:18 GMT",
            "Thu, 18 AUG 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18 gMT",
        ] {
            assert_eq!(v(s), Some(want), "{s}");
        }
        for s in [
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 2:01:18 GMT",
            "0",
        ] {
            assert_eq!(v(s), None, "{s}");
        }
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
