//! The `aggregate` action through the real binary against real backends: calls in
//! parallel with route params and query values, forwarded headers, keys and flat
//! merges, optional calls that fail, required ones that fail or time out, and config
//! errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn config(a: &Backend, b: &Backend, c: &Backend) -> String {
    format!(
        r#"
upstreams:
  users: {{ targets: [{{ address: "{a}" }}] }}
  orders: {{ targets: [{{ address: "{b}" }}] }}
  recs: {{ targets: [{{ address: "{c}" }}] }}
routes:
  - name: dashboard
    match: {{ path: {{ type: template, value: "/dashboard/{{user}}" }} }}
    aggregate:
      merge: keys
      timeout: 2s
      calls:
        - {{ name: profile, upstream: users, path: "/users/{{user}}", timeout: 500ms, required: true }}
        - {{ name: orders, upstream: orders, path: "/delay/300/orders?user={{user}}&tag={{query.tag}}", timeout: 1s }}
        - {{ name: recs, upstream: recs, path: "/delay/300/recs/{{user}}", headers: {{ x-from: "gw-{{user}}" }} }}
  - name: partial
    match: {{ path: {{ type: exact, value: /partial }} }}
    aggregate:
      calls:
        - {{ name: profile, upstream: users, path: /users/1 }}
        - {{ name: recs, upstream: recs, path: /status/500 }}
        - {{ name: raw, upstream: recs, path: /bytes/10 }}
  - name: flat
    match: {{ path: {{ type: exact, value: /flat }} }}
    aggregate:
      merge: flat
      calls:
        - {{ name: first, upstream: users, path: /first }}
        - {{ name: second, upstream: orders, path: /second }}
        - {{ name: broken, upstream: recs, path: /status/502 }}
  - name: required-fails
    match: {{ path: {{ type: exact, value: /required-fails }} }}
    aggregate:
      calls:
        - {{ name: profile, upstream: users, path: /status/503, required: true }}
        - {{ name: recs, upstream: recs, path: /recs }}
  - name: required-slow
    match: {{ path: {{ type: exact, value: /required-slow }} }}
    aggregate:
      calls:
        - {{ name: profile, upstream: users, path: /delay/2000, timeout: 200ms, required: true }}
        - {{ name: recs, upstream: recs, path: /recs }}
  - name: all-fail
    match: {{ path: {{ type: exact, value: /all-fail }} }}
    aggregate:
      calls:
        - {{ name: one, upstream: users, path: /status/500 }}
        - {{ name: two, upstream: recs, path: /status/404 }}
"#,
        a = a.addr,
        b = b.addr,
        c = c.addr
    )
}

async fn start() -> (GatewayProcess, String, [Backend; 3]) {
    let a = Backend::start("users", Kind::Echo).await;
    let b = Backend::start("orders", Kind::Echo).await;
    let c = Backend::start("recs", Kind::Echo).await;
    let (g, url, _) = gateway(&config(&a, &b, &c));
    (g, url, [a, b, c])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_run_in_parallel_and_merge_under_their_names() {
    let (_g, url, _b) = start().await;
    let c = Client::new();
    let t = Instant::now();
    let r = send(
        &c,
        "GET",
        &format!("{url}/dashboard/ann?tag=a%20b%26c"),
        &[
            ("authorization", "Bearer t0k"),
            ("accept-language", "fr"),
            ("cookie", "session=s"),
        ],
    )
    .await;
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.body_text());
    // Two calls of 300 ms each, in parallel.
    assert!(took < Duration::from_millis(550), "took {took:?}");
    assert_eq!(r.header("x-aggregate-complete").as_deref(), Some("true"));
    assert!(r.header("x-aggregate-failed").is_none());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let v = r.json();
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["profile", "orders", "recs"]);
    assert_eq!(v["profile"]["uri"], "/users/ann");
    assert_eq!(
        v["orders"]["uri"],
        "/delay/300/orders?user=ann&tag=a%20b%26c"
    );
    assert_eq!(v["recs"]["headers"]["x-from"], "gw-ann");
    for call in ["profile", "orders", "recs"] {
        let h = &v[call]["headers"];
        assert_eq!(h["authorization"], "Bearer t0k", "{call}");
        assert_eq!(h["accept-language"], "fr", "{call}");
        assert!(
            h.get("cookie").is_none(),
            "{call}: only forward_headers travel"
        );
        assert_eq!(
            h["x-request-id"].as_str(),
            r.header("x-request-id").as_deref(),
            "{call}"
        );
        assert_eq!(v[call]["method"], "GET");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_optional_calls_leave_gaps_and_required_ones_fail_the_answer() {
    let (_g, url, _b) = start().await;
    let c = Client::new();

    // A 5xx and a body that is not JSON: both optional, so 200 with the gaps named.
    let r = c.get(&format!("{url}/partial")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-aggregate-complete").as_deref(), Some("false"));
    assert_eq!(r.header("x-aggregate-failed").as_deref(), Some("recs, raw"));
    let v = r.json();
    assert_eq!(v["profile"]["uri"], "/users/1");
    assert_eq!(
        (v["recs"].clone(), v["raw"].clone()),
        (json!(null), json!(null))
    );

    // Flat: objects merged, later keys win; a failed call adds nothing.
    let r = c.get(&format!("{url}/flat")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-aggregate-failed").as_deref(), Some("broken"));
    let v = r.json();
    assert_eq!(v["backend"], "orders");
    assert_eq!(v["uri"], "/second");
    assert!(v.get("broken").is_none());

    // A required call fails: 502 naming it.
    let r = c.get(&format!("{url}/required-fails")).await;
    assert_problem(&r, 502);
    assert_eq!(r.json()["call"], "profile");
    // ... or times out: 504, within its timeout.
    let t = Instant::now();
    let r = c.get(&format!("{url}/required-slow")).await;
    assert_problem(&r, 504);
    assert_eq!(r.json()["call"], "profile");
    assert!(t.elapsed() < Duration::from_millis(1500));
    // Every call fails: 502 listing them.
    let r = c.get(&format!("{url}/all-fail")).await;
    assert_problem(&r, 502);
    assert_eq!(r.json()["calls"], json!(["one", "two"]));
}

#[test]
fn bad_aggregates_are_config_errors() {
    let base = "listeners: [{ name: p, address: 127.0.0.1:1 }]\nupstreams: { u: { targets: [{ address: 127.0.0.1:2 }] } }\nroutes:\n  - name: r\n";
    for (route, field, words) in [
        (
            "    aggregate: { calls: [{ name: a, upstream: nope, path: /a }] }",
            "routes[0].aggregate.calls[0].upstream",
            "no upstream named",
        ),
        (
            "    aggregate: { calls: [{ name: a, upstream: u, path: /a }, { name: a, upstream: u, path: /b }] }",
            "routes[0].aggregate.calls[1].name",
            "names another call",
        ),
        (
            "    aggregate: { calls: [{ name: a, upstream: u, path: a }] }",
            "routes[0].aggregate.calls[0].path",
            "must start with /",
        ),
        (
            "    aggregate: { calls: [] }",
            "routes[0].aggregate.calls",
            "lists no call",
        ),
        (
            "    rewrite: { strip_prefix: /x }\n    aggregate: { calls: [{ name: a, upstream: u, path: /a }] }",
            "routes[0].rewrite",
            "does not apply",
        ),
        (
            "    upstream: u\n    aggregate: { calls: [{ name: a, upstream: u, path: /a }] }",
            "routes[0].aggregate",
            "conflicting actions",
        ),
    ] {
        let (code, err) = validate(&format!("{base}{route}\n"));
        assert_ne!(code, Some(0), "{route}");
        assert!(err.contains(field) && err.contains(words), "{route}: {err}");
    }
}
