//! Reloads, WebSockets across reloads, graceful shutdown, h2c/gRPC, the validate CLI and examples.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn routes(a: std::net::SocketAddr, tag: &str) -> String {
    format!(
        "upstreams:\n  u: {{ targets: [{{ address: {a} }}] }}\nroutes:\n  - name: r\n    upstream: u\n  - name: tag\n    match: {{ path: {{ type: exact, value: /tag }} }}\n    respond: {{ status: 200, body: \"{tag}\" }}\naccess_log: off\n"
    )
}

async fn admin_reload(admin: &str) -> Reply {
    let c = Client::new();
    c.send(
        http::Request::post(format!("{admin}/admin/reload"))
            .body(Default::default())
            .unwrap(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_reloads_under_load_fail_no_request() {
    let a = Backend::start("a", Kind::Echo).await;
    let (port, admin_port) = (free_port(), free_port());
    let g = GatewayProcess::start(
        BIN,
        &config(port, admin_port, &routes(a.addr, "v0")),
        &[port, admin_port],
    );
    let url = format!("http://127.0.0.1:{port}");
    let admin = format!("http://127.0.0.1:{admin_port}");
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (url, failures, done, stop) =
            (url.clone(), failures.clone(), done.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let c = Client::new();
            while !stop.load(Ordering::Relaxed) {
                match c
                    .send(
                        http::Request::get(format!("{url}/x"))
                            .body(Default::default())
                            .unwrap(),
                    )
                    .await
                {
                    Ok(r) if r.status == 200 => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for i in 1..=10 {
        g.write_config(&config(port, admin_port, &routes(a.addr, &format!("v{i}"))));
        let r = admin_reload(&admin).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            Client::new().get(&format!("{url}/tag")).await.body,
            format!("v{i}")
        );
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert!(
        done.load(Ordering::Relaxed) > 100,
        "load ran: {}",
        done.load(Ordering::Relaxed)
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_reload_keeps_the_old_config() {
    let a = Backend::start("a", Kind::Echo).await;
    let (port, admin_port) = (free_port(), free_port());
    let g = GatewayProcess::start(
        BIN,
        &config(port, admin_port, &routes(a.addr, "good")),
        &[port, admin_port],
    );
    let url = format!("http://127.0.0.1:{port}");
    g.write_config(&config(
        port,
        admin_port,
        "routes:\n  - name: r\n    upstream: missing\n",
    ));
    let r = admin_reload(&format!("http://127.0.0.1:{admin_port}")).await;
    assert_problem(&r, 400);
    let errors = r.json()["errors"].to_string();
    assert!(
        errors.contains("routes[0].upstream: no upstream named \\\"missing\\\""),
        "{errors}"
    );
    // SIGHUP with the same bad file: logged, still serving the old snapshot.
    g.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        g.stderr_text().contains("config rejected"),
        "{}",
        g.stderr_text()
    );
    assert_eq!(Client::new().get(&format!("{url}/tag")).await.body, "good");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_file_watch_reload() {
    let a = Backend::start("a", Kind::Echo).await;
    let (port, admin_port) = (free_port(), free_port());
    let cfg = |tag: &str| {
        config(port, admin_port, &routes(a.addr, tag)).replace(
            "reload: { watch: false }",
            "reload: { watch: true, debounce: 100ms }",
        )
    };
    let g = GatewayProcess::start(BIN, &cfg("one"), &[port, admin_port]);
    let url = format!("http://127.0.0.1:{port}");
    let c = Client::new();
    g.write_config(&cfg("two"));
    let mut seen = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = String::from_utf8_lossy(&c.get(&format!("{url}/tag")).await.body).into_owned();
        if seen == "two" {
            break;
        }
    }
    assert_eq!(seen, "two", "file watch reload");
    std::fs::write(&g.config, cfg("three")).unwrap();
    g.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.get(&format!("{url}/tag")).await.body, "three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_survives_five_reloads() {
    let ws_backend = Backend::start("ws", Kind::WebSocket).await;
    let (port, admin_port) = (free_port(), free_port());
    let g = GatewayProcess::start(
        BIN,
        &config(port, admin_port, &routes(ws_backend.addr, "t")),
        &[port, admin_port],
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/chat"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        g.write_config(&config(
            port,
            admin_port,
            &routes(ws_backend.addr, &format!("t{i}")),
        ));
        assert_eq!(
            admin_reload(&format!("http://127.0.0.1:{admin_port}"))
                .await
                .status,
            200
        );
        let msg = format!("hello {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg.clone()))
            .await
            .unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), msg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_in_flight_request_finish() {
    let a = Backend::start("a", Kind::Echo).await;
    let (mut g, url, _) = gateway(&routes(a.addr, "t"));
    let c = Client::new();
    let slow = tokio::spawn({
        let url = url.clone();
        async move { c.get(&format!("{url}/delay/700")).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    g.signal("TERM");
    let r = slow.await.unwrap();
    assert_eq!(
        r.status, 200,
        "in-flight request completes during the drain"
    );
    let code = tokio::task::spawn_blocking(move || {
        let c = g.wait_exit(Duration::from_secs(10));
        (c, g)
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "{}", code.1.stderr_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_h2c_keeps_trailers() {
    use http_body_util::BodyExt;
    let h2 = Backend::start("h2", Kind::H2c).await;
    let (_g, url, _) = gateway(&format!(
        "upstreams:\n  g: {{ targets: [{{ address: {} }}], protocol: h2c }}\nroutes:\n  - name: grpc\n    upstream: g\naccess_log: off\n",
        h2.addr
    ));
    let addr = url.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, http_body_util::Full<bytes::Bytes>>(hyper_util::rt::TokioIo::new(
                stream,
            ))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{addr}/pkg.Service/Method"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"\0\0\0\0\x03abc",
        )))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers pass through");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x03abc");
}

#[test]
fn validate_cli_prints_located_errors_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "upstreams:\n  users: { targets: [{ address: 127.0.0.1:1 }] }\nroutes:\n  - name: a\n    upstream: user\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["validate", "-c", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        format!(
            "{}:5:15: routes[0].upstream: no upstream named \"user\"",
            bad.display()
        )
    );

    // Every bad field, not only the first; a missing file; an unset variable by field.
    let run = |text: Option<&str>, name: &str| {
        let f = dir.join(name);
        if let Some(t) = text {
            std::fs::write(&f, t).unwrap();
        }
        let out = std::process::Command::new(BIN)
            .args(["validate", "-c", f.to_str().unwrap()])
            .env_remove("GH_TEST_UNSET")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), err, f.display().to_string())
    };
    let (code, err, f) = run(
        Some(
            "routes:\n  - name: a\n    upstrem: x\n  - name: b\n    respond: { status: \"x\" }\naccess_log: 5\n",
        ),
        "multi.yaml",
    );
    assert_eq!(code, Some(1));
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with(&format!("{f}:3:5: routes[0].upstrem: unknown field")),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{f}:5:24: routes[1].respond.status: expected a whole number"
        )),
        "{err}"
    );
    assert!(
        lines[2].starts_with(&format!("{f}:6:13: access_log:")),
        "{err}"
    );
    let (code, err, f) = run(None, "absent.yaml");
    assert_eq!(code, Some(1));
    assert_eq!(
        err.trim(),
        format!("{f}:1:1: (document): the config file does not exist")
    );
    let (code, err, f) = run(
        Some("listeners:\n  - name: a\n    address: ${GH_TEST_UNSET}\n"),
        "unset.yaml",
    );
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with(&format!(
            "{f}:3:14: listeners[0].address: environment variable GH_TEST_UNSET is not set"
        )),
        "{err}"
    );

    // A shadowed route is a warning: exit 0.
    let (code, err, f) = run(
        Some(
            "routes:\n  - name: first\n    match: { path: { value: /a } }\n    respond: { status: 200 }\n  - name: second\n    match: { path: { value: /a/ } }\n    respond: { status: 201 }\n",
        ),
        "shadow.yaml",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.starts_with(&format!(
            "{f}:6:12: warning: routes[1].match: route \"second\" is never selected"
        )),
        "{err}"
    );

    let out = std::process::Command::new(BIN)
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("gatehouse "));
}

#[test]
fn every_example_validates() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let out = std::process::Command::new(BIN)
                .args(["validate", "-c", path.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 1);
}

/// A config with two listeners (`public` on `port`, plus `extra` when given) and an admin.
fn two_listeners(port: u16, extra: Option<(u16, &str)>, admin: u16, rest: &str) -> String {
    let extra = extra
        .map(|(p, opts)| format!("  - {{ name: extra, address: \"127.0.0.1:{p}\"{opts} }}\n"))
        .unwrap_or_default();
    format!(
        "listeners:\n  - {{ name: public, address: \"127.0.0.1:{port}\" }}\n{extra}admin: {{ address: \"127.0.0.1:{admin}\" }}\nreload: {{ watch: false }}\n{rest}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_changes_and_removes_listeners_without_dropping_connections() {
    let a = Backend::start("a", Kind::Echo).await;
    let rest = routes(a.addr, "v1");
    let (port, extra, admin) = (free_port(), free_port(), free_port());
    let g = GatewayProcess::start(
        BIN,
        &two_listeners(port, None, admin, &rest),
        &[port, admin],
    );
    let admin_url = format!("http://127.0.0.1:{admin}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", extra)).is_err());

    // Add a listener: it serves after the reload.
    g.write_config(&two_listeners(port, Some((extra, "")), admin, &rest));
    assert_eq!(admin_reload(&admin_url).await.status, 200);
    let c = Client::new();
    assert_eq!(
        c.get(&format!("http://127.0.0.1:{extra}/x")).await.status,
        200
    );

    // Change its settings in place: a smaller header limit applies to new requests.
    g.write_config(&two_listeners(
        port,
        Some((extra, ", max_header_size: 1KiB")),
        admin,
        &rest,
    ));
    assert_eq!(admin_reload(&admin_url).await.status, 200);
    let big = http::Request::get(format!("http://127.0.0.1:{extra}/x"))
        .header("x-big", "b".repeat(2000))
        .body(Default::default())
        .unwrap();
    let r = Client::new().send(big).await.unwrap();
    assert_problem(&r, 431);

    // Remove it while a keep-alive connection is open on it: new connections are refused,
    // the open one keeps serving until it closes.
    let mut open = tokio::net::TcpStream::connect(("127.0.0.1", extra))
        .await
        .unwrap();
    let get = b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n";
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    open.write_all(get).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let n = open.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    g.write_config(&two_listeners(port, None, admin, &rest));
    assert_eq!(admin_reload(&admin_url).await.status, 200);
    let refused = (0..20).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        std::net::TcpStream::connect(("127.0.0.1", extra)).is_err()
    });
    assert!(refused, "the removed listener stops accepting");
    open.write_all(get).await.unwrap();
    let n = open.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "the open connection still serves"
    );
    assert_eq!(
        c.get(&format!("http://127.0.0.1:{port}/x")).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_cannot_bind_rejects_the_reload() {
    let a = Backend::start("a", Kind::Echo).await;
    let rest = routes(a.addr, "v1");
    let (port, admin) = (free_port(), free_port());
    // Held by this test without SO_REUSEPORT, so the gateway cannot bind it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let g = GatewayProcess::start(
        BIN,
        &two_listeners(port, None, admin, &rest),
        &[port, admin],
    );
    g.write_config(&two_listeners(
        port,
        Some((busy, "")),
        admin,
        &routes(a.addr, "v2"),
    ));
    let r = admin_reload(&format!("http://127.0.0.1:{admin}")).await;
    assert_eq!(r.status, 400);
    let errors = r.json()["errors"].to_string();
    assert!(errors.contains("listeners[1].address"), "{errors}");
    assert!(errors.contains(":3:"), "the error names the line: {errors}");
    // Nothing changed: the old config (tag v1) still serves.
    let c = Client::new();
    let tag = c.get(&format!("http://127.0.0.1:{port}/tag")).await;
    assert_eq!(&tag.body[..], b"v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_moves_the_admin_api() {
    let a = Backend::start("a", Kind::Echo).await;
    let rest = routes(a.addr, "v1");
    let (port, admin, moved) = (free_port(), free_port(), free_port());
    let g = GatewayProcess::start(
        BIN,
        &two_listeners(port, None, admin, &rest),
        &[port, admin],
    );

    // A busy address is refused and the admin API stays where it was.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    g.write_config(&two_listeners(port, None, busy, &rest));
    let r = admin_reload(&format!("http://127.0.0.1:{admin}")).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["errors"].to_string().contains("admin.address"));

    g.write_config(&two_listeners(port, None, moved, &rest));
    assert_eq!(
        admin_reload(&format!("http://127.0.0.1:{admin}"))
            .await
            .status,
        200
    );
    let c = Client::new();
    let health = c
        .get(&format!("http://127.0.0.1:{moved}/admin/health"))
        .await;
    assert_eq!(health.status, 200);
    let gone = (0..20).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        std::net::TcpStream::connect(("127.0.0.1", admin)).is_err()
    });
    assert!(gone, "the old admin address is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_held_by_another_gateway_is_refused_at_start_and_reload() {
    let a = Backend::start("a", Kind::Echo).await;
    let (port, admin) = (free_port(), free_port());
    let first = GatewayProcess::start(
        BIN,
        &two_listeners(port, None, admin, &routes(a.addr, "first")),
        &[port, admin],
    );

    // A second process with the same listener port does not start.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("second.yaml");
    let admin2 = free_port();
    std::fs::write(
        &cfg,
        two_listeners(port, None, admin2, &routes(a.addr, "second")),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["run", "-c", cfg.to_str().unwrap(), "--threads", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("address in use"), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:2:", cfg.display()))
            && stderr.contains("listeners[0].address"),
        "the error names file, line and field: {stderr}"
    );
    // Every request still reaches the first gateway.
    let c = Client::new();
    for _ in 0..20 {
        let r = c.get(&format!("http://127.0.0.1:{port}/tag")).await;
        assert_eq!(&r.body[..], b"first");
    }

    // A reload that adds a listener on a port another process serves is rejected.
    let other = free_port();
    let second = GatewayProcess::start(
        BIN,
        &two_listeners(other, None, admin2, &routes(a.addr, "second")),
        &[other, admin2],
    );
    second.write_config(&two_listeners(
        other,
        Some((port, "")),
        admin2,
        &routes(a.addr, "second"),
    ));
    let r = admin_reload(&format!("http://127.0.0.1:{admin2}")).await;
    assert_eq!(r.status, 400);
    assert!(
        r.body_text().contains("address in use"),
        "{}",
        r.body_text()
    );
    for _ in 0..20 {
        let r = c.get(&format!("http://127.0.0.1:{port}/tag")).await;
        assert_eq!(&r.body[..], b"first");
    }
    drop(first);
}
