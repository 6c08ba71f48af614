//! One `/metrics` scrape of a gateway with 1,000 routes that all served traffic
//! (request and duration series, phase histograms, quality scores), text and
//! OpenMetrics. 900 routes proxy to a real backend (every phase measured), 100 answer
//! 503 locally. The budget: under 50 ms.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::fmt::Write as _;
use std::hint::black_box;
use std::io::{Read, Write};

const ROUTES: usize = 1000;

fn config(backend: std::net::SocketAddr) -> String {
    let mut y = format!(
        "listeners:\n  - {{ name: p, address: \"127.0.0.1:0\" }}\nadmin: {{ address: \"127.0.0.1:0\" }}\naccess_log: \"off\"\nreload: {{ watch: false }}\nupstreams:\n  be: {{ targets: [{{ address: \"{backend}\" }}] }}\nroutes:\n",
    );
    for i in 0..ROUTES {
        let action = if i % 10 == 0 {
            "respond: { status: 503 }"
        } else {
            "upstream: be"
        };
        let _ = writeln!(
            y,
            "  - {{ name: r{i}, match: {{ path: {{ type: prefix, value: /r{i}/ }} }}, {action} }}"
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
        // Read one whole response: its head, then Content-Length bytes of body.
        let mut got = Vec::new();
        loop {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the gateway closed the connection");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if got.len() >= end + 4 + length {
                    break;
                }
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let backend = rt.block_on(gatehouse_testkit::backend::Backend::start(
        "be",
        gatehouse_testkit::backend::Kind::Echo,
    ));
    let gw = gatehouse::embed::Embedded::builder()
        .threads(1)
        .start(&config(backend.addr))
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
    drop(backend);
}

criterion_group!(benches, bench);
criterion_main!(benches);
