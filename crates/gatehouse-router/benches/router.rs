//! Route matching and table compile on 10,000 routes.
#![allow(clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_config::{PathKind, PathMatch, RouteMatch};
use gatehouse_router::{RequestView, Router};
use http::{HeaderMap, Method};
use std::hint::black_box;

fn table(n: usize) -> Vec<RouteMatch> {
    (0..n)
        .map(|i| {
            let (kind, value) = match i % 4 {
                0 => (PathKind::Exact, format!("/svc{i}/items")),
                1 => (PathKind::Prefix, format!("/svc{i}")),
                2 => (PathKind::Template, format!("/svc{i}/users/{{id}}")),
                _ => (PathKind::Prefix, format!("/api/v{}/r{i}", i % 7)),
            };
            RouteMatch {
                hosts: if i % 3 == 0 {
                    vec![format!("h{}.example.com", i % 50)]
                } else {
                    vec![]
                },
                path: Some(PathMatch { kind, value }),
                methods: if i % 5 == 0 {
                    vec!["GET".into()]
                } else {
                    vec![]
                },
                ..Default::default()
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let routes = table(10_000);
    c.bench_function("compile_10k_routes", |b| {
        b.iter(|| Router::build(black_box(&routes)))
    });
    let router = Router::build(&routes).expect("bench table compiles");
    let headers = HeaderMap::new();
    let cases = [
        ("h0.example.com", "/svc9000/items"),
        ("other.example.com", "/svc9001/deep/path/here"),
        ("other.example.com", "/svc9002/users/42"),
        ("h1.example.com", "/api/v3/r9003/x"),
        ("nomatch.example.com", "/nothing/here"),
    ];
    for (host, path) in cases {
        c.bench_function(&format!("match_10k {path}"), |b| {
            b.iter(|| {
                router.match_route(black_box(&RequestView {
                    host,
                    path,
                    method: &Method::GET,
                    headers: &headers,
                    query: None,
                }))
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
