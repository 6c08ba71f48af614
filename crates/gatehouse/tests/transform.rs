//! `type: transform` through the real binary: nested JSON edits with placeholders on
//! requests and responses, XML to JSON and back, untouched bodies of other types, an
//! upstream's compressed body, size limits and malformed bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use crate::support::*;
use serde_json::json;

fn config(be: &Backend, port: u16) -> String {
    format!(
        r#"
upstreams:
  u: {{ targets: [{{ address: "{be}" }}] }}
  self: {{ targets: [{{ address: "127.0.0.1:{port}" }}] }}
policies:
  shape:
    type: transform
    max_body_size: 4KiB
    request:
      json:
        remove: [password, "card.number", "items[*].cost"]
        rename: {{ userName: user_name, "items[*].qty": quantity }}
        set: {{ source: gateway, "meta.tenant": "{{header.x-tenant}}" }}
        add: {{ "meta.route": "{{route}}", "meta.user": "{{user}}", source: ignored }}
    response:
      json:
        remove: [headers, version]
        set: {{ "seen.by": "{{request_id}}", "seen.tenant": "{{header.x-tenant}}" }}
  soap:
    type: transform
    request: {{ convert: json_to_xml, xml_root: order }}
    response: {{ convert: xml_to_json }}
  to-json:
    type: transform
    response: {{ convert: xml_to_json, json: {{ remove: ["order.secret"] }} }}
  squeeze:
    type: compress
    min_size: 10
routes:
  - name: users
    match: {{ path: {{ type: template, value: "/users/{{user}}" }} }}
    policies: [shape]
    upstream: u
  - name: soap
    match: {{ path: {{ type: prefix, value: /soap }} }}
    policies: [soap]
    upstream: u
  - name: xml
    match: {{ path: {{ type: exact, value: /xml }} }}
    policies: [to-json]
    respond:
      status: 200
      headers: {{ content-type: "application/xml", etag: '"v1"' }}
      body: '<order id="7"><item sku="a">2</item><item sku="b">1</item><secret>s</secret></order>'
  - name: broken-xml
    match: {{ path: {{ type: exact, value: /broken-xml }} }}
    policies: [to-json]
    respond: {{ status: 200, headers: {{ content-type: text/xml }}, body: "<order>\n<a></b>" }}
  - name: gzipped
    match: {{ path: {{ type: exact, value: /gzipped }} }}
    policies: [shape]
    rewrite: {{ replace_path: /inner }}
    upstream: self
  - name: inner
    match: {{ path: {{ type: exact, value: /inner }} }}
    policies: [squeeze]
    respond: {{ status: 200, headers: {{ content-type: application/json }}, body: '{{"headers": 1, "keep": "yes"}}' }}
"#,
        be = be.addr,
    )
}

fn start(be: &Backend) -> (GatewayProcess, String) {
    let (port, admin) = (free_port(), free_port());
    let yaml = support::config(port, admin, &config(be, port));
    let g = GatewayProcess::start(BIN, &yaml, &[port, admin]);
    (g, format!("http://127.0.0.1:{port}"))
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_edits_reach_nested_fields_in_order_with_placeholders() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url) = start(&be);
    let c = Client::new();
    let body = json!({
        "userName": "ann", "password": "secret", "source": "client",
        "card": {"number": "4111", "exp": "12/30"},
        "items": [{"sku": "a", "qty": 2, "cost": 9}, {"sku": "b", "qty": 1, "cost": 3}]
    });
    let r = send_body(
        &c,
        "POST",
        &format!("{url}/users/ann"),
        &[JSON, ("x-tenant", "acme")],
        &body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let echoed = r.json();
    let sent: serde_json::Value = serde_json::from_str(echoed["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent,
        json!({
            "user_name": "ann", "source": "gateway",
            "card": {"exp": "12/30"},
            "items": [{"sku": "a", "quantity": 2}, {"sku": "b", "quantity": 1}],
            "meta": {"tenant": "acme", "route": "users", "user": "ann"}
        })
    );
    // Keys the edits did not touch keep their order.
    assert!(
        echoed["body"]
            .as_str()
            .unwrap()
            .starts_with(r#"{"source":"gateway","card""#)
    );
    // The response was edited too: fields removed, values from the request set.
    assert!(echoed.get("headers").is_none() && echoed.get("version").is_none());
    assert_eq!(
        echoed["seen"]["by"],
        r.header("x-request-id").unwrap().as_str()
    );
    assert_eq!(echoed["seen"]["tenant"], "acme");
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_and_json_convert_both_ways() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url) = start(&be);
    let c = Client::new();
    // JSON to XML on the way up: keys children of `xml_root`, `@` attributes, arrays
    // repeated elements.
    let body = json!({"@id": "7", "customer": "Ann & Bob", "item": [{"@sku": "a"}, {"@sku": "b"}]});
    let r = send_body(
        &c,
        "POST",
        &format!("{url}/soap"),
        &[JSON],
        &body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let echoed = r.json();
    assert_eq!(
        echoed["body"],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><order id=\"7\"><customer>Ann &amp; Bob</customer><item sku=\"a\"/><item sku=\"b\"/></order>"
    );
    assert_eq!(echoed["headers"]["content-type"], "application/xml");

    // XML to JSON on the way down, then JSON edits; the ETag no longer names these bytes.
    let r = c.get(&format!("{url}/xml")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.header("etag").as_deref(), Some("W/\"v1\""));
    assert_eq!(
        r.json(),
        json!({"order": {"@id": "7", "item": [{"@sku": "a", "#text": "2"}, {"@sku": "b", "#text": "1"}]}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_types_pass_untouched_and_bad_bodies_get_precise_answers() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url) = start(&be);
    let c = Client::new();
    // Another type streams through, whatever its size.
    let big = "p".repeat(100_000);
    let r = send_body(
        &c,
        "POST",
        &format!("{url}/users/ann"),
        &[("content-type", "text/plain")],
        &big,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 100_000);

    // Malformed JSON from the client: 400 saying where, nothing forwarded.
    let hits = be.hits();
    let r = send_body(
        &c,
        "POST",
        &format!("{url}/users/ann"),
        &[JSON],
        "{\n \"a\": ]",
    )
    .await;
    assert_problem(&r, 400);
    let v = r.json();
    assert_eq!(
        (v["line"].clone(), v["column"].clone()),
        (json!(2), json!(7))
    );
    assert!(
        v["detail"].as_str().unwrap().contains("line 2 column 7"),
        "{v}"
    );
    // Over max_body_size: 413 before any upstream.
    let big_json = json!({"pad": "x".repeat(5000)}).to_string();
    let r = send_body(&c, "POST", &format!("{url}/users/ann"), &[JSON], &big_json).await;
    assert_problem(&r, 413);
    // JSON that XML cannot carry: 400.
    let r = send_body(&c, "POST", &format!("{url}/soap"), &[JSON], r#"{"a b": 1}"#).await;
    assert_problem(&r, 400);
    assert_eq!(be.hits(), hits, "no bad body reached the upstream");

    // Malformed XML from the upstream: 502 saying where.
    let r = c.get(&format!("{url}/broken-xml")).await;
    assert_problem(&r, 502);
    let v = r.json();
    assert_eq!(
        (v["line"].clone(), v["column"].clone()),
        (json!(2), json!(4))
    );
    // An upstream response over max_body_size cannot pass unedited: 502.
    let r = send_body(
        &c,
        "POST",
        &format!("{url}/users/ann"),
        &[("content-type", "text/plain"), ("x-pad", &"h".repeat(5000))],
        "",
    )
    .await;
    assert_problem(&r, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_upstream_body_is_decoded_and_edited() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url) = start(&be);
    let c = Client::new();
    let r = send(
        &c,
        "GET",
        &format!("{url}/gzipped"),
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert!(r.header("content-encoding").is_none());
    let v = r.json();
    assert_eq!(v["keep"], "yes");
    assert!(v.get("headers").is_none());
}
