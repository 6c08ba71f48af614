//! Cost of the body policies on a 10 KiB JSON document (the issue's bound: a transform or
//! a schema check under 30 us), each run as the pipeline runs it: built from config, the
//! body in the request context, `on_request` / `on_response` called.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_core::{Connection, Flow, Policy, RequestCtx};
use gatehouse_policies::kind::Kinds;
use std::hint::black_box;
use std::sync::Arc;

/// The binary's allocator, with its default settings as the binary runs it.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Policy `name` of `yaml`, built with the built-in kinds.
fn policy(yaml: &str, name: &str) -> Arc<dyn Policy> {
    let loaded = gatehouse_config::load_str(yaml, "bench.yaml").expect("bench config loads");
    let c = &loaded.config;
    let registry = gatehouse_core::StateRegistry::new();
    let stage = registry.stage();
    Kinds::builtin()
        .build(name, &c.policies[name], c, loaded.dir(), &stage)
        .expect("bench policy builds")
}

/// An order list of about 10 KiB: 60 items of 7 fields, one nested.
fn document() -> Bytes {
    let items: Vec<_> = (0..60)
        .map(|i| {
            serde_json::json!({
                "sku": format!("SKU-{i:05}"), "name": format!("Item number {i} with a name"),
                "qty": i % 7 + 1, "price": 19.99 + f64::from(i), "cost": 7.5,
                "tags": ["blue", "large"], "internal": {"warehouse": "north-3", "bin": i}
            })
        })
        .collect();
    let doc = serde_json::json!({
        "order": "A-1042", "customer": {"id": 77, "userName": "ann", "email": "ann@example.com"},
        "internal": {"trace": "x"}, "items": items
    });
    Bytes::from(serde_json::to_vec(&doc).expect("a Value serializes"))
}

fn ctx() -> RequestCtx {
    let addr: std::net::SocketAddr = "127.0.0.1:1".parse().expect("an address");
    let conn = Connection::plain(addr, addr, "public".into());
    let mut c = RequestCtx::new("rid-1".into(), Arc::new(conn), std::time::Instant::now());
    c.route = Some("orders".into());
    c
}

const CONFIG: &str = r#"
policies:
  shape:
    type: transform
    response:
      json:
        remove: [internal, "items[*].cost", "items[*].internal"]
        rename: { "customer.userName": user_name }
        set: { source: gateway }
        add: { "meta.route": "{route}" }
  order-schema:
    type: json_schema
    schema:
      type: object
      required: [order, customer, items]
      properties:
        order: { type: string, pattern: "^[A-Z]-[0-9]+$" }
        customer:
          type: object
          required: [id, email]
          properties: { id: { type: integer }, email: { type: string, format: email } }
        items:
          type: array
          maxItems: 1000
          items:
            type: object
            required: [sku, qty, price]
            properties:
              sku: { type: string, maxLength: 32 }
              qty: { type: integer, minimum: 1 }
              price: { type: number, minimum: 0 }
              tags: { type: array, items: { type: string } }
routes:
  - { name: orders, policies: [shape, order-schema], respond: { status: 200 } }
"#;

fn bench(c: &mut Criterion) {
    let body = document();
    assert!((9_000..12_000).contains(&body.len()), "{}", body.len());
    let shape = policy(CONFIG, "shape");
    let schema = policy(CONFIG, "order-schema");
    let (resp, ()) = http::Response::builder()
        .header("content-type", "application/json")
        .body(())
        .expect("a response head")
        .into_parts();
    let (req, ()) = http::Request::builder()
        .method("POST")
        .uri("/orders")
        .header("content-type", "application/json")
        .body(())
        .expect("a request head")
        .into_parts();
    let mut cx = ctx();
    c.bench_function(
        "transform 10 KiB JSON response (4 removes, rename, set, add)",
        |b| {
            b.iter(|| {
                let mut r = resp.clone();
                cx.bodies().response = Some(body.clone());
                shape.on_response(&mut r, &mut cx);
                black_box(cx.bodies().response.take())
            })
        },
    );
    c.bench_function("json_schema 10 KiB JSON request (valid)", |b| {
        b.iter(|| {
            let mut r = req.clone();
            cx.bodies().request = Some(body.clone());
            let flow = schema.on_request(&mut r, &mut cx);
            assert!(matches!(flow, Flow::Continue));
            black_box(cx.bodies().request.take())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
