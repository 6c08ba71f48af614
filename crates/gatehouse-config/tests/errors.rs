//! Config errors name file, line, column and field path.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use gatehouse_config::{ConfigError, load_str};

fn errors(text: &str) -> Vec<ConfigError> {
    match load_str(text, "gw.yaml") {
        Ok(_) => panic!("config should be rejected"),
        Err(e) => e.0,
    }
}

const BASE: &str = "upstreams:\n  users:\n    targets: [{ address: 127.0.0.1:9001 }]\n";

#[test]
fn unknown_upstream_is_located() {
    let text = format!("{BASE}routes:\n  - name: a\n    upstream: user\n");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        e[0].to_string(),
        "gw.yaml:6:15: routes[0].upstream: no upstream named \"user\""
    );
}

#[test]
fn unknown_field_is_located() {
    let text = format!("{BASE}routes:\n  - name: a\n    upstrem: users\n");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!((e[0].line, e[0].column), (6, 5), "{}", e[0]);
    assert!(e[0].message.contains("upstrem"), "{}", e[0]);
    assert_eq!(e[0].path, "routes[0].upstrem");
}

#[test]
fn bad_duration_and_type_errors_are_located() {
    let text = "upstreams:\n  users:\n    targets: [{ address: 127.0.0.1:9001 }]\n    timeouts: { connect: 2 parsecs }\n";
    let e = errors(text);
    assert_eq!(e[0].line, 4, "{}", e[0]);
    assert!(e[0].message.contains("parsecs"), "{}", e[0]);
}

#[test]
fn many_semantic_errors_at_once() {
    let text = r#"
listeners:
  - { name: a, address: "nope" }
  - { name: a, address: 127.0.0.1:1 }
upstreams:
  empty: { targets: [] }
  hashy: { targets: [{ address: "h:1" }], balancer: consistent_hash }
policies:
  f: { type: ip_filter, allow: [10.0.0.0/8] }
routes:
  - name: r
    match: { path: { type: regex, value: "(" } }
    upstream: empty
    respond: { status: 200 }
  - name: r
    policies: [missing]
    upstream: empty
"#;
    let e = errors(text);
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "listeners[0].address",
        "listeners[1].name",
        "upstreams.empty.targets",
        "upstreams.hashy.hash_on",
        "routes[0].match.path.value",
        "routes[0].respond",
        "routes[1].name",
        "routes[1].policies[0]",
    ] {
        assert!(paths.contains(&want), "missing {want} in {paths:?}");
    }
    assert!(e.iter().all(|e| e.line > 0), "{e:?}");
}

#[test]
fn env_interpolation() {
    // SAFETY of the test: the variable name is unique to this test.
    let text =
        "upstreams:\n  u:\n    targets: [{ address: \"127.0.0.1:${GH_TEST_PORT_X:-9100}\" }]\n";
    let loaded = load_str(text, "gw.yaml").unwrap();
    assert_eq!(
        loaded.config.upstreams["u"].targets[0].address,
        "127.0.0.1:9100"
    );
    let e = errors("a: ${GH_SURELY_UNSET_VAR}\n");
    assert_eq!((e[0].line, e[0].column), (1, 4));
}

#[test]
fn syntax_error_is_located() {
    let e = errors("routes:\n  - name: a\n   bad: [\n");
    assert!(e[0].line >= 2, "{}", e[0]);
}

#[test]
fn empty_file_is_a_valid_empty_config() {
    let l = load_str("", "gw.yaml").unwrap();
    assert!(l.config.routes.is_empty());
}

#[test]
fn resilience_blocks_are_checked_and_located() {
    let text = "upstreams:\n  users:\n    targets: [{ address: 127.0.0.1:9001 }]\n    health_check:\n      active: { path: healthz, interval: 0s, expect_status: [\"200-abc\"] }\n      passive: { max_ejected_percent: 150 }\n    retries:\n      attempts: 0\n      on: [connect_failure, bogus]\n      methods: [get, post]\n      budget: { ratio: 1.5 }\n    circuit_breaker: { failure_ratio: 0, half_open_requests: 0 }\n";
    let e = errors(text);
    let got: Vec<(usize, &str)> = e.iter().map(|e| (e.line, e.path.as_str())).collect();
    for (line, path) in [
        (5, "upstreams.users.health_check.active.path"),
        (5, "upstreams.users.health_check.active.interval"),
        (5, "upstreams.users.health_check.active.expect_status[0]"),
        (
            6,
            "upstreams.users.health_check.passive.max_ejected_percent",
        ),
        (8, "upstreams.users.retries.attempts"),
        (9, "upstreams.users.retries.on"),
        (11, "upstreams.users.retries.budget.ratio"),
        (12, "upstreams.users.circuit_breaker.failure_ratio"),
        (12, "upstreams.users.circuit_breaker.half_open_requests"),
    ] {
        assert!(
            got.contains(&(line, path)),
            "missing {line}:{path} in {e:?}"
        );
    }
    assert!(
        e.iter().any(|e| e.message.contains("bogus")),
        "the bad retries.on entry is named: {e:?}"
    );
}

#[test]
fn retry_methods_word_must_be_known() {
    let text = "upstreams:\n  users:\n    targets: [{ address: 127.0.0.1:9001 }]\n    retries: { methods: sometimes }\n";
    let e = errors(text);
    assert_eq!(e[0].line, 4, "{}", e[0]);
    assert!(e[0].message.contains("idempotent"), "{}", e[0]);
}

#[test]
fn shared_addresses_are_refused() {
    let text = r#"listeners:
  - { name: a, address: "127.0.0.1:8080" }
  - { name: b, address: "0.0.0.0:8080" }
  - { name: c, address: "127.0.0.1:9901" }
  - { name: d, address: "127.0.0.1:0" }
  - { name: e, address: "127.0.0.1:0" }
admin: { address: "127.0.0.1:9901" }
"#;
    let e = errors(text);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0].path, "listeners[1].address");
    assert_eq!(e[0].line, 3);
    assert!(e[0].message.contains("listener \"a\""), "{}", e[0]);
    assert_eq!(e[1].path, "listeners[2].address");
    assert!(e[1].message.contains("admin API"), "{}", e[1]);
}

#[test]
fn observability_blocks_are_checked_and_located() {
    let text = format!(
        "{BASE}tracing:\n  otlp: {{ endpoint: \"ftp://collector\", compression: brotli }}\n"
    );
    let e = errors(&text);
    assert_eq!(e[0].path, "tracing.otlp.compression", "{e:?}");
    let text = format!(
        "{BASE}tracing:\n  otlp: {{ endpoint: \"ftp://collector\" }}\n  sampling: {{ ratio: 1.5 }}\n  batch: {{ max_queue: 10, max_batch: 20 }}\nanalytics: {{ top_capacity: 0, latency_target: 0s }}\nmetrics: {{ consumers: {{ enabled: true, max: 0 }} }}\nroutes:\n  - {{ name: r, upstream: users, analytics: {{ latency_target: 0ms }} }}\n"
    );
    let paths: Vec<String> = errors(&text).into_iter().map(|e| e.path).collect();
    for p in [
        "tracing.otlp.endpoint",
        "tracing.sampling.ratio",
        "tracing.batch.max_batch",
        "analytics.top_capacity",
        "analytics.latency_target",
        "metrics.consumers.max",
        "routes[0].analytics.latency_target",
    ] {
        assert!(paths.iter().any(|x| x == p), "{p} not in {paths:?}");
    }
}

#[test]
fn listener_limits_and_protection_lists_are_checked_and_located() {
    let e = errors(
        "listeners:\n  - name: l\n    address: 127.0.0.1:8080\n    max_connections_per_ip: 0\n    max_header_count: 0\n    http2_max_concurrent_streams: 0\n    http2_max_resets: { limit: 0, per: 0s }\n    body_read_timeout: 0s\n    min_body_rate: 0B\n    request_rate_per_ip: { limit: 0, per: 0s, burst: 0 }\nprotection:\n  exempt: [office]\n  deny: [not-an-ip]\n",
    );
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "listeners[0].max_connections_per_ip",
        "listeners[0].max_header_count",
        "listeners[0].http2_max_concurrent_streams",
        "listeners[0].http2_max_resets.limit",
        "listeners[0].http2_max_resets.per",
        "listeners[0].body_read_timeout",
        "listeners[0].min_body_rate",
        "listeners[0].request_rate_per_ip.limit",
        "listeners[0].request_rate_per_ip.per",
        "listeners[0].request_rate_per_ip.burst",
        "protection.exempt[0]",
        "protection.deny[0]",
    ] {
        assert!(paths.contains(&want), "missing {want} in {paths:?}");
    }
    assert!(e.iter().all(|e| e.line > 0), "{e:?}");
}

#[test]
fn the_client_table_and_ban_settings_are_checked_and_located() {
    let e = errors(
        "listeners:\n  - name: l\n    address: 127.0.0.1:8080\nprotection:\n  client_table_size: 0\n  max_bans: 0\n  ipv6_prefix: 0\n  ban:\n    after: 0\n    within: 0s\n    duration: 10m\n    max_duration: 1m\n    triggers: [waf, sqli]\n",
    );
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "protection.client_table_size",
        "protection.max_bans",
        "protection.ipv6_prefix",
        "protection.ban.after",
        "protection.ban.within",
        "protection.ban.max_duration",
        "protection.ban.triggers[1]",
    ] {
        assert!(paths.contains(&want), "missing {want} in {paths:?}");
    }
    let trigger = e
        .iter()
        .find(|e| e.path == "protection.ban.triggers[1]")
        .unwrap();
    assert_eq!(trigger.line, 13);
    assert!(
        trigger.message.contains("expected one of waf, rate_limit"),
        "{trigger:?}"
    );
    assert!(e.iter().all(|e| e.line > 0), "{e:?}");
}
