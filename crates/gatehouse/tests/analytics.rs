//! Analytics through the real binary: the access log's object form (errors, slow
//! requests and short circuits always written, others sampled, `sample_rate` on each
//! line) and the transactions kept for search whatever the sampling (`GET
//! /admin/transactions`: filters, device classes, newest first, the ring's capacity, 400
//! for filters that mean nothing).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use std::time::Duration;

const PHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1";
const DESKTOP: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";

fn yaml(backend: std::net::SocketAddr, sample: &str, keep: usize) -> String {
    format!(
        r#"
access_log: {{ output: stdout, sample: {sample}, always: {{ status_from: 500, slower_than: 300ms }} }}
analytics: {{ transactions: {keep} }}
upstreams:
  u:
    targets: [{{ address: "{backend}" }}]
policies:
  closed: {{ type: ip_filter, deny: [127.0.0.0/8] }}
routes:
  - name: blocked
    match: {{ path: {{ type: prefix, value: /blocked }} }}
    policies: [closed]
    upstream: u
  - name: api
    match: {{ path: {{ type: prefix, value: / }} }}
    upstream: u
"#
    )
}

async fn get(c: &Client, url: &str, ua: &str) -> Reply {
    send(c, "GET", url, &[("user-agent", ua)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_samples_but_transactions_keep_every_request() {
    let be = Backend::start("a", Kind::Echo).await;
    let (g, url, admin) = gateway(&yaml(be.addr, "0", 100));
    let c = Client::new();
    let ok = get(&c, &format!("{url}/fine"), PHONE).await;
    assert_eq!(ok.status, 200);
    let err = get(&c, &format!("{url}/status/503"), DESKTOP).await;
    assert_eq!(err.status, 503);
    let slow = get(&c, &format!("{url}/delay/400"), "curl/8.5.0").await;
    assert_eq!(slow.status, 200);
    let blocked = get(&c, &format!("{url}/blocked"), "Googlebot/2.1").await;
    assert_eq!(blocked.status, 403);
    let not_found = get(&c, &format!("{url}/status/404"), DESKTOP).await;

    // sample 0: only the always-lines are written, each with sample_rate 1.
    for r in [&err, &slow, &blocked] {
        let line = g.access_line(&r.header("x-request-id").unwrap()).unwrap();
        assert_eq!(line["sample_rate"], 1.0, "{line}");
    }
    std::thread::sleep(Duration::from_millis(300));
    for r in [&ok, &not_found] {
        let id = r.header("x-request-id").unwrap();
        assert!(!g.stdout_text().contains(&id), "{id} was sampled out");
    }

    // Every request is a transaction, newest first, with its device class.
    let all = c.get(&format!("{admin}/admin/transactions")).await.json();
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{all}");
    assert_eq!(
        items[0]["request_id"],
        not_found.header("x-request-id").unwrap()
    );
    assert_eq!(items[4]["device"], "mobile");
    assert!(items[4].get("sample_rate").is_none());
    let q = |query: &str| {
        let (c, admin) = (c.clone(), admin.clone());
        let query = query.to_string();
        async move { c.get(&format!("{admin}/admin/transactions?{query}")).await }
    };
    let ids = |r: Reply| -> Vec<String> {
        r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["request_id"].as_str().unwrap().to_string())
            .collect()
    };
    let id = |r: &Reply| r.header("x-request-id").unwrap();
    assert_eq!(ids(q("status=5xx").await), [id(&err)]);
    assert_eq!(ids(q("status=404").await), [id(&not_found)]);
    assert_eq!(ids(q("status=4xx&device=bot").await), [id(&blocked)]);
    assert_eq!(ids(q("min_latency=300ms").await), [id(&slow)]);
    assert_eq!(ids(q("device=library").await), [id(&slow)]);
    assert_eq!(ids(q("route=blocked").await), [id(&blocked)]);
    assert_eq!(ids(q(&format!("request_id={}", id(&ok))).await), [id(&ok)]);
    assert_eq!(ids(q("client_ip=127.0.0.1&limit=2").await).len(), 2);
    assert!(ids(q("client_ip=10.9.9.9").await).is_empty());
    let blocked_item = &q("route=blocked").await.json()["items"][0];
    assert_eq!(blocked_item["short_circuit"]["reason"], "ip_denied");
    assert_eq!(blocked_item["user_agent"], "Googlebot/2.1");

    for bad in [
        "status=7xx",
        "status=abc",
        "min_latency=soon",
        "device=fridge",
        "limit=0",
        "client_ip=nope",
        "colour=blue",
    ] {
        assert_problem(&q(bad).await, 400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_keeps_the_last_n_and_long_fields_are_cut() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, admin) = gateway(&yaml(be.addr, "1", 3));
    let c = Client::new();
    let mut sent = Vec::new();
    for i in 0..5 {
        let long = "x".repeat(if i == 4 { 3000 } else { 1 });
        let r = get(&c, &format!("{url}/n{i}?q={long}"), DESKTOP).await;
        sent.push(r.header("x-request-id").unwrap());
    }
    let v = c.get(&format!("{admin}/admin/transactions")).await.json();
    let got: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [&sent[4], &sent[3], &sent[2]]);
    // Path and query are cut to 1 KiB together in the ring.
    assert_eq!(
        v["items"][0]["query"].as_str().unwrap().len(),
        1024 - "/n4?".len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_traffic_counts_each_routes_requests_and_errors() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, admin) = gateway(&yaml(be.addr, "1", 10));
    let c = Client::new();
    for path in [
        "/a",
        "/b",
        "/status/404",
        "/status/404",
        "/status/503",
        "/blocked/x",
    ] {
        get(&c, &format!("{url}{path}"), DESKTOP).await;
    }
    let until = std::time::Instant::now() + Duration::from_secs(5);
    let v = loop {
        let v = c
            .get(&format!("{admin}/admin/traffic?window=1m"))
            .await
            .json();
        if v["routes"]["api"]["total"]["requests"] == 5 || std::time::Instant::now() > until {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(v["interval_seconds"], 5);
    assert_eq!(v["window_seconds"], 60);
    let api = &v["routes"]["api"]["total"];
    assert_eq!(
        (
            api["requests"].as_u64(),
            api["client_errors"].as_u64(),
            api["errors"].as_u64()
        ),
        (Some(5), Some(2), Some(1)),
        "{v}"
    );
    assert_eq!(v["routes"]["blocked"]["total"]["client_errors"], 1);
    let buckets = v["bucket_ends"].as_array().unwrap().len();
    assert_eq!(
        v["routes"]["api"]["requests"].as_array().unwrap().len(),
        buckets
    );
    for bad in ["window=2h", "window=soon", "span=5m"] {
        assert_problem(&c.get(&format!("{admin}/admin/traffic?{bad}")).await, 400);
    }
}
