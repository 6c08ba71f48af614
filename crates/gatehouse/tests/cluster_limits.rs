//! Cluster-scope rate limits through real sockets: three gateway processes share one
//! real `redis-server` (started here, stopped by its PID) and together admit the limit
//! within the documented bound (1% + gateways x batch); a key's budget is read and reset
//! through any gateway's admin API; Redis killed mid-test lets `on_failure` decide
//! (allow: requests pass; deny: 503), is logged once, and is found again by itself when
//! it comes back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use gatehouse_testkit::RedisServer;
use std::time::{Duration, Instant};

fn shared(backend: std::net::SocketAddr, redis: &str, on_failure: &str) -> String {
    format!(
        r#"
cluster:
  redis: {{ url: "{redis}", on_failure: {on_failure}, sync_interval: 50ms }}
upstreams:
  u:
    targets: [{{ address: "{backend}" }}]
policies:
  bucket: {{ type: rate_limit, limit: 1000, per: 1h, key: route, scope: cluster }}
  log: {{ type: rate_limit, algorithm: sliding_log, limit: 500, per: 1h, key: route, scope: cluster, batch: 5 }}
  tenant: {{ type: rate_limit, limit: 3, per: 1h, key: "header:x-tenant", scope: cluster }}
routes:
  - name: bucket
    match: {{ path: {{ type: prefix, value: /bucket }} }}
    policies: [bucket]
    upstream: u
  - name: log
    match: {{ path: {{ type: prefix, value: /log }} }}
    policies: [log]
    upstream: u
  - name: tenant
    match: {{ path: {{ type: prefix, value: /tenant }} }}
    policies: [tenant]
    upstream: u
"#
    )
}

/// Waits until the gateway behind `admin` has its Redis link up: its admin API reads
/// `path` (a cluster-scope limit's key) through the link. Until the first connection is
/// made, requests that need Redis are decided by `on_failure`, which would blur exact
/// counts.
async fn connected(admin: &str, path: &str) {
    let c = Client::new();
    let until = Instant::now() + Duration::from_secs(10);
    while c.get(&format!("{admin}{path}")).await.status != 200 {
        assert!(
            Instant::now() < until,
            "the gateway did not connect to Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `n` requests to `url` over `conns` connections at once; counts the 200s.
async fn blast(url: String, n: usize, conns: usize) -> usize {
    let tasks: Vec<_> = (0..conns)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let c = Client::new();
                let mut ok = 0;
                for _ in (i..n).step_by(conns) {
                    let r = send(&c, "GET", &url, &[]).await;
                    assert!(
                        r.status == 200 || r.status == 429,
                        "{}: {}",
                        r.status,
                        r.body_text()
                    );
                    ok += usize::from(r.status == 200);
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_gateways_sharing_one_redis_admit_the_limit_within_the_bound() {
    let redis = RedisServer::start();
    let be = Backend::start("a", Kind::Echo).await;
    let yaml = shared(be.addr, &redis.url(), "deny");
    let nodes: Vec<_> = (0..3).map(|_| gateway(&yaml)).collect();
    for (_, _, admin) in &nodes {
        connected(admin, "/admin/limits/bucket?key=bucket").await;
    }

    for (path, limit, batch) in [("bucket", 1000usize, 1usize), ("log", 500, 5)] {
        let started = Instant::now();
        // Three times the limit, spread evenly over the three gateways at once.
        let runs: Vec<_> = nodes
            .iter()
            .map(|(_, url, _)| tokio::spawn(blast(format!("{url}/{path}"), limit, 16)))
            .collect();
        let mut admitted = 0;
        for r in runs {
            admitted += r.await.unwrap();
        }
        // The token bucket refills 1000/h while the test runs.
        let refill = (started.elapsed().as_secs_f64() * limit as f64 / 3600.0).ceil() as usize;
        let bound = limit / 100 + 3 * batch;
        eprintln!("{path}: {admitted} admitted for a limit of {limit} (bound {bound})");
        assert!(
            admitted + bound >= limit && admitted <= limit + refill + bound,
            "{path}: {admitted} admitted for a limit of {limit} (bound {bound})"
        );
    }

    // The budget as Redis holds it, read through any gateway; reset through another,
    // then a third admits again within `sync_interval`.
    let c = Client::new();
    let read = c
        .get(&format!("{}/admin/limits/log?key=log", nodes[1].2))
        .await;
    assert_eq!(read.status, 200, "{}", read.body_text());
    assert_eq!(read.json()["remaining"], 0);
    let no = send(&c, "GET", &format!("{}/log", nodes[2].1), &[]).await;
    assert_eq!(no.status, 429);
    assert!(no.header("retry-after").is_some());
    let del = send(
        &c,
        "DELETE",
        &format!("{}/admin/limits/log?key=log", nodes[0].2),
        &[],
    )
    .await;
    assert_eq!(del.status, 204);
    // The third gateway still holds Redis's refusal; the first request after
    // `sync_interval` asks Redis again (and is refused meanwhile), the next one passes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = send(&c, "GET", &format!("{}/log", nodes[2].1), &[]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = send(&c, "GET", &format!("{}/log", nodes[2].1), &[]).await;
    assert_eq!(again.status, 200, "the reset reached the third gateway");
    assert!(again.header("ratelimit").unwrap().starts_with("\"log\";r="));
}

/// Requests with a tenant no one used yet, until `want` says stop (or 5 s pass).
async fn until_status(url: &str, want: u16) -> Reply {
    let c = Client::new();
    let until = Instant::now() + Duration::from_secs(5);
    let mut i = 0;
    loop {
        i += 1;
        let tenant = format!("t-{}-{i}", std::process::id());
        let r = send(&c, "GET", url, &[("x-tenant", &tenant)]).await;
        if r.status == want || Instant::now() > until {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_dying_lets_on_failure_decide_is_logged_once_and_is_found_again() {
    let mut redis = RedisServer::start();
    let be = Backend::start("a", Kind::Echo).await;
    let (allow, allow_url, allow_admin) = gateway(&shared(be.addr, &redis.url(), "allow"));
    let (deny, deny_url, deny_admin) = gateway(&shared(be.addr, &redis.url(), "deny"));
    for admin in [&allow_admin, &deny_admin] {
        connected(admin, "/admin/limits/tenant?key=x").await;
    }
    let c = Client::new();
    let tenant = |url: &str, t: &str| {
        let (c, url, t) = (c.clone(), format!("{url}/tenant"), t.to_string());
        async move { send(&c, "GET", &url, &[("x-tenant", &t)]).await.status }
    };
    // Both gateways count tenant "x" together: 3 in all.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let url = if i % 2 == 0 { &allow_url } else { &deny_url };
        statuses.push(tenant(url, "x").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );

    redis.kill();
    let r = until_status(&format!("{deny_url}/tenant"), 503).await;
    assert_problem(&r, 503);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    // allow: a tenant far over its budget passes while Redis is away.
    let _ = until_status(&format!("{allow_url}/tenant"), 200).await;
    for _ in 0..10 {
        assert_eq!(tenant(&allow_url, "busy").await, 200);
    }
    for g in [&allow, &deny] {
        let log = g.stderr_text();
        assert_eq!(log.matches("redis unreachable").count(), 1, "{log}");
    }

    redis.restart();
    let back = |g: &GatewayProcess| g.stderr_text().contains("redis reachable again");
    let until = Instant::now() + Duration::from_secs(10);
    while !(back(&allow) && back(&deny)) {
        // The deny gateway finds Redis again by itself; the allow one too.
        assert!(Instant::now() < until, "{}", deny.stderr_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Limits apply again (Redis came back empty: a fresh budget of 3).
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(tenant(&deny_url, "y").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_quota_is_shared_by_every_gateway_and_outlives_them() {
    let redis = RedisServer::start();
    let be = Backend::start("a", Kind::Echo).await;
    let yaml = format!(
        r#"
cluster:
  redis: {{ url: "{}" }}
consumers:
  - {{ name: alice, groups: [free], credentials: [{{ type: api_key, key: key-alice-123 }}] }}
upstreams:
  u:
    targets: [{{ address: "{}" }}]
policies:
  key: {{ type: api_key }}
  plans: {{ type: quota, scope: cluster, limits: {{ free: 4/day }} }}
routes:
  - name: api
    match: {{ path: {{ type: prefix, value: / }} }}
    policies: [key, plans]
    upstream: u
"#,
        redis.url(),
        be.addr
    );
    let (a, a_url, a_admin) = gateway(&yaml);
    let (_b, b_url, b_admin) = gateway(&yaml);
    for admin in [&a_admin, &b_admin] {
        connected(admin, "/admin/limits/plans?key=alice").await;
    }
    let c = Client::new();
    let alice = |url: &str| {
        let (c, url) = (c.clone(), format!("{url}/x"));
        async move { send(&c, "GET", &url, &[("x-api-key", "key-alice-123")]).await }
    };
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(alice(if i % 2 == 0 { &a_url } else { &b_url }).await.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429, 429, 429]);
    let v = c
        .get(&format!("{b_admin}/admin/limits/plans?key=alice"))
        .await
        .json();
    assert_eq!(v["used"], 4, "{v}");
    assert_eq!(
        redis
            .command(&["HGET", "gatehouse:quota:plans:alice", "u"])
            .as_deref(),
        Some("$1")
    );

    // A gateway started later (or again) reads the same count: its first request of a
    // key may pass on credit (`batch`, here 1: the documented bound), then Redis's count
    // applies.
    drop(a);
    let (_c, c_url, c_admin) = gateway(&yaml);
    connected(&c_admin, "/admin/limits/plans?key=alice").await;
    let _ = alice(&c_url).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = alice(&c_url).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    let del = send(
        &c,
        "DELETE",
        &format!("{b_admin}/admin/limits/plans?key=alice"),
        &[],
    )
    .await;
    assert_eq!(del.status, 204);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = alice(&c_url).await; // asks Redis again after sync_interval
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        alice(&c_url).await.status,
        200,
        "the reset reached the new gateway"
    );
}

/// A yaml with one cluster-scope limit (`limit` per hour on route `r`) over `url`.
fn one_limit(backend: std::net::SocketAddr, redis: &str, limit: u32) -> String {
    format!(
        r#"
cluster:
  redis: {redis}
upstreams:
  u:
    targets: [{{ address: "{backend}" }}]
policies:
  hourly: {{ type: rate_limit, limit: {limit}, per: 1h, key: route, scope: cluster }}
routes:
  - name: r
    match: {{ path: {{ type: prefix, value: / }} }}
    policies: [hourly]
    upstream: u
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_sentinel_the_gateway_follows_a_failover_to_the_replica() {
    let mut primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    let until = Instant::now() + Duration::from_secs(10);
    while primary.command(&["WAIT", "1", "500"]).as_deref() != Some(":1") {
        assert!(Instant::now() < until, "the replica did not sync");
    }
    let sentinel = RedisServer::sentinel_for(&primary, "gh");
    while sentinel.command(&["SENTINEL", "REPLICAS", "gh"]).as_deref() != Some("*1") {
        assert!(
            Instant::now() < until,
            "the sentinel did not see the replica"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let be = Backend::start("a", Kind::Echo).await;
    let url = format!(
        "{{ url: \"redis+sentinel://127.0.0.1:{}/gh/0\", on_failure: deny }}",
        sentinel.port
    );
    let (g, base, admin) = gateway(&one_limit(be.addr, &url, 1000));
    connected(&admin, "/admin/limits/hourly?key=r").await;
    let c = Client::new();
    for _ in 0..5 {
        assert_eq!(c.get(&format!("{base}/x")).await.status, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The count reached the replica too.
    let until = Instant::now() + Duration::from_secs(10);
    while primary.command(&["WAIT", "1", "500"]).as_deref() != Some(":1") {
        assert!(Instant::now() < until, "the replica did not catch up");
    }

    primary.kill();
    let mut seen = Vec::new();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let s = c.get(&format!("{base}/x")).await.status;
        seen.push(s);
        if s == 200 && seen.contains(&503) {
            break;
        }
        assert!(
            Instant::now() < until,
            "no failover: {seen:?}\n{}",
            g.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(g.stderr_text().contains("redis reachable again"));
    assert_eq!(
        replica.command(&["ROLE"]).as_deref(),
        Some("*3"),
        "the replica is the primary now"
    );
    // The count went on where the old primary left it (once the reservation made
    // across the failover has landed: polled, as the machine may be slow).
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let v = c
            .get(&format!("{admin}/admin/limits/hourly?key=r"))
            .await
            .json();
        if v["remaining"].as_u64().unwrap() <= 994 {
            break;
        }
        assert!(Instant::now() < until, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_tls_the_gateway_checks_the_server_and_shows_its_own_certificate() {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "test redis ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = write("ca.pem", &ca.self_signed(&ca_key).unwrap().pem());
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, stem: &str| {
        let mut p = CertificateParams::new(names).unwrap();
        // A subject of its own: OpenSSL (Redis's TLS) takes a leaf named like its CA
        // for a self-signed certificate.
        p.distinguished_name.push(DnType::CommonName, stem);
        p.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        (
            write(&format!("{stem}.pem"), &cert.pem()),
            write(&format!("{stem}.key"), &key.serialize_pem()),
        )
    };
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
        "server",
    );
    let (client_cert, client_key) = leaf(
        vec!["gateway".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
        "client",
    );
    let tls_port = free_port();
    let redis = RedisServer::start_with(
        Vec::new(),
        [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &server_cert,
            "--tls-key-file",
            &server_key,
            "--tls-ca-cert-file",
            &ca_pem,
            "--tls-auth-clients",
            "yes",
        ]
        .map(String::from)
        .to_vec(),
    );
    let be = Backend::start("a", Kind::Echo).await;
    let tls = |cert: &str| {
        format!(
            "{{ url: \"rediss://127.0.0.1:{tls_port}/0\", on_failure: deny, ca: \"{ca_pem}\"{cert} }}"
        )
    };
    // With its client certificate: counted in Redis.
    let with = format!(", cert: \"{client_cert}\", key: \"{client_key}\"");
    let (g, base, admin) = gateway(&one_limit(be.addr, &tls(&with), 2));
    let c = Client::new();
    connected(&admin, "/admin/limits/hourly?key=r").await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(c.get(&format!("{base}/x")).await.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(statuses, [200, 200, 429, 429], "{}", g.stderr_text());
    assert_eq!(redis.command(&["DBSIZE"]).as_deref(), Some(":1"));
    // Without it the server refuses the handshake: Redis counts as down (deny: 503).
    let (_g2, base2, _) = gateway(&one_limit(be.addr, &tls(""), 2));
    let r = until_status(&format!("{base2}/x"), 503).await;
    assert_eq!(r.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_redis_cluster_each_key_is_counted_on_its_node() {
    let nodes = RedisServer::cluster(3);
    let be = Backend::start("a", Kind::Echo).await;
    let seeds: Vec<String> = nodes[..2]
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let yaml = shared(
        be.addr,
        &format!("redis+cluster://{}", seeds.join(",")),
        "deny",
    );
    let (_a, a_url, a_admin) = gateway(&yaml);
    let (_b, b_url, b_admin) = gateway(&yaml);
    for admin in [&a_admin, &b_admin] {
        connected(admin, "/admin/limits/tenant?key=t0").await;
    }
    let c = Client::new();
    // Eight tenants, each with a budget of 3 shared by both gateways.
    for t in 0..8 {
        let tenant = format!("t{t}");
        let mut statuses = Vec::new();
        for i in 0..5 {
            let url = if i % 2 == 0 { &a_url } else { &b_url };
            let r = send(
                &c,
                "GET",
                &format!("{url}/tenant"),
                &[("x-tenant", &tenant)],
            )
            .await;
            statuses.push(r.status);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(statuses, [200, 200, 200, 429, 429], "tenant {tenant}");
    }
    // The keys are spread over the nodes by slot.
    let counts: Vec<String> = nodes
        .iter()
        .map(|n| n.command(&["DBSIZE"]).unwrap())
        .collect();
    assert!(
        counts.iter().filter(|c| c.as_str() != ":0").count() >= 2,
        "{counts:?}"
    );
}
