//! The bearer token of a request, for the token policies (`jwt`, `oauth2_introspection`):
//! where it is found (`Authorization: Bearer`, RFC 6750, by default, or another header, a
//! query parameter or a cookie, looked at in that order), how it is removed before the
//! request goes upstream (`hide_credentials`), and how its absence or refusal is answered
//! (401 with a `Bearer` challenge, `error="invalid_token"` for a refused one).

use gatehouse_core::{CREDENTIALS_MISSING, Flow, RequestCtx};
use http::{HeaderName, HeaderValue, header};
use std::borrow::Cow;

/// The default `header` of the token policies.
pub fn default_header() -> String {
    "authorization".into()
}

/// The default `realm` of the challenges.
pub fn default_realm() -> String {
    "gatehouse".into()
}

/// The default `cache_size` of the token policies' caches.
pub fn default_cache_size() -> usize {
    10_000
}

/// The places a policy looks for its token, and its challenge.
#[derive(Debug, Clone)]
pub struct Bearer {
    header: HeaderName,
    query: Option<String>,
    cookie: Option<String>,
    challenge: HeaderValue,
}

impl Bearer {
    /// Looks in `header` (with the `Bearer` scheme when it is `authorization`, the scheme
    /// optional otherwise), then the query parameter and the cookie when named; challenges
    /// with `realm`. The error names the bad setting and says why.
    pub fn new(
        header: &str,
        query: Option<String>,
        cookie: Option<String>,
        realm: &str,
    ) -> Result<Self, (&'static str, String)> {
        let challenge =
            HeaderValue::from_str(&format!("Bearer realm=\"{}\"", realm.replace('"', "")))
                .map_err(|_| ("realm", "must be printable text".to_string()))?;
        let header = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| ("header", format!("{header:?} is not a header name")))?;
        if query.as_deref().is_some_and(str::is_empty) {
            return Err(("query", "must not be empty".into()));
        }
        if cookie.as_deref().is_some_and(str::is_empty) {
            return Err(("cookie", "must not be empty".into()));
        }
        Ok(Self {
            header,
            query,
            cookie,
            challenge,
        })
    }

    /// The 401 for a missing token (`reason` `credentials_missing`: the bare challenge)
    /// or a refused one (RFC 6750 section 3: `invalid_token` and `detail`, which the
    /// problem's detail repeats).
    pub fn refuse(&self, ctx: &RequestCtx, reason: &'static str, detail: &str) -> Flow {
        let challenge = if reason == CREDENTIALS_MISSING {
            self.challenge.clone()
        } else {
            let text = format!(
                "{}, error=\"invalid_token\", error_description=\"{detail}\"",
                self.challenge.to_str().unwrap_or("Bearer")
            );
            HeaderValue::from_str(&text).unwrap_or_else(|_| self.challenge.clone())
        };
        Flow::respond(
            reason,
            crate::refusal::unauthorized(&ctx.request_id, detail, challenge),
        )
    }

    /// The token the request carries, if any.
    pub fn find<'r>(&self, req: &'r http::request::Parts) -> Option<Cow<'r, str>> {
        // from_utf8 rather than to_str: the same check for a token (visible ASCII is
        // UTF-8), several times faster over a kilobyte of JWT.
        if let Some(v) = req
            .headers
            .get(&self.header)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        {
            let v = v.trim();
            let token = match v.split_once(' ') {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => Some(rest.trim()),
                _ if self.header == header::AUTHORIZATION => None,
                _ => Some(v),
            };
            if let Some(t) = token.filter(|t| !t.is_empty()) {
                return Some(Cow::Borrowed(t));
            }
        }
        if let (Some(name), Some(q)) = (self.query.as_deref(), req.uri.query())
            && let Some(v) = crate::query_param::value(q, name)
            && let Ok(s) = String::from_utf8(v)
            && !s.is_empty()
        {
            return Some(Cow::Owned(s));
        }
        let name = self.cookie.as_deref()?;
        req.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                (k == name && !v.is_empty()).then_some(Cow::Borrowed(v.trim_matches('"')))
            })
    }

    /// Removes the token from every place it may be.
    pub fn hide(&self, req: &mut http::request::Parts) {
        req.headers.remove(&self.header);
        if let Some(name) = self.query.as_deref() {
            crate::query_param::remove(req, name);
        }
        let Some(name) = self.cookie.as_deref() else {
            return;
        };
        let kept: Vec<String> = req
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .map(str::trim)
            .filter(|c| !c.is_empty() && c.split('=').next() != Some(name))
            .map(str::to_string)
            .collect();
        req.headers.remove(header::COOKIE);
        if let Ok(v) = HeaderValue::from_str(&kept.join("; "))
            && !kept.is_empty()
        {
            req.headers.insert(header::COOKIE, v);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn tokens_are_found_in_order_and_hidden_everywhere() {
        let b = Bearer::new(
            "authorization",
            Some("access_token".into()),
            Some("tok".into()),
            "api",
        )
        .unwrap();
        let r = parts("/", &[("authorization", "bearer  abc ")]);
        assert_eq!(b.find(&r).as_deref(), Some("abc"));
        let r = parts("/", &[("authorization", "Basic abc")]);
        assert_eq!(b.find(&r), None, "another scheme is not a bearer token");
        let mut r = parts("/p?x=1&access_token=q", &[("cookie", "a=1; tok=c; b=2")]);
        assert_eq!(b.find(&r).as_deref(), Some("q"));
        b.hide(&mut r);
        assert_eq!(r.uri, "/p?x=1");
        assert_eq!(r.headers["cookie"], "a=1; b=2");
        let r = parts("/", &[("cookie", "tok=c")]);
        assert_eq!(b.find(&r).as_deref(), Some("c"));

        let other = Bearer::new("x-token", None, None, "api").unwrap();
        assert_eq!(
            other.find(&parts("/", &[("x-token", "t")])).as_deref(),
            Some("t")
        );
        assert_eq!(
            other
                .find(&parts("/", &[("x-token", "Bearer t")]))
                .as_deref(),
            Some("t")
        );
        assert!(Bearer::new("bad name", None, None, "api").is_err());
        assert!(Bearer::new("authorization", Some(String::new()), None, "api").is_err());
    }
}
