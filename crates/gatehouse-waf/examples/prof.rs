#![allow(missing_docs, clippy::unwrap_used)]
use gatehouse_waf::engine::Engine;
use gatehouse_waf::request::{Collections, RequestParts};
use std::hint::black_box;
use std::path::Path;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let kind = a[1].as_str();
    let n: usize = a[2].parse().unwrap();
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
    let json_headers: &[(&str, &[u8])] = &[
        ("Host", b"api.example"),
        ("User-Agent", b"orders-client/2.3"),
        ("Content-Type", b"application/json"),
        ("Accept", b"application/json"),
    ];
    let body = br#"{"order":"A-1042","customer":{"id":77,"name":"Ann O'Neil","email":"ann@example.com"},"items":[{"sku":"SKU-00017","qty":2,"note":"gift wrap, please"},{"sku":"SKU-00042","qty":1,"note":""}],"shipping":{"street":"12 Baker St","city":"London","zip":"NW1 6XE"},"coupon":null}"#;
    let post = RequestParts {
        method: "POST",
        target: "/v1/orders",
        protocol: "HTTP/1.1",
        headers: json_headers,
        body: Some(body),
    };
    let mut score = 0;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let v = match kind {
            "get" => e.inspect(&Collections::of(black_box(&get))),
            "peers" => e.inspect(&Collections::of(black_box(&RequestParts {
                method: "GET",
                target: "/",
                protocol: "HTTP/1.1",
                headers: &[
                    ("Host", b"127.0.0.1:18091"),
                    (
                        "User-Agent",
                        b"Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
                    ),
                ],
                body: None,
            }))),
            "post" => e.inspect(&Collections::of(black_box(&post))),
            _ => e.inspect(&Collections::default()),
        };
        score += v.anomaly_score + v.hits.len() as i64;
    }
    if n > 0 {
        eprintln!(
            "{kind}: {:.1} us/req score {score}",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }
}
#[allow(dead_code)]
fn _x() {}
#[allow(dead_code)]
pub fn dump() {}
