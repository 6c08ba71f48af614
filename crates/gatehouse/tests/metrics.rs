//! `GET /metrics` counts what was sent, through real sockets on the in-process gateway.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use bytes::Bytes;
use gatehouse::embed::Embedded;
use http_body_util::Full;
use std::time::Duration;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_metrics_with_exemplars_gzip_and_the_configured_buckets() {
    // A process of its own: the bucket bounds are set once per process.
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, admin) = gateway(&format!(
        "metrics: {{ buckets: [0.1, 1] }}\nupstreams:\n  u:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - name: r\n    upstream: u\n",
        be.addr
    ));
    let c = Client::new();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let tp = format!("00-{trace}-00f067aa0ba902b7-01");
    assert_eq!(
        send(&c, "GET", &format!("{url}/x"), &[("traceparent", &tp)])
            .await
            .status,
        200
    );
    // An unsampled request leaves no exemplar.
    let unsampled = "00-11111111111111111111111111111111-00f067aa0ba902b7-00";
    send(
        &c,
        "GET",
        &format!("{url}/x"),
        &[("traceparent", unsampled)],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let plain = c.get(&format!("{admin}/metrics")).await.body_text();
    let bucket = "gatehouse_http_server_request_duration_seconds_bucket{route=\"r\",method=\"GET\",status_class=\"2xx\"";
    let les: Vec<&str> = plain
        .lines()
        .filter(|l| l.starts_with(bucket))
        .map(|l| l.split("le=\"").nth(1).unwrap().split('"').next().unwrap())
        .collect();
    assert_eq!(les, ["0.1", "1", "+Inf"], "{plain}");
    assert!(
        !plain.contains("trace_id"),
        "no exemplars in the 0.0.4 format"
    );

    let om = send(
        &c,
        "GET",
        &format!("{admin}/metrics"),
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.4",
        )],
    )
    .await;
    assert_eq!(
        om.header("content-type").as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = om.body_text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE gatehouse_http_server_requests counter"));
    assert!(text.contains("# TYPE gatehouse_build info"));
    let exemplar = text
        .lines()
        .find(|l| l.starts_with(bucket) && l.contains("# {trace_id="))
        .unwrap_or_else(|| panic!("no exemplar: {text}"));
    assert!(
        exemplar.contains(&format!("trace_id=\"{trace}\"")),
        "{exemplar}"
    );
    assert!(!text.contains("11111111111111111111111111111111"));
    // The reference parser (prometheus_client's, strict OpenMetrics 1.0) reads it all.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scrape.txt");
    std::fs::write(&file, &text).unwrap();
    let parsed = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
             fams = list(p(open(sys.argv[1]).read()))\n\
             print(sum(1 for f in fams for s in f.samples if s.exemplar))",
        )
        .arg(&file)
        .output()
        .expect("python3 runs (scripts/test.sh installs prometheus_client)");
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let exemplars: u32 = String::from_utf8_lossy(&parsed.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(exemplars >= 1);

    let zipped = send(
        &c,
        "GET",
        &format!("{admin}/metrics"),
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(zipped.header("content-encoding").as_deref(), Some("gzip"));
    let mut out = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&zipped.body[..]),
        &mut out,
    )
    .unwrap();
    assert!(
        out.contains("gatehouse_http_server_requests_total{"),
        "{out}"
    );
}
