//! Who may use the admin API: `admin.allow` (CIDRs and ip_groups), `admin.tokens` (Bearer
//! or Basic, read and admin roles, plain or SHA-256), the audit log of writes, and access
//! settings that change on reload without moving the socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
const READ_TOKEN: &str = "read-token-0123456789abcdef";

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn yaml(port: u16, admin: u16, access: &str) -> String {
    format!(
        r#"
listeners:
  - name: public
    address: 127.0.0.1:{port}
admin:
  address: 127.0.0.1:{admin}
{access}
ip_groups:
  ops: [127.0.0.0/8]
  elsewhere: [10.0.0.0/8]
routes:
  - name: r
    respond: {{ status: 200 }}
reload: {{ watch: false }}
"#
    )
}

async fn call(c: &Client, method: &str, url: &str, auth: Option<String>) -> Reply {
    let mut b = http::Request::builder().method(method).uri(url);
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    c.send(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_every_admin_path_by_role_and_writes_are_audited() {
    let (port, admin) = (free_port(), free_port());
    let access = format!(
        "  tokens:\n    - {{ token: \"{ADMIN_TOKEN}\", role: admin, name: ci-deployer }}\n    - {{ token_sha256: \"{}\", role: read }}",
        sha256_hex(READ_TOKEN)
    );
    let mut g = GatewayProcess::start(BIN, &yaml(port, admin, &access), &[port, admin]);
    let base = format!("http://127.0.0.1:{admin}");
    let c = Client::new();
    let bearer = |t: &str| Some(format!("Bearer {t}"));

    // No token, or a wrong one: 401 with both challenges, on every path.
    for path in ["/admin/health", "/metrics", "/admin/config"] {
        let r = call(&c, "GET", &format!("{base}{path}"), None).await;
        assert_problem(&r, 401);
        let challenges: Vec<_> = r
            .headers
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert!(
            challenges.iter().any(|v| v.starts_with("Bearer ")),
            "{challenges:?}"
        );
        assert!(
            challenges.iter().any(|v| v.starts_with("Basic ")),
            "{challenges:?}"
        );
    }
    let r = call(
        &c,
        "GET",
        &format!("{base}/admin/health"),
        bearer("not-the-token"),
    )
    .await;
    assert_problem(&r, 401);

    // The read token reads (also as a Basic password, for browsers) and may not write.
    let r = call(
        &c,
        "GET",
        &format!("{base}/admin/health"),
        bearer(READ_TOKEN),
    )
    .await;
    assert_eq!(r.status, 200);
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("anyone:{READ_TOKEN}"))
    };
    let r = call(
        &c,
        "GET",
        &format!("{base}/metrics"),
        Some(format!("Basic {basic}")),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = call(
        &c,
        "POST",
        &format!("{base}/admin/reload"),
        bearer(READ_TOKEN),
    )
    .await;
    assert_problem(&r, 403);

    // The admin token writes, and the write is in the audit log with its holder's name.
    let r = call(
        &c,
        "POST",
        &format!("{base}/admin/reload"),
        bearer(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let log = g.stderr_text();
        if let Some(line) = log.lines().find(|l| l.contains("admin write")) {
            assert!(line.contains("who=ci-deployer"), "{line}");
            assert!(line.contains("/admin/reload"), "{line}");
            assert!(line.contains("status=200"), "{line}");
            break;
        }
        assert!(std::time::Instant::now() < until, "no audit line:\n{log}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Tokens never reach the log.
    let log = g.stderr_text();
    assert!(!log.contains(ADMIN_TOKEN) && !log.contains(READ_TOKEN));
    g.signal("TERM");
    g.wait_exit(std::time::Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_refuses_other_addresses_and_access_changes_apply_on_reload() {
    let (port, admin) = (free_port(), free_port());
    let g = GatewayProcess::start(
        BIN,
        &yaml(port, admin, "  allow: [elsewhere, 192.168.0.0/16]"),
        &[port, admin],
    );
    let base = format!("http://127.0.0.1:{admin}");
    let c = Client::new();
    for path in ["/admin/health", "/metrics", "/admin/nothing-here"] {
        assert_problem(&c.get(&format!("{base}{path}")).await, 403);
    }
    // Allowing loopback (through an ip_group) and adding a token reloads on the same
    // socket: no "address in use", and the next request follows the new rules.
    g.write_config(&yaml(
        port,
        admin,
        &format!("  allow: [ops]\n  tokens: [{{ token: \"{ADMIN_TOKEN}\", role: admin }}]"),
    ));
    g.signal("HUP");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = c.get(&format!("{base}/admin/health")).await;
        if r.status == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "reload not applied: {}",
            r.status
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = call(
        &c,
        "GET",
        &format!("{base}/admin/health"),
        Some(format!("Bearer {ADMIN_TOKEN}")),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["generation"], 2);
}

#[test]
fn weak_or_malformed_tokens_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("gw.yaml");
    std::fs::write(
        &f,
        "admin:\n  address: 127.0.0.1:9901\n  tokens:\n    - { token: short, role: admin }\n    - { token_sha256: ABC, role: read }\n    - { role: read }\n  allow: [nowhere]\nroutes:\n  - name: r\n    respond: { status: 200 }\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["validate", "-c", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.tokens[0].token: must be at least 16 characters"),
        "{err}"
    );
    assert!(
        err.contains("admin.tokens[1].token_sha256: must be 64 lower-case hex"),
        "{err}"
    );
    assert!(
        err.contains("admin.tokens[2]: needs token or token_sha256"),
        "{err}"
    );
    // The secret itself is never echoed back.
    assert!(!err.contains("short\""), "{err}");
}
