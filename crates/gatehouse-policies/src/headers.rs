//! `type: headers`: set, add and remove headers on the request and the response.

use crate::{Build, BuildResult, Kind};
use gatehouse_config::validate::Issue;
use gatehouse_core::{Flow, Policy, RequestCtx};
use http::{HeaderMap, HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `type: headers`.
pub const KIND: Kind = Kind {
    name: "headers",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    Ok(Arc::new(HeadersPolicy::build(b, &c)?))
}

/// The settings of `type: headers`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HeadersPolicy")]
pub struct Config {
    /// Edits applied to the request before it goes upstream.
    #[serde(default)]
    pub request: HeaderEdits,
    /// Edits applied to the response before it goes to the client.
    #[serde(default)]
    pub response: HeaderEdits,
}

/// A set of header edits, applied in the order remove, set, add.
#[derive(Debug, Clone, Deserialize, PartialEq, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderEdits {
    /// Replace (or create) these headers.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append these values, keeping existing ones.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Default)]
struct Edits {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl Edits {
    /// Compiles `e` (at `field` of policy `b`), reporting every bad name or value.
    fn build(b: &Build<'_>, field: &str, e: &HeaderEdits, issues: &mut Vec<Issue>) -> Self {
        let mut name = |path: String, k: &str| {
            HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| {
                    issues.push(b.issue(Some(&path), format!("invalid header name {k:?}")))
                })
                .ok()
        };
        let remove = (e.remove.iter().enumerate())
            .filter_map(|(i, k)| name(format!("{field}.remove[{i}]"), k))
            .collect();
        let mut pairs =
            |op: &str, map: &BTreeMap<String, String>| -> Vec<(HeaderName, HeaderValue)> {
                map.iter()
                    .filter_map(|(k, v)| {
                        let path = format!("{field}.{op}.{k}");
                        let n = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                            issues.push(b.issue(Some(&path), format!("invalid header name {k:?}")))
                        });
                        let v = HeaderValue::from_str(v).map_err(|_| {
                            issues.push(b.issue(Some(&path), format!("invalid header value {v:?}")))
                        });
                        Some((n.ok()?, v.ok()?))
                    })
                    .collect()
            };
        let set = pairs("set", &e.set);
        let add = pairs("add", &e.add);
        Self { remove, set, add }
    }

    /// Remove first, then set, then add: so `remove: [x]` plus `add: {x: 1}` yields exactly `x: 1`.
    fn apply(&self, h: &mut HeaderMap) {
        for k in &self.remove {
            h.remove(k);
        }
        for (k, v) in &self.set {
            h.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.add {
            h.append(k.clone(), v.clone());
        }
    }
}

/// The compiled headers policy.
#[derive(Debug)]
pub struct HeadersPolicy {
    name: String,
    request: Edits,
    response: Edits,
}

impl HeadersPolicy {
    /// Compiles the policy.
    pub fn build(b: &Build<'_>, c: &Config) -> Result<Self, Vec<Issue>> {
        let mut issues = Vec::new();
        let request = Edits::build(b, "request", &c.request, &mut issues);
        let response = Edits::build(b, "response", &c.response, &mut issues);
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Self {
            name: b.name.to_string(),
            request,
            response,
        })
    }
}

impl Policy for HeadersPolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_request(&self, req: &mut http::request::Parts, _ctx: &mut RequestCtx) -> Flow {
        self.request.apply(&mut req.headers);
        Flow::Continue
    }

    fn on_response(&self, resp: &mut http::response::Parts, _ctx: &mut RequestCtx) {
        self.response.apply(&mut resp.headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_apply_in_order() {
        let yaml = r#"
policies:
  h:
    type: headers
    request:
      set: { x-gw: gatehouse }
      add: { x-multi: b }
      remove: [x-internal]
    response:
      remove: [server]
"#;
        let p = crate::kind::tests::build_one(yaml, "h").unwrap();
        let (mut parts, ()) = http::Request::builder()
            .header("x-internal", "secret")
            .header("x-gw", "old")
            .header("x-multi", "a")
            .body(())
            .unwrap()
            .into_parts();
        let mut ctx = RequestCtx::detached("r", "127.0.0.1:1".parse().unwrap());
        assert!(matches!(p.on_request(&mut parts, &mut ctx), Flow::Continue));
        assert!(parts.headers.get("x-internal").is_none());
        assert_eq!(parts.headers["x-gw"], "gatehouse");
        assert_eq!(parts.headers.get_all("x-multi").iter().count(), 2);
        let (mut rp, ()) = http::Response::builder()
            .header("server", "nginx")
            .body(())
            .unwrap()
            .into_parts();
        p.on_response(&mut rp, &mut ctx);
        assert!(rp.headers.get("server").is_none());
    }
}
