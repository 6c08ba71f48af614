//! Consumers and authentication through real sockets: API keys in a header or the query
//! (plain or as SHA-256 in the config), hidden from the upstream on request, `acl` by
//! group, `auth_mode: any | all` over several authenticating policies, the consumer
//! forwarded upstream (and never a client's claim to be one), and the access log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use crate::support::*;

const GOLD_KEY: &str = "gold-key-5b1c0e7d9a";
const SILVER_KEY: &str = "silver-key-77aa01";
const B_KEY: &str = "second-key-0099";

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn get(c: &Client, url: &str, headers: &[(&str, &str)]) -> Reply {
    send(c, "GET", url, headers).await
}

fn config(backend: std::net::SocketAddr) -> String {
    format!(
        r#"
consumers:
  - name: mobile-app
    groups: [gold, mobile]
    credentials:
      - {{ type: api_key, key: "{GOLD_KEY}" }}
  - name: partner
    groups: [silver]
    credentials:
      - {{ type: api_key, key_sha256: "{silver}" }}
      - {{ type: api_key, key: "{B_KEY}" }}
upstreams:
  u:
    targets: [{{ address: "{backend}" }}]
policies:
  key: {{ type: api_key, header: x-api-key, query: api_key, hide_credentials: true }}
  key-b: {{ type: api_key, header: x-key-b }}
  gold-only: {{ type: acl, allow_groups: [gold] }}
routes:
  - name: open
    match: {{ path: {{ type: prefix, value: /open }} }}
    upstream: u
  - name: keyed
    match: {{ path: {{ type: prefix, value: /keyed }} }}
    policies: [key]
    upstream: u
  - name: gold
    match: {{ path: {{ type: prefix, value: /gold }} }}
    policies: [key, gold-only]
    upstream: u
  - name: either
    match: {{ path: {{ type: prefix, value: /either }} }}
    policies: [key, key-b]
    upstream: u
  - name: both
    match: {{ path: {{ type: prefix, value: /both }} }}
    policies: [key, key-b]
    auth_mode: all
    upstream: u
"#,
        silver = sha256_hex(SILVER_KEY)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_identify_consumers_and_acl_admits_by_group() {
    let a = Backend::start("a", Kind::Echo).await;
    let (_g, url, _admin) = embedded(&config(a.addr));
    let c = Client::new();

    // No key: 401 with a challenge naming the header; a wrong key: 401 too.
    let r = get(&c, &format!("{url}/keyed"), &[]).await;
    assert_problem(&r, 401);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("ApiKey header=\"x-api-key\"")
    );
    assert_problem(
        &get(&c, &format!("{url}/keyed"), &[("x-api-key", "nope")]).await,
        401,
    );
    // The problem never repeats the key.
    let r = get(
        &c,
        &format!("{url}/keyed"),
        &[("x-api-key", "guessed-key-123")],
    )
    .await;
    assert!(!String::from_utf8_lossy(&r.body).contains("guessed-key-123"));

    // A good key: the upstream learns who called, and not the key (hide_credentials).
    let r = get(&c, &format!("{url}/keyed"), &[("x-api-key", GOLD_KEY)]).await;
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    assert_eq!(h["x-consumer"], "mobile-app");
    assert_eq!(h["x-consumer-groups"], "gold,mobile");
    assert!(h.get("x-api-key").is_none(), "{h}");

    // By query, from a key stored only as its SHA-256, removed from the upstream's URI.
    let r = get(
        &c,
        &format!("{url}/keyed/x?a=1&api_key={SILVER_KEY}&b=2"),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["headers"]["x-consumer"], "partner");
    assert_eq!(v["uri"], "/keyed/x?a=1&b=2", "{v}");

    // acl: gold admitted, silver authenticated but refused (403), nobody: 401.
    assert_eq!(
        get(&c, &format!("{url}/gold"), &[("x-api-key", GOLD_KEY)])
            .await
            .status,
        200
    );
    assert_problem(
        &get(&c, &format!("{url}/gold"), &[("x-api-key", SILVER_KEY)]).await,
        403,
    );
    assert_problem(&get(&c, &format!("{url}/gold"), &[]).await, 401);

    // A client cannot claim to be a consumer: its x-consumer never reaches the upstream.
    let r = get(
        &c,
        &format!("{url}/open"),
        &[("x-consumer", "mobile-app"), ("x-consumer-groups", "gold")],
    )
    .await;
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    assert!(
        h.get("x-consumer").is_none() && h.get("x-consumer-groups").is_none(),
        "{h}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_mode_any_takes_one_credential_and_all_needs_every_one() {
    let a = Backend::start("a", Kind::Echo).await;
    let (_g, url, _admin) = embedded(&config(a.addr));
    let c = Client::new();
    // any: either policy's credential is enough.
    assert_eq!(
        get(&c, &format!("{url}/either"), &[("x-api-key", GOLD_KEY)])
            .await
            .status,
        200
    );
    let r = get(&c, &format!("{url}/either"), &[("x-key-b", B_KEY)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-consumer"], "partner");
    // None at all: 401; a refused key is the answer rather than the missing other one.
    let r = get(&c, &format!("{url}/either"), &[]).await;
    assert_problem(&r, 401);
    let r = get(&c, &format!("{url}/either"), &[("x-key-b", "wrong")]).await;
    assert_problem(&r, 401);
    assert_eq!(r.json()["detail"], "the API key is not valid");
    // all: one credential is not enough.
    assert_problem(
        &get(&c, &format!("{url}/both"), &[("x-api-key", GOLD_KEY)]).await,
        401,
    );
    assert_eq!(
        get(
            &c,
            &format!("{url}/both"),
            &[("x-api-key", GOLD_KEY), ("x-key-b", B_KEY)]
        )
        .await
        .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_the_consumer_and_never_the_key() {
    let a = Backend::start("a", Kind::Echo).await;
    let (port, admin) = (free_port(), free_port());
    let rest = config(a.addr).replace("consumers:", "access_log: stdout\nconsumers:");
    let g = GatewayProcess::start(BIN, &support::config(port, admin, &rest), &[port, admin]);
    let c = Client::new();
    let r = get(
        &c,
        &format!("http://127.0.0.1:{port}/keyed/logged"),
        &[("x-api-key", GOLD_KEY)],
    )
    .await;
    assert_eq!(r.status, 200);
    let r = get(
        &c,
        &format!("http://127.0.0.1:{port}/keyed/refused"),
        &[("x-api-key", "not-a-key-4242")],
    )
    .await;
    assert_eq!(r.status, 401);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (ok, refused) = loop {
        if let (Some(a), Some(b)) = (
            g.access_line("/keyed/logged"),
            g.access_line("/keyed/refused"),
        ) {
            break (a, b);
        }
        assert!(std::time::Instant::now() < until, "no access lines");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(ok["consumer"], "mobile-app");
    assert_eq!(refused["short_circuit"]["policy"], "key", "{refused}");
    assert_eq!(refused["short_circuit"]["reason"], "credentials_invalid");
    let all = g.stdout_text() + &g.stderr_text();
    assert!(!all.contains(GOLD_KEY) && !all.contains("not-a-key-4242"));
}

#[test]
fn consumer_and_key_errors_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("gw.yaml");
    std::fs::write(
        &f,
        "consumers:\n  - name: a\n    credentials:\n      - { type: api_key }\n  - name: a\n    credentials:\n      - { type: api_key, key_sha256: XYZ }\n      - { type: password, key: x }\nroutes:\n  - name: r\n    respond: { status: 200 }\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["validate", "-c", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("consumers[1].credentials[1]"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_preflights_and_marks_every_response_to_an_allowed_origin() {
    let a = Backend::start("a", Kind::Echo).await;
    let rest = format!(
        r#"
consumers:
  - name: web
    credentials: [{{ type: api_key, key: "{GOLD_KEY}" }}]
upstreams:
  u:
    targets: [{{ address: "{}" }}]
policies:
  cors: {{ type: cors, allow_origins: ["https://app.example"], allow_methods: [GET, POST],
          allow_headers: [authorization, content-type, x-api-key], expose_headers: [x-request-id],
          max_age: 10m, allow_credentials: true }}
  key: {{ type: api_key }}
routes:
  - name: api
    policies: [cors, key]
    upstream: u
"#,
        a.addr
    );
    let (_g, url, _admin) = embedded(&rest);
    let c = Client::new();
    let origin = ("origin", "https://app.example");

    // The preflight is answered here: no key needed, nothing reaches the upstream.
    let hits = a.hits.load(std::sync::atomic::Ordering::SeqCst);
    let r = send(
        &c,
        "OPTIONS",
        &format!("{url}/orders"),
        &[
            origin,
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-api-key, content-type"),
        ],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    assert_eq!(
        r.header("access-control-allow-methods").as_deref(),
        Some("GET, POST")
    );
    assert_eq!(
        r.header("access-control-allow-headers").as_deref(),
        Some("authorization, content-type, x-api-key")
    );
    assert_eq!(r.header("access-control-max-age").as_deref(), Some("600"));
    assert_eq!(
        r.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::SeqCst), hits);

    // An actual request: CORS headers on the upstream's answer ...
    let r = send(
        &c,
        "GET",
        &format!("{url}/orders"),
        &[origin, ("x-api-key", GOLD_KEY)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    assert_eq!(
        r.header("access-control-expose-headers").as_deref(),
        Some("x-request-id")
    );
    assert!(r.headers.get_all("vary").iter().any(|v| v == "Origin"));
    // ... and on the gateway's own refusal, so the page can read why.
    let r = send(&c, "GET", &format!("{url}/orders"), &[origin]).await;
    assert_problem(&r, 401);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );

    // Another origin gets no CORS header at all; its preflight is still answered here.
    let evil = ("origin", "https://evil.example");
    let r = send(
        &c,
        "GET",
        &format!("{url}/orders"),
        &[evil, ("x-api-key", GOLD_KEY)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
    let r = send(
        &c,
        "OPTIONS",
        &format!("{url}/orders"),
        &[evil, ("access-control-request-method", "GET")],
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(r.header("access-control-allow-origin").is_none());
}

/// The Argon2id PHC string of `password` (small parameters: a test, not a vault).
fn argon2_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(8 * 1024, 1, 1, None).unwrap();
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"gatehouse-tests!").unwrap();
    a.hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_verifies_argon2_hashes_off_the_workers() {
    let a = Backend::start("a", Kind::Echo).await;
    let rest = format!(
        r#"
consumers:
  - name: mobile-app
    groups: [gold]
    credentials:
      - {{ type: basic, username: mobile, password_hash: "{}" }}
      - {{ type: api_key, key: "{GOLD_KEY}" }}
upstreams:
  u:
    targets: [{{ address: "{}" }}]
policies:
  basic: {{ type: basic_auth, realm: api, hide_credentials: true }}
  key: {{ type: api_key }}
routes:
  - name: basic-only
    match: {{ path: {{ type: prefix, value: /basic }} }}
    policies: [basic]
    upstream: u
  - name: either
    policies: [key, basic]
    upstream: u
"#,
        argon2_hash("correct horse battery staple"),
        a.addr
    );
    let (_g, url, _admin) = embedded(&rest);
    let c = Client::new();
    let good = basic("mobile", "correct horse battery staple");
    for _ in 0..3 {
        // The first verifies on the blocking pool; the next come from the cache.
        let r = get(&c, &format!("{url}/basic"), &[("authorization", &good)]).await;
        assert_eq!(r.status, 200);
        let h = &r.json()["headers"];
        assert_eq!(h["x-consumer"], "mobile-app");
        assert!(h.get("authorization").is_none(), "hidden: {h}");
    }
    for (auth, why) in [
        (
            Some(basic("mobile", "wrong")),
            "the user name or password is not valid",
        ),
        (
            Some(basic("nobody", "x")),
            "the user name or password is not valid",
        ),
        (None, "credentials are required"),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = get(&c, &format!("{url}/basic"), &headers).await;
        assert_problem(&r, 401);
        assert_eq!(r.json()["detail"], why);
        assert_eq!(
            r.header("www-authenticate").as_deref(),
            Some("Basic realm=\"api\", charset=\"UTF-8\"")
        );
    }
    // auth_mode any: a key or a password.
    assert_eq!(
        get(&c, &format!("{url}/x"), &[("x-api-key", GOLD_KEY)])
            .await
            .status,
        200
    );
    assert_eq!(
        get(&c, &format!("{url}/x"), &[("authorization", &good)])
            .await
            .status,
        200
    );
}

#[test]
fn a_password_hash_that_is_not_argon2_is_refused_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("gw.yaml");
    std::fs::write(
        &f,
        "consumers:\n  - name: a\n    credentials:\n      - { type: basic, username: a, password_hash: \"5f4dcc3b5aa765d61d8327deb882cf99\" }\nroutes:\n  - name: r\n    respond: { status: 200 }\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["validate", "-c", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":4:")
            && err.contains(
                "consumers[0].credentials[0].password_hash: must be an Argon2 PHC string"
            ),
        "{err}"
    );
}
