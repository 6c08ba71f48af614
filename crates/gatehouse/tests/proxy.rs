//! Proxying through real sockets: headers both ways, balancing, errors, limits, streaming.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_with_forwarding_headers_and_strips_hop_by_hop() {
    let a = Backend::start("a", Kind::Echo).await;
    let (_g, url, _) = embedded(&format!(
        r#"
upstreams:
  u: {{ targets: [{{ address: {} }}] }}
policies:
  h:
    type: headers
    request: {{ set: {{ x-gw: gatehouse }}, remove: [x-internal] }}
    response: {{ remove: [server] }}
routes:
  - name: r
    upstream: u
    policies: [h]
access_log: stdout
"#,
        a.addr
    ));
    let c = Client::new();
    let req = http::Request::get(format!("{url}/a/b?x=1"))
        .header("x-request-id", "client-id-1")
        .header("x-internal", "secret")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("x-forwarded-for", "9.9.9.9")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header(
            "x-echo-response-header",
            "proxy-authenticate: Basic realm=\"upstream\"",
        )
        .body(Full::<Bytes>::default())
        .unwrap();
    let r = c.send(req).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id").as_deref(), Some("client-id-1"));
    assert!(
        r.header("proxy-authenticate").is_none(),
        "the upstream's proxy challenge stays behind the gateway"
    );
    assert!(
        r.header("server").is_none(),
        "response policy removes server"
    );
    assert!(
        r.header("keep-alive").is_none(),
        "hop-by-hop stripped from response"
    );
    let v = r.json();
    assert_eq!(v["uri"], "/a/b?x=1");
    let h = &v["headers"];
    assert_eq!(h["x-request-id"], "client-id-1");
    assert_eq!(h["x-gw"], "gatehouse");
    assert!(h.get("x-internal").is_none());
    assert!(
        h.get("proxy-authorization").is_none(),
        "proxy credentials are for this hop"
    );
    assert!(
        h.get("x-hop").is_none(),
        "headers named in Connection are removed"
    );
    assert_eq!(h["x-forwarded-for"], "9.9.9.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(
        h["x-forwarded-host"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_honours_weights() {
    let a = Backend::start("a", Kind::Echo).await;
    let b = Backend::start("b", Kind::Echo).await;
    let (_g, url, _) = embedded(&format!(
        r#"
upstreams:
  u:
    targets: [{{ address: {}, weight: 3 }}, {{ address: {} }}]
routes:
  - name: r
    upstream: u
access_log: off
"#,
        a.addr, b.addr
    ));
    let c = Client::new();
    for _ in 0..40 {
        assert_eq!(c.get(&format!("{url}/x")).await.status, 200);
    }
    let (ha, hb) = (
        a.hits.load(std::sync::atomic::Ordering::Relaxed),
        b.hits.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert_eq!(ha + hb, 40);
    // Two workers each walk the 3:1 order from their own position: 30/10 give or take one period.
    assert!((26..=34).contains(&ha), "a={ha} b={hb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_problems() {
    let reset = Backend::start("reset", Kind::Reset).await;
    let hang = Backend::start("hang", Kind::Hang).await;
    let refused = free_port();
    let (_g, url, _) = embedded(&format!(
        r#"
upstreams:
  refused: {{ targets: [{{ address: 127.0.0.1:{refused} }}] }}
  reset: {{ targets: [{{ address: {} }}] }}
  hang: {{ targets: [{{ address: {} }}], timeouts: {{ request: 300ms }} }}
routes:
  - {{ name: a, match: {{ path: {{ value: /refused }} }}, upstream: refused }}
  - {{ name: b, match: {{ path: {{ value: /reset }} }}, upstream: reset }}
  - {{ name: c, match: {{ path: {{ value: /hang }} }}, upstream: hang }}
access_log: off
"#,
        reset.addr, hang.addr
    ));
    let c = Client::new();
    assert_problem(&c.get(&format!("{url}/refused")).await, 502);
    assert_problem(&c.get(&format!("{url}/reset")).await, 502);
    let t = std::time::Instant::now();
    assert_problem(&c.get(&format!("{url}/hang")).await, 504);
    assert!(t.elapsed() < std::time::Duration::from_secs(3));
    assert_problem(&c.get(&format!("{url}/nothing")).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests() {
    let a = Backend::start("a", Kind::Echo).await;
    let (_g, url, _) = embedded(&format!(
        r#"
upstreams:
  u: {{ targets: [{{ address: {} }}] }}
routes:
  - name: r
    upstream: u
    max_body_size: 1KiB
access_log: off
"#,
        a.addr
    ));
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let out = gatehouse_testkit::client::raw(addr, b"GARBAGE\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // A head over the 64 KiB default gets a 431 problem.
    let big = "x".repeat(70 * 1024);
    let req = format!("GET / HTTP/1.1\r\nhost: a\r\nx-big: {big}\r\nconnection: close\r\n\r\n");
    let out = gatehouse_testkit::client::raw(addr, req.as_bytes()).await;
    assert!(
        out.starts_with("HTTP/1.1 431"),
        "{}",
        &out[..out.len().min(200)]
    );
    assert!(out.contains("application/problem+json"));
    // Body over the route limit: 413 by content-length.
    let c = Client::new();
    let r = c
        .send(
            http::Request::post(format!("{url}/up"))
                .body(Full::new(Bytes::from(vec![b'a'; 4096])))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_problem(&r, 413);
    // And the gateway still serves.
    assert_eq!(c.get(&format!("{url}/ok")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_streams() {
    let a = Backend::start("a", Kind::Echo).await;
    let (_g, url, _) = embedded(&format!(
        r#"
upstreams:
  u: {{ targets: [{{ address: {} }}] }}
routes:
  - name: r
    upstream: u
access_log: off
"#,
        a.addr
    ));
    let r = Client::new().get(&format!("{url}/bytes/{}", 8 << 20)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 8 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_json_line_per_request() {
    let a = Backend::start("a", Kind::Echo).await;
    let (g, url, _) = gateway(&format!(
        r#"
upstreams:
  u: {{ targets: [{{ address: {} }}] }}
routes:
  - name: logged
    upstream: u
access_log: stdout
"#,
        a.addr
    ));
    let c = Client::new();
    let req = http::Request::get(format!("{url}/p?q=1"))
        .header("user-agent", "probe/1.0")
        .body(Default::default())
        .unwrap();
    c.send(req).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let text = g.stdout_text();
    let line = text
        .lines()
        .find(|l| l.contains("\"/p\""))
        .expect("an access log line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["status"], 200);
    assert_eq!(v["route"], "logged");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["upstream_target"], a.addr.to_string());
    assert_eq!(v["upstream"], "u");
    assert_eq!(v["query"], "q=1");
    assert_eq!(v["http_version"], "HTTP/1.1");
    assert_eq!(v["user_agent"], "probe/1.0");
    assert_eq!(v["listener"], "public");
    assert!(v["consumer"].is_null(), "no authentication on this route");
    for k in [
        "timestamp",
        "request_id",
        "client_ip",
        "host",
        "bytes_in",
        "bytes_out",
        "upstream_latency_ms",
        "total_latency_ms",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    for k in [
        "policies_ms",
        "upstream_connect_ms",
        "upstream_first_byte_ms",
        "total_ms",
    ] {
        assert!(v["phases"].get(k).is_some(), "missing phases.{k}");
    }
}
