//! API versions through the real binary: the version read from the path, a header, a
//! query parameter or the Accept media type (in the configured order), each version's
//! own action and policies, deprecation and sunset headers, 410 after sunset, 400 for an
//! unknown version, 308 to the default, and config errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use serde_json::json;

fn config(a: &Backend, b: &Backend) -> String {
    format!(
        r#"
upstreams:
  orders-v1: {{ targets: [{{ address: "{a}" }}] }}
  orders-v2: {{ targets: [{{ address: "{b}" }}] }}
policies:
  stamp:
    type: headers
    response: {{ set: {{ x-v2: "yes" }} }}
routes:
  - name: orders
    match: {{ path: {{ type: prefix, value: /orders }} }}
    versions:
      from: [path, "header:api-version", "query:version", "accept:application/vnd.shop.{{version}}+json"]
      default: v2
      when_missing: serve
      available:
        v1: {{ upstream: orders-v1, deprecated: "2025-06-01T00:00:00Z", sunset: "2099-12-31T00:00:00Z",
              link: "https://docs.example/migrate" }}
        v2: {{ upstream: orders-v2, policies: [stamp] }}
        v0: {{ upstream: orders-v1, sunset: "2020-01-01T00:00:00Z" }}
        legacy: {{ respond: {{ status: 200, body: "still here" }}, sunset: "2020-01-01T00:00:00Z", after_sunset: serve }}
  - name: shop
    match: {{ path: {{ type: prefix, value: /shop }} }}
    versions:
      default: v2
      when_missing: redirect
      available:
        v1: {{ respond: {{ status: 200, body: "one" }} }}
        v2: {{ respond: {{ status: 200, body: "two" }}, rewrite: {{ strip_prefix: /shop }} }}
"#,
        a = a.addr,
        b = b.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_source_picks_a_version_in_order() {
    let a = Backend::start("a", Kind::Echo).await;
    let b = Backend::start("b", Kind::Echo).await;
    let (_g, url, _) = gateway(&config(&a, &b));
    let c = Client::new();

    // From the path: the segment is removed upstream, the query kept.
    let r = c.get(&format!("{url}/v1/orders/5?x=1")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-backend").as_deref(), Some("a"));
    assert_eq!(r.json()["uri"], "/orders/5?x=1");
    // A deprecated version says so (RFC 9745, RFC 8594).
    assert_eq!(r.header("deprecation").as_deref(), Some("@1748736000"));
    assert_eq!(
        r.header("sunset").as_deref(),
        Some("Thu, 31 Dec 2099 00:00:00 GMT")
    );
    assert_eq!(
        r.header("link").as_deref(),
        Some("<https://docs.example/migrate>; rel=\"deprecation\"")
    );

    // None named: the default, with its own policies; no lifecycle headers.
    let r = c.get(&format!("{url}/orders/5")).await;
    assert_eq!(r.header("x-backend").as_deref(), Some("b"));
    assert_eq!(r.header("x-v2").as_deref(), Some("yes"));
    assert!(r.header("deprecation").is_none() && r.header("sunset").is_none());
    assert_eq!(r.json()["uri"], "/orders/5");

    for (headers, path, want) in [
        (vec![("api-version", "v1")], "/orders", "a"),
        (vec![], "/orders?version=v1", "a"),
        (
            vec![("accept", "application/vnd.shop.v1+json")],
            "/orders",
            "a",
        ),
        // Sources are tried in order: the path beats the header, the header the query.
        (vec![("api-version", "v1")], "/v2/orders", "b"),
        (vec![("api-version", "v2")], "/orders?version=v1", "b"),
    ] {
        let r = send(&c, "GET", &format!("{url}{path}"), &headers).await;
        assert_eq!(r.status, 200, "{path} {headers:?}");
        assert_eq!(
            r.header("x-backend").as_deref(),
            Some(want),
            "{path} {headers:?}"
        );
    }
    assert!(a.hits() >= 4 && b.hits() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_retired_and_missing_versions_get_clear_answers() {
    let a = Backend::start("a", Kind::Echo).await;
    let b = Backend::start("b", Kind::Echo).await;
    let (_g, url, _) = gateway(&config(&a, &b));
    let c = Client::new();

    let r = send(
        &c,
        "GET",
        &format!("{url}/orders"),
        &[("api-version", "v9")],
    )
    .await;
    assert_problem(&r, 400);
    let v = r.json();
    assert_eq!(v["available"], json!(["legacy", "v0", "v1", "v2"]));
    assert!(v["detail"].as_str().unwrap().contains("legacy, v0, v1, v2"));

    // Past its sunset: 410, still saying when.
    let r = c.get(&format!("{url}/v0/orders")).await;
    assert_problem(&r, 410);
    assert_eq!(
        r.header("sunset").as_deref(),
        Some("Wed, 01 Jan 2020 00:00:00 GMT")
    );
    // ... unless it is to be served after it.
    let r = c.get(&format!("{url}/legacy/orders")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body_text(), "still here");
    assert!(r.header("sunset").is_some());
    assert_eq!(a.hits() + b.hits(), 0, "nothing reached an upstream");

    // `when_missing: redirect`: 308 to the default's path, query kept.
    let r = c.get(&format!("{url}/shop/items?q=1&r=2")).await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location").as_deref(),
        Some("/v2/shop/items?q=1&r=2")
    );
    let r = c.get(&format!("{url}/v1/shop/items")).await;
    assert_eq!((r.status, r.body_text().as_str()), (200, "one"));
    let r = c.get(&format!("{url}/v2/shop")).await;
    assert_eq!((r.status, r.body_text().as_str()), (200, "two"));
    // A version that does not exist in the path is a path that does not exist.
    let r = c.get(&format!("{url}/v3/orders")).await;
    assert_problem(&r, 404);
}

#[test]
fn bad_versions_are_config_errors() {
    let base = "listeners: [{ name: p, address: 127.0.0.1:1 }]\nupstreams: { u: { targets: [{ address: 127.0.0.1:2 }] } }\nroutes:\n  - name: r\n    match: { path: { value: /r } }\n    versions:\n";
    for (versions, field, words) in [
        (
            "      default: v3\n      available: { v1: { upstream: u } }",
            "routes[0].versions.default",
            "not one of the available",
        ),
        (
            "      from: [header:v]\n      default: v1\n      when_missing: redirect\n      available: { v1: { upstream: u } }",
            "routes[0].versions.when_missing",
            "must list `path`",
        ),
        (
            "      from: [cookie:v]\n      available: { v1: { upstream: u } }",
            "routes[0].versions.from[0]",
            "invalid version source",
        ),
        (
            "      available: { v1: { policies: [] } }",
            "routes[0].versions.available.v1",
            "exactly one action",
        ),
        (
            "      available: { v1: { upstream: nope } }",
            "routes[0].versions.available.v1.upstream",
            "no upstream named",
        ),
        (
            "      available: { v1: { upstream: u, sunset: tomorrow } }",
            "routes[0].versions.available.v1.sunset",
            "RFC 3339",
        ),
        (
            "      available: { \"a/b\": { upstream: u } }",
            "routes[0].versions.available.a/b",
            "one path segment",
        ),
    ] {
        let (code, err) = validate(&format!("{base}{versions}\n"));
        assert_ne!(code, Some(0), "{versions}");
        assert!(
            err.contains(field) && err.contains(words),
            "{versions}: {err}"
        );
    }
    // A route with both versions and an upstream.
    let (code, err) = validate(&format!(
        "{base}      available: {{ v1: {{ upstream: u }} }}\n    upstream: u\n"
    ));
    assert_ne!(code, Some(0));
    assert!(err.contains("conflicting actions"), "{err}");
}
