//! `type: cors`: Cross-Origin Resource Sharing (Fetch standard). Preflights from an
//! allowed origin are answered by the gateway itself (they never reach the upstream or
//! the authentication after this policy); every response to an allowed origin, local
//! errors of later policies included, gets the CORS headers. Origins not allowed get no
//! CORS header, so the browser withholds the response from the page.

use crate::{Build, BuildResult, Kind};
use gatehouse_core::{Flow, Policy, RequestCtx};
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderValue, Method, Response, StatusCode};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;

/// `type: cors`.
pub const KIND: Kind = Kind {
    name: "cors",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// The settings of `type: cors`.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CorsPolicy")]
pub struct Config {
    /// Origins allowed (`https://app.example`), or `"*"` for any.
    pub allow_origins: Vec<String>,
    /// Methods a preflight allows; default GET, HEAD, POST.
    #[serde(default = "default_methods")]
    pub allow_methods: Vec<String>,
    /// Request headers a preflight allows; default: the ones the preflight asks for.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers the page may read besides the CORS-safelisted ones.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache a preflight's answer; default 5s (the Fetch default).
    #[serde(default)]
    pub max_age: Option<gatehouse_config::Duration>,
    /// Allow cookies and credentials; default false. Then `"*"` answers with the
    /// request's own origin, as browsers require.
    #[serde(default)]
    pub allow_credentials: bool,
}

fn default_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into(), "POST".into()]
}

fn list(items: &[String]) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    HeaderValue::from_str(&items.join(", ")).ok()
}

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    let mut issues = Vec::new();
    if c.allow_origins.is_empty() {
        issues.push(b.issue(
            Some("allow_origins"),
            "must list at least one origin or \"*\"",
        ));
    }
    for (i, o) in c.allow_origins.iter().enumerate() {
        let ok = o == "*"
            || ((o.starts_with("https://") || o.starts_with("http://"))
                && !o.ends_with('/')
                && HeaderValue::from_str(o).is_ok());
        if !ok {
            issues.push(b.issue(
                Some(&format!("allow_origins[{i}]")),
                format!("{o:?} is not an origin (scheme://host[:port], no path) or \"*\""),
            ));
        }
    }
    for (i, m) in c.allow_methods.iter().enumerate() {
        if Method::from_bytes(m.as_bytes()).is_err() {
            issues.push(b.issue(
                Some(&format!("allow_methods[{i}]")),
                format!("{m:?} is not a method"),
            ));
        }
    }
    for (field, names) in [
        ("allow_headers", &c.allow_headers),
        ("expose_headers", &c.expose_headers),
    ] {
        for (i, h) in names.iter().enumerate() {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                issues.push(b.issue(
                    Some(&format!("{field}[{i}]")),
                    format!("{h:?} is not a header name"),
                ));
            }
        }
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let max_age = c.max_age.map_or(5, |d| d.get().as_secs());
    Ok(Arc::new(Cors {
        name: b.name.to_string(),
        any: c.allow_origins.iter().any(|o| o == "*"),
        origins: c
            .allow_origins
            .iter()
            .filter(|o| *o != "*")
            .map(|o| o.to_ascii_lowercase())
            .collect(),
        methods: list(&c.allow_methods),
        headers: list(&c.allow_headers),
        expose: list(&c.expose_headers),
        max_age: HeaderValue::from(max_age),
        credentials: c.allow_credentials,
    }))
}

/// The compiled cors policy.
#[derive(Debug)]
pub struct Cors {
    name: String,
    any: bool,
    origins: HashSet<String>,
    methods: Option<HeaderValue>,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
    credentials: bool,
}

/// The allowed origin of this request, kept for the response phase.
#[derive(Debug, Clone)]
struct Allowed(HeaderValue);

impl Cors {
    fn allowed(&self, origin: &HeaderValue) -> bool {
        self.any
            || origin
                .to_str()
                .is_ok_and(|o| self.origins.contains(&o.to_ascii_lowercase()))
    }

    /// The `Access-Control-Allow-Origin` value: `*` only when any origin may read and
    /// no credentials are involved; else the origin itself.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    fn common(&self, headers: &mut http::HeaderMap, origin: &HeaderValue) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin(origin));
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        // The answer depends on the origin: caches must keep one per origin.
        if !self.any || self.credentials {
            headers.append(VARY, HeaderValue::from_static("Origin"));
        }
    }
}

impl Policy for Cors {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        let Some(origin) = req.headers.get(ORIGIN).cloned() else {
            return Flow::Continue;
        };
        let preflight = req.method == Method::OPTIONS
            && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD);
        let allowed = self.allowed(&origin);
        if !preflight {
            if allowed {
                ctx.extensions.insert(Allowed(origin));
            }
            return Flow::Continue;
        }
        // A preflight is the gateway's to answer: it carries no credentials, so it must
        // not reach authentication, and the upstream has nothing to add.
        let mut r = Response::new(bytes::Bytes::new());
        *r.status_mut() = StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        if allowed {
            self.common(h, &origin);
            if let Some(m) = &self.methods {
                h.insert(ACCESS_CONTROL_ALLOW_METHODS, m.clone());
            }
            match (
                &self.headers,
                req.headers.get(ACCESS_CONTROL_REQUEST_HEADERS),
            ) {
                (Some(list), _) => {
                    h.insert(ACCESS_CONTROL_ALLOW_HEADERS, list.clone());
                }
                (None, Some(asked)) => {
                    h.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
                }
                (None, None) => {}
            }
            h.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
            h.append(
                VARY,
                HeaderValue::from_static("Access-Control-Request-Method"),
            );
            h.append(
                VARY,
                HeaderValue::from_static("Access-Control-Request-Headers"),
            );
        }
        Flow::respond("cors_preflight", r)
    }

    fn on_response(&self, resp: &mut http::response::Parts, ctx: &mut RequestCtx) {
        let Some(Allowed(origin)) = ctx.extensions.get::<Allowed>().cloned() else {
            return;
        };
        self.common(&mut resp.headers, &origin);
        if let Some(e) = &self.expose {
            resp.headers
                .insert(ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
    }
}
