//! Request heads per RFC 9112 and 9110 through real sockets, with the exact inputs of the
//! protocol probes: Host rules, absolute-form targets, transfer codings, CONNECT and
//! TRACE, upgrade smuggling, and listeners that honour their `protocols`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use bytes::Bytes;
use gatehouse_testkit::client::raw;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn status(raw: &str) -> u16 {
    raw.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The JSON body of a raw response (the echo backend's report).
fn body_json(raw: &str) -> serde_json::Value {
    let body = raw.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {raw}"))
}

struct Setup {
    _g: GatewayProcess,
    addr: SocketAddr,
    backend: Backend,
}

async fn setup(extra_routes: &str) -> Setup {
    let backend = Backend::start("app", Kind::Echo).await;
    let (g, url, _) = gateway(&format!(
        r#"upstreams:
  app: {{ targets: [{{ address: "{}" }}] }}
routes:
  - name: admin-host
    match: {{ hosts: [admin.example] }}
    respond: {{ status: 403, body: "admin" }}
  - name: secret
    match: {{ path: {{ type: prefix, value: /admin }} }}
    respond: {{ status: 403, body: "no" }}
{extra_routes}  - name: app
    upstream: app
"#,
        backend.addr
    ));
    Setup {
        _g: g,
        addr: url.trim_start_matches("http://").parse().unwrap(),
        backend,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_rules() {
    let s = setup("").await;
    for (what, req) in [
        ("no Host in HTTP/1.1", "GET / HTTP/1.1\r\n\r\n".to_string()),
        (
            "two Host fields",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(),
        ),
        ("a list", "GET / HTTP/1.1\r\nHost: a, b\r\n\r\n".into()),
        ("a path", "GET / HTTP/1.1\r\nHost: a/evil\r\n\r\n".into()),
    ] {
        let r = raw(s.addr, req.as_bytes()).await;
        assert_eq!(status(&r), 400, "{what}: {r}");
        assert!(r.contains("application/problem+json"), "{what}: {r}");
        assert!(r.to_ascii_lowercase().contains("x-request-id"), "{r}");
    }
    assert_eq!(s.backend.hits(), 0);

    // Case and one trailing dot do not hide a host.
    for host in ["ADMIN.example.", "Admin.Example", "admin.example:8080"] {
        let r = raw(
            s.addr,
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status(&r), 403, "{host}: {r}");
    }

    // Absolute form: the authority wins for routing and is the Host sent upstream.
    let r = raw(
        s.addr,
        b"GET http://admin.example/ HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 403, "{r}");
    let r = raw(
        s.addr,
        b"GET http://public.example:8443/x HTTP/1.1\r\nHost: admin.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
    let v = body_json(&r);
    assert_eq!(v["headers"]["host"], "public.example:8443");
    assert_eq!(v["headers"]["x-forwarded-host"], "public.example:8443");
    assert_eq!(v["uri"], "/x");

    // HTTP/1.0 without Host is forwarded with a Host.
    let r = raw(s.addr, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(body_json(&r)["headers"]["host"].is_string(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_is_the_host() {
    let s = setup("").await;
    let mut tx = gatehouse_testkit::client::h2(s.addr).await;
    let req = http::Request::get("http://ADMIN.example/")
        .body(Full::default())
        .unwrap();
    assert_eq!(tx.send_request(req).await.unwrap().status(), 403);
    let req = http::Request::get("http://public.example:9/h2")
        .body(Full::default())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["headers"]["host"], "public.example:9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_codings() {
    let s = setup("").await;
    for (te, want) in [
        ("Transfer-Encoding: chunked, chunked\r\n", 400),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
        (
            "Transfer-Encoding: chunked, chunked\r\nContent-Length: 5\r\n",
            400,
        ),
        ("Transfer-Encoding: gzip, chunked\r\n", 501),
    ] {
        let started = Instant::now();
        // No `Connection: close`: the gateway must close by itself.
        let r = raw(
            s.addr,
            format!("POST /x HTTP/1.1\r\nHost: a\r\n{te}\r\n5\r\nhello\r\n0\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status(&r), want, "{te:?}: {r}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{te:?}: connection left open"
        );
    }
    assert_eq!(s.backend.hits(), 0, "nothing ambiguous reaches a backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_trace() {
    let s = setup(
        "  - name: trace-debug\n    match: { path: { type: prefix, value: /debug }, methods: [TRACE] }\n    upstream: app\n",
    )
    .await;
    let r = raw(
        s.addr,
        b"CONNECT internal.example:22 HTTP/1.1\r\nHost: internal.example:22\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 405, "{r}");
    assert!(r.to_ascii_lowercase().contains("allow:"), "{r}");
    let r = raw(
        s.addr,
        b"TRACE /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 405, "{r}");
    assert_eq!(s.backend.hits(), 0);
    // A route that lists TRACE opts in.
    let r = raw(
        s.addr,
        b"TRACE /debug HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(body_json(&r)["method"], "TRACE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrade_cannot_smuggle_past_routing() {
    let s = setup("").await;
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    c.write_all(
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await
    .unwrap();
    let first = read_response(&mut c).await;
    assert_eq!(status(&first), 200, "{first}");
    let v = body_json(&first);
    for h in ["upgrade", "http2-settings", "connection"] {
        assert!(
            v["headers"].get(h).is_none(),
            "{h} reached the backend: {v}"
        );
    }
    // The connection is still HTTP/1.1 and still routed.
    c.write_all(b"GET /admin/secret HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let second = read_response(&mut c).await;
    assert_eq!(status(&second), 403, "{second}");
    assert_eq!(s.backend.hits(), 1);
}

/// Reads one response with a Content-Length body from a kept-alive connection.
async fn read_response(c: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut chunk))
            .await
            .expect("response timed out")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_speak_only_their_protocols() {
    let b = Backend::start("app", Kind::Echo).await;
    let (p1, p2, admin) = (free_port(), free_port(), free_port());
    let yaml = format!(
        r#"listeners:
  - {{ name: h1, address: "127.0.0.1:{p1}", protocols: [http1] }}
  - {{ name: h2, address: "127.0.0.1:{p2}", protocols: [h2c] }}
admin: {{ address: "127.0.0.1:{admin}" }}
reload: {{ watch: false }}
upstreams:
  app: {{ targets: [{{ address: "{}" }}] }}
routes:
  - name: app
    upstream: app
"#,
        b.addr
    );
    let _g = GatewayProcess::start(BIN, &yaml, &[p1, p2, admin]);

    // [h2c]: HTTP/1.1 is not answered as HTTP/1.1.
    let r = raw(
        format!("127.0.0.1:{p2}").parse().unwrap(),
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(
        !r.starts_with("HTTP/1"),
        "an h2c-only listener spoke HTTP/1: {r:?}"
    );
    // ... and prior-knowledge HTTP/2 works.
    let mut tx = gatehouse_testkit::client::h2(format!("127.0.0.1:{p2}").parse().unwrap()).await;
    let req = http::Request::get(format!("http://127.0.0.1:{p2}/"))
        .body(Full::default())
        .unwrap();
    assert_eq!(tx.send_request(req).await.unwrap().status(), 200);

    // [http1]: the HTTP/2 preface is not accepted.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", p1))
        .await
        .unwrap();
    let h2 = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await;
    if let Ok((mut tx, conn)) = h2 {
        tokio::spawn(conn);
        let req = http::Request::get(format!("http://127.0.0.1:{p1}/"))
            .body(Full::default())
            .unwrap();
        assert!(
            tx.send_request(req).await.is_err(),
            "an http1-only listener spoke h2c"
        );
    }
    assert_eq!(
        Client::new()
            .get(&format!("http://127.0.0.1:{p1}/"))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_keep_the_error_contract() {
    let s = setup("").await;
    let huge = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(200_000));
    for (what, req, want) in [
        (
            "malformed header line",
            b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n".to_vec(),
            400,
        ),
        ("garbage", b"\x01\x02\x03 nonsense\r\n\r\n".to_vec(), 400),
        ("head beyond the buffer", huge.into_bytes(), 431),
    ] {
        let r = raw(s.addr, &req).await;
        assert_eq!(status(&r), want, "{what}: {r}");
        let lower = r.to_ascii_lowercase();
        assert!(
            lower.contains("content-type: application/problem+json"),
            "{what}: {r}"
        );
        assert!(lower.contains("x-request-id: "), "{what}: {r}");
        let body = body_json(&r);
        assert_eq!(body["status"], want);
        assert_eq!(body["type"], "about:blank");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_2_is_served_as_http_1_1() {
    let s = setup("").await;
    let r = raw(
        s.addr,
        b"GET /v HTTP/1.2\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(body_json(&r)["uri"], "/v");
}
