//! OpenTelemetry span export through real sockets, to an OTLP/HTTP receiver on
//! 127.0.0.1: the server span continues the caller's trace, policy runs and upstream
//! tries hang under it (the try's span is the parent the upstream was told), head
//! sampling follows the caller or the ratio, a collector asking to wait is retried, a
//! dead one costs nothing and a full queue drops and counts, and shutdown flushes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use gatehouse_testkit::OtlpReceiver;
use gatehouse_testkit::otlp::ReceivedSpan;
use std::time::{Duration, Instant};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

/// The `tracing` block; `batch` defaults to a short interval unless `extra` sets one.
fn tracing_block(endpoint: &str, extra: &str) -> String {
    let batch = if extra.contains("batch:") {
        ""
    } else {
        "  batch: { interval: 100ms }\n"
    };
    format!(
        "tracing:\n  otlp: {{ endpoint: \"{endpoint}\", headers: {{ authorization: \"Bearer t0k\" }}, compression: gzip }}\n  service_name: edge-gw\n{batch}{extra}"
    )
}

fn routes(be: &Backend) -> String {
    format!(
        "upstreams:\n  u:\n    targets: [{{ address: \"{}\" }}]\npolicies:\n  stamp:\n    type: headers\n    request: {{ set: {{ x-stamp: \"1\" }} }}\n  closed:\n    type: ip_filter\n    deny: [127.0.0.0/8]\nroutes:\n  - name: checkout\n    match: {{ path: {{ type: prefix, value: /shop }} }}\n    policies: [stamp]\n    upstream: u\n  - name: shut\n    match: {{ path: {{ type: prefix, value: /shut }} }}\n    policies: [closed]\n    upstream: u\n  - name: broken\n    upstream: u\n",
        be.addr
    )
}

fn of_trace<'a>(spans: &'a [ReceivedSpan], trace: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.trace_id == trace).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_becomes_a_server_span_with_policy_and_upstream_children() {
    let otlp = OtlpReceiver::start().await;
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, _admin) = gateway(&format!(
        "{}{}",
        tracing_block(&otlp.endpoint(), ""),
        routes(&be)
    ));
    let c = Client::new();
    let parent = format!("00-{TRACE}-{CALLER}-01");
    let r = send(
        &c,
        "GET",
        &format!("{url}/shop/cart?x=1"),
        &[("traceparent", &parent), ("user-agent", "probe/1.0")],
    )
    .await;
    assert_eq!(r.status, 200);
    let id = r.header("x-request-id").unwrap();
    let upstream_parent = r.json()["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .split('-')
        .nth(2)
        .unwrap()
        .to_string();

    let spans = otlp.wait_spans(4, Duration::from_secs(10)).await;
    let mine = of_trace(&spans, TRACE);
    assert_eq!(
        mine.len(),
        4,
        "server, policy request and response, try: {spans:#?}"
    );
    let server = mine.iter().find(|s| s.kind == 2).expect("a server span");
    assert_eq!(server.name, "GET checkout");
    assert_eq!(server.parent_id, CALLER, "the caller's span is the parent");
    assert_eq!(server.service, "edge-gw");
    assert_eq!(server.attr("http.request.method"), Some("GET"));
    assert_eq!(server.attr("url.path"), Some("/shop/cart"));
    assert_eq!(server.attr("http.route"), Some("/shop"));
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.attr("client.address"), Some("127.0.0.1"));
    assert_eq!(server.attr("user_agent.original"), Some("probe/1.0"));
    assert_eq!(server.attr("gatehouse.route"), Some("checkout"));
    assert_eq!(server.attr("gatehouse.request_id"), Some(id.as_str()));
    assert_eq!(server.status, 0);
    assert!(server.end >= server.start && server.start > 0);
    assert_eq!(server.flags & 0x301, 0x301, "sampled, remote parent");

    for phase in ["request", "response"] {
        let policy = mine
            .iter()
            .find(|s| s.kind == 1 && s.attr("gatehouse.phase") == Some(phase))
            .expect("a policy span per phase");
        assert_eq!(policy.name, "stamp");
        assert_eq!(policy.attr("gatehouse.policy"), Some("stamp"));
        assert_eq!(policy.parent_id, server.span_id);
    }

    let client = mine.iter().find(|s| s.kind == 3).expect("a client span");
    assert_eq!(client.parent_id, server.span_id);
    assert_eq!(
        client.span_id, upstream_parent,
        "the upstream's parent is the try's span"
    );
    assert_eq!(client.attr("server.address"), Some("127.0.0.1"));
    assert_eq!(
        client.attr("server.port"),
        Some(be.addr.port().to_string().as_str())
    );
    assert_eq!(client.attr("http.response.status_code"), Some("200"));
    assert!(client.start >= server.start && client.end <= server.end);

    let exports = otlp.exports();
    assert_eq!(exports[0].headers["authorization"], "Bearer t0k");
    assert_eq!(exports[0].headers["content-type"], "application/x-protobuf");
    assert_eq!(exports[0].headers["content-encoding"], "gzip");

    // A short circuit is on the server span; an upstream 5xx marks both spans ERROR.
    let r = send(&c, "GET", &format!("{url}/shut"), &[]).await;
    assert_eq!(r.status, 403);
    let r5 = send(&c, "GET", &format!("{url}/status/503"), &[]).await;
    assert_eq!(r5.status, 503);
    let spans = otlp.wait_spans(4 + 2 + 2, Duration::from_secs(10)).await;
    let shut = spans
        .iter()
        .find(|s| s.kind == 2 && s.attr("gatehouse.route") == Some("shut"))
        .unwrap();
    assert_eq!(shut.attr("gatehouse.short_circuit.policy"), Some("closed"));
    assert_eq!(
        shut.attr("gatehouse.short_circuit.reason"),
        Some("ip_denied")
    );
    assert_eq!(
        shut.parent_id, "",
        "a new trace: the server span is the root"
    );
    let broken = spans
        .iter()
        .find(|s| s.kind == 2 && s.attr("gatehouse.route") == Some("broken"))
        .unwrap();
    assert_eq!(broken.status, 2);
    assert_eq!(broken.attr("error.type"), Some("503"));
    let try_span = spans
        .iter()
        .find(|s| s.kind == 3 && s.trace_id == broken.trace_id)
        .unwrap();
    assert_eq!(try_span.status, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_client_spans_with_their_resend_count() {
    let otlp = OtlpReceiver::start().await;
    let be = Backend::start("a", Kind::Echo).await;
    let dead = free_port();
    let (_g, url, _admin) = gateway(&format!(
        "{}upstreams:\n  u:\n    balancer: round_robin\n    targets: [{{ address: \"127.0.0.1:{dead}\" }}, {{ address: \"{}\" }}]\n    retries: {{ attempts: 2, backoff: {{ base: 1ms, max: 2ms }} }}\nroutes:\n  - name: r\n    upstream: u\n",
        tracing_block(&otlp.endpoint(), ""),
        be.addr
    ));
    let c = Client::new();
    // Round robin: one of two requests meets the dead target first.
    for _ in 0..2 {
        assert_eq!(send(&c, "GET", &format!("{url}/x"), &[]).await.status, 200);
    }
    let spans = otlp.wait_spans(5, Duration::from_secs(10)).await;
    let failed = spans
        .iter()
        .find(|s| s.kind == 3 && s.attr("error.type") == Some("connect_failure"))
        .unwrap_or_else(|| panic!("{spans:#?}"));
    let retry = spans
        .iter()
        .find(|s| s.kind == 3 && s.trace_id == failed.trace_id && s.span_id != failed.span_id)
        .unwrap();
    assert_eq!(retry.attr("http.request.resend_count"), Some("1"));
    assert_eq!(retry.attr("http.response.status_code"), Some("200"));
    assert!(retry.start >= failed.end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_sampling_follows_the_caller_or_the_ratio() {
    let otlp = OtlpReceiver::start().await;
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, _admin) = gateway(&format!(
        "{}{}",
        tracing_block(
            &otlp.endpoint(),
            "  sampling: { ratio: 0, parent_based: true }\n"
        ),
        routes(&be)
    ));
    let c = Client::new();
    let flag = |r: &Reply| {
        r.json()["headers"]["traceparent"]
            .as_str()
            .unwrap()
            .rsplit('-')
            .next()
            .unwrap()
            .to_string()
    };
    let unsampled_trace = "11111111111111111111111111111111";
    let r = send(
        &c,
        "GET",
        &format!("{url}/shop"),
        &[("traceparent", &format!("00-{unsampled_trace}-{CALLER}-00"))],
    )
    .await;
    assert_eq!(flag(&r), "00");
    for _ in 0..5 {
        let r = send(&c, "GET", &format!("{url}/shop"), &[]).await;
        assert_eq!(flag(&r), "00", "ratio 0 records no new trace");
    }
    let r = send(
        &c,
        "GET",
        &format!("{url}/shop"),
        &[("traceparent", &format!("00-{TRACE}-{CALLER}-01"))],
    )
    .await;
    assert_eq!(flag(&r), "01");
    let spans = otlp.wait_spans(3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let spans_later = otlp.spans();
    assert_eq!(spans.len(), spans_later.len());
    assert!(
        spans_later.iter().all(|s| s.trace_id == TRACE),
        "only the caller's sampled trace: {spans_later:#?}"
    );

    // Not parent based, ratio 1: the caller's "not sampled" is overruled.
    let otlp2 = OtlpReceiver::start().await;
    let (_g2, url2, _) = gateway(&format!(
        "{}{}",
        tracing_block(
            &otlp2.endpoint(),
            "  sampling: { ratio: 1, parent_based: false }\n"
        ),
        routes(&be)
    ));
    let r = send(
        &c,
        "GET",
        &format!("{url2}/shop"),
        &[("traceparent", &format!("00-{unsampled_trace}-{CALLER}-00"))],
    )
    .await;
    assert_eq!(flag(&r), "01");
    let spans = otlp2.wait_spans(3, Duration::from_secs(10)).await;
    assert!(
        spans
            .iter()
            .any(|s| s.trace_id == unsampled_trace && s.kind == 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_asks_to_wait_gets_the_batch_again() {
    let otlp = OtlpReceiver::start().await;
    otlp.script(503, Some("1"));
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, admin) = gateway(&format!(
        "{}{}",
        tracing_block(&otlp.endpoint(), ""),
        routes(&be)
    ));
    let c = Client::new();
    let asked = Instant::now();
    assert_eq!(
        send(&c, "GET", &format!("{url}/broken"), &[]).await.status,
        200
    );
    let spans = otlp.wait_spans(2, Duration::from_secs(10)).await;
    assert_eq!(spans.len(), 2);
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "Retry-After honoured"
    );
    let exports = otlp.exports();
    assert_eq!(exports.len(), 2, "refused once, then accepted");
    assert_eq!(exports[0].spans, exports[1].spans);
    let m = c.get(&format!("{admin}/metrics")).await.body_text();
    assert!(m.contains("gatehouse_tracing_spans_dropped_total{reason=\"export_failed\"} 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_costs_requests_nothing_and_a_full_queue_drops_and_counts() {
    let be = Backend::start("a", Kind::Echo).await;
    let dead = free_port();
    let (_g, url, admin) = gateway(&format!(
        "{}{}",
        tracing_block(
            &format!("http://127.0.0.1:{dead}/v1/traces"),
            "  batch: { max_queue: 8, max_batch: 4, interval: 50ms }\n"
        ),
        routes(&be)
    ));
    let c = Client::new();
    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(
            send(&c, "GET", &format!("{url}/broken"), &[]).await.status,
            200
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "requests never wait for the collector"
    );
    let m = c.get(&format!("{admin}/metrics")).await.body_text();
    let dropped: f64 = m
        .lines()
        .find(|l| l.starts_with("gatehouse_tracing_spans_dropped_total{reason=\"queue_full\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert!(
        dropped >= 150.0,
        "{dropped}: 200 spans, at most 8 queued + 4 in hand"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_what_is_queued() {
    let otlp = OtlpReceiver::start().await;
    let be = Backend::start("a", Kind::Echo).await;
    let (mut g, url, _admin) = gateway(&format!(
        "tracing:\n  otlp: {{ endpoint: \"{}\" }}\n  batch: {{ interval: 1h }}\n{}",
        otlp.endpoint(),
        routes(&be)
    ));
    let c = Client::new();
    assert_eq!(
        send(&c, "GET", &format!("{url}/broken"), &[]).await.status,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(otlp.spans().is_empty(), "held for the batch interval");
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(15)), Some(0));
    let spans = otlp.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert_eq!(spans[0].service, "gatehouse");
    assert!(otlp.exports()[0].headers.get("content-encoding").is_none());
}
