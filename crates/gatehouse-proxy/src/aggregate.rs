//! The `aggregate` action: GET calls to several upstreams in parallel, each through the
//! same machinery as a proxied request (balancer, pool, retries, breaker, TLS, trace
//! spans), their JSON bodies merged into one answer. A failed optional call leaves a
//! gap the headers report; a failed required call, or every call failing, fails the
//! answer (502, 504 when it timed out).

use crate::attempts::{self, Head, Payload};
use crate::finish::Finish;
use crate::outbound;
use crate::route::CompiledRoute;
use bytes::Bytes;
use gatehouse_config::{Aggregate, Merge};
use gatehouse_core::{LocalResponse, Problem, problem_response};
use gatehouse_upstream::{PickInput, UpstreamState};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// An aggregation, compiled.
#[derive(Debug)]
pub struct AggregatePlan {
    merge: Merge,
    timeout: Duration,
    forward: Vec<HeaderName>,
    max_body: usize,
    calls: Vec<Call>,
}

/// One call, compiled.
#[derive(Debug)]
struct Call {
    name: Arc<str>,
    upstream: Arc<UpstreamState>,
    path: String,
    timeout: Duration,
    required: bool,
    headers: Vec<(HeaderName, String)>,
}

/// Why a call failed.
#[derive(Debug)]
enum Failure {
    /// It took longer than its timeout, or the upstream's own timed out.
    Timeout,
    /// Anything else: refused, 5xx, not JSON, too large.
    Failed,
}

/// What one call brought back.
struct Reply {
    result: Result<Value, Failure>,
    spans: Vec<gatehouse_core::trace::SpanRecord>,
}

const X_COMPLETE: HeaderName = HeaderName::from_static("x-aggregate-complete");
const X_FAILED: HeaderName = HeaderName::from_static("x-aggregate-failed");

impl AggregatePlan {
    /// The plan of `a`, whose upstreams `up` finds; `None` when one is missing
    /// (validation said so).
    pub fn new(a: &Aggregate, up: impl Fn(&str) -> Option<Arc<UpstreamState>>) -> Option<Self> {
        let calls = a
            .calls
            .iter()
            .map(|c| {
                Some(Call {
                    name: c.name.as_str().into(),
                    upstream: up(&c.upstream)?,
                    path: c.path.clone(),
                    timeout: c.timeout.map_or(a.timeout.get(), |t| t.get()),
                    required: c.required,
                    headers: c
                        .headers
                        .iter()
                        .filter_map(|(k, v)| {
                            Some((HeaderName::from_bytes(k.as_bytes()).ok()?, v.clone()))
                        })
                        .collect(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            merge: a.merge,
            timeout: a.timeout.get(),
            forward: a
                .forward_headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            max_body: usize::try_from(a.max_body_size.0).unwrap_or(usize::MAX),
            calls,
        })
    }

    /// The upstreams called.
    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<UpstreamState>> {
        self.calls.iter().map(|c| &c.upstream)
    }

    /// Makes the calls for the request `parts` and answers with their merged bodies.
    pub async fn run(
        &self,
        route: &CompiledRoute,
        parts: &http::request::Parts,
        finish: &mut Finish,
    ) -> LocalResponse {
        // Heads are made here, from the request's context; the calls then own all
        // they need (the context is not shared across the joined futures).
        let prepared: Vec<_> = self
            .calls
            .iter()
            .map(|c| self.prepare(c, route, parts, finish))
            .collect();
        let replies = futures_util::future::join_all(self.calls.iter().zip(prepared).map(
            |(c, p)| async move {
                let within = c.timeout.min(self.timeout);
                let Ok(p) = p else {
                    return Reply {
                        result: Err(Failure::Failed),
                        spans: Vec::new(),
                    };
                };
                match tokio::time::timeout(within, self.send(p)).await {
                    Ok(r) => r,
                    Err(_) => Reply {
                        result: Err(Failure::Timeout),
                        spans: Vec::new(),
                    },
                }
            },
        ))
        .await;
        let mut body = Map::new();
        let mut failed: Vec<(&Call, Failure)> = Vec::new();
        for (c, reply) in self.calls.iter().zip(replies) {
            if let Some(spans) = finish.ctx.spans.as_mut() {
                spans.extend(reply.spans);
            }
            match (reply.result, self.merge) {
                (Ok(v), Merge::Keys) => {
                    body.insert(c.name.to_string(), v);
                }
                (Ok(Value::Object(m)), Merge::Flat) => body.extend(m),
                // Only objects merge flat: another body is a failed call.
                (Ok(_), Merge::Flat) => failed.push((c, Failure::Failed)),
                (Err(f), merge) => {
                    if merge == Merge::Keys {
                        body.insert(c.name.to_string(), Value::Null);
                    }
                    failed.push((c, f));
                }
            }
        }
        let request_id = &finish.ctx.request_id;
        if let Some((c, f)) = failed.iter().find(|(c, _)| c.required) {
            let p = Problem::new(
                status_of(f),
                format!("the required call {:?} failed", &*c.name),
            )
            .with_member("call", json!(&*c.name));
            return problem_response(&p, request_id);
        }
        if failed.len() == self.calls.len() {
            let all_timed_out = failed.iter().all(|(_, f)| matches!(f, Failure::Timeout));
            let status = if all_timed_out {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            };
            let names: Vec<&str> = failed.iter().map(|(c, _)| &*c.name).collect();
            let p = Problem::new(status, format!("every call failed: {}", names.join(", ")))
                .with_member("calls", json!(names));
            return problem_response(&p, request_id);
        }
        let mut r = http::Response::new(Bytes::from(
            serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
        ));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let complete = if failed.is_empty() { "true" } else { "false" };
        h.insert(X_COMPLETE, HeaderValue::from_static(complete));
        if !failed.is_empty() {
            let names: Vec<&str> = failed.iter().map(|(c, _)| &*c.name).collect();
            if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
                h.insert(X_FAILED, v);
            }
        }
        r
    }

    /// The head of one call, as a proxied request's would be rewritten for its upstream.
    fn prepare(
        &self,
        c: &Call,
        route: &CompiledRoute,
        client: &http::request::Parts,
        finish: &Finish,
    ) -> Result<Prepared, Failure> {
        let up = &*c.upstream;
        let ctx = &finish.ctx;
        let fill = |t: &str| fill(t, &ctx.params, client.uri.query());
        let uri = fill(&c.path)
            .parse::<http::Uri>()
            .map_err(|_| Failure::Failed)?;
        let mut headers = HeaderMap::new();
        for name in &self.forward {
            for v in client.headers.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        if let Some(host) = client.headers.get(header::HOST) {
            headers.insert(header::HOST, host.clone());
        }
        for (k, v) in &c.headers {
            if let Ok(v) = HeaderValue::from_str(&fill(v)) {
                headers.insert(k.clone(), v);
            }
        }
        let mut req = http::Request::new(());
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        let (mut parts, ()) = req.into_parts();
        let trusted = &finish.snapshot.trusted_proxies;
        outbound::rewrite_request(
            &mut parts,
            route,
            up,
            ctx,
            trusted,
            &finish.request_id_value,
        )
        .map_err(|_| Failure::Failed)?;
        Ok(Prepared {
            upstream: Arc::clone(&c.upstream),
            tls: finish.snapshot.upstream_tls.get(&*up.name).cloned(),
            client_ip: ctx.client_ip,
            hash_key: up.hash_key(&parts, ctx.client_ip),
            head: Head {
                method: http::Method::GET,
                uri: parts.uri,
                version: parts.version,
                headers: parts.headers,
                trace: ctx.trace,
                record: ctx.spans.is_some(),
            },
        })
    }

    /// One call, through the upstream's balancer, pool, retries and breaker.
    async fn send(&self, p: Prepared) -> Reply {
        let failed = |f| Reply {
            result: Err(f),
            spans: Vec::new(),
        };
        let up = &*p.upstream;
        let Some(_slot) = up.begin_request() else {
            return failed(Failure::Failed);
        };
        let Ok(admission) = attempts::admit(up) else {
            return failed(Failure::Failed);
        };
        let input = PickInput {
            client_ip: p.client_ip,
            hash_key: p.hash_key,
            sticky: None,
        };
        let outcome = attempts::run(
            up,
            p.tls.as_deref(),
            &input,
            p.head,
            Payload::Replay(Bytes::new()),
            admission,
        )
        .await;
        let spans = outcome.tried.spans;
        // Held until the body is read: the target counts the call as in flight.
        let _inflight = outcome.tried.inflight;
        let result = match outcome.result {
            Ok(served) => {
                served.target.record_latency(served.forwarded.first_byte);
                json_body(served.forwarded.response, self.max_body).await
            }
            Err(e) if e.problem().status == StatusCode::GATEWAY_TIMEOUT => Err(Failure::Timeout),
            Err(_) => Err(Failure::Failed),
        };
        Reply { result, spans }
    }
}

/// A call ready to send: it owns everything it needs.
struct Prepared {
    upstream: Arc<UpstreamState>,
    tls: Option<Arc<crate::upstream_tls::ClientTls>>,
    client_ip: std::net::IpAddr,
    hash_key: Option<u64>,
    head: Head,
}

/// A 2xx JSON body, read whole up to `max` bytes.
async fn json_body(
    resp: http::Response<crate::body::ProxyBody>,
    max: usize,
) -> Result<Value, Failure> {
    use http_body_util::BodyExt;
    let (parts, body) = resp.into_parts();
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| v == "application/json" || v.ends_with("+json"));
    if !parts.status.is_success() || !json {
        return Err(Failure::Failed);
    }
    let bytes = http_body_util::Limited::new(body, max)
        .collect()
        .await
        .map_err(|_| Failure::Failed)?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|_| Failure::Failed)
}

fn status_of(f: &Failure) -> StatusCode {
    match f {
        Failure::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Failure::Failed => StatusCode::BAD_GATEWAY,
    }
}

/// `template` with `{param}` (route parameters) and `{query.NAME}` (the client's query
/// parameters) filled, percent-encoded; an absent value is empty.
fn fill(template: &str, params: &[(String, String)], query: Option<&str>) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = &after[..close];
        let value = match name.strip_prefix("query.") {
            Some(q) => query
                .and_then(|all| gatehouse_policies::query_param::value(all, q))
                .map(|v| String::from_utf8_lossy(&v).into_owned()),
            None => params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone()),
        };
        if let Some(v) = value {
            out.extend(percent_encoding::utf8_percent_encode(&v, SET));
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_take_params_and_query_values_encoded() {
        let params = vec![("user".to_string(), "a b/c".to_string())];
        assert_eq!(
            fill(
                "/users/{user}?q={query.q}&x={query.none}",
                &params,
                Some("q=1%262&z=3")
            ),
            "/users/a%20b%2Fc?q=1%262&x="
        );
        assert_eq!(fill("/plain/{", &params, None), "/plain/{");
    }
}
