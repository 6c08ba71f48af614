//! `type: http_signature` against the standard RFC 9421 client (`http-message-signatures`
//! on PyPI, installed by scripts/test.sh): HMAC-SHA256 and Ed25519 signatures admit the
//! consumer; a replayed nonce, a body that does not match its Content-Digest, a stale
//! `created`, a missing required component, a wrong secret, a changed query and an
//! unsigned request are each refused with 401.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;

const SECRET: &str = "mobile-hmac-secret-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_client_interoperates_and_every_bad_signature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // By openssl: the client's `cryptography` reads its PKCS#8 (not ring's v2 form).
    let private = dir.path().join("ops-ed.key");
    let public = dir.path().join("ops-ed.pub");
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            private.to_str().unwrap(),
        ],
        vec![
            "pkey",
            "-in",
            private.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
    ] {
        let st = std::process::Command::new("openssl")
            .args(&args)
            .status()
            .unwrap();
        assert!(st.success());
    }

    let be = Backend::start("a", Kind::Echo).await;
    let yaml = format!(
        r#"
consumers:
  - name: mobile-app
    groups: [gold]
    credentials: [{{ type: http_signature, key_id: mobile-1, secret: "{SECRET}" }}]
  - name: ops
    credentials: [{{ type: http_signature, key_id: ops-ed, public_key: "{}" }}]
upstreams:
  u:
    targets: [{{ address: "{}" }}]
policies:
  signed: {{ type: http_signature, clock_skew: 300s, nonce_ttl: 600s }}
routes:
  - name: signed
    match: {{ path: {{ type: prefix, value: /signed }} }}
    policies: [signed]
    upstream: u
"#,
        public.display(),
        be.addr
    );
    let (_g, url, _admin) = embedded(&yaml);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/sign_requests.py"
    );
    let out = tokio::task::spawn_blocking(move || {
        // scripts/test.sh puts its venv (with http-message-signatures) first on PATH.
        std::process::Command::new("python3")
            .args([script, &url, SECRET, private.to_str().unwrap()])
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the client failed (run scripts/test.sh, which installs http-message-signatures):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let want = serde_json::json!({
        "hmac_get": 200, "replayed": 401, "hmac_post_digest": 200, "body_tampered": 401,
        "ed25519": 200, "too_old": 401, "missing_component": 401, "wrong_secret": 401,
        "query_changed": 401, "unsigned": 401,
    });
    assert_eq!(got, want);
    assert_eq!(be.hits(), 3, "only the good requests reached the upstream");
}

#[test]
fn signing_key_errors_are_located_and_key_files_follow_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let pem = dir.path().join("keys/ed.pub");
    let st = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(dir.path().join("ed.key"))
        .status()
        .unwrap();
    assert!(st.success());
    let st = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(dir.path().join("ed.key"))
        .arg("-out")
        .arg(&pem)
        .status()
        .unwrap();
    assert!(st.success());
    let validate = |yaml: &str| {
        let f = dir.path().join("gw.yaml");
        std::fs::write(&f, yaml).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["validate", "-c", f.to_str().unwrap()])
            .current_dir("/")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let policy = "policies:\n  s: { type: http_signature }\nroutes:\n  - { name: r, policies: [s], respond: { status: 200 } }\n";
    let ok = format!(
        "consumers:\n  - name: a\n    credentials: [{{ type: http_signature, key_id: k1, public_key: keys/ed.pub }}]\n{policy}"
    );
    assert_eq!(validate(&ok).0, Some(0), "{}", validate(&ok).1);
    let bad = format!(
        "consumers:\n  - name: a\n    credentials:\n      - {{ type: http_signature, key_id: k1, secret: s, public_key: keys/ed.pub }}\n  - name: b\n    credentials:\n      - {{ type: http_signature, key_id: k1, secret: t }}\n      - {{ type: jwt, subject: \"\" }}\n{policy}"
    );
    let (code, err) = validate(&bad);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(
            "gw.yaml:4:9: consumers[0].credentials[0]: give secret or public_key, not both"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "consumers[1].credentials[0].key_id: key id \"k1\" is also a credential of consumers[0]"
        ),
        "{err}"
    );
    assert!(
        err.contains("consumers[1].credentials[1].subject: must not be empty"),
        "{err}"
    );
    let missing = format!(
        "consumers:\n  - name: a\n    credentials: [{{ type: http_signature, key_id: k1, public_key: keys/none.pub }}]\n{policy}"
    );
    let (code, err) = validate(&missing);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("consumers[0].credentials[0].public_key: cannot read \"keys/none.pub\""),
        "{err}"
    );
}
