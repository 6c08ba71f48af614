//! The shipped Grafana dashboard and Prometheus alert rules (examples/grafana,
//! examples/prometheus) speak the metrics the gateway really exposes: every metric name
//! in every expression appears in a live scrape, every label a selector, a `by` clause,
//! a legend or an annotation names is a label of those metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use regex::Regex;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");

/// Metric name -> label names, from a scrape (histogram series under their own names).
fn series(scrape: &str) -> BTreeMap<String, BTreeSet<String>> {
    let line = Regex::new(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ").unwrap();
    let label = Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)="#).unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in scrape.lines().filter(|l| !l.starts_with('#')) {
        let Some(c) = line.captures(l) else { continue };
        let e = out.entry(c[1].to_string()).or_default();
        if let Some(ls) = c.get(2) {
            for m in label.captures_iter(ls.as_str()) {
                e.insert(m[1].to_string());
            }
        }
    }
    out
}

/// Checks one expression (and the labels its legend or annotations use) against the
/// scrape; returns what is wrong.
fn check(expr: &str, uses: &[String], known: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let metric = Regex::new(r"\b((?:gatehouse|process)_[a-z0-9_]+)(\{[^}]*\})?").unwrap();
    let matcher = Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)"#).unwrap();
    let by = Regex::new(r"\bby\s*\(([^)]*)\)").unwrap();
    let mut wrong = Vec::new();
    let mut labels: BTreeSet<String> = BTreeSet::from(["le".to_string()]);
    let mut any = false;
    for c in metric.captures_iter(expr) {
        any = true;
        let name = &c[1];
        let Some(have) = known.get(name) else {
            wrong.push(format!("{name}: not in the scrape ({expr})"));
            continue;
        };
        labels.extend(have.iter().cloned());
        if let Some(sel) = c.get(2) {
            for m in matcher.captures_iter(sel.as_str()) {
                if !have.contains(&m[1]) {
                    wrong.push(format!("{name} has no label {}", &m[1]));
                }
            }
        }
    }
    if !any {
        wrong.push(format!("no Gatehouse metric in {expr}"));
    }
    let grouped = by.captures_iter(expr).flat_map(|c| {
        c[1].split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
    });
    for l in grouped.chain(uses.iter().cloned()) {
        if !labels.contains(&l) {
            wrong.push(format!("label {l} is on none of the metrics of {expr}"));
        }
    }
    wrong
}

/// Label names in `{{route}}` legends and `{{ $labels.route }}` annotations.
fn used_labels(text: &str) -> Vec<String> {
    let r = Regex::new(r"\{\{\s*(?:\$labels\.)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}").unwrap();
    r.captures_iter(text)
        .map(|c| c[1].to_string())
        .filter(|l| l != "value" && !l.starts_with('_'))
        .collect()
}

fn grafana_exprs(v: &Value, out: &mut Vec<(String, Vec<String>)>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(e)) = m.get("expr") {
                let legend = m.get("legendFormat").and_then(Value::as_str).unwrap_or("");
                out.push((e.clone(), used_labels(legend)));
            }
            if let Some(Value::String(d)) = m.get("definition") {
                out.push((d.clone(), Vec::new()));
            }
            for x in m.values() {
                grafana_exprs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| grafana_exprs(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_dashboard_and_alerts_use_real_metrics() {
    let be = Backend::start("a", Kind::Echo).await;
    let dead = free_port();
    let (_g, url, admin) = gateway(&format!(
        r#"tracing:
  otlp: {{ endpoint: "http://127.0.0.1:{dead}/v1/traces" }}
upstreams:
  u:
    targets: [{{ address: "{}" }}, {{ address: "127.0.0.1:{dead}" }}]
    retries: {{ attempts: 2, backoff: {{ base: 1ms, max: 2ms }} }}
    circuit_breaker: {{ failure_ratio: 0.5, min_requests: 5, open_for: 10s }}
policies:
  closed: {{ type: ip_filter, deny: [127.0.0.0/8] }}
routes:
  - {{ name: shut, match: {{ path: {{ type: prefix, value: /shut }} }}, policies: [closed], upstream: u }}
  - {{ name: api, upstream: u }}
"#,
        be.addr
    ));
    let c = Client::new();
    for i in 0..20 {
        let path = if i % 4 == 0 { "/status/503" } else { "/x" };
        send(&c, "GET", &format!("{url}{path}"), &[]).await;
    }
    send(&c, "GET", &format!("{url}/shut"), &[]).await;
    let r = send(&c, "POST", &format!("{admin}/admin/reload"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let scrape = c.get(&format!("{admin}/metrics")).await.body_text();
    let known = series(&scrape);

    let mut wrong = Vec::new();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{EXAMPLES}/grafana/gatehouse-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    grafana_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 14, "{}", exprs.len());
    for (e, legend) in &exprs {
        wrong.extend(check(e, legend, &known));
    }
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");

    let rules: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{EXAMPLES}/prometheus/gatehouse-alerts.yaml")).unwrap(),
    )
    .unwrap();
    let rules = rules["groups"][0]["rules"].as_array().unwrap();
    assert!(rules.len() >= 8);
    for r in rules {
        let name = r["alert"].as_str().unwrap();
        assert!(name.starts_with("Gatehouse"), "{name}");
        assert!(r["labels"]["severity"].is_string(), "{name}");
        let summary = r["annotations"]["summary"].as_str().unwrap();
        let expr = r["expr"].as_str().unwrap();
        wrong.extend(check(expr, &used_labels(summary), &known));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
