//! Top-N clients and attackers through real sockets: the counts equal the traffic sent
//! (clients told apart by X-Forwarded-For from a trusted proxy), each ranking orders by
//! its own measure, attackers come with their refusal reasons, consumers have lists of
//! their own, and a list smaller than the clients keeps its heavy hitters with a stated
//! error bound.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use serde_json::Value;

fn config(be: &Backend, capacity: usize) -> String {
    format!(
        r#"trusted_proxies: [127.0.0.0/8]
analytics: {{ top_capacity: {capacity} }}
consumers:
  - {{ name: alice, credentials: [{{ type: api_key, key: "alice-key-0123456789" }}] }}
  - {{ name: bob, credentials: [{{ type: api_key, key: "bob-key-0123456789ab" }}] }}
upstreams:
  u:
    targets: [{{ address: "{}" }}]
policies:
  key: {{ type: api_key, header: x-api-key }}
  closed: {{ type: ip_filter, deny: [203.0.113.0/24] }}
routes:
  - {{ name: keyed, match: {{ path: {{ type: prefix, value: /keyed }} }}, policies: [key], upstream: u }}
  - {{ name: open, policies: [closed], upstream: u }}
"#,
        be.addr
    )
}

async fn from(c: &Client, url: &str, ip: &str, path: &str) -> u16 {
    send(
        c,
        "GET",
        &format!("{url}{path}"),
        &[("x-forwarded-for", ip)],
    )
    .await
    .status
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rankings_count_the_traffic_sent() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, admin) = gateway(&config(&be, 1000));
    let c = Client::new();
    for _ in 0..10 {
        assert_eq!(from(&c, &url, "198.51.100.1", "/x").await, 200);
    }
    for _ in 0..5 {
        assert_eq!(from(&c, &url, "198.51.100.2", "/x").await, 200);
    }
    for _ in 0..3 {
        assert_eq!(from(&c, &url, "198.51.100.2", "/status/404").await, 404);
    }
    for _ in 0..2 {
        assert_eq!(from(&c, &url, "203.0.113.9", "/x").await, 403);
    }
    assert_eq!(from(&c, &url, "198.51.100.3", "/bytes/100000").await, 200);

    let top = |q: &str| {
        let c = c.clone();
        let admin = admin.clone();
        let q = q.to_string();
        async move {
            let r = c.get(&format!("{admin}/admin/top/clients?{q}")).await;
            assert_eq!(r.status, 200, "{}", r.body_text());
            r.json()
        }
    };
    let v = top("by=requests&window=5m").await;
    assert_eq!(v["capacity"], 1000);
    assert_eq!(v["tracked"], 4);
    let i = items(&v);
    assert_eq!(i[0]["client_ip"], "198.51.100.1");
    assert_eq!(i[0]["requests"], 10);
    assert_eq!(i[0]["error_bound"], 0);
    assert_eq!(i[1]["client_ip"], "198.51.100.2");
    assert_eq!(i[1]["requests"], 8);
    assert_eq!(i[1]["errors"], 3);

    let i = items(&top("by=errors").await);
    assert_eq!(i.len(), 1, "only clients with errors: {i:?}");
    assert_eq!(
        (i[0]["client_ip"].clone(), i[0]["errors"].clone()),
        ("198.51.100.2".into(), 3.into())
    );

    let i = items(&top("by=blocked").await);
    assert_eq!(i[0]["client_ip"], "203.0.113.9");
    assert_eq!(i[0]["blocked"], 2);
    assert_eq!(i[0]["errors"], 0, "a refusal is not an error");

    let i = items(&top("by=bytes&limit=1").await);
    assert_eq!(i.len(), 1);
    assert_eq!(i[0]["client_ip"], "198.51.100.3");
    assert!(i[0]["bytes"].as_u64().unwrap() >= 100_000);

    let a = c.get(&format!("{admin}/admin/top/attackers")).await.json();
    let i = items(&a);
    assert_eq!(i[0]["client_ip"], "203.0.113.9");
    assert_eq!(i[0]["blocked"], 2);
    assert_eq!(i[0]["reasons"]["closed/ip_denied"], 2);
    assert_eq!(i[1]["client_ip"], "198.51.100.2", "then by 4xx");
    assert_eq!(i[1]["client_errors"], 3);
    assert_eq!(i.len(), 2);

    for bad in [
        "clients?by=latency",
        "clients?key=host",
        "clients?limit=0",
        "clients?window=3h",
        "clients?sort=requests",
        "attackers?by=requests",
    ] {
        assert_problem(&c.get(&format!("{admin}/admin/top/{bad}")).await, 400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_have_their_own_lists() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, admin) = gateway(&config(&be, 1000));
    let c = Client::new();
    for (key, n) in [("alice-key-0123456789", 4), ("bob-key-0123456789ab", 2)] {
        for _ in 0..n {
            let r = send(&c, "GET", &format!("{url}/keyed"), &[("x-api-key", key)]).await;
            assert_eq!(r.status, 200);
        }
    }
    let v = c
        .get(&format!("{admin}/admin/top/clients?key=consumer"))
        .await
        .json();
    let i = items(&v);
    assert_eq!(i.len(), 2);
    assert_eq!(
        (i[0]["consumer"].clone(), i[0]["requests"].clone()),
        ("alice".into(), 4.into())
    );
    assert_eq!(
        (i[1]["consumer"].clone(), i[1]["requests"].clone()),
        ("bob".into(), 2.into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_list_keeps_the_heavy_hitters_with_an_error_bound() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, admin) = gateway(&config(&be, 4));
    let c = Client::new();
    for round in 0..20 {
        assert_eq!(from(&c, &url, "198.51.100.200", "/x").await, 200);
        let other = format!("192.0.2.{round}");
        assert_eq!(from(&c, &url, &other, "/x").await, 200);
    }
    let v = c
        .get(&format!("{admin}/admin/top/clients?limit=4"))
        .await
        .json();
    assert_eq!(v["capacity"], 4);
    assert!(v["tracked"].as_u64().unwrap() <= 4, "{v}");
    let i = items(&v);
    assert_eq!(i[0]["client_ip"], "198.51.100.200", "{v}");
    let n = i[0]["requests"].as_u64().unwrap();
    let bound = i[0]["error_bound"].as_u64().unwrap();
    assert!(n >= 20 && n - 20 <= bound, "{v}");
    assert!(
        i.iter()
            .skip(1)
            .any(|x| x["error_bound"].as_u64().unwrap() > 0),
        "{v}"
    );
}
