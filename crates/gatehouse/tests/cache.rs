//! `type: cache` through the real binary against a real backend: misses then hits with
//! Age, HEAD and conditionals from the stored entry, what is never stored, Vary, the
//! Authorization rule, the key, stale-if-error (5xx, refused, timed out), revalidation,
//! the admin counters and purges, and entries surviving a reload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use crate::support::*;
use serde_json::json;
use std::time::Duration;

const RH: &str = "x-echo-response-header";

fn config(be: &Backend) -> String {
    format!(
        r#"
upstreams:
  u: {{ targets: [{{ address: "{be}" }}], timeouts: {{ request: 1s }} }}
policies:
  catalog-cache:
    type: cache
    memory: 1MiB
    max_entry_size: 8KiB
    ttl: 60s
    max_ttl: 1d
    key: [header:x-tenant]
    ignore_query: [utm_source]
    stale_if_error: 5m
    tag_header: surrogate-key
routes:
  - {{ name: cached, match: {{ path: {{ type: prefix, value: / }} }}, policies: [catalog-cache], upstream: u }}
"#,
        be = be.addr
    )
}

async fn get(c: &Client, url: &str, headers: &[(&str, &str)]) -> Reply {
    send(c, "GET", url, headers).await
}

fn state(r: &Reply) -> String {
    r.header("x-cache").unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_then_hits_and_answers_head_and_conditionals_from_the_entry() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, admin) = gateway(&config(&be));
    let c = Client::new();
    let h = [(RH, "cache-control: max-age=60"), (RH, "etag: \"v1\"")];
    let first = get(&c, &format!("{url}/items?b=2&a=1&utm_source=x"), &h).await;
    assert_eq!((first.status, state(&first).as_str()), (200, "MISS"));
    // Same key: query sorted, utm_source ignored.
    let hit = get(&c, &format!("{url}/items?a=1&b=2"), &h).await;
    assert_eq!(state(&hit), "HIT");
    assert_eq!(hit.body, first.body);
    assert!(hit.header("age").unwrap().parse::<u64>().unwrap() <= 1);
    assert_eq!(be.hits(), 1);
    // HEAD from GET's entry; a matching If-None-Match gets 304.
    let head = send(&c, "HEAD", &format!("{url}/items?a=1&b=2"), &[]).await;
    assert_eq!((head.status, state(&head).as_str()), (200, "HIT"));
    assert!(head.body.is_empty());
    let r = get(
        &c,
        &format!("{url}/items?a=1&b=2"),
        &[("if-none-match", "W/\"v1\"")],
    )
    .await;
    assert_eq!((r.status, state(&r).as_str()), (304, "HIT"));
    assert!(r.body.is_empty());
    assert_eq!(be.hits(), 1);
    // Another tenant is another key.
    let r = get(&c, &format!("{url}/items?a=1&b=2"), &[("x-tenant", "t2")]).await;
    assert_eq!(state(&r), "MISS");
    // Not a cached method: BYPASS.
    let r = send_body(&c, "POST", &format!("{url}/items"), &[], "x").await;
    assert_eq!(state(&r), "BYPASS");

    let stats: serde_json::Value = c
        .get(&format!("{admin}/admin/caches/catalog-cache"))
        .await
        .json();
    assert_eq!(stats["entries"], 2);
    assert_eq!(stats["hits"], 3);
    assert_eq!(stats["misses"], 2);
    assert_eq!(stats["memory"], 1024 * 1024);
    assert!(stats["bytes"].as_u64().unwrap() > 0);
    assert_eq!(stats["evictions"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_never_stored_and_what_varies() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, _) = gateway(&config(&be));
    let c = Client::new();
    for (path, header) in [
        ("/cookie", "set-cookie: s=1"),
        ("/private", "cache-control: private, max-age=60"),
        ("/no-store", "cache-control: no-store"),
        ("/star", "vary: *"),
    ] {
        for _ in 0..2 {
            let r = get(&c, &format!("{url}{path}"), &[(RH, header)]).await;
            assert_eq!(state(&r), "MISS", "{path}");
        }
    }
    // A 5xx without freshness is not stored; a 200 without any gets `ttl`.
    for _ in 0..2 {
        let r = get(&c, &format!("{url}/status/500"), &[]).await;
        assert_eq!(state(&r), "MISS");
    }
    get(&c, &format!("{url}/plain"), &[]).await;
    assert_eq!(state(&get(&c, &format!("{url}/plain"), &[]).await), "HIT");
    // Larger than max_entry_size: streamed, unstored.
    for _ in 0..2 {
        let r = get(&c, &format!("{url}/bytes/20000"), &[]).await;
        assert_eq!((r.body.len(), state(&r).as_str()), (20000, "MISS"));
    }
    // Surrogate-Control beats Cache-Control.
    let sc = [
        (RH, "cache-control: no-store"),
        (RH, "surrogate-control: max-age=60"),
    ];
    let r = get(&c, &format!("{url}/surrogate"), &sc).await;
    assert!(r.header("surrogate-control").is_none());
    let r = get(&c, &format!("{url}/surrogate"), &sc).await;
    assert_eq!(state(&r), "HIT");
    assert!(r.header("surrogate-control").is_none());

    // Vary picks variants.
    let v = |lang: &'static str| [(RH, "vary: accept-language"), ("accept-language", lang)];
    assert_eq!(
        state(&get(&c, &format!("{url}/vary"), &v("fr")).await),
        "MISS"
    );
    assert_eq!(
        state(&get(&c, &format!("{url}/vary"), &v("de")).await),
        "MISS"
    );
    let fr = get(&c, &format!("{url}/vary"), &v("fr")).await;
    assert_eq!(state(&fr), "HIT");
    assert_eq!(fr.json()["headers"]["accept-language"], "fr");

    // Authorization: neither answered nor stored, unless the response is public.
    let auth = [("authorization", "Bearer x")];
    assert_eq!(
        state(&get(&c, &format!("{url}/plain"), &auth).await),
        "MISS"
    );
    assert_eq!(state(&get(&c, &format!("{url}/mine"), &auth).await), "MISS");
    assert_eq!(state(&get(&c, &format!("{url}/mine"), &auth).await), "MISS");
    let public = [
        ("authorization", "Bearer x"),
        (RH, "cache-control: public, max-age=60"),
    ];
    get(&c, &format!("{url}/shared"), &public).await;
    assert_eq!(
        state(&get(&c, &format!("{url}/shared"), &public).await),
        "HIT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entries_revalidate_or_answer_when_the_upstream_fails() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, _) = gateway(&config(&be));
    let c = Client::new();
    let h = [(RH, "cache-control: max-age=1"), (RH, "etag: \"e1\"")];
    let first = get(&c, &format!("{url}/r"), &h).await;
    let second = get(&c, &format!("{url}/s"), &h).await;
    let third = get(&c, &format!("{url}/k"), &h).await;
    let fourth = get(&c, &format!("{url}/t"), &h).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // The upstream says 304 to the stored validators: the stored body, REVALIDATED.
    be.force_status(304);
    let r = get(&c, &format!("{url}/r"), &h).await;
    assert_eq!((r.status, state(&r).as_str()), (200, "REVALIDATED"));
    assert_eq!(r.body, first.body);
    // ... and the refreshed entry is fresh again.
    assert_eq!(state(&get(&c, &format!("{url}/r"), &h).await), "HIT");

    // The upstream fails: within stale_if_error the stale entry answers.
    be.force_status(503);
    let r = get(&c, &format!("{url}/s"), &h).await;
    assert_eq!((r.status, state(&r).as_str()), (200, "STALE"));
    assert_eq!(r.body, second.body);
    assert!(r.header("age").unwrap().parse::<u64>().unwrap() >= 1);

    // The upstream is gone (connections refused): the stale entry answers too.
    let addr = be.addr;
    drop(be);
    let r = get(&c, &format!("{url}/k"), &h).await;
    assert_eq!((r.status, state(&r).as_str()), (200, "STALE"));
    assert_eq!(r.body, third.body);

    // The upstream accepts but never answers: past `timeouts.request` (1s), stale.
    let _hung = Backend::start_on("h", Kind::Hang, addr).await;
    let asked = std::time::Instant::now();
    let r = get(&c, &format!("{url}/t"), &h).await;
    assert_eq!((r.status, state(&r).as_str()), (200, "STALE"));
    assert_eq!(r.body, fourth.body);
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_by_path_prefix_and_tag_and_entries_survive_reloads() {
    let be = Backend::start("a", Kind::Echo).await;
    let (g, url, admin) = gateway(&config(&be));
    let c = Client::new();
    let tagged = |tags: &'static str| [(RH, "cache-control: max-age=60"), (RH, tags)];
    for (path, tags) in [
        ("/p/1", "surrogate-key: a b"),
        ("/p/2?x=1", "surrogate-key: b"),
        ("/q", "surrogate-key: c,a"),
        ("/z", "surrogate-key: z"),
    ] {
        let r = get(&c, &format!("{url}{path}"), &tagged(tags)).await;
        assert!(
            r.header("surrogate-key").is_none(),
            "tags are hidden from clients"
        );
    }
    let purge = |body: serde_json::Value| {
        let c = Client::new();
        let admin = admin.clone();
        async move {
            let r = send_body(
                &c,
                "POST",
                &format!("{admin}/admin/caches/catalog-cache/purge"),
                &[("content-type", "application/json")],
                &body.to_string(),
            )
            .await;
            (r.status, r.json())
        }
    };
    assert_eq!(
        purge(json!({"path": "/p/2?x=1", "host": "127.0.0.1"})).await,
        (200, json!({"purged": 1}))
    );
    assert_eq!(
        purge(json!({"tags": ["a"]})).await,
        (200, json!({"purged": 2}))
    );
    assert_eq!(
        purge(json!({"prefix": "/p/"})).await,
        (200, json!({"purged": 0}))
    );
    assert_eq!(purge(json!({"nonsense": 1})).await.0, 400);
    for path in ["/p/1", "/q", "/p/2?x=1"] {
        assert_eq!(
            state(&get(&c, &format!("{url}{path}"), &tagged("surrogate-key: a")).await),
            "MISS",
            "{path}"
        );
    }
    // Soft: marked stale, so the next request goes upstream.
    assert_eq!(
        purge(json!({"path": "/z", "soft": true})).await,
        (200, json!({"purged": 1}))
    );
    assert_eq!(
        state(&get(&c, &format!("{url}/z"), &tagged("surrogate-key: z")).await),
        "MISS"
    );
    assert_eq!(
        state(&get(&c, &format!("{url}/z"), &tagged("surrogate-key: z")).await),
        "HIT"
    );

    // A reload keeps the entries.
    let mut bigger = config(&be).replace("memory: 1MiB", "memory: 2MiB");
    bigger = support::config(
        url.rsplit(':').next().unwrap().parse().unwrap(),
        admin.rsplit(':').next().unwrap().parse().unwrap(),
        &bigger,
    );
    g.write_config(&bigger);
    g.signal("HUP");
    let stats_url = format!("{admin}/admin/caches/catalog-cache");
    let mut memory = 0;
    for _ in 0..50 {
        memory = c.get(&stats_url).await.json()["memory"].as_u64().unwrap();
        if memory == 2 * 1024 * 1024 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(memory, 2 * 1024 * 1024);
    assert_eq!(state(&get(&c, &format!("{url}/z"), &[]).await), "HIT");

    // DELETE empties it.
    let before = c.get(&stats_url).await.json()["entries"].clone();
    let r = send(&c, "DELETE", &stats_url, &[]).await;
    assert_eq!(r.json()["purged"], before);
    assert_eq!(c.get(&stats_url).await.json()["entries"], 0);
    assert_problem(&c.get(&format!("{admin}/admin/caches/nope")).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_make_one_upstream_request() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, _) = gateway(&config(&be));
    let h = [(RH, "cache-control: max-age=60")];
    let many = |n: usize, path: &'static str, headers: [(&'static str, &'static str); 1]| {
        let url = url.clone();
        (0..n)
            .map(|_| {
                let url = format!("{url}{path}");
                tokio::spawn(async move { get(&Client::new(), &url, &headers).await })
            })
            .collect::<Vec<_>>()
    };
    let mut replies = Vec::new();
    for t in many(100, "/delay/300/slow", h) {
        replies.push(t.await.unwrap());
    }
    assert_eq!(be.hits(), 1, "one request went upstream");
    let states: Vec<String> = replies.iter().map(state).collect();
    assert_eq!(
        states.iter().filter(|s| *s == "MISS").count(),
        1,
        "{states:?}"
    );
    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 && r.body == replies[0].body)
    );

    // An answer that cannot be stored makes the key hit-for-miss: later misses go
    // upstream side by side instead of queueing behind one another.
    let uncacheable = [(RH, "set-cookie: s=1")];
    get(
        &Client::new(),
        &format!("{url}/delay/300/personal"),
        &uncacheable,
    )
    .await;
    let t = std::time::Instant::now();
    for r in many(8, "/delay/300/personal", uncacheable) {
        assert_eq!(state(&r.await.unwrap()), "MISS");
    }
    // Waiting behind a leader would take two delays (600 ms).
    assert!(
        t.elapsed() < Duration::from_millis(520),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(be.hits(), 1 + 1 + 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_a_purge_reaches_every_gateway_within_a_second() {
    let redis = gatehouse_testkit::RedisServer::start();
    let be = Backend::start("a", Kind::Echo).await;
    let yaml = format!(
        "cluster:\n  redis: {{ url: \"{}\", sync_interval: 50ms }}\n{}",
        redis.url(),
        config(&be)
    );
    let nodes: Vec<_> = (0..2).map(|_| gateway(&yaml)).collect();
    let c = Client::new();
    let h = [
        (RH, "cache-control: max-age=600"),
        (RH, "surrogate-key: shared"),
    ];
    for (_, url, _) in &nodes {
        get(&c, &format!("{url}/doc"), &h).await;
        assert_eq!(state(&get(&c, &format!("{url}/doc"), &h).await), "HIT");
    }
    let (_, url_b, admin_b) = &nodes[1];
    // Each reader starts with its policy's first request, after what the stream held.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, _, admin_a) = &nodes[0];
    let r = send_body(
        &c,
        "POST",
        &format!("{admin_a}/admin/caches/catalog-cache/purge"),
        &[],
        r#"{"tags": ["shared"]}"#,
    )
    .await;
    assert_eq!(r.json(), json!({"purged": 1, "cluster": "sent"}));
    let t = std::time::Instant::now();
    loop {
        let stats = c
            .get(&format!("{admin_b}/admin/caches/catalog-cache"))
            .await
            .json();
        if stats["entries"] == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "not purged on the other gateway: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state(&get(&c, &format!("{url_b}/doc"), &h).await), "MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_stale_while_revalidate_stale_is_served_at_once_and_refreshed_once() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, _) = gateway(&config(&be));
    let c = Client::new();
    let h = [(RH, "cache-control: max-age=1, stale-while-revalidate=30")];
    let path = format!("{url}/delay/300/swr");
    let first = get(&c, &path, &h).await;
    assert_eq!(state(&first), "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Stale at once (the upstream takes 300 ms), several times, one refresh.
    for _ in 0..4 {
        let t = std::time::Instant::now();
        let r = get(&c, &path, &h).await;
        assert_eq!((r.status, state(&r).as_str()), (200, "STALE"));
        assert_eq!(r.body, first.body);
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
    }
    // One refresh for the four (counted when it reaches the upstream; it answers
    // 300 ms later).
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(be.hits(), 2, "one refresh");
    // Once it is stored, answers carry its body.
    let t = std::time::Instant::now();
    loop {
        let r = get(&c, &path, &h).await;
        if r.body != first.body {
            // Its max-age=1 may be spent already by its Date's one-second resolution,
            // so it may be served stale in turn.
            assert!(
                ["HIT", "STALE"].contains(&state(&r).as_str()),
                "{}",
                state(&r)
            );
            break;
        }
        assert_eq!(state(&r), "STALE");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "no background refresh"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate_their_target_and_the_locations_they_name() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, _admin) = gateway(&config(&be));
    let c = Client::new();
    let fresh = [(RH, "cache-control: max-age=600")];
    for path in ["/orders/1", "/orders/2", "/orders/3?x=1"] {
        get(&c, &format!("{url}{path}"), &fresh).await;
        assert_eq!(state(&get(&c, &format!("{url}{path}"), &[]).await), "HIT");
    }
    // A failed write changes nothing.
    be.force_status(500);
    let r = send_body(&c, "POST", &format!("{url}/orders/1"), &[], "x").await;
    assert_eq!((r.status, state(&r).as_str()), (500, "BYPASS"));
    be.force_status(0);
    assert_eq!(
        state(&get(&c, &format!("{url}/orders/1"), &[]).await),
        "HIT"
    );
    // A successful one (any unsafe method, unknown ones too) drops its target, and what
    // its Location (relative) and Content-Location (absolute, same host) name; another
    // host's URI is left alone.
    let r = send_body(
        &c,
        "M-SEARCH",
        &format!("{url}/orders/1"),
        &[
            (RH, "location: 2"),
            (RH, "content-location: http://127.0.0.1/orders/3?x=1"),
        ],
        "x",
    )
    .await;
    assert_eq!(r.status, 200);
    for path in ["/orders/1", "/orders/2", "/orders/3?x=1"] {
        assert_eq!(
            state(&get(&c, &format!("{url}{path}"), &[]).await),
            "MISS",
            "{path}"
        );
    }
    let r = send_body(
        &c,
        "DELETE",
        &format!("{url}/elsewhere"),
        &[(RH, "location: http://other.example/orders/1")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        state(&get(&c, &format!("{url}/orders/1"), &[]).await),
        "HIT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_age_a_response_arrives_with_and_malformed_directives_count_against_it() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, _admin) = gateway(&config(&be));
    let c = Client::new();
    let twice = async |path: &str, headers: &[(&str, &str)]| {
        get(&c, &format!("{url}{path}"), headers).await;
        state(&get(&c, &format!("{url}{path}"), headers).await)
    };
    // Already older than its lifetime: never served from the cache.
    let aged = [(RH, "cache-control: max-age=10"), (RH, "age: 15")];
    assert_eq!(twice("/aged", &aged).await, "MISS");
    // Younger: served, its Age counting on from what it arrived with.
    let young = [(RH, "cache-control: max-age=600"), (RH, "age: 100")];
    get(&c, &format!("{url}/young"), &young).await;
    let hit = get(&c, &format!("{url}/young"), &[]).await;
    assert_eq!(state(&hit), "HIT");
    assert!(hit.header("age").unwrap().parse::<u64>().unwrap() >= 100);
    // `max-age =600` and `max-age= 600` are not max-age: `ttl` (60s) applies instead,
    // so with an Age of 100 they are stale at once.
    for cc in ["max-age =600", "max-age= 600"] {
        let h = [(RH, &*format!("cache-control: {cc}")), (RH, "age: 100")];
        assert_eq!(
            twice(&format!("/spaced/{}", cc.len()), &h).await,
            "MISS",
            "{cc}"
        );
    }
    // CDN-Cache-Control is a Structured Field: one that does not parse is ignored
    // (Cache-Control's no-store then rules); a string max-age is not a lifetime (`ttl`
    // is, and the Age has spent it).
    let h = [
        (RH, "cdn-cache-control: max-age=600, &&&"),
        (RH, "cache-control: no-store"),
    ];
    assert_eq!(twice("/cdn/invalid", &h).await, "MISS");
    let h = [(RH, "cdn-cache-control: max-age=\"600\""), (RH, "age: 100")];
    assert_eq!(twice("/cdn/string", &h).await, "MISS");
    let h = [
        (RH, "cdn-cache-control: max-age=600"),
        (RH, "cache-control: no-store"),
    ];
    assert_eq!(twice("/cdn/ok", &h).await, "HIT");
    // A 204 has no body to wait for: stored as it passes.
    assert_eq!(
        twice("/status/204", &[(RH, "cache-control: max-age=600")]).await,
        "HIT"
    );
}
