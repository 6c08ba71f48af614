//! Day-2 visibility through the admin API: health turns degraded after a rejected reload
//! and recovers with a good one; the live config with secrets redacted and its hash;
//! routes in precedence order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;

fn rest(backend: std::net::SocketAddr, tag: &str) -> String {
    format!(
        r#"upstreams:
  app: {{ targets: [{{ address: "{backend}" }}] }}
policies:
  creds:
    type: headers
    request: {{ set: {{ authorization: "Bearer s3cr3t-token", x-tag: "{tag}" }} }}
routes:
  - name: catch-all
    upstream: app
  - name: users
    match: {{ path: {{ type: prefix, value: /users }} }}
    policies: [creds]
    upstream: app
  - name: me
    match: {{ path: {{ type: exact, value: /users/me }} }}
    respond: {{ status: 200 }}
  - name: api-host
    match: {{ hosts: [api.example.com], path: {{ type: prefix, value: /users }} }}
    upstream: app
"#
    )
}

async fn post(url: &str) -> Reply {
    Client::new()
        .send(http::Request::post(url).body(Default::default()).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_config_and_routes() {
    let b = Backend::start("app", Kind::Echo).await;
    let (g, _url, admin) = gateway(&rest(b.addr, "one"));
    let c = Client::new();

    let h = c.get(&format!("{admin}/admin/health")).await.json();
    assert_eq!(h["status"], "ok", "{h}");
    let header = header_of(&g);

    // Config: secrets redacted, hash stable, changes with the config.
    let cfg = c.get(&format!("{admin}/admin/config")).await;
    assert_eq!(cfg.status, 200);
    let text = cfg.body_text();
    assert!(!text.contains("s3cr3t-token"), "{text}");
    let v = cfg.json();
    assert_eq!(
        v["config"]["policies"]["creds"]["request"]["set"]["authorization"],
        "[redacted]"
    );
    assert_eq!(
        v["config"]["policies"]["creds"]["request"]["set"]["x-tag"],
        "one"
    );
    let hash = v["hash"].as_str().unwrap().to_string();
    assert!(
        hash.starts_with("sha256:") && hash.len() == 7 + 64,
        "{hash}"
    );
    assert_eq!(
        c.get(&format!("{admin}/admin/config")).await.json()["hash"],
        hash.as_str()
    );

    // Routes in precedence order.
    let routes = c.get(&format!("{admin}/admin/routes")).await.json();
    let names: Vec<_> = routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["me", "api-host", "users", "catch-all"]);
    assert_eq!(routes[2]["action"]["upstream"], "app");
    assert_eq!(routes[2]["policies"][0], "creds");

    // A rejected reload: degraded, with the errors, until a good reload.
    g.write_config(&format!(
        "{header}routes:\n  - name: broken\n    upstream: nowhere\n"
    ));
    let r = post(&format!("{admin}/admin/reload")).await;
    assert_eq!(r.status, 400);
    let h = c.get(&format!("{admin}/admin/health")).await.json();
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(
        h["reload_errors"][0].as_str().unwrap().contains("nowhere"),
        "{h}"
    );

    g.write_config(&format!("{header}{}", rest(b.addr, "two")));
    assert_eq!(post(&format!("{admin}/admin/reload")).await.status, 200);
    let h = c.get(&format!("{admin}/admin/health")).await.json();
    assert_eq!(h["status"], "ok", "{h}");
    assert_ne!(
        c.get(&format!("{admin}/admin/config")).await.json()["hash"],
        hash.as_str()
    );
}

/// The listener and admin part of the running gateway's config.
fn header_of(g: &GatewayProcess) -> String {
    std::fs::read_to_string(&g.config)
        .unwrap()
        .lines()
        .take_while(|l| !l.starts_with("upstreams:"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_zero_listeners_report_what_they_bound() {
    let b = Backend::start("app", Kind::Echo).await;
    let admin = free_port();
    let yaml = format!(
        r#"listeners:
  - name: ephemeral
    address: "127.0.0.1:0"
admin:
  address: "127.0.0.1:{admin}"
reload: {{ watch: false }}
upstreams:
  app: {{ targets: [{{ address: "{}" }}] }}
routes:
  - name: app
    upstream: app
"#,
        b.addr
    );
    let g = GatewayProcess::start(BIN, &yaml, &[admin]);
    let c = Client::new();
    let list = c
        .get(&format!("http://127.0.0.1:{admin}/admin/listeners"))
        .await
        .json();
    assert_eq!(list[0]["name"], "ephemeral");
    assert_eq!(list[0]["address"], "127.0.0.1:0");
    let bound = list[0]["bound"].as_str().unwrap().to_string();
    assert!(!bound.ends_with(":0"), "{list}");
    assert_eq!(c.get(&format!("http://{bound}/x")).await.status, 200);
    assert!(
        g.stderr_text().contains(&bound),
        "the listening log line names the bound address: {}",
        g.stderr_text()
    );
}
