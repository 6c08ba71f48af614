//! `type: compress` through the real binary: negotiation by q-values, each coding decoded
//! back, the skip rules, Vary and ETags, streaming frame by frame, and order with the
//! other response policies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use std::io::Read;

fn config(be: &Backend) -> String {
    format!(
        r#"
upstreams:
  u: {{ targets: [{{ address: "{be}" }}] }}
policies:
  squeeze:
    type: compress
    algorithms: [zstd, br, gzip]
    min_size: 1KiB
    content_types: [text/*, application/json, "application/*+json"]
    levels: {{ gzip: 5, br: 4, zstd: 3 }}
  gzip-only:
    type: compress
    algorithms: [gzip]
  as-text:
    type: headers
    response: {{ set: {{ content-type: text/plain }} }}
  stamp:
    type: headers
    response: {{ set: {{ x-stamped: "yes" }} }}
routes:
  - {{ name: api, match: {{ path: {{ type: prefix, value: /api }} }}, policies: [squeeze, stamp], upstream: u }}
  - {{ name: statuses, match: {{ path: {{ type: prefix, value: /status }} }}, policies: [squeeze], upstream: u }}
  - {{ name: gz, match: {{ path: {{ type: prefix, value: /gz }} }}, policies: [gzip-only], upstream: u }}
  - name: untyped
    match: {{ path: {{ type: prefix, value: /bytes/5000 }} }}
    policies: [squeeze]
    upstream: u
  - name: stream
    match: {{ path: {{ type: prefix, value: /bytes }} }}
    policies: [squeeze, as-text]
    upstream: u
  - name: png
    match: {{ path: {{ type: exact, value: /png }} }}
    policies: [squeeze]
    respond: {{ status: 200, headers: {{ content-type: image/png }}, body: "{body}" }}
  - name: local
    match: {{ path: {{ type: exact, value: /local }} }}
    policies: [squeeze]
    respond: {{ status: 200, headers: {{ content-type: text/html }}, body: "{body}" }}
"#,
        be = be.addr,
        body = "<p>hello</p>".repeat(200),
    )
}

fn decode(coding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::decode_all(body).unwrap(),
        other => panic!("unexpected coding {other}"),
    }
    out
}

/// A padding header makes the echoed JSON larger than `min_size`.
const PAD: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coding_follows_q_values_and_decodes_back() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, _) = gateway(&config(&be));
    let c = Client::new();
    let pad = PAD.repeat(30);
    for (accept, want) in [
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip;q=1, br;q=0.9", "gzip"),
        ("br;q=0.5, gzip;q=0.5", "br"),
        ("zstd;q=0, *;q=0.3", "br"),
        ("x-gzip", "gzip"),
    ] {
        let r = send(
            &c,
            "GET",
            &format!("{url}/api/x"),
            &[("accept-encoding", accept), ("x-pad", &pad)],
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-encoding").as_deref(),
            Some(want),
            "{accept}"
        );
        assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
        assert!(r.header("content-length").is_none());
        // Other response policies ran on the plain body and head.
        assert_eq!(r.header("x-stamped").as_deref(), Some("yes"));
        let plain: serde_json::Value = serde_json::from_slice(&decode(want, &r.body)).unwrap();
        assert_eq!(plain["headers"]["x-pad"], pad.as_str());
        assert!(r.body.len() < 1000, "{want}: {} bytes", r.body.len());
    }
    // Nothing acceptable, or no header: identity, still Vary.
    for accept in [Some("identity"), Some("*;q=0"), Some("deflate"), None] {
        let mut h = vec![("x-pad", pad.as_str())];
        if let Some(a) = accept {
            h.push(("accept-encoding", a));
        }
        let r = send(&c, "GET", &format!("{url}/api/x"), &h).await;
        assert!(r.header("content-encoding").is_none(), "{accept:?}");
        assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
        assert_eq!(r.json()["headers"]["x-pad"], pad.as_str());
    }
    // Only the codings listed are offered.
    let r = send(
        &c,
        "GET",
        &format!("{url}/gz/x"),
        &[("accept-encoding", "zstd, br, gzip;q=0.1"), ("x-pad", &pad)],
    )
    .await;
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
    // A local answer is compressed too.
    let r = send(
        &c,
        "GET",
        &format!("{url}/local"),
        &[("accept-encoding", "br")],
    )
    .await;
    assert_eq!(r.header("content-encoding").as_deref(), Some("br"));
    assert_eq!(
        String::from_utf8(decode("br", &r.body)).unwrap(),
        "<p>hello</p>".repeat(200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_must_not_be_compressed_passes_untouched() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, _) = gateway(&config(&be));
    let c = Client::new();
    let pad = PAD.repeat(30);
    let get = |extra: Vec<(&'static str, String)>, path: &'static str| {
        let c = c.clone();
        let url = url.clone();
        let pad = pad.clone();
        async move {
            let mut h: Vec<(&str, &str)> = vec![("accept-encoding", "gzip"), ("x-pad", &pad)];
            for (k, v) in &extra {
                h.push((k, v));
            }
            send(&c, "GET", &format!("{url}{path}"), &h).await
        }
    };
    // Below min_size.
    let r = send(
        &c,
        "GET",
        &format!("{url}/api/x"),
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert!(r.header("content-encoding").is_none());
    assert!(r.header("vary").is_none());
    assert!(r.header("content-length").is_some());
    // Already encoded by the upstream.
    let r = get(
        vec![("x-echo-response-header", "content-encoding: br".into())],
        "/api/x",
    )
    .await;
    assert_eq!(r.header("content-encoding").as_deref(), Some("br"));
    assert_eq!(r.json()["headers"]["x-pad"], pad.as_str());
    // Cache-Control: no-transform.
    let r = get(
        vec![(
            "x-echo-response-header",
            "cache-control: public, no-transform".into(),
        )],
        "/api/x",
    )
    .await;
    assert!(r.header("content-encoding").is_none());
    // Another media type, and no type at all.
    for path in ["/png", "/bytes/5000"] {
        let r = get(vec![], path).await;
        assert_eq!(r.status, 200);
        assert!(r.header("content-encoding").is_none(), "{path}");
        assert!(r.header("vary").is_none(), "{path}");
    }
    // HEAD: no body to compress, but the same Vary as GET.
    let r = send(
        &c,
        "HEAD",
        &format!("{url}/api/x"),
        &[("accept-encoding", "gzip"), ("x-pad", &pad)],
    )
    .await;
    assert!(r.header("content-encoding").is_none());
    assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
    // 204 and 304 have no body.
    let r = get(vec![], "/status/204").await;
    assert_eq!(r.status, 204);
    assert!(r.header("content-encoding").is_none());
    let r = get(vec![], "/status/304").await;
    assert_eq!(r.status, 304);
    assert!(r.header("content-encoding").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strong_etags_turn_weak_and_an_existing_vary_is_kept() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, _) = gateway(&config(&be));
    let c = Client::new();
    let pad = PAD.repeat(30);
    let r = send(
        &c,
        "GET",
        &format!("{url}/api/x"),
        &[
            ("accept-encoding", "gzip"),
            ("x-pad", &pad),
            ("x-echo-response-header", "etag: \"v1\""),
            ("x-echo-response-header", "vary: Origin"),
        ],
    )
    .await;
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));
    assert_eq!(r.header("etag").as_deref(), Some("W/\"v1\""));
    let vary: Vec<_> = r
        .headers
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(vary, ["Origin", "Accept-Encoding"]);
    // Uncompressed, the strong tag stays.
    let r = send(
        &c,
        "GET",
        &format!("{url}/api/x"),
        &[("x-pad", &pad), ("x-echo-response-header", "etag: \"v1\"")],
    )
    .await;
    assert_eq!(r.header("etag").as_deref(), Some("\"v1\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_is_compressed_frame_by_frame() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, _) = gateway(&config(&be));
    let c = Client::new();
    // 300,000 bytes streamed in 64 KiB frames without a length; typed text/plain by the
    // route's headers policy (which runs before the encoder on the response).
    for coding in ["zstd", "br", "gzip"] {
        let r = send(
            &c,
            "GET",
            &format!("{url}/bytes/300000"),
            &[("accept-encoding", coding)],
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding").as_deref(), Some(coding));
        let plain = decode(coding, &r.body);
        assert_eq!(plain.len(), 300000, "{coding}");
        assert!(plain.iter().all(|b| *b == b'x'));
        assert!(r.body.len() < 5000, "{coding}: {} bytes", r.body.len());
    }
}

#[test]
fn bad_settings_are_config_errors_with_their_place() {
    // An unknown coding stops the parse at its place.
    let (code, err) = validate(
        "policies:\n  squeeze:\n    type: compress\n    algorithms: [gzip, deflate]\nroutes:\n  - { name: r, policies: [squeeze], respond: { status: 200 } }\n",
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("gw.yaml:4:"), "{err}");
    assert!(err.contains("policies.squeeze.algorithms[1]"), "{err}");
    let (code, err) = validate(
        "policies:\n  squeeze:\n    type: compress\n    content_types: [json]\n    levels: { gzip: 12, zstd: 0 }\nroutes:\n  - { name: r, policies: [squeeze], respond: { status: 200 } }\n",
    );
    assert_eq!(code, Some(1));
    for (place, field) in [
        ("gw.yaml:4:", "policies.squeeze.content_types[0]"),
        ("gw.yaml:5:", "policies.squeeze.levels.gzip"),
        ("gw.yaml:5:", "policies.squeeze.levels.zstd"),
    ] {
        assert!(
            err.lines().any(|l| l.contains(place) && l.contains(field)),
            "{field}: {err}"
        );
    }
}
