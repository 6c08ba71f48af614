//! The extension platform through real sockets, on the in-process gateway: test-only
//! policy kinds prove each seam (a waiting policy, a body-buffering policy, a response
//! filter, a response-buffering policy, state kept by name across reloads).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use bytes::Bytes;
use gatehouse::embed::Embedded;
use gatehouse_core::{
    BodyFilter, BodyNeeds, FilterError, Fingerprint, Flow, Policy, Problem, RequestBodyNeed,
    RequestCtx, ResponseBodyNeed,
};
use gatehouse_policies::{Build, BuildResult, Kind as PolicyKind};
use http::{HeaderValue, StatusCode};
use http_body_util::Full;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

// ---- test-only policy kinds ------------------------------------------------------------

/// `type: slow_gate`: waits `delay`, then lets the request through stamped `x-waited`,
/// or fails its wait with a 502 when `fail` is set.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SlowGateConfig {
    delay: gatehouse_config::Duration,
    #[serde(default)]
    fail: bool,
}

#[derive(Debug)]
struct SlowGate {
    name: String,
    delay: Duration,
    fail: bool,
}

impl Policy for SlowGate {
    fn name(&self) -> &str {
        &self.name
    }
    fn on_request(&self, _req: &mut http::request::Parts, _ctx: &mut RequestCtx) -> Flow {
        let (delay, fail) = (self.delay, self.fail);
        Flow::wait(async move {
            tokio::time::sleep(delay).await;
            if fail {
                return Err(Problem::internal(
                    StatusCode::BAD_GATEWAY,
                    "key server unreachable",
                ));
            }
            Ok(
                Box::new(|req: &mut http::request::Parts, _ctx: &mut RequestCtx| {
                    req.headers
                        .insert("x-waited", HeaderValue::from_static("yes"));
                    Flow::Continue
                }) as gatehouse_core::Resume,
            )
        })
    }
}

const SLOW_GATE: PolicyKind = PolicyKind {
    name: "slow_gate",
    schema: |g| g.subschema_for::<SlowGateConfig>(),
    build: |b: &Build<'_>| -> BuildResult {
        let c: SlowGateConfig = b.settings()?;
        Ok(Arc::new(SlowGate {
            name: b.name.into(),
            delay: c.delay.get(),
            fail: c.fail,
        }))
    },
};

/// `type: body_tap`: buffers the request body (up to `max`) and sends it upstream in
/// upper case with a suffix, so the upstream sees a different length than the client sent.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BodyTapConfig {
    max: gatehouse_config::Size,
}

#[derive(Debug)]
struct BodyTap {
    name: String,
    max: u64,
}

impl Policy for BodyTap {
    fn name(&self) -> &str {
        &self.name
    }
    fn body_needs(&self) -> BodyNeeds {
        BodyNeeds {
            request: RequestBodyNeed::Buffered { max: self.max },
            response: ResponseBodyNeed::Untouched,
        }
    }
    fn on_request(&self, _req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        let body = ctx.bodies().request.take().unwrap_or_default();
        let mut up = body.to_ascii_uppercase();
        up.extend_from_slice(b"-TAPPED");
        ctx.bodies().request = Some(Bytes::from(up));
        Flow::Continue
    }
}

const BODY_TAP: PolicyKind = PolicyKind {
    name: "body_tap",
    schema: |g| g.subschema_for::<BodyTapConfig>(),
    build: |b: &Build<'_>| -> BuildResult {
        let c: BodyTapConfig = b.settings()?;
        Ok(Arc::new(BodyTap {
            name: b.name.into(),
            max: c.max.0,
        }))
    },
};

/// `type: body_peek`: reads a prefix of the request body and reports what it saw in
/// `x-peek: <bytes>/<partial>` to the upstream.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct BodyPeekConfig {
    prefix: gatehouse_config::Size,
}

#[derive(Debug)]
struct BodyPeek {
    name: String,
    prefix: u64,
}

impl Policy for BodyPeek {
    fn name(&self) -> &str {
        &self.name
    }
    fn body_needs(&self) -> BodyNeeds {
        BodyNeeds {
            request: RequestBodyNeed::Prefix { max: self.prefix },
            response: ResponseBodyNeed::Untouched,
        }
    }
    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        let bodies = ctx.bodies();
        let seen = bodies.request.as_ref().map_or(0, Bytes::len);
        let partial = bodies.request_partial;
        let v = HeaderValue::from_str(&format!("{seen}/{partial}")).unwrap();
        req.headers.insert("x-peek", v);
        Flow::Continue
    }
}

const BODY_PEEK: PolicyKind = PolicyKind {
    name: "body_peek",
    schema: |g| g.subschema_for::<BodyPeekConfig>(),
    build: |b: &Build<'_>| -> BuildResult {
        let c: BodyPeekConfig = b.settings()?;
        Ok(Arc::new(BodyPeek {
            name: b.name.into(),
            prefix: c.prefix.0,
        }))
    },
};

/// `type: frame_tally`: a response filter that replaces every byte with `y`, counts the
/// bytes and frames it saw, and appends `|bytes=N|end` at the end of the stream.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoSettings {}

#[derive(Debug)]
struct FrameTally {
    name: String,
}

struct Tally {
    bytes: usize,
    frames: usize,
}

impl BodyFilter for Tally {
    fn on_data(&mut self, data: Bytes) -> Result<Bytes, FilterError> {
        self.bytes += data.len();
        self.frames += 1;
        Ok(Bytes::from(vec![b'y'; data.len()]))
    }
    fn on_end(&mut self) -> Result<Bytes, FilterError> {
        Ok(Bytes::from(format!(
            "|bytes={}|frames>0:{}|end",
            self.bytes,
            self.frames > 0
        )))
    }
}

impl Policy for FrameTally {
    fn name(&self) -> &str {
        &self.name
    }
    fn body_needs(&self) -> BodyNeeds {
        BodyNeeds {
            request: RequestBodyNeed::Untouched,
            response: ResponseBodyNeed::Filtered,
        }
    }
    fn on_request(&self, _req: &mut http::request::Parts, _ctx: &mut RequestCtx) -> Flow {
        Flow::Continue
    }
    fn on_response(&self, _resp: &mut http::response::Parts, ctx: &mut RequestCtx) {
        ctx.bodies().filters.push(Box::new(Tally {
            bytes: 0,
            frames: 0,
        }));
    }
}

const FRAME_TALLY: PolicyKind = PolicyKind {
    name: "frame_tally",
    schema: |g| g.subschema_for::<NoSettings>(),
    build: |b: &Build<'_>| -> BuildResult {
        let _: NoSettings = b.settings()?;
        Ok(Arc::new(FrameTally {
            name: b.name.into(),
        }))
    },
};

/// `type: shout`: a response encoder whose filter upper-cases the body.
#[derive(Debug)]
struct Shout {
    name: String,
}

struct Upper;

impl BodyFilter for Upper {
    fn on_data(&mut self, data: Bytes) -> Result<Bytes, FilterError> {
        Ok(Bytes::from(data.to_ascii_uppercase()))
    }
}

impl Policy for Shout {
    fn name(&self) -> &str {
        &self.name
    }
    fn encodes_response(&self) -> bool {
        true
    }
    fn body_needs(&self) -> BodyNeeds {
        BodyNeeds {
            request: RequestBodyNeed::Untouched,
            response: ResponseBodyNeed::Filtered,
        }
    }
    fn on_request(&self, _req: &mut http::request::Parts, _ctx: &mut RequestCtx) -> Flow {
        Flow::Continue
    }
    fn on_response(&self, _resp: &mut http::response::Parts, ctx: &mut RequestCtx) {
        ctx.bodies().filters.push(Box::new(Upper));
    }
}

const SHOUT: PolicyKind = PolicyKind {
    name: "shout",
    schema: |g| g.subschema_for::<NoSettings>(),
    build: |b: &Build<'_>| -> BuildResult {
        let _: NoSettings = b.settings()?;
        Ok(Arc::new(Shout {
            name: b.name.into(),
        }))
    },
};

/// `type: body_size`: buffers the response (up to 1 KiB) and answers with its length.
#[derive(Debug)]
struct BodySize {
    name: String,
}

impl Policy for BodySize {
    fn name(&self) -> &str {
        &self.name
    }
    fn body_needs(&self) -> BodyNeeds {
        BodyNeeds {
            request: RequestBodyNeed::Untouched,
            response: ResponseBodyNeed::Buffered { max: 1024 },
        }
    }
    fn on_request(&self, _req: &mut http::request::Parts, _ctx: &mut RequestCtx) -> Flow {
        Flow::Continue
    }
    fn on_response(&self, _resp: &mut http::response::Parts, ctx: &mut RequestCtx) {
        let n = ctx.bodies().response.as_ref().map_or(0, Bytes::len);
        ctx.bodies().response = Some(Bytes::from(format!("upstream sent {n} bytes")));
    }
}

const BODY_SIZE: PolicyKind = PolicyKind {
    name: "body_size",
    schema: |g| g.subschema_for::<NoSettings>(),
    build: |b: &Build<'_>| -> BuildResult {
        let _: NoSettings = b.settings()?;
        Ok(Arc::new(BodySize {
            name: b.name.into(),
        }))
    },
};

/// `type: json_only`: buffers request bodies up to 16 bytes and response bodies up to
/// 64, but only JSON ones (`buffers_request`/`buffers_response`), and says what it saw
/// in `x-seen-body`.
#[derive(Debug)]
struct JsonOnly {
    name: String,
}

fn is_json(h: &http::HeaderMap) -> bool {
    h.get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

impl Policy for JsonOnly {
    fn name(&self) -> &str {
        &self.name
    }
    fn body_needs(&self) -> BodyNeeds {
        BodyNeeds {
            request: RequestBodyNeed::Buffered { max: 16 },
            response: ResponseBodyNeed::Buffered { max: 64 },
        }
    }
    fn buffers_request(&self, req: &http::request::Parts) -> bool {
        is_json(&req.headers)
    }
    fn buffers_response(&self, resp: &http::response::Parts, _ctx: &RequestCtx) -> bool {
        is_json(&resp.headers)
    }
    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        let seen = ctx
            .bodies()
            .request
            .as_ref()
            .map_or("none".into(), |b| b.len().to_string());
        req.headers.insert("x-seen-body", seen.parse().unwrap());
        Flow::Continue
    }
    fn on_response(&self, resp: &mut http::response::Parts, ctx: &mut RequestCtx) {
        let seen = ctx
            .bodies()
            .response
            .as_ref()
            .map_or("none".into(), |b| b.len().to_string());
        resp.headers.insert("x-seen-body", seen.parse().unwrap());
    }
}

const JSON_ONLY: PolicyKind = PolicyKind {
    name: "json_only",
    schema: |g| g.subschema_for::<NoSettings>(),
    build: |b: &Build<'_>| -> BuildResult {
        let _: NoSettings = b.settings()?;
        Ok(Arc::new(JsonOnly {
            name: b.name.into(),
        }))
    },
};

/// `type: counter`: counts requests in state kept by the registry under its name.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CounterConfig {
    #[serde(default)]
    step: u64,
}

#[derive(Debug)]
struct Counter {
    name: String,
    count: Arc<AtomicU64>,
    step: u64,
}

impl Policy for Counter {
    fn name(&self) -> &str {
        &self.name
    }
    fn on_request(&self, _req: &mut http::request::Parts, _ctx: &mut RequestCtx) -> Flow {
        Flow::Continue
    }
    fn on_response(&self, resp: &mut http::response::Parts, _ctx: &mut RequestCtx) {
        let n = self.count.fetch_add(self.step.max(1), Ordering::Relaxed) + self.step.max(1);
        resp.headers.insert("x-count", HeaderValue::from(n));
    }
}

const COUNTER: PolicyKind = PolicyKind {
    name: "counter",
    schema: |g| g.subschema_for::<CounterConfig>(),
    build: |b: &Build<'_>| -> BuildResult {
        let c: CounterConfig = b.settings()?;
        // Keyed by name only: a changed step keeps counting from where it was.
        let count = b
            .state
            .get_or_build("counter", b.name, Fingerprint(0), |_| AtomicU64::new(0));
        Ok(Arc::new(Counter {
            name: b.name.into(),
            count,
            step: c.step,
        }))
    },
};

/// An address nothing listens on (bound, then released).
fn dead_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The JSON lines of the access log at `path`, once it holds at least `n`.
fn wait_lines(path: &str, n: usize) -> Vec<serde_json::Value> {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= n || std::time::Instant::now() > until {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn embedded(yaml: &str) -> Embedded {
    Embedded::builder()
        .policy_kind(SLOW_GATE)
        .policy_kind(BODY_TAP)
        .policy_kind(BODY_PEEK)
        .policy_kind(FRAME_TALLY)
        .policy_kind(BODY_SIZE)
        .policy_kind(COUNTER)
        .policy_kind(SHOUT)
        .policy_kind(JSON_ONLY)
        .start(yaml)
        .unwrap_or_else(|e| panic!("start: {e}"))
}

fn url(g: &Embedded) -> String {
    format!("http://{}", g.listener("public").unwrap())
}

fn post(url: &str, body: &'static [u8]) -> http::Request<Full<Bytes>> {
    http::Request::post(url)
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

// ---- the seams -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_policy_decides_after_its_wait_and_is_bounded_by_its_timeout() {
    let a = Backend::start("a", Kind::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log").display().to_string();
    let g = embedded(&format!(
        r#"
listeners:
  - name: public
    address: "127.0.0.1:0"
admin:
  address: "127.0.0.1:0"
upstreams:
  u:
    targets: [{{ address: "{a}" }}]
policies:
  quick:
    type: slow_gate
    delay: 20ms
  slow:
    type: slow_gate
    delay: 5s
    timeout: 150ms
  broken:
    type: slow_gate
    delay: 1ms
    fail: true
routes:
  - name: waits
    match: {{ path: {{ type: prefix, value: /quick }} }}
    policies: [quick]
    upstream: u
  - name: times-out
    match: {{ path: {{ type: prefix, value: /slow }} }}
    policies: [slow]
    upstream: u
  - name: fails
    match: {{ path: {{ type: prefix, value: /broken }} }}
    policies: [broken]
    upstream: u
access_log: {log}
"#,
        a = a.addr
    ));
    let c = Client::new();
    let base = url(&g);

    let r = c.get(&format!("{base}/quick")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["headers"]["x-waited"],
        "yes",
        "the resumed decision edited the request"
    );

    let started = std::time::Instant::now();
    let r = c.get(&format!("{base}/slow")).await;
    assert_problem(&r, 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by the policy's timeout"
    );

    let r = c.get(&format!("{base}/broken")).await;
    assert_problem(&r, 502);
    assert_eq!(
        a.hits(),
        1,
        "only the request that was let through reached the upstream"
    );

    let lines = wait_lines(&log, 3);
    let sc = |path: &str| {
        lines
            .iter()
            .find(|l| l["path"] == path)
            .map(|l| l["short_circuit"].clone())
            .unwrap()
    };
    assert_eq!(sc("/slow")["policy"], "slow");
    assert_eq!(sc("/slow")["reason"], "wait_timeout");
    assert_eq!(sc("/broken")["policy"], "broken");
    assert_eq!(sc("/broken")["reason"], "wait_failed");
    assert!(sc("/quick").is_null());

    // The same short circuits in the metrics, whatever the policy kind.
    let admin = format!("http://{}/metrics", g.admin().unwrap());
    let text = c.get(&admin).await.body_text();
    for line in [
        r#"gatehouse_short_circuits_total{route="times-out",policy="slow",reason="wait_timeout"} 1"#,
        r#"gatehouse_short_circuits_total{route="fails",policy="broken",reason="wait_failed"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffered_body_is_refused_before_the_upstream_and_is_what_a_retry_resends() {
    let a = Backend::start("a", Kind::Echo).await;
    let dead = dead_addr();
    let g = embedded(&format!(
        r#"
listeners:
  - name: public
    address: "127.0.0.1:0"
upstreams:
  u:
    balancer: round_robin
    targets: [{{ address: "{dead}" }}, {{ address: "{a}" }}]
    retries: {{ attempts: 2, on: [connect_failure], methods: all, backoff: {{ base: 1ms, max: 2ms }} }}
policies:
  tap:
    type: body_tap
    max: 16
routes:
  - name: tapped
    policies: [tap]
    upstream: u
"#,
        a = a.addr
    ));
    let c = Client::new();
    let base = url(&g);
    // Whichever target goes first, the upstream that answers got the policy's body.
    for _ in 0..2 {
        let r = c.send(post(&format!("{base}/up"), b"hello")).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body_text());
        let v = r.json();
        assert_eq!(v["body"], "HELLO-TAPPED");
        assert_eq!(v["headers"]["content-length"], "12");
    }
    let hits = a.hits();
    let r = c
        .send(post(&format!("{base}/up"), b"seventeen bytes!!"))
        .await
        .unwrap();
    assert_problem(&r, 413);
    assert_eq!(
        a.hits(),
        hits,
        "no upstream was contacted for the oversized body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_prefix_is_shown_to_the_policy_and_the_whole_body_still_goes_upstream() {
    let a = Backend::start("a", Kind::Echo).await;
    let g = embedded(&format!(
        r#"
listeners:
  - name: public
    address: "127.0.0.1:0"
upstreams:
  u:
    targets: [{{ address: "{a}" }}]
policies:
  peek:
    type: body_peek
    prefix: 1KiB
routes:
  - name: peeked
    policies: [peek]
    upstream: u
    max_body_size: 1MiB
"#,
        a = a.addr
    ));
    let c = Client::new();
    let base = url(&g);
    // A short body is read whole: not partial, and sent as it came.
    let r = c.send(post(&format!("{base}/up"), b"hello")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    let v = r.json();
    assert_eq!(v["headers"]["x-peek"], "5/false");
    assert_eq!(v["body"], "hello");
    // A long one: the policy saw at least its prefix, the upstream got every byte.
    let long: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let req = http::Request::post(format!("{base}/up"))
        .body(Full::new(Bytes::from(long.clone())))
        .unwrap();
    let r = c.send(req).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    let v = r.json();
    let peek = v["headers"]["x-peek"].as_str().unwrap().to_string();
    let (seen, partial) = peek.split_once('/').unwrap();
    let seen: usize = seen.parse().unwrap();
    assert!((1024..200_000).contains(&seen), "{peek}");
    assert_eq!(partial, "true");
    // The echo shows the body's first KiB and counts the rest.
    assert_eq!(v["body_len"], 200_000, "the whole body went upstream");
    assert!(long.starts_with(v["body"].as_str().unwrap()));
    assert_eq!(v["headers"]["content-length"], "200000");
    // The route's max_body_size still bounds the whole body, not only the prefix.
    let huge = vec![b'x'; 2 << 20];
    let req = http::Request::post(format!("{base}/up"))
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(huge)))
        .unwrap();
    let r = c.send(req).await.unwrap();
    assert_problem(&r, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_filter_sees_every_frame_and_the_length_stays_truthful() {
    let a = Backend::start("a", Kind::Echo).await;
    let g = embedded(&format!(
        r#"
listeners:
  - name: public
    address: "127.0.0.1:0"
upstreams:
  u:
    targets: [{{ address: "{a}" }}]
policies:
  tally:
    type: frame_tally
  size:
    type: body_size
  shout:
    type: shout
routes:
  - name: local
    match: {{ path: {{ type: exact, value: /local }} }}
    policies: [tally]
    respond: {{ status: 200, body: "abc" }}
  - name: encoded
    match: {{ path: {{ type: exact, value: /encoded }} }}
    policies: [shout, tally]
    respond: {{ status: 200, body: "abc" }}
  - name: encoded-last
    match: {{ path: {{ type: exact, value: /encoded-last }} }}
    policies: [tally, shout]
    respond: {{ status: 200, body: "abc" }}
  - name: sized
    match: {{ path: {{ type: prefix, value: /sized }} }}
    policies: [size]
    upstream: u
  - name: sized-large
    match: {{ path: {{ type: exact, value: /bytes/5000 }} }}
    policies: [size]
    upstream: u
  - name: streamed
    policies: [tally]
    upstream: u
"#,
        a = a.addr
    ));
    let c = Client::new();
    let base = url(&g);

    // Streamed in 64 KiB chunks without a length; every byte reaches the filter.
    let r = c.get(&format!("{base}/bytes/200000")).await;
    assert_eq!(r.status, 200);
    let body = r.body_text();
    assert!(
        body.ends_with("|bytes=200000|frames>0:true|end"),
        "{}",
        &body[body.len() - 60..]
    );
    assert_eq!(body.bytes().take_while(|b| *b == b'y').count(), 200000);

    // The echo's Content-Length no longer holds once filtered: it is dropped.
    let r = c.get(&format!("{base}/echo")).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-length").is_none());
    assert!(r.body_text().contains("|end"));

    // A local response passes through the response phase and its filter too.
    let r = c.get(&format!("{base}/local")).await;
    assert_eq!(r.body_text(), "yyy|bytes=3|frames>0:true|end");

    // A response encoder's filter comes last in the body's path wherever it is listed:
    // the others see the body as it was sent.
    for path in ["encoded", "encoded-last"] {
        let r = c.get(&format!("{base}/{path}")).await;
        assert_eq!(r.body_text(), "YYY|BYTES=3|FRAMES>0:TRUE|END", "{path}");
    }

    // A buffered response is replaced whole, with an exact Content-Length.
    let r = c.get(&format!("{base}/sized/x")).await;
    assert_eq!(r.status, 200);
    let text = r.body_text();
    assert!(text.starts_with("upstream sent "), "{text}");
    assert_eq!(r.header("content-length"), Some(text.len().to_string()));
    // Over its limit: the policy cannot see it all, so it is not passed on unseen.
    let r = c.get(&format!("{base}/bytes/5000")).await;
    assert_problem(&r, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_buffers_only_the_bodies_it_wants_by_their_head() {
    let a = Backend::start("a", Kind::Echo).await;
    let g = embedded(&format!(
        r#"
listeners:
  - name: public
    address: "127.0.0.1:0"
upstreams:
  u:
    targets: [{{ address: "{a}" }}]
policies:
  json:
    type: json_only
routes:
  - name: all
    policies: [json]
    upstream: u
"#,
        a = a.addr
    ));
    let c = Client::new();
    let base = url(&g);
    let send = |ct: &'static str, body: &'static [u8]| {
        http::Request::post(format!("{base}/bytes/5000"))
            .header("content-type", ct)
            .body(Full::new(Bytes::from_static(body)))
            .unwrap()
    };
    // An upload of another type streams, past the policy's 16-byte limit, unseen; so
    // does a response of another type past its 64-byte limit.
    let r = c.send(send("text/plain", &[b'a'; 1000])).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 5000);
    assert_eq!(r.header("x-seen-body").as_deref(), Some("none"));
    // A JSON upload is buffered, and bound by the limit.
    let r = c.send(send("application/json", b"{}")).await.unwrap();
    assert_eq!(r.status, 200);
    let r = c
        .send(send("application/json", b"{\"seventeen\":1234}"))
        .await
        .unwrap();
    assert_problem(&r, 413);
    // A JSON response is buffered: the echo's is over 64 bytes, so it cannot pass unseen.
    let r = c
        .send(
            http::Request::post(format!("{base}/echo"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_problem(&r, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_reloads_by_name_and_a_rejected_reload_leaves_it_untouched() {
    let config = |policies: &str, chain: &str| {
        format!(
            r#"
listeners:
  - name: public
    address: "127.0.0.1:0"
policies:
{policies}
routes:
  - name: r
    policies: [{chain}]
    respond: {{ status: 200, body: "ok" }}
"#
        )
    };
    let with = config("  hits: { type: counter }", "hits");
    let g = embedded(&with);
    let c = Client::new();
    let base = url(&g);
    let count = |r: &Reply| r.header("x-count").unwrap().parse::<u64>().unwrap();
    for want in 1..=3 {
        assert_eq!(count(&c.get(&base).await), want);
    }
    let names = || g.gateway().platform.state.names();
    assert!(names().contains(&("counter", "hits".to_string())));

    // Same name, changed settings: the state is kept.
    g.reload(&config("  hits: { type: counter, step: 1 }", "hits"))
        .unwrap();
    assert_eq!(count(&c.get(&base).await), 4);

    // A rejected reload changes nothing.
    let before = names();
    let bad = config(
        "  hits: { type: counter }\n  other: { type: counter, step: -1 }",
        "hits, other",
    );
    assert!(g.reload(&bad).is_err());
    assert_eq!(names(), before);
    assert_eq!(count(&c.get(&base).await), 5);

    // Removed, then named again: it starts over.
    g.reload(&config("  {}", ""))
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(!names().contains(&("counter", "hits".to_string())));
    g.reload(&with).unwrap();
    assert_eq!(count(&c.get(&base).await), 1);
}
