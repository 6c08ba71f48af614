//! A client's fault is never an upstream's: aborted uploads are logged as 499, malformed
//! chunked bodies answer 400, and neither ejects a target, opens the breaker or is
//! retried. A body refused before it was read still lets its client read the answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn strict_upstream(a: SocketAddr, b: SocketAddr) -> String {
    // One failure ejects a target; five tries with a 10% failure ratio open the breaker.
    format!(
        r#"upstreams:
  app:
    targets: [{{ address: "{a}" }}, {{ address: "{b}" }}]
    health_check:
      passive: {{ consecutive_failures: 1, ejection_time: 60s }}
    retries: {{ attempts: 3, on: [connect_failure, reset, timeout] }}
    circuit_breaker: {{ failure_ratio: 0.1, min_requests: 5, window: 60s, open_for: 60s }}
routes:
  - name: app
    upstream: app
"#
    )
}

async fn assert_all_healthy(admin: &str) {
    let v = Client::new()
        .get(&format!("{admin}/admin/upstreams"))
        .await
        .json();
    let app = &v["app"];
    assert_eq!(app["circuit_breaker"]["state"], "closed", "{app}");
    for t in app["targets"].as_array().unwrap() {
        assert_eq!(t["health"], "healthy", "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_uploads_leave_targets_healthy() {
    let a = Backend::start("a", Kind::Echo).await;
    let b = Backend::start("b", Kind::Echo).await;
    let (g, url, admin) = gateway(&strict_upstream(a.addr, b.addr));
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();

    for i in 0..20 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Streamed (too large to buffer for a retry), then the client goes away.
        let head =
            format!("POST /upload/{i} HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&vec![b'x'; 64 * 1024]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_all_healthy(&admin).await;

    let log = g.stdout_text();
    let aborted = log
        .lines()
        .filter(|l| l.contains("/upload/"))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(aborted.len(), 20, "{log}");
    for rec in &aborted {
        assert_eq!(rec["status"], 499, "{rec}");
    }
    // The gateway still serves both targets.
    let c = Client::new();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(
            c.get(&format!("{url}/x"))
                .await
                .header("x-backend")
                .unwrap(),
        );
    }
    assert_eq!(seen.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_bodies_are_400_and_blame_nobody() {
    let a = Backend::start("a", Kind::Echo).await;
    let b = Backend::start("b", Kind::Echo).await;
    let (_g, url, admin) = embedded(&strict_upstream(a.addr, b.addr));
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();

    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST /chunks HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await
        .unwrap();
        // Let the gateway start streaming before the bad chunk size line arrives.
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.write_all(b"zz\r\nnot a chunk\r\n0\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(text.contains("application/problem+json"), "{text}");
    }
    assert_all_healthy(&admin).await;
}

/// Sends `head` and then `body` whole on a fresh connection, and only then reads the
/// answer's head: its status, or what failed (a write or read reset by the gateway).
async fn upload(
    addr: SocketAddr,
    head: &str,
    body: &[u8],
) -> Result<(u16, tokio::net::TcpStream), String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("head: {e}"))?;
    s.write_all(body).await.map_err(|e| format!("body: {e}"))?;
    let status = read_status(&mut s).await?;
    Ok((status, s))
}

/// Reads one answer's head (the bodies here are small problem documents read with it)
/// and yields its status; nothing read (a reset, a close) is an error.
async fn read_status(s: &mut tokio::net::TcpStream) -> Result<u16, String> {
    let text = read_until(s, b"\r\n\r\n").await;
    text.get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_uploads_are_read_through_so_the_client_reads_why() {
    let be = Backend::start("a", Kind::Echo).await;
    let dead = free_port();
    let (_g, url, _) = gateway(&format!(
        r#"consumers:
  - {{ name: alice, credentials: [{{ type: api_key, key: key-alice-123 }}] }}
upstreams:
  live: {{ targets: [{{ address: "{}" }}] }}
  down: {{ targets: [{{ address: "127.0.0.1:{dead}" }}] }}
policies:
  key: {{ type: api_key }}
routes:
  - name: keyed
    match: {{ path: {{ type: prefix, value: /keyed }} }}
    policies: [key]
    upstream: live
  - name: down
    match: {{ path: {{ type: prefix, value: /down }} }}
    upstream: down
  - name: capped
    match: {{ path: {{ type: prefix, value: /capped }} }}
    max_body_size: 1MiB
    upstream: live
"#,
        be.addr
    ));
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    // More than loopback's socket buffers hold: unread, the client's writes would meet
    // a reset connection.
    const SIZE: usize = 8 << 20;
    let whole = vec![b'x'; SIZE];
    let mut chunked = format!("{SIZE:x}\r\n").into_bytes();
    chunked.extend_from_slice(&whole);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let sized =
        |path: &str| format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {SIZE}\r\n\r\n");
    let cases = [
        // Refused by a policy before the body is read.
        (sized("/keyed/x"), &whole, 401),
        // No route.
        (sized("/nowhere"), &whole, 404),
        // Streamed towards an upstream that cannot be reached.
        (sized("/down/x"), &whole, 502),
        // Over max_body_size partway through a chunked body.
        (
            "POST /capped/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
            &chunked,
            413,
        ),
    ];
    for (head, body, want) in cases {
        let (status, mut s) = upload(addr, &head, body)
            .await
            .unwrap_or_else(|e| panic!("{head}: {e}"));
        assert_eq!(status, want, "{head}");
        // Read through to its end, the connection serves the next request.
        s.write_all(b"GET /keyed/y HTTP/1.1\r\nHost: a\r\nx-api-key: key-alice-123\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_status(&mut s).await, Ok(200), "after {head}");
    }

    // A client waiting to be asked for its body is not asked once refused: the answer
    // is the 401, with no 100 Continue before it.
    let head = format!(
        "POST /keyed/x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: {SIZE}\r\n\r\n"
    );
    let (status, _) = upload(addr, &head, b"").await.unwrap();
    assert_eq!(status, 401);
}
