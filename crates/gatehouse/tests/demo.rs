//! `gatehouse demo`: serves on the ports it is given, checks them before printing its
//! instructions, and removes its temporary config on exit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_on_its_ports_and_cleans_up() {
    let (port, admin) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args([
            "demo",
            "--port",
            &port.to_string(),
            "--admin-port",
            &admin.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let config = std::env::temp_dir().join(format!("gatehouse-demo-{}.yaml", child.id()));
    let until = Instant::now() + Duration::from_secs(15);
    while [port, admin]
        .iter()
        .any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err())
    {
        assert!(Instant::now() < until, "demo did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(config.exists());
    let c = Client::new();
    assert_eq!(
        c.get(&format!("http://127.0.0.1:{port}/api/hello"))
            .await
            .status,
        200
    );
    assert_eq!(
        c.get(&format!("http://127.0.0.1:{admin}/admin/health"))
            .await
            .status,
        200
    );
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains(&format!("127.0.0.1:{admin}/admin/upstreams")),
        "{printed}"
    );
    assert!(!config.exists(), "the demo config was left behind");
}

#[test]
fn demo_refuses_a_busy_port_before_printing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let out = Command::new(BIN)
        .args([
            "demo",
            "--port",
            &busy.to_string(),
            "--admin-port",
            &free_port().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "printed instructions anyway");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use") && err.contains("--port"), "{err}");
}
