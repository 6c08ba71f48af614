//! A million distinct client addresses leave the Top-N lists and the transactions ring
//! within their configured size (plus 5 MiB): the lists track at most `top_capacity`
//! keys each, the ring at most `analytics.transactions` records.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_core::Connection;
use gatehouse_observe::phases::Breakdown;
use gatehouse_observe::top::{self, By, Hit};
use gatehouse_observe::transactions::{self, Transaction};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn transaction(ip: IpAddr, conn: &Arc<Connection>, i: u32) -> Transaction {
    Transaction {
        started: SystemTime::now(),
        request_id: format!("req-{i}"),
        trace_id: [1; 16],
        client_ip: ip,
        listener: conn.listener.clone(),
        consumer: None,
        method: http::Method::GET,
        host: "api.example.com".into(),
        uri: http::Uri::from_static("/v1/items?page=2"),
        version: http::Version::HTTP_11,
        user_agent: Some(http::HeaderValue::from_static("curl/8.5.0")),
        status: 200,
        bytes_in: 0,
        bytes_out: 512,
        route: None,
        upstream: None,
        upstream_target: None,
        attempts: 1,
        policies: Duration::ZERO,
        upstream_connect: None,
        upstream_first_byte: None,
        total: Duration::from_millis(1),
        breakdown: Breakdown::default(),
        short_circuit: None,
        error: None,
        annotations: Vec::new(),
    }
}

#[test]
fn a_million_clients_leave_the_lists_and_the_ring_within_their_size() {
    const CAPACITY: usize = 1000;
    const KEPT: usize = 10_000;
    top::set_capacity(CAPACITY);
    transactions::set_capacity(KEPT);
    let peer = "192.0.2.1:1000".parse().unwrap();
    let conn = Arc::new(Connection::plain(peer, peer, "public".into()));

    let attack = gatehouse_core::Attack {
        kinds: vec!["sqli", "xss"],
        rules: vec![942100, 941100, 949110],
    };
    // Fill the ring and the lists once, then measure what a million more clients add.
    let feed = |from: u32, n: u32| {
        for i in from..from + n {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            top::record(&Hit {
                client_ip: ip,
                consumer: None,
                status: if i % 7 == 0 { 404 } else { 200 },
                refused: (i % 11 == 0).then_some(("waf", "attack")),
                bytes: 512,
                attack: (i % 11 == 0).then_some(&attack),
            });
            transactions::keep(transaction(ip, &conn, i));
        }
    };
    feed(0, 20_000);
    top::flush();
    let before = rss_bytes();
    feed(20_000, 1_000_000);
    top::flush();
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < 5 << 20,
        "grew {grown} bytes after a million distinct clients"
    );
    let listed = top::top(Duration::from_secs(3600), By::Requests, false, 10);
    assert_eq!(listed.capacity, CAPACITY);
    assert!(listed.tracked <= CAPACITY);
    assert!(
        top::memory_bytes() < 2 * 8 * CAPACITY * 200,
        "{}",
        top::memory_bytes()
    );
}

/// Policies' annotations (`RequestCtx::log`) land on the line under their keys, and
/// never replace one of the line's own fields.
#[test]
fn annotations_join_the_line_without_replacing_its_fields() {
    let peer = "127.0.0.1:9000".parse().unwrap();
    let conn = Arc::new(Connection::plain(peer, peer, "public".into()));
    let mut t = transaction(IpAddr::V4(Ipv4Addr::LOCALHOST), &conn, 1);
    let plain = serde_json::to_value(t.record(None)).unwrap();
    let keys: Vec<&str> = plain
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    for k in &keys {
        assert!(
            gatehouse_observe::access_log::FIELDS.contains(k),
            "{k} is a field of the line: FIELDS must list it"
        );
    }
    t.annotations = vec![
        ("waf", serde_json::json!({"action": "detected"})),
        ("status", serde_json::json!("replaced?")),
    ];
    let line = serde_json::to_value(t.record(None)).unwrap();
    assert_eq!(line["waf"]["action"], "detected");
    assert_eq!(line["status"], 200);
}
