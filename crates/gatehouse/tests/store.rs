//! API keys created through the admin API, kept in the SQLite store: answered once, listed
//! without key material, usable at once, revoked for the very next request, and still
//! there after a restart. The real binary, a real database file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_created_through_the_admin_api_work_at_once_are_revoked_at_once_and_survive_restarts()
{
    let a = Backend::start("a", Kind::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gatehouse.db");
    let (port, admin) = (free_port(), free_port());
    let rest = format!(
        r#"
store:
  path: {}
consumers:
  - name: mobile-app
    groups: [gold]
upstreams:
  u:
    targets: [{{ address: "{}" }}]
policies:
  key: {{ type: api_key }}
routes:
  - name: r
    policies: [key]
    upstream: u
"#,
        db.display(),
        a.addr
    );
    let yaml = config(port, admin, &rest);
    let mut g = GatewayProcess::start(BIN, &yaml, &[port, admin]);
    let (api, adm) = (
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{admin}"),
    );
    let c = Client::new();

    let r = send(
        &c,
        "POST",
        &format!("{adm}/admin/consumers/mobile-app/keys"),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let created = r.json();
    let key = created["key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    let r = send(&c, "GET", &format!("{api}/x"), &[("x-api-key", &key)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-consumer"], "mobile-app");

    // Listed by id, never with the key.
    let r = send(
        &c,
        "GET",
        &format!("{adm}/admin/consumers/mobile-app/keys"),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    let list = r.json();
    assert_eq!(list[0]["id"], id.as_str());
    assert!(!String::from_utf8_lossy(&r.body).contains(&key));
    // Unknown consumers and keys: 404.
    assert_problem(
        &send(
            &c,
            "POST",
            &format!("{adm}/admin/consumers/nobody/keys"),
            &[],
        )
        .await,
        404,
    );
    assert_problem(
        &send(
            &c,
            "DELETE",
            &format!("{adm}/admin/consumers/mobile-app/keys/nope"),
            &[],
        )
        .await,
        404,
    );

    // A second key survives a restart; the revoked first one is refused at once.
    let second = send(
        &c,
        "POST",
        &format!("{adm}/admin/consumers/mobile-app/keys"),
        &[],
    )
    .await;
    let second = second.json()["key"].as_str().unwrap().to_string();
    let r = send(
        &c,
        "DELETE",
        &format!("{adm}/admin/consumers/mobile-app/keys/{id}"),
        &[],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_problem(
        &send(&c, "GET", &format!("{api}/x"), &[("x-api-key", &key)]).await,
        401,
    );
    g.signal("TERM");
    assert_eq!(g.wait_exit(std::time::Duration::from_secs(10)), Some(0));
    let _g2 = GatewayProcess::start(BIN, &yaml, &[port, admin]);
    assert_eq!(
        send(&c, "GET", &format!("{api}/x"), &[("x-api-key", &second)])
            .await
            .status,
        200
    );
    assert_problem(
        &send(&c, "GET", &format!("{api}/x"), &[("x-api-key", &key)]).await,
        401,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_store_the_keys_api_says_so_and_validate_creates_no_file() {
    let (_g, _url, admin) = embedded(
        "consumers:\n  - name: mobile-app\nroutes:\n  - name: r\n    respond: { status: 200 }\n",
    );
    let c = Client::new();
    assert_problem(
        &send(
            &c,
            "POST",
            &format!("{admin}/admin/consumers/mobile-app/keys"),
            &[],
        )
        .await,
        409,
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("gw.yaml");
    std::fs::write(
        &f,
        "store: { path: keys.db }\nroutes:\n  - name: r\n    respond: { status: 200 }\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["validate", "-c", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("keys.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_created_through_the_admin_api_authenticate_by_key_and_survive_restarts() {
    let a = Backend::start("a", Kind::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gatehouse.db");
    let (port, admin) = (free_port(), free_port());
    let rest = format!(
        r#"
store:
  path: {}
consumers:
  - name: mobile-app
    groups: [gold]
upstreams:
  u:
    targets: [{{ address: "{}" }}]
policies:
  key: {{ type: api_key }}
  gold-only: {{ type: acl, allow_groups: [gold] }}
routes:
  - name: gold
    match: {{ path: {{ type: prefix, value: /gold }} }}
    policies: [key, gold-only]
    upstream: u
  - name: r
    policies: [key]
    upstream: u
"#,
        db.display(),
        a.addr
    );
    let yaml = config(port, admin, &rest);
    let mut g = GatewayProcess::start(BIN, &yaml, &[port, admin]);
    let (api, adm) = (
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{admin}"),
    );
    let c = Client::new();
    let post = |body: &'static str| {
        let (c, url) = (c.clone(), format!("{adm}/admin/consumers"));
        async move {
            send_body(
                &c,
                "POST",
                &url,
                &[("content-type", "application/json")],
                body,
            )
            .await
        }
    };

    let r = post(r#"{"name": "partner-7", "groups": ["gold", "partners"]}"#).await;
    assert_eq!(r.status, 201, "{}", r.body_text());
    assert_eq!(r.json()["source"], "store");
    // Taken names, bad names and bad bodies.
    assert_problem(&post(r#"{"name": "partner-7"}"#).await, 409);
    assert_problem(&post(r#"{"name": "mobile-app"}"#).await, 409);
    assert_problem(&post(r#"{"name": "a,b"}"#).await, 400);
    assert_problem(
        &post(r#"{"name": "x", "groups": ["bad group"]}"#).await,
        400,
    );
    assert_problem(&post(r#"{"nom": "x"}"#).await, 400);
    assert_problem(&post("not json").await, 400);

    // A key for the stored consumer authenticates it, with its groups.
    let r = send(
        &c,
        "POST",
        &format!("{adm}/admin/consumers/partner-7/keys"),
        &[],
    )
    .await;
    assert_eq!(r.status, 201);
    let key = r.json()["key"].as_str().unwrap().to_string();
    let r = send(&c, "GET", &format!("{api}/gold"), &[("x-api-key", &key)]).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let h = &r.json()["headers"];
    assert_eq!(h["x-consumer"], "partner-7");
    assert_eq!(h["x-consumer-groups"], "gold,partners");

    let r = send(&c, "GET", &format!("{adm}/admin/consumers"), &[]).await;
    let names: Vec<(String, String)> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().into(),
                v["source"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("mobile-app".into(), "config".into()),
            ("partner-7".into(), "store".into())
        ]
    );
    assert_problem(
        &send(
            &c,
            "DELETE",
            &format!("{adm}/admin/consumers/mobile-app"),
            &[],
        )
        .await,
        409,
    );

    // After a restart: the consumer and its key are still there.
    g.signal("TERM");
    assert_eq!(g.wait_exit(std::time::Duration::from_secs(10)), Some(0));
    let _g = GatewayProcess::start(BIN, &yaml, &[port, admin]);
    let r = send(&c, "GET", &format!("{adm}/admin/consumers/partner-7"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["groups"], serde_json::json!(["gold", "partners"]));
    assert_eq!(
        send(&c, "GET", &format!("{api}/x"), &[("x-api-key", &key)])
            .await
            .status,
        200
    );

    // Deleted: its keys go with it, for the very next request.
    let r = send(
        &c,
        "DELETE",
        &format!("{adm}/admin/consumers/partner-7"),
        &[],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_problem(
        &send(&c, "GET", &format!("{api}/x"), &[("x-api-key", &key)]).await,
        401,
    );
    assert_problem(
        &send(&c, "GET", &format!("{adm}/admin/consumers/partner-7"), &[]).await,
        404,
    );
    assert_problem(
        &send(
            &c,
            "DELETE",
            &format!("{adm}/admin/consumers/partner-7"),
            &[],
        )
        .await,
        404,
    );
}
