//! `type: json_schema` through the real binary: valid bodies go upstream unchanged,
//! invalid ones are answered 400 with every violation and never forwarded; schema files
//! with `$ref`s to files beside them, draft 7 and 2020-12, and config errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use serde_json::json;

const ORDER: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["customer", "items"],
  "properties": {
    "customer": { "$ref": "common.json#/$defs/email" },
    "items": { "type": "array", "minItems": 1, "items": {
      "type": "object", "required": ["sku", "qty"],
      "properties": { "sku": { "type": "string" }, "qty": { "type": "integer", "minimum": 1 } } } }
  }
}"#;

const COMMON: &str = r#"{ "$defs": { "email": { "type": "string", "format": "email" } } }"#;

fn config(be: &Backend, dir: &std::path::Path) -> String {
    format!(
        r#"
upstreams:
  u: {{ targets: [{{ address: "{be}" }}] }}
policies:
  order-schema:
    type: json_schema
    schema_file: {file}
  legacy:
    type: json_schema
    max_body_size: 64
    schema:
      $schema: "http://json-schema.org/draft-07/schema#"
      type: object
      properties:
        count: {{ type: number, exclusiveMaximum: 10 }}
      additionalProperties: false
routes:
  - {{ name: orders, match: {{ path: {{ type: prefix, value: /orders }} }}, policies: [order-schema], upstream: u }}
  - {{ name: legacy, match: {{ path: {{ type: prefix, value: /legacy }} }}, policies: [legacy], upstream: u }}
"#,
        be = be.addr,
        file = dir.join("schemas/order.json").display(),
    )
}

fn schemas() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("schemas")).unwrap();
    std::fs::write(dir.path().join("schemas/order.json"), ORDER).unwrap();
    std::fs::write(dir.path().join("schemas/common.json"), COMMON).unwrap();
    dir
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_bodies_go_upstream_unchanged() {
    let be = Backend::start("a", Kind::Echo).await;
    let dir = schemas();
    let (_g, url, _) = gateway(&config(&be, dir.path()));
    let c = Client::new();
    let body = r#"{"customer":"a@example.com","items":[{"sku":"x","qty":2}]}"#;
    let r = send_body(&c, "POST", &format!("{url}/orders"), &[JSON], body).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.json()["body"], body);
    // Methods not listed pass unvalidated, bodiless.
    let r = send(&c, "GET", &format!("{url}/orders/1"), &[]).await;
    assert_eq!(r.status, 200);
    // Draft 7 (`exclusiveMaximum` a number), inline.
    let r = send_body(
        &c,
        "PUT",
        &format!("{url}/legacy"),
        &[JSON],
        r#"{"count":9.5}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(be.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_bodies_list_every_violation_and_are_not_forwarded() {
    let be = Backend::start("a", Kind::Echo).await;
    let dir = schemas();
    let (_g, url, _) = gateway(&config(&be, dir.path()));
    let c = Client::new();
    let body = r#"{"customer":"not-an-email","items":[{"sku":"x","qty":0},{"qty":"two"}]}"#;
    let r = send_body(&c, "POST", &format!("{url}/orders"), &[JSON], body).await;
    assert_problem(&r, 400);
    let v = r.json();
    let mut errors = v["errors"].as_array().unwrap().clone();
    errors.sort_by_key(|e| e["pointer"].as_str().unwrap().to_string());
    assert_eq!(
        errors,
        vec![
            json!({"pointer": "/customer", "detail": "must be a valid email"}),
            json!({"pointer": "/items/0/qty", "detail": "must be at least 1"}),
            json!({"pointer": "/items/1/qty", "detail": "must be of type integer"}),
            json!({"pointer": "/items/1/sku", "detail": "is required"}),
        ]
    );
    assert!(v["detail"].as_str().unwrap().contains("4 violations"));
    // Nothing the client sent is echoed.
    assert!(!r.body_text().contains("not-an-email"));
    assert!(!r.body_text().contains("two"));

    // Draft 7 inline: a number at the limit, a property not allowed.
    let r = send_body(
        &c,
        "POST",
        &format!("{url}/legacy"),
        &[JSON],
        r#"{"count":10,"x":1}"#,
    )
    .await;
    assert_problem(&r, 400);
    let mut errors = r.json()["errors"].as_array().unwrap().clone();
    errors.sort_by_key(|e| e["pointer"].as_str().unwrap().to_string());
    assert_eq!(
        errors,
        vec![
            json!({"pointer": "", "detail": "has properties not allowed: \"x\""}),
            json!({"pointer": "/count", "detail": "must be less than 10"}),
        ]
    );

    // Malformed JSON: where it breaks.
    let r = send_body(
        &c,
        "POST",
        &format!("{url}/orders"),
        &[JSON],
        "{\n  \"a\": ]",
    )
    .await;
    assert_problem(&r, 400);
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("line 2 column 8"), "{detail}");
    // No body where one is wanted.
    let r = send(&c, "POST", &format!("{url}/orders"), &[JSON]).await;
    assert_problem(&r, 400);
    // Not JSON at all.
    let r = send_body(
        &c,
        "POST",
        &format!("{url}/orders"),
        &[("content-type", "application/x-www-form-urlencoded")],
        "a=1",
    )
    .await;
    assert_problem(&r, 415);
    // Over max_body_size.
    let big = format!(r#"{{"count":1,"pad":"{}"}}"#, "x".repeat(100));
    let r = send_body(&c, "POST", &format!("{url}/legacy"), &[JSON], &big).await;
    assert_problem(&r, 413);
    assert_eq!(be.hits(), 0, "nothing invalid reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_are_refused_and_the_gateway_keeps_serving() {
    let be = Backend::start("a", Kind::Echo).await;
    let dir = schemas();
    let (_g, url, _) = gateway(&config(&be, dir.path()));
    let c = Client::new();
    // Nested far deeper than the 128 levels allowed (half a megabyte of brackets): 400
    // saying so, not a stack overflow.
    let deep = format!(
        r#"{{"customer":"a@example.com","items":{}{}}}"#,
        "[".repeat(250_000),
        "]".repeat(250_000)
    );
    let r = send_body(&c, "POST", &format!("{url}/orders"), &[JSON], &deep).await;
    assert_problem(&r, 400);
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("recursion limit")
    );
    // A repeated name is checked in every copy: a bad one cannot hide behind a good one.
    for body in [
        r#"{"customer":"a@example.com","items":[{"sku":"x","qty":2,"qty":-1}]}"#,
        r#"{"customer":"a@example.com","items":[{"sku":"x","qty":-1,"qty":2}]}"#,
    ] {
        let r = send_body(&c, "POST", &format!("{url}/orders"), &[JSON], body).await;
        assert_problem(&r, 400);
        assert_eq!(r.json()["errors"][0]["pointer"], "/items/0/qty");
    }
    assert_eq!(be.hits(), 0);
    let ok = r#"{"customer":"a@example.com","items":[{"sku":"x","qty":2}]}"#;
    let r = send_body(&c, "POST", &format!("{url}/orders"), &[JSON], ok).await;
    assert_eq!(r.status, 200);
}

#[test]
fn bad_schemas_are_config_errors() {
    let cases = [
        (
            "schema: { type: objekt }",
            "policies.s.schema",
            "is not a valid JSON Schema",
        ),
        (
            "schema_file: missing.json",
            "policies.s.schema_file",
            "cannot read",
        ),
        (
            "schema: {}\n    schema_file: a.json",
            "policies.s",
            "has both",
        ),
        (
            "methods: [POST]",
            "policies.s",
            "needs `schema_file` or `schema`",
        ),
    ];
    for (settings, field, words) in cases {
        let yaml = format!(
            "listeners: [{{ name: p, address: 127.0.0.1:1 }}]\npolicies:\n  s:\n    type: json_schema\n    {settings}\nroutes: []\n"
        );
        let (code, err) = validate(&yaml);
        assert_ne!(code, Some(0), "{settings}");
        assert!(
            err.contains(field) && err.contains(words),
            "{settings}: {err}"
        );
    }
}
