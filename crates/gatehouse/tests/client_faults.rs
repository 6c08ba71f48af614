//! A client's fault is never an upstream's: aborted uploads are logged as 499, malformed
//! chunked bodies answer 400, and neither ejects a target, opens the breaker or is
//! retried.
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
