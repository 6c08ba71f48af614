//! Local traffic control through real sockets: `rate_limit` (429 with Retry-After and the
//! RateLimit headers, one count for the whole process across worker threads and fresh
//! connections, per-consumer budgets, counters kept across a reload, a key's budget read
//! and reset through the admin API, delay mode that queues in order) and `concurrency_limit` (429 at once when full, places given back
//! when requests complete).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;

fn limited(backend: std::net::SocketAddr, policies: &str) -> String {
    format!(
        r#"
consumers:
  - name: a
    credentials: [{{ type: api_key, key: key-a-123 }}]
  - name: b
    credentials: [{{ type: api_key, key: key-b-123 }}]
upstreams:
  u:
    targets: [{{ address: "{backend}" }}]
policies:
  key: {{ type: api_key }}
{policies}
routes:
  - name: ip
    match: {{ path: {{ type: prefix, value: /ip }} }}
    policies: [per-ip]
    upstream: u
  - name: consumer
    match: {{ path: {{ type: prefix, value: /consumer }} }}
    policies: [key, per-consumer]
    upstream: u
  - name: slow
    match: {{ path: {{ type: prefix, value: /delay }} }}
    policies: [inflight]
    upstream: u
"#
    )
}

const POLICIES: &str = r#"  per-ip: { type: rate_limit, limit: 5, per: 60s, key: ip }
  per-consumer: { type: rate_limit, algorithm: fixed_window, limit: 3, per: 1m, key: consumer }
  inflight: { type: concurrency_limit, max: 2, key: route }"#;

/// `GET url` on a connection of its own (so requests spread over the worker threads).
async fn fresh(url: &str, headers: &[(&str, &str)]) -> Reply {
    send(&Client::new(), "GET", url, headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_counts_for_the_whole_process_and_answers_429_with_its_headers() {
    let be = Backend::start("a", Kind::Echo).await;
    let (g, url, admin) = embedded(&limited(be.addr, POLICIES));

    // 20 requests at once, each on a new connection: exactly 5 pass, whichever worker
    // thread takes each connection.
    let all: Vec<_> = (0..20)
        .map(|_| {
            let u = format!("{url}/ip");
            tokio::spawn(async move { fresh(&u, &[]).await })
        })
        .collect();
    let mut replies = Vec::new();
    for r in all {
        replies.push(r.await.unwrap());
    }
    assert_eq!(replies.iter().filter(|r| r.status == 200).count(), 5);
    let ok = replies.iter().find(|r| r.status == 200).unwrap();
    assert_eq!(
        ok.header("ratelimit-policy").as_deref(),
        Some("\"per-ip\";q=5;w=60")
    );
    assert!(
        ok.header("ratelimit").unwrap().starts_with("\"per-ip\";r="),
        "{:?}",
        ok.header("ratelimit")
    );
    let no = replies.iter().find(|r| r.status == 429).unwrap();
    assert_problem(no, 429);
    let retry: u64 = no.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry), "one token every 12 s: {retry}");
    assert!(
        no.header("ratelimit").unwrap().contains(";r=0;"),
        "{:?}",
        no.header("ratelimit")
    );
    assert_eq!(be.hits(), 5, "refused requests never reach the upstream");

    // Per consumer, Kong's headers for a per-minute limit; each consumer its own budget.
    for i in 0..3 {
        let r = fresh(&format!("{url}/consumer"), &[("x-api-key", "key-a-123")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-ratelimit-remaining-minute"),
            Some((2 - i).to_string())
        );
    }
    assert_problem(
        &fresh(&format!("{url}/consumer"), &[("x-api-key", "key-a-123")]).await,
        429,
    );
    assert_eq!(
        fresh(&format!("{url}/consumer"), &[("x-api-key", "key-b-123")])
            .await
            .status,
        200
    );

    // A reload that keeps the policy keeps its counters.
    let more = format!(
        "{POLICIES}\n  extra: {{ type: headers, response: {{ set: {{ x-extra: \"1\" }} }} }}"
    );
    g.reload(&format!(
        "listeners:\n  - name: public\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nreload: {{ watch: false }}\nshutdown: {{ drain_timeout: 5s }}\n{}",
        limited(be.addr, &more)
    ))
    .unwrap();
    let r = fresh(&format!("{url}/consumer"), &[("x-api-key", "key-a-123")]).await;
    assert_problem(&r, 429);

    // The admin API reads a key's budget and resets it.
    let r = fresh(&format!("{admin}/admin/limits/per-consumer?key=a"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.json()["remaining"], 0);
    assert_eq!(r.json()["limit"], 3);
    let r = fresh(&format!("{admin}/admin/limits/per-ip?key=127.0.0.1"), &[]).await;
    assert_eq!(r.json()["remaining"], 0, "{}", r.body_text());
    let r = send(
        &Client::new(),
        "DELETE",
        &format!("{admin}/admin/limits/per-consumer?key=a"),
        &[],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        fresh(&format!("{url}/consumer"), &[("x-api-key", "key-a-123")])
            .await
            .status,
        200
    );
    assert_problem(
        &fresh(&format!("{admin}/admin/limits/nope?key=a"), &[]).await,
        404,
    );
    assert_problem(
        &fresh(&format!("{admin}/admin/limits/per-ip?key=not-an-ip"), &[]).await,
        400,
    );
    assert_problem(
        &fresh(&format!("{admin}/admin/limits/per-ip"), &[]).await,
        400,
    );

    // Every refusal is a short circuit of its policy in the metrics.
    let m = fresh(&format!("{admin}/metrics"), &[]).await.body_text();
    assert!(
        m.lines()
            .any(|l| l.starts_with("gatehouse_short_circuits_total")
                && l.contains("policy=\"per-ip\"")
                && l.contains("reason=\"rate_limited\"")
                && l.ends_with(" 15")),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delay_mode_queues_requests_in_turn_up_to_max_delay() {
    let be = Backend::start("a", Kind::Echo).await;
    let policies = r#"  per-ip: { type: rate_limit, algorithm: leaky_bucket, limit: 10, per: 1s, key: ip, on_exceed: delay, max_delay: 450ms }
  per-consumer: { type: rate_limit, limit: 3, per: 1m }
  inflight: { type: concurrency_limit, max: 2 }"#;
    let (_g, url, _admin) = embedded(&limited(be.addr, policies));
    let started = std::time::Instant::now();
    let all: Vec<_> = (0..8)
        .map(|_| {
            let u = format!("{url}/ip");
            tokio::spawn(async move { fresh(&u, &[]).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for r in all {
        statuses.push(r.await.unwrap());
    }
    // One every 100 ms: the first at once, four more within 450 ms, the rest refused.
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "{statuses:?}"
    );
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(380), "{took:?}");
    assert!(took < std::time::Duration::from_secs(3), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrency_limit_refuses_at_once_when_full_and_frees_places_on_completion() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, _admin) = embedded(&limited(be.addr, POLICIES));
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let u = format!("{url}/delay/600");
            tokio::spawn(async move { fresh(&u, &[]).await.status })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let r = fresh(&format!("{url}/delay/0"), &[]).await;
    assert_problem(&r, 429);
    assert!(
        started.elapsed() < std::time::Duration::from_millis(300),
        "answered at once"
    );
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
    // Both places are free again; refused and failed requests never held one.
    for _ in 0..3 {
        assert_eq!(fresh(&format!("{url}/delay/0"), &[]).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_of_a_route_applies_and_a_refused_request_uses_none_of_their_budgets() {
    let be = Backend::start("a", Kind::Echo).await;
    let yaml = format!(
        r#"
upstreams:
  u:
    targets: [{{ address: "{}" }}]
policies:
  per-second: {{ type: rate_limit, limit: 100, per: 100s, key: ip }}
  per-minute: {{ type: rate_limit, algorithm: sliding_log, limit: 2, per: 1m, key: ip }}
routes:
  - name: r
    policies: [per-second, per-minute]
    upstream: u
"#,
        be.addr
    );
    let (_g, url, admin) = embedded(&yaml);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = fresh(&format!("{url}/x"), &[]).await;
        statuses.push(r.status);
        if r.status == 429 {
            // Both limits speak on the refusal: the exhausted one and the other.
            let items: Vec<_> = r
                .headers
                .get_all("ratelimit")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect();
            let items = items.join(", ");
            assert!(
                items.contains("\"per-minute\";r=0") && items.contains("\"per-second\";r="),
                "{items}"
            );
        }
    }
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    let r = fresh(
        &format!("{admin}/admin/limits/per-second?key=127.0.0.1"),
        &[],
    )
    .await;
    assert!(
        r.json()["remaining"].as_u64().unwrap() >= 98,
        "refused requests were given back: {}",
        r.body_text()
    );
}
