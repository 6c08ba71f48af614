//! Route actions, client protocols and listener limits through real sockets: split,
//! redirect and respond; HTTP/2 clients; Expect: 100-continue; IPv6; max_connections,
//! max_connections_per_ip, max_header_count, http2_max_concurrent_streams (raw frames);
//! idle timeout; a 1 GiB upload in bounded memory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::rt::TokioIo;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_redirect_and_respond_actions() {
    let stable = Backend::start("stable", Kind::Echo).await;
    let canary = Backend::start("canary", Kind::Echo).await;
    let (_g, url, _) = embedded(&format!(
        r#"upstreams:
  stable: {{ targets: [{{ address: "{}" }}] }}
  canary: {{ targets: [{{ address: "{}" }}] }}
routes:
  - name: canary
    match: {{ path: {{ type: prefix, value: /api }} }}
    split: [{{ upstream: stable, weight: 90 }}, {{ upstream: canary, weight: 10 }}]
  - name: moved
    match: {{ path: {{ type: prefix, value: /old }} }}
    redirect: {{ scheme: https, host: example.com, status: 301 }}
  - name: teapot
    match: {{ path: {{ type: exact, value: /tea }} }}
    respond: {{ status: 418, headers: {{ x-brew: earl-grey }}, body: "short and stout" }}
"#,
        stable.addr, canary.addr
    ));
    let c = Client::new();

    for _ in 0..1000 {
        assert_eq!(c.get(&format!("{url}/api/x")).await.status, 200);
    }
    let (s, k) = (stable.hits(), canary.hits());
    assert_eq!(s + k, 1000);
    // 10% canary: a binomial with sd ~9.5, so 40..160 is far outside chance.
    assert!((40..=160).contains(&k), "canary got {k} of 1000");

    let r = c.get(&format!("{url}/old/page?q=1")).await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://example.com/old/page?q=1")
    );

    let r = c.get(&format!("{url}/tea")).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.header("x-brew").as_deref(), Some("earl-grey"));
    assert_eq!(&r.body[..], b"short and stout");
    assert!(r.header("x-request-id").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_reach_http1_upstreams() {
    let a = Backend::start("a", Kind::Echo).await;
    let (_g, url, _) = embedded(&format!(
        "upstreams:\n  u: {{ targets: [{{ address: \"{}\" }}] }}\nroutes:\n  - name: r\n    upstream: u\n",
        a.addr
    ));
    let addr = url.trim_start_matches("http://").to_string();
    let mut tx = gatehouse_testkit::client::h2(addr.parse().unwrap()).await;
    // Several concurrent streams on the one connection.
    let mut pending = Vec::new();
    for i in 0..8 {
        let req = http::Request::post(format!("http://{addr}/h2/{i}"))
            .body(Full::new(Bytes::from(vec![b'x'; 1000 * i])))
            .unwrap();
        pending.push(tx.send_request(req));
    }
    for (i, f) in pending.into_iter().enumerate() {
        let resp = f.await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["uri"], format!("/h2/{i}"));
        assert_eq!(v["body_len"], 1000 * i);
        assert_eq!(v["version"], "HTTP/1.1", "the upstream leg is HTTP/1.1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_before_the_body() {
    let a = Backend::start("a", Kind::Echo).await;
    let (_g, url, _) = embedded(&format!(
        r#"
upstreams:
  u: {{ targets: [{{ address: "{}" }}] }}
routes:
  - name: small
    match: {{ path: {{ type: prefix, value: /small }} }}
    upstream: u
    max_body_size: 10
  - name: r
    upstream: u
"#,
        a.addr
    ));
    let addr = url.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        b"POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let interim = read_until(&mut s, b"\r\n\r\n").await;
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue"),
        "got {interim:?}"
    );
    s.write_all(b"hello").await.unwrap();
    let resp = read_until(&mut s, b"}").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "got {resp:?}");
    assert!(resp.contains("\"body_len\":5"), "got {resp:?}");
    assert!(
        !resp.to_ascii_lowercase().contains("\"expect\""),
        "expect is not forwarded"
    );

    // Over the route's limit: 413 straight away, without a 100 and without the body.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        b"POST /small HTTP/1.1\r\nhost: t\r\ncontent-length: 5000\r\nexpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let resp = read_until(&mut s, b"\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 413"), "got {resp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listener_serves_and_reports_the_v6_peer() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    }
    let a = Backend::start("a", Kind::Echo).await;
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        r#"
listeners:
  - {{ name: v6, address: "[::1]:{port}" }}
admin: {{ address: "127.0.0.1:{admin}" }}
reload: {{ watch: false }}
upstreams:
  u: {{ targets: [{{ address: "{}" }}] }}
routes:
  - name: r
    upstream: u
"#,
        a.addr
    );
    let _g = GatewayProcess::start(BIN, &yaml, &[admin]);
    let mut reply = None;
    for _ in 0..50 {
        if let Ok(r) = Client::new()
            .send(
                http::Request::get(format!("http://[::1]:{port}/six"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
        {
            reply = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = reply.expect("the IPv6 listener answers");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-forwarded-for"], "::1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_closes_the_excess() {
    let a = Backend::start("a", Kind::Echo).await;
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        r#"
listeners:
  - {{ name: small, address: "127.0.0.1:{port}", max_connections: 2 }}
admin: {{ address: "127.0.0.1:{admin}" }}
reload: {{ watch: false }}
upstreams:
  u: {{ targets: [{{ address: "{}" }}] }}
routes:
  - name: r
    upstream: u
"#,
        a.addr
    );
    let _g = GatewayProcess::start(BIN, &yaml, &[port, admin]);
    let addr = format!("127.0.0.1:{port}");
    let get = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n";
    // The readiness probe's connection may still be counted for a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(get).await.unwrap();
        assert!(read_until(&mut s, b"}").await.starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut third = TcpStream::connect(&addr).await.unwrap();
    let _ = third.write_all(get).await;
    let got = read_until(&mut third, b"}").await;
    assert!(got.is_empty(), "third connection is closed, got {got:?}");

    // Closing one makes room again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(get).await.unwrap();
    assert!(read_until(&mut s, b"}").await.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_idle_timeout() {
    let a = Backend::start("a", Kind::Echo).await;
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        r#"
listeners:
  - {{ name: p, address: "127.0.0.1:{port}", idle_timeout: 400ms }}
admin: {{ address: "127.0.0.1:{admin}" }}
reload: {{ watch: false }}
upstreams:
  u: {{ targets: [{{ address: "{}" }}] }}
routes:
  - name: r
    upstream: u
"#,
        a.addr
    );
    let _g = GatewayProcess::start(BIN, &yaml, &[port, admin]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    assert!(read_until(&mut s, b"}").await.starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the gateway closes the idle connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without further bytes");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "closed too early: {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_streams_in_bounded_memory() {
    let a = Backend::start("a", Kind::Echo).await;
    let (port, admin) = (free_port(), free_port());
    let rest = format!(
        r#"
upstreams:
  u: {{ targets: [{{ address: "{}" }}] }}
routes:
  - name: r
    upstream: u
access_log: "off"
"#,
        a.addr
    );
    // One worker, so both uploads share one allocator heap and one set of buffers.
    let g = GatewayProcess::start_with_threads(BIN, &config(port, admin, &rest), &[port, admin], 1);
    let url = format!("http://127.0.0.1:{port}");
    let pid = g.child.id();
    let c = Client::new();
    assert_eq!(c.get(&format!("{url}/warm")).await.status, 200);
    let idle = vm_hwm_kib(pid);
    // A 64 MiB upload sets up the streaming working set (socket and body buffers,
    // allocator pages); a 1 GiB upload after it must not grow the peak any further.
    upload(&url, 64 << 20).await;
    let warmed = vm_hwm_kib(pid);
    upload(&url, 1 << 30).await;
    let after = vm_hwm_kib(pid);
    eprintln!("peak RSS {idle} KiB idle, {warmed} KiB after 64 MiB, {after} KiB after 1 GiB");
    assert!(
        warmed - idle < 16 * 1024,
        "streaming working set is {} KiB",
        warmed - idle
    );
    // Transparent huge pages make RSS move in 2 MiB steps, so allow a few of them. The
    // kernel records the peak lazily, so with pages given back at once (see the binary's
    // allocator) a later reading can be a little below an earlier one.
    let grew = after.saturating_sub(warmed);
    assert!(
        grew <= 6 * 1024,
        "peak RSS grew by {grew} KiB during the 1 GiB upload"
    );
}

/// Streams `total` bytes in 1 MiB frames through the gateway and checks the echo count.
async fn upload(url: &str, total: usize) {
    const CHUNK: usize = 1 << 20;
    let chunk = Bytes::from(vec![b'z'; CHUNK]);
    let frames =
        futures_util::stream::iter((0..total / CHUNK).map(move |_| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk.clone()))
        }));
    let tcp = TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("{url}/upload"))
        .header("host", "t")
        .header("content-length", total.to_string())
        .body(StreamBody::new(frames))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["body_len"], total);
}

/// Peak resident set size of `pid` in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn split_config(stable: std::net::SocketAddr, canary: &str, extra: &str) -> String {
    format!(
        r#"upstreams:
  stable: {{ targets: [{{ address: "{stable}" }}] }}
  canary:
    targets: [{{ address: "{canary}" }}]
    health_check:
      active: {{ path: /, interval: 100ms, timeout: 100ms, unhealthy_threshold: 1 }}
routes:
  - name: canary
    split: [{{ upstream: stable, weight: 50 }}, {{ upstream: canary, weight: 50 }}]
{extra}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_side_without_healthy_targets_falls_back() {
    let stable = Backend::start("stable", Kind::Echo).await;
    let dead = format!("127.0.0.1:{}", free_port());
    let (_g, url, _) = embedded(&split_config(stable.addr, &dead, ""));
    let c = Client::new();
    // Let the active check find the canary down.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..100 {
        let r = c.get(&format!("{url}/x")).await;
        assert_eq!(r.status, 200, "{}", r.body_text());
    }

    let (_g, url, _) = embedded(&split_config(
        stable.addr,
        &dead,
        "    split_fallback: false\n",
    ));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut unavailable = 0;
    for _ in 0..100 {
        if c.get(&format!("{url}/x")).await.status == 503 {
            unavailable += 1;
        }
    }
    assert!((20..=80).contains(&unavailable), "{unavailable} of 100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_hash_on_keeps_a_client_on_one_side() {
    let a = Backend::start("a", Kind::Echo).await;
    let b = Backend::start("b", Kind::Echo).await;
    let (_g, url, _) = embedded(&format!(
        r#"upstreams:
  a: {{ targets: [{{ address: "{}" }}] }}
  b: {{ targets: [{{ address: "{}" }}] }}
routes:
  - name: canary
    split: [{{ upstream: a, weight: 50 }}, {{ upstream: b, weight: 50 }}]
    split_hash_on: header:x-user
"#,
        a.addr, b.addr
    ));
    let c = Client::new();
    let mut sides = std::collections::HashSet::new();
    for user in 0..20 {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10 {
            let req = http::Request::get(format!("{url}/x"))
                .header("x-user", format!("user-{user}"))
                .body(Full::default())
                .unwrap();
            seen.insert(c.send(req).await.unwrap().header("x-backend").unwrap());
        }
        assert_eq!(seen.len(), 1, "user-{user} moved between sides: {seen:?}");
        sides.extend(seen);
    }
    assert_eq!(sides.len(), 2, "20 users all landed on one side");
}

/// A gateway whose one listener, `edge`, has `limits` (flow-map entries), proxying
/// every path to `backend`; with the listener's address.
fn edge(backend: &Backend, limits: &str) -> (GatewayProcess, String) {
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        r#"
listeners:
  - {{ name: edge, address: "127.0.0.1:{port}", {limits} }}
admin: {{ address: "127.0.0.1:{admin}" }}
reload: {{ watch: false }}
upstreams:
  u: {{ targets: [{{ address: "{}" }}] }}
routes:
  - name: r
    upstream: u
"#,
        backend.addr
    );
    let g = GatewayProcess::start(BIN, &yaml, &[port, admin]);
    (g, format!("127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_connection_caps_and_header_counts() {
    let a = Backend::start("a", Kind::Echo).await;
    let (_g, addr) = edge(&a, "max_connections_per_ip: 2, max_header_count: 20");
    let get = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n";
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 127.0.0.2 holds its two connections; a third is closed at accept ...
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect_from("127.0.0.2", &addr).await;
        assert!(ask(&mut s, get).await.starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut third = connect_from("127.0.0.2", &addr).await;
    let _ = third.write_all(get).await;
    assert!(read_until(&mut third, b"}").await.is_empty());
    // ... while 127.0.0.3 is served.
    let mut other = connect_from("127.0.0.3", &addr).await;
    other.write_all(get).await.unwrap();
    assert!(
        read_until(&mut other, b"}")
            .await
            .starts_with("HTTP/1.1 200")
    );
    // A closed connection gives its slot back.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut s = connect_from("127.0.0.2", &addr).await;
    assert!(ask(&mut s, get).await.starts_with("HTTP/1.1 200"));

    // 20 header fields pass; 21 get 431 problem+json; the connection keeps serving.
    let head = |n: usize| {
        let mut h = String::from("GET / HTTP/1.1\r\nhost: t\r\n");
        for i in 1..n {
            h.push_str(&format!("x-h{i}: v\r\n"));
        }
        h + "\r\n"
    };
    let mut c = connect_from("127.0.0.3", &addr).await;
    assert!(
        ask(&mut c, head(20).as_bytes())
            .await
            .starts_with("HTTP/1.1 200")
    );
    c.write_all(head(21).as_bytes()).await.unwrap();
    let got = read_until(&mut c, b"}").await;
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    assert!(got.contains("application/problem+json") && got.contains("more than 20 header fields"));
    assert!(ask(&mut c, get).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_stream_cap_is_advertised_and_enforced() {
    let a = Backend::start("a", Kind::Echo).await;
    let (_g, addr) = edge(&a, "http2_max_concurrent_streams: 2");
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    write_frame(&mut s, 0x4, 0, 0, &[]).await;
    // The server's SETTINGS advertise the cap (SETTINGS_MAX_CONCURRENT_STREAMS, 0x3).
    let settings = read_frame(&mut s).await.unwrap();
    assert_eq!(settings.kind, 0x4);
    let advertised = settings
        .payload
        .chunks(6)
        .find(|e| e[..2] == [0, 3])
        .map(|e| u32::from_be_bytes([e[2], e[3], e[4], e[5]]));
    assert_eq!(advertised, Some(2));
    write_frame(&mut s, 0x4, 0x1, 0, &[]).await;
    // Three slow requests at once (HPACK: GET, http, literal :path, literal :authority):
    // the third stream is refused (RST_STREAM, REFUSED_STREAM = 7), the others answered.
    let path = b"/delay/300";
    for stream in [1u32, 3, 5] {
        let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
        block.extend_from_slice(path);
        block.extend_from_slice(&[0x01, 1, b't']);
        write_frame(&mut s, 0x1, 0x5, stream, &block).await;
    }
    let (mut refused, mut answered) = (Vec::new(), Vec::new());
    while refused.len() + answered.len() < 3 {
        let Some(f) = read_frame(&mut s).await else {
            break;
        };
        match f.kind {
            0x3 => refused.push((
                f.stream,
                u32::from_be_bytes(f.payload[..4].try_into().unwrap()),
            )),
            0x1 => answered.push(f.stream),
            _ => {}
        }
    }
    assert_eq!(refused, vec![(5, 7)]);
    answered.sort_unstable();
    assert_eq!(answered, vec![1, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_rate_per_ip_answers_429_before_routing() {
    let a = Backend::start("a", Kind::Echo).await;
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        r#"
listeners:
  - name: edge
    address: "127.0.0.1:{port}"
    request_rate_per_ip: {{ limit: 1, per: 1s, burst: 3 }}
admin: {{ address: "127.0.0.1:{admin}" }}
reload: {{ watch: false }}
upstreams:
  u: {{ targets: [{{ address: "{}" }}] }}
routes:
  - name: r
    match: {{ path: {{ type: prefix, value: /api }} }}
    upstream: u
"#,
        a.addr
    );
    let _g = GatewayProcess::start(BIN, &yaml, &[port, admin]);
    let addr = format!("127.0.0.1:{port}");
    let get = b"GET /api HTTP/1.1\r\nhost: t\r\n\r\n";
    let mut s = connect_from("127.0.0.2", &addr).await;
    for _ in 0..3 {
        assert!(ask(&mut s, get).await.starts_with("HTTP/1.1 200"));
    }
    // Over the burst: 429 before routing (an unrouted path gets it too), with
    // Retry-After; the connection stays open.
    let hits = a.hits();
    s.write_all(b"GET /nowhere HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let got = read_until(&mut s, b"}").await.to_ascii_lowercase();
    assert!(got.starts_with("http/1.1 429"), "{got}");
    assert!(got.contains("retry-after: 1") && got.contains("application/problem+json"));
    assert_eq!(a.hits(), hits);
    // Another address has its own bucket; a second later 127.0.0.2 has one more.
    let mut other = connect_from("127.0.0.3", &addr).await;
    other.write_all(get).await.unwrap();
    assert!(
        read_until(&mut other, b"}")
            .await
            .starts_with("HTTP/1.1 200")
    );
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert!(ask(&mut s, get).await.starts_with("HTTP/1.1 200"));
    assert!(ask(&mut s, get).await.starts_with("HTTP/1.1 429"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_bodies_get_408_while_others_are_served() {
    let a = Backend::start("a", Kind::Echo).await;
    let (_g, addr) = edge(&a, "body_read_timeout: 1s, min_body_rate: 1KiB");
    let head = b"POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: 4000\r\n\r\n";
    // Stalled: 10 bytes, then silence.
    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    stalled.write_all(head).await.unwrap();
    stalled.write_all(&[b'x'; 10]).await.unwrap();
    // Trickling: 10 bytes every 300 ms never waits a second, but is far below 1 KiB/s.
    let trickle_addr = addr.clone();
    let trickling = tokio::spawn(async move {
        let mut s = TcpStream::connect(&trickle_addr).await.unwrap();
        s.write_all(head).await.unwrap();
        let started = Instant::now();
        for _ in 0..20 {
            if s.write_all(&[b'y'; 10]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        (read_until(&mut s, b"}").await, started.elapsed())
    });
    // Meanwhile a normal client is served at once.
    let t = Instant::now();
    let mut normal = TcpStream::connect(&addr).await.unwrap();
    normal
        .write_all(b"POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\nabc")
        .await
        .unwrap();
    assert!(
        read_until(&mut normal, b"}")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(t.elapsed() < Duration::from_millis(500));

    let got = read_until(&mut stalled, b"}").await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("application/problem+json") && got.contains("no request body bytes"));
    let (got, took) = trickling.await.unwrap();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("slower than 1024 bytes per second"), "{got}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protection_exempts_from_the_per_address_limits_and_denies() {
    let a = Backend::start("a", Kind::Echo).await;
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        r#"
listeners:
  - name: edge
    address: "127.0.0.1:{port}"
    max_connections_per_ip: 1
    request_rate_per_ip: {{ limit: 1, per: 10s }}
admin: {{ address: "127.0.0.1:{admin}" }}
reload: {{ watch: false }}
ip_groups:
  office: [127.0.0.4]
trusted_proxies: [127.0.0.6]
protection:
  exempt: [office]
  deny: [127.0.0.5/32]
upstreams:
  u: {{ targets: [{{ address: "{}" }}] }}
routes:
  - name: r
    upstream: u
"#,
        a.addr
    );
    let _g = GatewayProcess::start(BIN, &yaml, &[port, admin]);
    let addr = format!("127.0.0.1:{port}");
    let get = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n";
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A denied peer is closed at accept.
    let mut d = connect_from("127.0.0.5", &addr).await;
    let _ = d.write_all(get).await;
    assert!(read_until(&mut d, b"}").await.is_empty());
    // The office holds two connections and sends three requests in a row.
    let mut office = [
        connect_from("127.0.0.4", &addr).await,
        connect_from("127.0.0.4", &addr).await,
    ];
    for i in [0, 1, 0] {
        office[i].write_all(get).await.unwrap();
        assert!(
            read_until(&mut office[i], b"}")
                .await
                .starts_with("HTTP/1.1 200")
        );
    }
    // Others are held to both limits.
    let mut c = connect_from("127.0.0.2", &addr).await;
    assert!(ask(&mut c, get).await.starts_with("HTTP/1.1 200"));
    assert!(ask(&mut c, get).await.starts_with("HTTP/1.1 429"));
    let mut second = connect_from("127.0.0.2", &addr).await;
    let _ = second.write_all(get).await;
    assert!(read_until(&mut second, b"}").await.is_empty());
    // Behind a trusted proxy, a denied client IP gets 403 problem+json, and the proxy's
    // connection stays open for the next client's request.
    let mut p = connect_from("127.0.0.6", &addr).await;
    p.write_all(b"GET / HTTP/1.1\r\nhost: t\r\nx-forwarded-for: 127.0.0.5\r\n\r\n")
        .await
        .unwrap();
    let got = read_until(&mut p, b"}").await;
    assert!(got.starts_with("HTTP/1.1 403"), "{got}");
    assert!(
        got.contains("application/problem+json")
            && !got.to_ascii_lowercase().contains("connection: close")
    );
    assert!(
        ask(
            &mut p,
            b"GET / HTTP/1.1\r\nhost: t\r\nx-forwarded-for: 127.0.0.7\r\n\r\n"
        )
        .await
        .starts_with("HTTP/1.1 200")
    );
}
