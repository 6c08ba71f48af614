//! Cost of inspecting a request with the installed CRS at paranoia level 1 (the issue's
//! bound, once the engine serves: at most 50 us CPU for a small GET, 100 us for a
//! 300-byte JSON POST). Needs Debian's modsecurity-crs (scripts/test.sh installs it).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_waf::engine::Engine;
use gatehouse_waf::request::{Collections, RequestParts};
use std::hint::black_box;
use std::path::Path;

/// The gateway's allocator: what allocation costs there, it costs here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let e = Engine::load_crs(Path::new("/usr/share/modsecurity-crs/rules"), &[]).unwrap();
    let headers: &[(&str, &[u8])] = &[
        ("Host", b"shop.example"),
        (
            "User-Agent",
            b"Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        ),
        ("Accept", b"text/html,application/xhtml+xml"),
        ("Cookie", b"session=3f2a9c1e7b; theme=dark"),
    ];
    let get = RequestParts {
        method: "GET",
        target: "/shop/search?q=red+shoes&page=2&sort=price",
        protocol: "HTTP/1.1",
        headers,
        body: None,
    };
    c.bench_function("collections of the small GET", |b| {
        b.iter(|| black_box(Collections::of(black_box(&get))))
    });
    let empty = Collections::default();
    c.bench_function("CRS 3.3 PL1, empty request", |b| {
        b.iter(|| black_box(e.inspect(black_box(&empty))))
    });
    let parsed = Collections::of(&get);
    c.bench_function("CRS 3.3 PL1, small GET, rules only", |b| {
        b.iter(|| black_box(e.inspect(black_box(&parsed))))
    });
    c.bench_function(
        "CRS 3.3 PL1, small GET (3 args, 4 headers, 2 cookies)",
        |b| b.iter(|| black_box(e.inspect(&Collections::of(black_box(&get))))),
    );
    let json_headers: &[(&str, &[u8])] = &[
        ("Host", b"api.example"),
        ("User-Agent", b"orders-client/2.3"),
        ("Content-Type", b"application/json"),
        ("Accept", b"application/json"),
    ];
    let body = br#"{"order":"A-1042","customer":{"id":77,"name":"Ann O'Neil","email":"ann@example.com"},"items":[{"sku":"SKU-00017","qty":2,"note":"gift wrap, please"},{"sku":"SKU-00042","qty":1,"note":""}],"shipping":{"street":"12 Baker St","city":"London","zip":"NW1 6XE"},"coupon":null,"channel":"web","tags":["x1"]}"#;
    let post = RequestParts {
        method: "POST",
        target: "/v1/orders",
        protocol: "HTTP/1.1",
        headers: json_headers,
        body: Some(body),
    };
    c.bench_function("CRS 3.3 PL1, 300-byte JSON POST", |b| {
        b.iter(|| black_box(e.inspect(&Collections::of(black_box(&post)))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
