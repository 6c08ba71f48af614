//! One `/metrics` scrape of a gateway with 1,000 routes that all served traffic
//! (request and duration series, phase histograms, quality scores), text and
//! OpenMetrics. The budget: under 50 ms.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::fmt::Write as _;
use std::hint::black_box;
use std::io::{Read, Write};

const ROUTES: usize = 1000;

fn config() -> String {
    let mut y = String::from(
        "listeners:\n  - { name: p, address: \"127.0.0.1:0\" }\nadmin: { address: \"127.0.0.1:0\" }\naccess_log: \"off\"\nreload: { watch: false }\nroutes:\n",
    );
    for i in 0..ROUTES {
        let _ = writeln!(
            y,
            "  - {{ name: r{i}, match: {{ path: {{ type: prefix, value: /r{i}/ }} }}, respond: {{ status: {} }} }}",
            if i % 10 == 0 { 503 } else { 200 }
        );
    }
    y
}

/// One request to every route, on one kept-alive connection.
fn traffic(addr: std::net::SocketAddr) {
    let mut s = std::net::TcpStream::connect(addr).expect("listener");
    let mut buf = [0u8; 4096];
    for i in 0..ROUTES {
        let req = format!("GET /r{i}/x HTTP/1.1\r\nhost: bench\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        // Responses are small and bodiless: one read holds one.
        let _ = s.read(&mut buf).unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let gw = gatehouse::embed::Embedded::builder()
        .threads(1)
        .start(&config())
        .expect("gateway");
    traffic(gw.listener("p").expect("bound"));
    // The finish phase runs just after each response: let the last ones land.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let text = gatehouse_admin::scrape::render(gw.gateway(), false);
    assert!(
        text.contains("route=\"r999\""),
        "every route has its series"
    );
    let mut g = c.benchmark_group("scrape");
    g.sample_size(20);
    g.bench_function("text_1000_routes", |b| {
        b.iter(|| black_box(gatehouse_admin::scrape::render(gw.gateway(), false)));
    });
    g.bench_function("openmetrics_1000_routes", |b| {
        b.iter(|| black_box(gatehouse_admin::scrape::render(gw.gateway(), true)));
    });
    g.finish();
    gw.shutdown();
}

criterion_group!(benches, bench);
criterion_main!(benches);
