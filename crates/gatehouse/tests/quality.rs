//! The quality score, the latency breakdown and their metrics through real sockets:
//! fast routes score 100, slow ones and failing ones fall, a route whose upstream has
//! targets out of rotation pays the saturation penalty, one whose requests are blocked
//! by a security policy pays the security penalty; phases show where the time went (an
//! upstream that thinks, a client that uploads slowly), per request in the access log
//! and per route at `/admin/latency`; consumer series stay within `metrics.consumers.max`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(be: &Backend, dead: u16) -> String {
    format!(
        r#"access_log: stdout
analytics: {{ latency_target: 100ms }}
metrics: {{ consumers: {{ enabled: true, max: 1 }} }}
consumers:
  - {{ name: alice, credentials: [{{ type: api_key, key: "alice-key-0123456789" }}] }}
  - {{ name: bob, credentials: [{{ type: api_key, key: "bob-key-0123456789ab" }}] }}
upstreams:
  u:
    targets: [{{ address: "{be}" }}]
  half:
    targets: [{{ address: "{be}" }}, {{ address: "127.0.0.1:{dead}" }}]
    health_check:
      active: {{ type: tcp, interval: 100ms, timeout: 100ms, healthy_threshold: 1, unhealthy_threshold: 1 }}
policies:
  key: {{ type: api_key, header: x-api-key }}
  closed: {{ type: ip_filter, deny: [127.0.0.0/8] }}
routes:
  - {{ name: fast, match: {{ path: {{ type: prefix, value: /fast }} }}, upstream: u }}
  - name: slow
    match: {{ path: {{ type: prefix, value: /delay }} }}
    analytics: {{ latency_target: 20ms }}
    upstream: u
  - {{ name: failing, match: {{ path: {{ type: prefix, value: /status }} }}, upstream: u }}
  - {{ name: guarded, match: {{ path: {{ type: prefix, value: /guarded }} }}, policies: [closed], upstream: u }}
  - {{ name: degraded, match: {{ path: {{ type: prefix, value: /degraded }} }}, upstream: half }}
  - {{ name: keyed, match: {{ path: {{ type: prefix, value: /keyed }} }}, policies: [key], upstream: u }}
  - {{ name: idle, match: {{ path: {{ type: prefix, value: /idle }} }}, upstream: u }}
"#,
        be = be.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_fall_with_latency_errors_saturation_and_blocks() {
    let be = Backend::start("a", Kind::Echo).await;
    let (g, url, admin) = gateway(&config(&be, free_port()));
    let c = Client::new();
    // Health checks take the dead target out of rotation.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..5 {
        assert_eq!(
            send(&c, "GET", &format!("{url}/fast"), &[]).await.status,
            200
        );
        assert_eq!(
            send(&c, "GET", &format!("{url}/status/503"), &[])
                .await
                .status,
            503
        );
        assert_eq!(
            send(&c, "GET", &format!("{url}/guarded"), &[]).await.status,
            403
        );
        assert_eq!(
            send(&c, "GET", &format!("{url}/degraded"), &[])
                .await
                .status,
            200
        );
    }
    // 30 ms against a 20 ms target: tolerated; 100 ms: over 4x, frustrated.
    assert_eq!(
        send(&c, "GET", &format!("{url}/delay/30"), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        send(&c, "GET", &format!("{url}/delay/100"), &[])
            .await
            .status,
        200
    );

    let q = c.get(&format!("{admin}/admin/quality?window=1m")).await;
    assert_eq!(q.status, 200, "{}", q.body_text());
    let q = q.json();
    let route = |n: &str| q["routes"][n].clone();
    let fast = route("fast");
    assert_eq!(fast["score"], 100.0, "{fast}");
    assert_eq!(fast["requests"], 5);
    assert_eq!(fast["latency"]["apdex"], 1.0);
    assert_eq!(fast["latency"]["target_ms"], 100);
    assert_eq!(fast["errors"]["count"], 0);

    let slow = route("slow");
    assert_eq!(slow["latency"]["target_ms"], 20);
    assert_eq!(slow["latency"]["tolerated"], 1, "{slow}");
    assert_eq!(slow["latency"]["frustrated"], 1, "{slow}");
    assert_eq!(slow["score"], 25.0, "apdex (0 + 1/2) / 2 = 0.25: {slow}");

    let failing = route("failing");
    assert_eq!(failing["score"], 0.0);
    assert_eq!(failing["errors"]["count"], 5);
    assert_eq!(failing["errors"]["ratio"], 1.0);

    let guarded = route("guarded");
    assert_eq!(guarded["security"]["blocked"], 5);
    assert_eq!(guarded["security"]["penalty"], 15.0);
    assert_eq!(guarded["score"], 85.0, "{guarded}");

    let degraded = route("degraded");
    assert_eq!(
        degraded["saturation"]["penalty"], 12.5,
        "half the targets out: {degraded}"
    );
    assert_eq!(degraded["score"], 87.5);
    assert!(
        degraded["reasons"]
            .to_string()
            .contains("1 of 2 targets out of rotation"),
        "{degraded}"
    );
    assert_eq!(q["upstreams"]["half"]["saturation"]["penalty"], 12.5);
    assert_eq!(q["upstreams"]["u"]["requests"], 12, "fast, failing, slow");

    let idle = route("idle");
    assert!(idle["score"].is_null(), "no traffic, no score: {idle}");
    assert_eq!(idle["requests"], 0);

    for bad in ["window=2h", "window=soon", "by=requests"] {
        let r = c.get(&format!("{admin}/admin/quality?{bad}")).await;
        assert_problem(&r, 400);
    }

    // The score is a metric too (5 minutes), and the phases are histograms per route.
    let m = c.get(&format!("{admin}/metrics")).await.body_text();
    assert!(
        m.contains("gatehouse_quality_score{kind=\"route\",name=\"fast\"} 100\n"),
        "{m}"
    );
    assert!(m.contains("gatehouse_quality_score{kind=\"route\",name=\"failing\"} 0\n"));
    assert!(!m.contains("name=\"idle\""), "no traffic, no series");
    for phase in ["client", "gateway", "upstream_network", "upstream_app"] {
        let count = format!(
            "gatehouse_phase_duration_seconds_count{{route=\"fast\",phase=\"{phase}\"}} 5\n"
        );
        assert!(m.contains(&count), "{count}");
    }
    // Refused before any upstream: its upstream phases never took time, so no series
    // (all-zero buckets would read as a latency in histogram_quantile).
    assert!(m.contains(
        "gatehouse_phase_duration_seconds_count{route=\"guarded\",phase=\"gateway\"} 5\n"
    ));
    assert!(!m.contains("route=\"guarded\",phase=\"upstream_app\""));
    assert!(!m.contains("route=\"guarded\",phase=\"upstream_network\""));
    for component in [
        "metrics",
        "analytics",
        "top_n",
        "transactions",
        "span_queue",
    ] {
        let line = format!("gatehouse_memory_bytes{{component=\"{component}\"}} ");
        assert!(m.contains(&line), "{line}");
    }
    drop(g);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_show_where_the_time_went() {
    let be = Backend::start("a", Kind::Echo).await;
    let (g, url, admin) = gateway(&config(&be, free_port()));
    let c = Client::new();
    // An upstream that thinks for 150 ms.
    let r = send(&c, "GET", &format!("{url}/delay/150"), &[]).await;
    let line = g.access_line(&r.header("x-request-id").unwrap()).unwrap();
    let p = &line["phases"];
    let app = p["upstream_app_ms"].as_f64().unwrap();
    assert!(app >= 150.0, "{p}");
    let sum: f64 = [
        "client_ms",
        "gateway_ms",
        "upstream_network_ms",
        "upstream_app_ms",
    ]
    .iter()
    .map(|k| p[k].as_f64().unwrap())
    .sum();
    assert!((sum - p["total_ms"].as_f64().unwrap()).abs() < 0.01, "{p}");

    // A client that sends its body slowly.
    let addr = url.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"POST /fast/upload HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\nconnection: close\r\n\r\n01234")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    s.write_all(b"56789").await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap()
        .trim()
        .to_string();
    let line = g.access_line(&id).unwrap();
    let p = &line["phases"];
    assert!(p["client_ms"].as_f64().unwrap() >= 200.0, "{p}");
    assert!(p["upstream_app_ms"].as_f64().unwrap() < 200.0, "{p}");

    let l = c.get(&format!("{admin}/admin/latency?window=5m")).await;
    assert_eq!(l.status, 200);
    let l = l.json();
    let slow = &l["routes"]["slow"];
    assert_eq!(slow["requests"], 1);
    assert_eq!(slow["bottleneck"], "upstream_app");
    assert!(
        slow["mean_ms"]["upstream_app"].as_f64().unwrap() >= 150.0,
        "{slow}"
    );
    assert!(
        slow["p95_ms"]["upstream_app"].as_f64().unwrap() >= 100.0,
        "{slow}"
    );
    let fast = &l["routes"]["fast"];
    assert_eq!(fast["bottleneck"], "client", "{fast}");
    assert_problem(
        &c.get(&format!("{admin}/admin/latency?window=0s")).await,
        400,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_series_are_bounded_and_scored() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, admin) = gateway(&config(&be, free_port()));
    let c = Client::new();
    for (key, n) in [("alice-key-0123456789", 3), ("bob-key-0123456789ab", 2)] {
        for _ in 0..n {
            let r = send(&c, "GET", &format!("{url}/keyed"), &[("x-api-key", key)]).await;
            assert_eq!(r.status, 200);
        }
    }
    let r = send(&c, "GET", &format!("{url}/keyed"), &[]).await;
    assert_eq!(r.status, 401);
    let m = c.get(&format!("{admin}/metrics")).await.body_text();
    assert!(
        m.contains(
            "gatehouse_consumer_requests_total{consumer=\"alice\",status_class=\"2xx\"} 3\n"
        ),
        "{m}"
    );
    assert!(
        m.contains(
            "gatehouse_consumer_requests_total{consumer=\"other\",status_class=\"2xx\"} 2\n"
        ),
        "max: 1"
    );
    assert!(!m.contains("consumer=\"bob\""));
    assert!(m.contains("gatehouse_quality_score{kind=\"consumer\",name=\"alice\"} 100\n"));
    let q = c.get(&format!("{admin}/admin/quality")).await.json();
    assert_eq!(q["consumers"]["alice"]["requests"], 3);
    assert_eq!(q["consumers"]["bob"]["requests"], 2);
    assert_eq!(
        q["routes"]["keyed"]["security"]["blocked"], 1,
        "a refused credential is a block"
    );
}

/// The series names and label sets of a scrape, without values.
fn series_set(scrape: &str) -> std::collections::BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_string()))
        // Values that move with time, not with the traffic's shape.
        .filter(|s| !s.starts_with("process_") && !s.starts_with("gatehouse_memory_bytes"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_paths_addresses_and_agents_add_no_series_and_state_survives_reloads() {
    let be = Backend::start("a", Kind::Echo).await;
    let rest = format!(
        "trusted_proxies: [127.0.0.0/8]\n{}",
        config(&be, free_port())
    );
    let (_g, url, admin) = gateway(&rest);
    let c = Client::new();
    let hit = |i: u32| {
        let c = c.clone();
        let url = url.clone();
        async move {
            let ip = format!("10.{}.{}.{}", i % 200, (i / 200) % 200, i % 7 + 1);
            let agent = format!("agent-{i}/{}", i * 7919);
            let path = format!("/fast/{i}/{}", i * 31);
            let r = send(
                &c,
                "GET",
                &format!("{url}{path}?q={i}"),
                &[("x-forwarded-for", &ip), ("user-agent", &agent)],
            )
            .await;
            assert_eq!(r.status, 200);
        }
    };
    // One of each shape first, so every series that traffic can make exists.
    hit(0).await;
    let before = series_set(&c.get(&format!("{admin}/metrics")).await.body_text());
    for i in 1..300 {
        hit(i).await;
    }
    let after = series_set(&c.get(&format!("{admin}/metrics")).await.body_text());
    let grown: Vec<_> = after.difference(&before).collect();
    assert!(
        grown.is_empty(),
        "new series from random paths, IPs, agents: {grown:?}"
    );

    // Counters, scores, Top-N and transactions survive a reload.
    let quality = |c: Client, admin: String| async move {
        c.get(&format!("{admin}/admin/quality?window=1m"))
            .await
            .json()["routes"]["fast"]["requests"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(quality(c.clone(), admin.clone()).await, 300);
    let r = send(&c, "POST", &format!("{admin}/admin/reload"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(quality(c.clone(), admin.clone()).await, 300);
    let m = c.get(&format!("{admin}/metrics")).await.body_text();
    assert!(m.contains(
        "gatehouse_http_server_requests_total{listener=\"public\",route=\"fast\",method=\"GET\",status_class=\"2xx\"} 300\n"
    ));
    let top = c
        .get(&format!("{admin}/admin/top/clients?limit=1000"))
        .await
        .json();
    assert_eq!(top["tracked"], 300);
    let tx = c
        .get(&format!("{admin}/admin/transactions?route=fast&limit=1000"))
        .await
        .json();
    assert_eq!(tx["items"].as_array().unwrap().len(), 300);
}
