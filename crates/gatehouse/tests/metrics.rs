//! `GET /metrics` counts what was sent, through real sockets on the in-process gateway.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bytes::Bytes;
use gatehouse::embed::Embedded;
use http_body_util::Full;
use std::time::Duration;
use support::*;

/// The value of the sample `line` (name and labels exactly) in `text`.
fn sample(text: &str, line: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until every `(sample, value)` holds (the finish phase runs just after the
/// client read its response), or fails with the last scrape.
async fn expect(admin: &str, want: &[(&str, f64)]) -> String {
    let c = Client::new();
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = c.get(&format!("{admin}/metrics")).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = r.body_text();
        let missing: Vec<_> = want
            .iter()
            .filter(|(l, v)| sample(&text, l) != Some(*v))
            .collect();
        if missing.is_empty() {
            return text;
        }
        if std::time::Instant::now() > until {
            panic!("missing {missing:?} in\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_traffic_sent() {
    let a = Backend::start("a", Kind::Echo).await;
    let g = Embedded::builder()
        .threads(2)
        .start(&format!(
            r#"
listeners:
  - name: web
    address: "127.0.0.1:0"
admin:
  address: "127.0.0.1:0"
upstreams:
  shop:
    targets: [{{ address: "{a}" }}]
policies:
  locals-out:
    type: ip_filter
    deny: [127.0.0.0/8]
routes:
  - name: blocked
    match: {{ path: {{ type: prefix, value: /blocked }} }}
    policies: [locals-out]
    upstream: shop
  - name: api
    match: {{ path: {{ type: prefix, value: /api }} }}
    max_body_size: 10
    upstream: shop
"#,
            a = a.addr
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://{}", g.listener("web").unwrap());
    let admin = format!("http://{}", g.admin().unwrap());
    let c = Client::new();
    for _ in 0..5 {
        assert_eq!(c.get(&format!("{base}/api/x")).await.status, 200);
    }
    for _ in 0..2 {
        let req = http::Request::post(format!("{base}/api/y"))
            .body(Full::new(Bytes::from_static(b"small")))
            .unwrap();
        assert_eq!(c.send(req).await.unwrap().status, 200);
    }
    let brew = http::Request::builder()
        .method("BREW")
        .uri(format!("{base}/api/pot"))
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(c.send(brew).await.unwrap().status, 200);
    for _ in 0..3 {
        assert_eq!(c.get(&format!("{base}/blocked")).await.status, 403);
    }
    assert_eq!(c.get(&format!("{base}/nowhere")).await.status, 404);
    let big = http::Request::post(format!("{base}/api/z"))
        .body(Full::new(Bytes::from_static(b"far more than ten bytes")))
        .unwrap();
    assert_eq!(c.send(big).await.unwrap().status, 413);
    let bad = gatehouse_testkit::client::raw(
        g.listener("web").unwrap(),
        b"GET /api HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    )
    .await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");

    let text = expect(
        &admin,
        &[
            (r#"gatehouse_http_server_requests_total{listener="web",route="api",method="GET",status_class="2xx"}"#, 5.0),
            (r#"gatehouse_http_server_requests_total{listener="web",route="api",method="POST",status_class="2xx"}"#, 2.0),
            (r#"gatehouse_http_server_requests_total{listener="web",route="api",method="_OTHER",status_class="2xx"}"#, 1.0),
            (r#"gatehouse_http_server_requests_total{listener="web",route="api",method="POST",status_class="4xx"}"#, 1.0),
            (r#"gatehouse_http_server_requests_total{listener="web",route="blocked",method="GET",status_class="4xx"}"#, 3.0),
            (r#"gatehouse_http_server_requests_total{listener="web",route="",method="GET",status_class="4xx"}"#, 2.0),
            (r#"gatehouse_http_server_request_duration_seconds_count{route="api",method="GET",status_class="2xx"}"#, 5.0),
            (r#"gatehouse_short_circuits_total{route="blocked",policy="locals-out",reason="ip_denied"}"#, 3.0),
            (r#"gatehouse_upstream_requests_total{upstream="shop",target="{a}",status_class="2xx"}"#.replace("{a}", &a.addr.to_string()).leak(), 8.0),
            (r#"gatehouse_upstream_request_duration_seconds_count{upstream="shop",target="{a}"}"#.replace("{a}", &a.addr.to_string()).leak(), 8.0),
            (r#"gatehouse_request_rejections_total{listener="web",reason="body_too_large"}"#, 1.0),
            (r#"gatehouse_request_rejections_total{listener="web",reason="malformed"}"#, 1.0),
            (r#"gatehouse_upstream_target_healthy{upstream="shop",target="{a}"}"#.replace("{a}", &a.addr.to_string()).leak(), 1.0),
            (r#"gatehouse_config_reloads_total{result="success"}"#, 0.0),
            ("gatehouse_http_server_active_requests", 0.0),
        ],
    )
    .await;
    // The connections of this test: at least the ones opened above, all accepted.
    let accepted = sample(
        &text,
        r#"gatehouse_listener_connections_total{listener="web",result="accepted"}"#,
    )
    .unwrap();
    assert!(accepted >= 2.0, "{text}");
    for family in [
        "gatehouse_build_info{",
        "gatehouse_config_hash_info{hash=\"",
        "gatehouse_config_last_reload_timestamp_seconds ",
        "gatehouse_upstream_connections{upstream=\"shop\",state=\"open\"}",
        "gatehouse_listener_connections_open{listener=\"web\"}",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(text.contains(family), "no {family} in\n{text}");
    }
    // No label carries a path, an address of a client or a header value.
    assert!(!text.contains("/api"), "{text}");
    assert!(!text.contains("nowhere"), "{text}");

    // Counters survive a reload; the reload itself is counted.
    let yaml = g.gateway().live.load().source.clone();
    g.reload(&yaml).unwrap();
    assert_eq!(c.get(&format!("{base}/api/x")).await.status, 200);
    expect(
        &admin,
        &[
            (r#"gatehouse_http_server_requests_total{listener="web",route="api",method="GET",status_class="2xx"}"#, 6.0),
            (r#"gatehouse_config_reloads_total{result="success"}"#, 1.0),
        ],
    )
    .await;
}
