//! The protection client table and bans through real sockets (docs/protection.md):
//! offences of each kind ban the address that commits them while others are served;
//! bans answer 403 with Retry-After and close, expire and double; an idle keep-alive
//! connection is no slow client; the admin API lists, sets and lifts bans.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use serde_json::Value;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n";

/// A gateway in front of an echo backend: `listener` adds to the listener's fields,
/// `rest` is top-level YAML. Yields it with its address and admin URL.
fn protected(backend: &Backend, listener: &str, rest: &str) -> (GatewayProcess, String, String) {
    let (port, admin) = (free_port(), free_port());
    let yaml = format!(
        r#"
listeners:
  - {{ name: edge, address: "127.0.0.1:{port}", {listener} }}
admin: {{ address: "127.0.0.1:{admin}" }}
reload: {{ watch: false }}
upstreams:
  u: {{ targets: [{{ address: "{}" }}] }}
routes:
  - name: r
    upstream: u
{rest}
"#,
        backend.addr
    );
    let g = GatewayProcess::start(BIN, &yaml, &[port, admin]);
    (
        g,
        format!("127.0.0.1:{port}"),
        format!("http://127.0.0.1:{admin}"),
    )
}

/// The status line's code of a raw answer.
fn status(raw: &str) -> u16 {
    raw.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// One request on a new connection from `from`; the raw answer.
async fn once(from: &str, addr: &str) -> String {
    let mut s = connect_from(from, addr).await;
    ask(&mut s, GET).await
}

async fn admin_json(c: &Client, url: &str) -> Value {
    let r = send(c, "GET", url, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    r.json()
}

/// The ban of `ip` in `GET /admin/protection/bans`.
async fn ban_of(c: &Client, admin: &str, ip: &str) -> Option<Value> {
    let v = admin_json(c, &format!("{admin}/admin/protection/bans")).await;
    v["bans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["ip"] == ip)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_rate_limit_offences_ban_a_client_and_repeat_bans_double() {
    let a = Backend::start("a", Kind::Echo).await;
    let (_g, addr, admin) = protected(
        &a,
        "request_rate_per_ip: { limit: 2, per: 60s }",
        r#"
protection:
  ban: { after: 3, within: 1m, duration: 2s, max_duration: 8s, triggers: [rate_limit] }
"#,
    );
    let c = Client::new();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut s = connect_from("127.0.0.2", &addr).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(status(&ask(&mut s, GET).await));
    }
    assert_eq!(got, [200, 200, 429, 429, 429]);
    // The third 429 banned it: 403 problem+json with Retry-After, then the connection
    // is closed.
    let banned = ask(&mut s, GET).await;
    assert_eq!(status(&banned), 403, "{banned}");
    let lower = banned.to_ascii_lowercase();
    assert!(lower.contains("application/problem+json"));
    assert!(lower.contains("retry-after: 2"), "{banned}");
    assert!(lower.contains("connection: close"));
    assert!(read_until(&mut s, b"}").await.is_empty());
    // Another address is served meanwhile.
    assert_eq!(status(&once("127.0.0.3", &addr).await), 200);
    let ban = ban_of(&c, &admin, "127.0.0.2").await.unwrap();
    assert_eq!(ban["reason"], "rate_limit");
    assert_eq!(ban["count"], 1);
    assert_eq!(
        ban["until"].as_u64().unwrap() - ban["since"].as_u64().unwrap(),
        2
    );
    let p = admin_json(&c, &format!("{admin}/admin/protection")).await;
    assert_eq!(p["bans_active"], 1);
    assert_eq!(p["clients_tracked"], 1);
    assert_eq!(p["client_table_size"], 100_000);
    assert_eq!(p["refusals"]["rate_limit"], 3);
    assert!(p["refusals"]["banned"].as_u64().unwrap() >= 1);
    // No offences while banned: it is still the first ban's 403 until it ends.
    assert_eq!(status(&once("127.0.0.2", &addr).await), 403);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(ban_of(&c, &admin, "127.0.0.2").await.is_none());
    // Out again, still over its rate: three more 429s ban it for twice as long.
    let mut s = connect_from("127.0.0.2", &addr).await;
    for _ in 0..3 {
        assert_eq!(status(&ask(&mut s, GET).await), 429);
    }
    let again = ask(&mut s, GET).await;
    assert_eq!(status(&again), 403);
    let ban = ban_of(&c, &admin, "127.0.0.2").await.unwrap();
    assert_eq!(ban["count"], 2);
    assert_eq!(
        ban["until"].as_u64().unwrap() - ban["since"].as_u64().unwrap(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_slow_heads_and_connection_floods_are_offences() {
    let a = Backend::start("a", Kind::Echo).await;
    let (_g, addr, admin) = protected(
        &a,
        "header_read_timeout: 400ms, max_connections_per_ip: 2",
        r#"
protection:
  ban: { after: 2, within: 1m, duration: 1m }
"#,
    );
    let c = Client::new();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Two heads hyper cannot parse.
    for _ in 0..2 {
        let mut s = connect_from("127.0.0.2", &addr).await;
        let got = ask(&mut s, b"GARBAGE\r\n\r\n").await;
        assert_eq!(status(&got), 400, "{got}");
    }
    // Two heads that never finish, each cut by header_read_timeout.
    for _ in 0..2 {
        let mut s = connect_from("127.0.0.3", &addr).await;
        s.write_all(b"GET / HTTP/1.1\r\nhost: t\r\nx-slow: ")
            .await
            .unwrap();
        read_until(&mut s, b"}").await;
    }
    // Idle keep-alive connections closed by the same timeout are no offence.
    let mut idle = [
        connect_from("127.0.0.4", &addr).await,
        connect_from("127.0.0.4", &addr).await,
    ];
    for s in &mut idle {
        assert_eq!(status(&ask(s, GET).await), 200);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Two held connections, then two more over max_connections_per_ip.
    let mut held = connect_from("127.0.0.5", &addr).await;
    assert_eq!(status(&ask(&mut held, GET).await), 200);
    // Served, so the gateway has surely accepted (and counted) it before the next ones.
    let mut also = connect_from("127.0.0.5", &addr).await;
    assert_eq!(status(&ask(&mut also, GET).await), 200);
    for _ in 0..2 {
        let mut extra = connect_from("127.0.0.5", &addr).await;
        let _ = extra.write_all(GET).await;
        assert!(read_until(&mut extra, b"}").await.is_empty());
    }
    for (ip, reason) in [
        ("127.0.0.2", "bad_request"),
        ("127.0.0.3", "slow_client"),
        ("127.0.0.5", "connection_limit"),
    ] {
        let ban = ban_of(&c, &admin, ip).await;
        assert_eq!(
            ban.as_ref().map(|b| b["reason"].clone()),
            Some(reason.into()),
            "{ip}"
        );
    }
    assert!(ban_of(&c, &admin, "127.0.0.4").await.is_none());
    assert_eq!(status(&once("127.0.0.2", &addr).await), 403);
    // The held connection's next request meets the ban.
    assert_eq!(status(&ask(&mut held, GET).await), 403);
    assert_eq!(status(&once("127.0.0.4", &addr).await), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_sets_lists_and_lifts_bans() {
    let a = Backend::start("a", Kind::Echo).await;
    let (_g, addr, admin) = protected(
        &a,
        "max_header_count: 100",
        r#"
trusted_proxies: [127.0.0.6]
protection:
  exempt: [127.0.0.9]
  ipv6_prefix: 48
"#,
    );
    let c = Client::new();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let bans = format!("{admin}/admin/protection/bans");
    let post = |body: &'static str| {
        let (c, bans) = (c.clone(), bans.clone());
        async move {
            send_body(
                &c,
                "POST",
                &bans,
                &[("content-type", "application/json")],
                body,
            )
            .await
        }
    };
    let r = post(r#"{"ip": "127.0.0.7", "duration": "1m", "reason": "abuse report"}"#).await;
    assert_eq!(r.status, 201, "{}", r.body_text());
    let v = r.json();
    assert_eq!(
        (v["ip"].as_str(), v["reason"].as_str(), v["count"].as_u64()),
        (Some("127.0.0.7"), Some("abuse report"), Some(1))
    );
    assert_eq!(
        v["until"].as_u64().unwrap() - v["since"].as_u64().unwrap(),
        60
    );
    let got = once("127.0.0.7", &addr).await;
    assert_eq!(status(&got), 403);
    assert!(
        got.to_ascii_lowercase().contains("retry-after: 60"),
        "{got}"
    );
    // Behind a trusted proxy the banned client gets 403 and the proxy keeps its
    // connection for the next client.
    let mut p = connect_from("127.0.0.6", &addr).await;
    let via = ask(
        &mut p,
        b"GET / HTTP/1.1\r\nhost: t\r\nx-forwarded-for: 127.0.0.7\r\n\r\n",
    )
    .await;
    assert_eq!(status(&via), 403);
    assert!(!via.to_ascii_lowercase().contains("connection: close"));
    assert_eq!(
        status(
            &ask(
                &mut p,
                b"GET / HTTP/1.1\r\nhost: t\r\nx-forwarded-for: 127.0.0.8\r\n\r\n"
            )
            .await
        ),
        200
    );
    // IPv6 clients are banned per network of ipv6_prefix bits.
    let r = post(r#"{"ip": "2001:db8:1:2::5", "duration": 30}"#).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["ip"], "2001:db8:1::/48");
    assert_eq!(r.json()["reason"], "manual");
    let list = admin_json(&c, &bans).await;
    let ips: Vec<_> = list["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["ip"].clone())
        .collect();
    assert_eq!(
        ips,
        [Value::from("127.0.0.7"), Value::from("2001:db8:1::/48")]
    );
    // Lifted: served again; lifting twice is 404.
    let r = send(&c, "DELETE", &format!("{bans}/127.0.0.7"), &[]).await;
    assert_eq!(r.status, 204);
    assert_eq!(status(&once("127.0.0.7", &addr).await), 200);
    let r = send(&c, "DELETE", &format!("{bans}/127.0.0.7"), &[]).await;
    assert_problem(&r, 404);
    let r = send(&c, "DELETE", &format!("{bans}/2001:db8:1:ffff::1"), &[]).await;
    assert_eq!(r.status, 204);
    // Mistakes are precise 4xx answers; exempt addresses cannot be banned.
    for (body, want) in [
        (r#"{"duration": "1m"}"#, 400),
        (r#"{"ip": "nope", "duration": "1m"}"#, 400),
        (r#"{"ip": "127.0.0.7", "duration": "soon"}"#, 400),
        (r#"{"ip": "127.0.0.7"}"#, 400),
        (r#"{"ip": "127.0.0.7", "duration": "0s"}"#, 400),
        (r#"[1]"#, 400),
        (r#"{"ip": "127.0.0.9", "duration": "1m"}"#, 409),
    ] {
        assert_problem(&post(body).await, want);
    }
    let p = admin_json(&c, &format!("{admin}/admin/protection")).await;
    assert_eq!(p["bans_active"], 0);
    assert_eq!(p["ipv6_prefix"], 48);
    assert!(p["ban"].is_null());
    assert_eq!(p["refusals"]["banned"], 2);
}

/// An h2c connection from `from`, past the preface and the SETTINGS exchange.
async fn h2c(from: &str, addr: &str) -> tokio::net::TcpStream {
    let mut s = connect_from(from, addr).await;
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    write_frame(&mut s, 0x4, 0, 0, &[]).await;
    // Acknowledged once the server's own SETTINGS arrived (an early ACK is an error).
    let first = read_frame(&mut s).await.expect("the server's SETTINGS");
    assert_eq!(first.kind, 0x4);
    write_frame(&mut s, 0x4, 0x1, 0, &[]).await;
    s
}

/// HPACK block of `GET /` for host t (indexed :method GET, :scheme http, :path /,
/// literal :authority).
const GET_BLOCK: &[u8] = &[0x82, 0x86, 0x84, 0x01, 1, b't'];

/// Reads frames until a GOAWAY; its (last stream, error code), then whether the
/// connection closed after it.
async fn goaway(s: &mut tokio::net::TcpStream) -> Option<(u32, u32, bool)> {
    while let Some(f) = read_frame(s).await {
        if f.kind == 0x7 {
            let word = |i: usize| u32::from_be_bytes(f.payload[i..i + 4].try_into().unwrap());
            let closed = read_frame(s).await.is_none();
            return Some((word(0) & 0x7fff_ffff, word(4), closed));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_resets_and_floods_end_with_goaway_and_ban_the_client() {
    let a = Backend::start("a", Kind::Echo).await;
    let (_g, addr, admin) = protected(
        &a,
        "http2_max_resets: { limit: 10, per: 10s }",
        r#"
protection:
  ban: { after: 5, within: 1m, duration: 1m, triggers: [http2_abuse] }
"#,
    );
    let c = Client::new();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let from = "127.0.0.2";
    // Rapid reset: each stream opened and cancelled at once.
    let mut s = h2c(from, &addr).await;
    for stream in (1..=23).step_by(2) {
        write_frame(&mut s, 0x1, 0x5, stream, GET_BLOCK).await;
        write_frame(&mut s, 0x3, 0, stream, &8u32.to_be_bytes()).await;
    }
    let (last, code, closed) = goaway(&mut s).await.expect("GOAWAY after the resets");
    assert_eq!((code, closed), (0xb, true));
    assert!((19..=21).contains(&last), "last stream {last}");
    // PING, SETTINGS and empty DATA floods, and a header block of endless CONTINUATIONs.
    let floods: [(u8, u8, u32, &[u8]); 4] = [
        (0x6, 0, 0, &[0; 8]),
        (0x4, 0, 0, &[]),
        (0x0, 0, 1, &[]),
        (0x9, 0, 3, &[0x82]),
    ];
    for (i, (kind, flags, stream, payload)) in floods.into_iter().enumerate() {
        let mut s = h2c(from, &addr).await;
        match i {
            // A stream with a body to come (empty DATA frames follow) ...
            2 => write_frame(&mut s, 0x1, 0x4, 1, GET_BLOCK).await,
            // ... or a header block left open (CONTINUATION frames follow).
            3 => write_frame(&mut s, 0x1, 0x0, 3, GET_BLOCK).await,
            _ => {}
        }
        // Frame by frame, as a flooding client writes; the gateway may close before the
        // last ones are written.
        for _ in 0..150 {
            let len = payload.len();
            let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
            f.extend(stream.to_be_bytes());
            f.extend(payload);
            if s.write_all(&f).await.is_err() {
                break;
            }
        }
        let got = goaway(&mut s).await;
        assert_eq!(got.map(|g| (g.1, g.2)), Some((0xb, true)), "flood {i}");
    }
    // Five abuses: banned. Another address is served over HTTP/2 meanwhile.
    let ban = ban_of(&c, &admin, from).await.expect("banned");
    assert_eq!(ban["reason"], "http2_abuse");
    assert_eq!(status(&once(from, &addr).await), 403);
    let mut ok = h2c("127.0.0.3", &addr).await;
    write_frame(&mut ok, 0x1, 0x5, 1, GET_BLOCK).await;
    let mut answered = false;
    while let Some(f) = read_frame(&mut ok).await {
        if f.kind == 0x1 && f.stream == 1 {
            answered = true;
            break;
        }
    }
    assert!(answered);
    let p = admin_json(&c, &format!("{admin}/admin/protection")).await;
    assert_eq!(p["refusals"]["http2_abuse"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_filter_refuses_scanners_from_the_installed_crs_and_bans_them() {
    let a = Backend::start("a", Kind::Echo).await;
    let (_g, addr, admin) = protected(
        &a,
        "max_header_count: 100",
        r#"    policies: [bots]
policies:
  bots:
    type: bot_filter
    deny_user_agents: ["(?i)badbot"]
    allow_user_agents: ["^HealthChecker/"]
protection:
  ban: { after: 2, within: 1m, duration: 1m, triggers: [bot] }
"#,
    );
    let c = Client::new();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let with_agent = |ua: &str| format!("GET / HTTP/1.1\r\nhost: t\r\nuser-agent: {ua}\r\n\r\n");
    // Scanners of the Debian package's list (CRS 3.3, rule 913100's data file).
    let mut s = connect_from("127.0.0.2", &addr).await;
    let got = ask(
        &mut s,
        with_agent("Mozilla/5.00 (Nikto/2.1.6) (Evasions:None)").as_bytes(),
    )
    .await;
    assert_eq!(status(&got), 403, "{got}");
    assert!(got.contains("application/problem+json") && !got.contains("Nikto"));
    let mut s = connect_from("127.0.0.3", &addr).await;
    assert_eq!(
        status(
            &ask(
                &mut s,
                with_agent("sqlmap/1.7.2#stable (https://sqlmap.org)").as_bytes()
            )
            .await
        ),
        403
    );
    assert_eq!(
        status(&ask(&mut s, with_agent("Mozilla/5.0 SuperBadBot").as_bytes()).await),
        403
    );
    // Twice refused: banned, whatever it sends next. Allowed and ordinary agents pass.
    assert_eq!(
        status(&ask(&mut s, with_agent("curl/8.5.0").as_bytes()).await),
        403
    );
    assert_eq!(
        ban_of(&c, &admin, "127.0.0.3").await.unwrap()["reason"],
        "bot"
    );
    let mut ok = connect_from("127.0.0.4", &addr).await;
    for ua in [
        "curl/8.5.0",
        "HealthChecker/1 nikto",
        "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
    ] {
        assert_eq!(
            status(&ask(&mut ok, with_agent(ua).as_bytes()).await),
            200,
            "{ua}"
        );
    }
    assert_eq!(
        status(&ask(&mut ok, GET).await),
        200,
        "no user agent is allowed by default"
    );
}
