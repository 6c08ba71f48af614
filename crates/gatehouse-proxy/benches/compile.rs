//! Whole-config compile on 10,000 routes: YAML parse, validation, position index, route
//! table, policies and upstream state, as a reload does it.
#![allow(clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::fmt::Write;
use std::hint::black_box;

fn config(n: usize) -> String {
    let mut y = String::from(
        "listeners:\n  - { name: p, address: \"127.0.0.1:8080\" }\nupstreams:\n  a: { targets: [{ address: \"127.0.0.1:9001\" }, { address: \"127.0.0.1:9002\" }] }\n  b: { targets: [{ address: \"127.0.0.1:9003\" }], balancer: least_connections }\npolicies:\n  h: { type: headers, request: { set: { x-gw: \"1\" } } }\nroutes:\n",
    );
    for i in 0..n {
        let m = match i % 4 {
            0 => format!("{{ path: {{ type: exact, value: /svc{i}/items }}, methods: [GET] }}"),
            1 => format!("{{ path: {{ type: prefix, value: /svc{i} }} }}"),
            2 => format!("{{ path: {{ type: template, value: \"/svc{i}/users/{{id}}\" }} }}"),
            _ => format!(
                "{{ hosts: [\"h{}.example.com\"], path: {{ type: prefix, value: /api/r{i} }} }}",
                i % 50
            ),
        };
        let up = if i % 2 == 0 { "a" } else { "b" };
        let _ = writeln!(
            y,
            "  - name: r{i}\n    match: {m}\n    upstream: {up}\n    policies: [h]"
        );
    }
    y
}

fn bench(c: &mut Criterion) {
    let yaml = config(10_000);
    let mut g = c.benchmark_group("config");
    g.sample_size(10);
    g.bench_function("load_and_compile_10k_routes", |b| {
        b.iter(|| {
            let loaded = gatehouse_config::load::load_str(black_box(&yaml), "bench.yaml")
                .expect("valid config");
            let platform = gatehouse_proxy::compile::Platform::default();
            let stage = platform.state.stage();
            gatehouse_proxy::compile::compile(&loaded, None, &platform.kinds, &stage)
                .map(|_| ())
                .expect("compiles")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
