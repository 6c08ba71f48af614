//! `type: headers`: set, add and remove headers on the request and the response.

use gatehouse_config::{HeaderEdits, HeadersPolicy as Config};
use gatehouse_core::{Flow, Policy, RequestCtx};
use http::{HeaderMap, HeaderName, HeaderValue};

#[derive(Debug, Default)]
struct Edits {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl Edits {
    fn build(e: &HeaderEdits) -> Result<Self, String> {
        let pair = |(k, v): (&String, &String)| -> Result<(HeaderName, HeaderValue), String> {
            Ok((
                HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("invalid header name {k:?}"))?,
                HeaderValue::from_str(v).map_err(|_| format!("invalid header value {v:?}"))?,
            ))
        };
        Ok(Self {
            remove: e
                .remove
                .iter()
                .map(|k| {
                    HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| format!("invalid header name {k:?}"))
                })
                .collect::<Result<_, _>>()?,
            set: e.set.iter().map(pair).collect::<Result<_, _>>()?,
            add: e.add.iter().map(pair).collect::<Result<_, _>>()?,
        })
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
    pub fn build(name: &str, c: &Config) -> Result<Self, String> {
        Ok(Self {
            name: name.to_string(),
            request: Edits::build(&c.request)?,
            response: Edits::build(&c.response)?,
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
    use std::collections::BTreeMap;

    #[test]
    fn edits_apply_in_order() {
        let cfg = Config {
            request: HeaderEdits {
                set: BTreeMap::from([("x-gw".into(), "gatehouse".into())]),
                add: BTreeMap::from([("x-multi".into(), "b".into())]),
                remove: vec!["x-internal".into()],
            },
            response: HeaderEdits {
                remove: vec!["server".into()],
                ..Default::default()
            },
        };
        let p = HeadersPolicy::build("h", &cfg).unwrap();
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
