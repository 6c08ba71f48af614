//! Path normalization through real sockets: every disguise of `/v1/admin` reaches the
//! `/v1/admin` route (and its ip_filter), never the broader route, and the upstream
//! receives the normalized path. Encoded slashes follow the listener's choice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;

fn routes(backend: std::net::SocketAddr) -> String {
    format!(
        r#"upstreams:
  app: {{ targets: [{{ address: "{backend}" }}] }}
policies:
  nobody:
    type: ip_filter
    allow: [10.255.255.255/32]
routes:
  - name: admin
    match: {{ path: {{ type: prefix, value: /v1/admin }} }}
    policies: [nobody]
    upstream: app
  - name: api
    match: {{ path: {{ type: prefix, value: /v1 }} }}
    upstream: app
"#
    )
}

/// Sends `GET target` on a fresh connection and returns the raw response.
async fn get_raw(addr: std::net::SocketAddr, target: &str) -> String {
    gatehouse_testkit::client::raw(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

fn status(raw: &str) -> u16 {
    raw.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disguised_paths_select_the_scoped_route() {
    let b = Backend::start("app", Kind::Echo).await;
    let (_g, url, _) = embedded(&routes(b.addr));
    let addr = url.trim_start_matches("http://").parse().unwrap();
    for target in [
        "/v1/admin",
        "/v1/%61dmin",
        "/v1/x/../admin",
        "/v1//admin",
        "/v1/./admin",
        "/v1/admin;x",
        "/v1/..;/v1/admin",
        "/v1/%2e%2e/v1/admin",
        "/v1/admin/../admin/users",
        "//v1///admin",
    ] {
        let r = get_raw(addr, target).await;
        assert_eq!(status(&r), 403, "{target} must hit the admin route: {r}");
    }
    assert_eq!(b.hits(), 0, "no disguised path may reach the backend");

    // What the upstream receives is the normalized path; parameters are kept.
    let c = Client::new();
    for (sent, received) in [
        ("/v1/%75sers/./x", "/v1/users/x"),
        ("/v1//users/a/../b", "/v1/users/b"),
        ("/v1/users;jsessionid=1", "/v1/users;jsessionid=1"),
        ("/v1/a%2fb?q=%2e", "/v1/a%2Fb?q=%2e"),
    ] {
        let r = c.get(&format!("{url}{sent}")).await;
        assert_eq!(r.status, 200, "{sent}");
        assert_eq!(r.json()["uri"], received, "{sent}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_escapes_are_400() {
    let b = Backend::start("app", Kind::Echo).await;
    let (_g, url, _) = embedded(&routes(b.addr));
    let addr = url.trim_start_matches("http://").parse().unwrap();
    for target in ["/v1/%zz", "/v1/%4", "/v1/a%00b"] {
        let r = get_raw(addr, target).await;
        assert_eq!(status(&r), 400, "{target}: {r}");
        assert!(r.contains("application/problem+json"), "{r}");
    }
    assert_eq!(b.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_slashes_follow_the_listener() {
    let b = Backend::start("app", Kind::Echo).await;
    let rest = routes(b.addr);
    let yaml = |choice: &str, port: u16, admin: u16| {
        format!(
            "listeners:\n  - name: public\n    address: 127.0.0.1:{port}\n    path_normalization: {{ merge_slashes: false, escaped_slashes: {choice} }}\nadmin: {{ address: 127.0.0.1:{admin} }}\nreload: {{ watch: false }}\n{rest}"
        )
    };

    let (port, admin) = (free_port(), free_port());
    let _g = GatewayProcess::start(BIN, &yaml("reject", port, admin), &[port, admin]);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    for target in ["/v1/a%2Fb", "/v1/a%5cb", "/v1/a\\b"] {
        let r = get_raw(addr, target).await;
        assert_eq!(status(&r), 400, "{target}: {r}");
    }
    // merge_slashes: false keeps empty segments.
    let r = Client::new()
        .get(&format!("http://127.0.0.1:{port}/v1//users"))
        .await;
    assert_eq!(r.json()["uri"], "/v1//users");

    let (port, admin) = (free_port(), free_port());
    let _g = GatewayProcess::start(BIN, &yaml("decode", port, admin), &[port, admin]);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    // Decoded, `%2F` is a separator: this is the admin route.
    let r = get_raw(addr, "/v1%2Fadmin").await;
    assert_eq!(status(&r), 403, "{r}");
    let r = Client::new()
        .get(&format!("http://127.0.0.1:{port}/v1/x%2F..%2Fusers"))
        .await;
    assert_eq!(r.json()["uri"], "/v1/users");
}
