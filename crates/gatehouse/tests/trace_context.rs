//! W3C Trace Context through real sockets: a valid `traceparent` is continued (same
//! trace, the gateway's span as the upstream's parent, flags and `tracestate` unchanged),
//! an invalid or absent one starts a new trace (an old `tracestate` is dropped), and the
//! trace id is in the access log line and the transaction.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

fn parts(v: &serde_json::Value) -> Vec<String> {
    v.as_str().unwrap().split('-').map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_trace_is_continued_and_a_broken_one_replaced() {
    let be = Backend::start("a", Kind::Echo).await;
    let (g, url, admin) = gateway(&format!(
        "upstreams:\n  u:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - name: r\n    upstream: u\n",
        be.addr
    ));
    let c = Client::new();
    let incoming = format!("00-{TRACE}-{CALLER}-01");
    let r = send(
        &c,
        "GET",
        &format!("{url}/x"),
        &[
            ("traceparent", &incoming),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
    )
    .await;
    let h = &r.json()["headers"];
    let sent = parts(&h["traceparent"]);
    assert_eq!(sent[0], "00");
    assert_eq!(sent[1], TRACE, "the same trace");
    assert_ne!(sent[2], CALLER, "the gateway's span is the parent");
    assert_eq!(sent[2].len(), 16);
    assert_eq!(sent[3], "01", "sampled as the caller decided");
    assert_eq!(h["tracestate"], "congo=t61rcWkgMzE");
    let id = r.header("x-request-id").unwrap();
    assert_eq!(g.access_line(&id).unwrap()["trace_id"], TRACE);
    let t = c
        .get(&format!("{admin}/admin/transactions?request_id={id}"))
        .await
        .json();
    assert_eq!(t["items"][0]["trace_id"], TRACE);

    for broken in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "junk",
    ] {
        let r = send(
            &c,
            "GET",
            &format!("{url}/x"),
            &[("traceparent", broken), ("tracestate", "congo=t61rcWkgMzE")],
        )
        .await;
        let h = &r.json()["headers"];
        let sent = parts(&h["traceparent"]);
        assert_eq!(sent.len(), 4);
        assert_ne!(sent[1], TRACE);
        assert_ne!(sent[1], "0".repeat(32));
        assert!(h.get("tracestate").is_none(), "{h}");
    }
    // None at all: the upstream still gets one.
    let r = send(&c, "GET", &format!("{url}/x"), &[]).await;
    assert_eq!(parts(&r.json()["headers"]["traceparent"])[1].len(), 32);
}
