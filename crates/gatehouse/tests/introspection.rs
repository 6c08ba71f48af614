//! `type: oauth2_introspection` through real sockets against a real RFC 7662 endpoint:
//! active tokens admitted as their consumer with their fields forwarded, answers
//! remembered for `cache_ttl` (a revoked token is refused once it runs out), inactive and
//! expired tokens 401, missing scopes 403, and 503 (never 401) when the server cannot
//! answer or refuses the gateway's own client credentials.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::idp::{CLIENT, Idp};
use crate::support::*;
use serde_json::json;

async fn get(c: &Client, url: &str, token: &str) -> Reply {
    send(
        c,
        "GET",
        url,
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_tokens_admit_and_answers_are_remembered_for_cache_ttl() {
    let idp = Idp::start(None).await;
    {
        let mut t = idp.state.tokens.lock().unwrap();
        t.insert("good-token".into(), json!({"active": true, "sub": "svc-42", "scope": "orders:read orders:write", "exp": now() + 600}));
        t.insert(
            "mobile-token".into(),
            json!({"active": true, "sub": "mobile-app", "scope": "orders:read"}),
        );
        t.insert(
            "narrow-token".into(),
            json!({"active": true, "sub": "svc-1", "scope": "profile"}),
        );
        t.insert(
            "old-token".into(),
            json!({"active": true, "sub": "svc-1", "scope": "orders:read", "exp": now() - 5}),
        );
    }
    let be = Backend::start("a", Kind::Echo).await;
    let yaml = format!(
        r#"
consumers:
  - name: mobile-app
    groups: [gold]
    credentials: [{{ type: jwt, subject: mobile-app }}]
upstreams:
  u:
    targets: [{{ address: "{}" }}]
policies:
  introspect: {{ type: oauth2_introspection, url: "{}/introspect", client_id: {}, client_secret: "{}",
                 cache_ttl: 500ms, required_scopes: [orders:read], forward_claims: {{ x-user-id: sub }},
                 hide_credentials: true }}
routes:
  - name: r
    policies: [introspect]
    upstream: u
"#,
        be.addr, idp.url, CLIENT.0, CLIENT.1
    );
    let (_g, url, _admin) = embedded(&yaml);
    let c = Client::new();

    let r = get(&c, &format!("{url}/orders"), "good-token").await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let h = &r.json()["headers"];
    assert_eq!(h["x-consumer"], "svc-42");
    assert_eq!(h["x-user-id"], "svc-42");
    assert!(h.get("authorization").is_none(), "hidden: {h}");
    let r = get(&c, &format!("{url}/orders"), "mobile-token").await;
    assert_eq!(r.json()["headers"]["x-consumer-groups"], "gold");
    assert_eq!(idp.introspections(), 2);

    // Remembered: no further calls while cache_ttl runs.
    for _ in 0..5 {
        assert_eq!(
            get(&c, &format!("{url}/orders"), "good-token").await.status,
            200
        );
    }
    assert_eq!(idp.introspections(), 2);

    // Revoked at the server: refused once the remembered answer runs out.
    idp.state.tokens.lock().unwrap().remove("good-token");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let r = get(&c, &format!("{url}/orders"), "good-token").await;
    assert_problem(&r, 401);
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    assert_eq!(r.json()["detail"], "the token is not active");
    // An inactive answer is remembered too (inactive_cache_ttl, 5s by default).
    let calls = idp.introspections();
    assert_problem(&get(&c, &format!("{url}/orders"), "good-token").await, 401);
    assert_problem(
        &get(&c, &format!("{url}/orders"), "unknown-token").await,
        401,
    );
    assert_problem(
        &get(&c, &format!("{url}/orders"), "unknown-token").await,
        401,
    );
    assert_eq!(idp.introspections(), calls + 1);

    let r = get(&c, &format!("{url}/orders"), "old-token").await;
    assert_problem(&r, 401);
    assert_eq!(r.json()["detail"], "the token has expired");
    let r = get(&c, &format!("{url}/orders"), "narrow-token").await;
    assert_problem(&r, 403);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Bearer error=\"insufficient_scope\", scope=\"orders:read\"")
    );
    let r = send(&c, "GET", &format!("{url}/orders"), &[]).await;
    assert_problem(&r, 401);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"gatehouse\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_fails_or_refuses_the_gateway_gets_503() {
    let idp = Idp::start(None).await;
    idp.state
        .tokens
        .lock()
        .unwrap()
        .insert("good-token".into(), json!({"active": true, "sub": "svc"}));
    let be = Backend::start("a", Kind::Echo).await;
    let closed = free_port();
    let yaml = format!(
        r#"
upstreams:
  u:
    targets: [{{ address: "{}" }}]
policies:
  wrong-secret: {{ type: oauth2_introspection, url: "{}/introspect", client_id: gw, client_secret: nope }}
  down: {{ type: oauth2_introspection, url: "http://127.0.0.1:{closed}/introspect", timeout: 2s }}
routes:
  - name: a
    match: {{ path: {{ type: prefix, value: /a }} }}
    policies: [wrong-secret]
    upstream: u
  - name: b
    match: {{ path: {{ type: prefix, value: /b }} }}
    policies: [down]
    upstream: u
"#,
        be.addr, idp.url
    );
    let (_g, url, _admin) = embedded(&yaml);
    let c = Client::new();
    for path in ["a", "b"] {
        let r = get(&c, &format!("{url}/{path}"), "good-token").await;
        assert_problem(&r, 503);
        assert!(
            !r.body_text().contains("good-token") && !r.body_text().contains("introspect"),
            "{}",
            r.body_text()
        );
    }
    assert_eq!(be.hits(), 0);
}
