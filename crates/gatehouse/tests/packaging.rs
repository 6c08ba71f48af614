//! What ships around the binary: the config's JSON Schema (every example conforms, a bad
//! config does not), shell completions and the man page, all generated from the code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::BIN;
use std::process::Command;

fn stdout_of(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_example_conforms_to_the_schema() {
    let schema: serde_json::Value = serde_json::from_str(&stdout_of(&["schema"])).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Examples interpolate ${VAR:-default}; the schema sees what the gateway sees.
        let loaded = gatehouse_config::load_str(&text, &path.display().to_string()).unwrap();
        let doc = gatehouse_config::load::document_json(loaded.text()).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        n += 1;
    }
    assert!(n >= 2);

    for bad in [
        serde_json::json!({"routes": [{"name": "a", "upstrem": "x"}]}),
        serde_json::json!({"upstreams": {"u": {"targets": [], "timeouts": {"connect": "2 parsecs"}}}}),
        serde_json::json!({"listeners": [{"name": "a", "address": "127.0.0.1:1", "protocols": ["http3"]}]}),
        serde_json::json!({"routes": [{"name": "a", "max_body_size": "ten"}]}),
    ] {
        assert!(!validator.is_valid(&bad), "{bad} passed the schema");
    }
}

#[test]
fn completions_and_man_page() {
    for (shell, marker) in [
        ("bash", "_gatehouse"),
        ("zsh", "#compdef gatehouse"),
        ("fish", "complete -c gatehouse"),
    ] {
        let out = stdout_of(&["completions", shell]);
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(
            out.contains("validate"),
            "{shell} completion lacks subcommands"
        );
    }
    let man = stdout_of(&["man"]);
    assert!(man.contains(".TH gatehouse 1"), "{man}");
    assert!(man.contains("validate"));
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: skipping the unit check");
        return;
    }
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/gatehouse.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("DynamicUser=yes"));
    assert!(unit.contains("CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"));
    // The installed paths point at this build; the man page is not installed here.
    let local = unit
        .replace("/usr/local/bin/gatehouse", BIN)
        .lines()
        .filter(|l| !l.starts_with("Documentation="))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.service");
    std::fs::write(&path, local).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = Command::new("systemd-analyze")
        .args([
            "security",
            "--offline=yes",
            "--threshold=20",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        security.status.success(),
        "exposure above 2.0: {}",
        String::from_utf8_lossy(&security.stdout)
    );
}
