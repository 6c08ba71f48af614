//! Upstream resilience through real sockets: a backend killed under load, a hanging
//! backend, every target down, a flapping backend against the breaker and the retry
//! budget, and an ejection that survives reloads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Steady GET load from `workers` loops until `stop`; counts successes and failures.
struct Load {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(url: &str, workers: usize) -> Self {
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..workers)
            .map(|_| {
                let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
                let url = format!("{url}/load");
                tokio::spawn(async move {
                    let c = Client::new();
                    let mut errors = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let req = http::Request::get(&url)
                            .body(http_body_util::Full::default())
                            .unwrap();
                        match c.send(req).await {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.push(format!("{} {:?}", r.status, r.body));
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.push(e);
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    errors
                })
            })
            .collect();
        Self {
            ok,
            failed,
            stop,
            tasks,
        }
    }

    async fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for t in self.tasks {
            errors.extend(t.await.unwrap());
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

async fn upstream_view(admin: &str, name: &str) -> serde_json::Value {
    Client::new()
        .get(&format!("{admin}/admin/upstreams"))
        .await
        .json()[name]
        .clone()
}

fn target<'a>(view: &'a serde_json::Value, addr: &str) -> &'a serde_json::Value {
    view["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["address"] == addr)
        .unwrap()
}

/// Polls `check` every 50 ms until it holds or `within` passes.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + within;
    while Instant::now() < until {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_one_of_three_backends_under_load_fails_no_request() {
    let a = Backend::start("a", Kind::Echo).await;
    let b = Backend::start("b", Kind::Echo).await;
    let c = Backend::start("c", Kind::Echo).await;
    let b_addr = b.addr;
    let (_g, url, admin) = embedded(&format!(
        r#"upstreams:
  u:
    targets: [{{ address: "{}" }}, {{ address: "{}" }}, {{ address: "{}" }}]
    health_check:
      active: {{ path: /healthz, interval: 200ms, timeout: 200ms, healthy_threshold: 2, unhealthy_threshold: 2 }}
      passive: {{ consecutive_failures: 3, ejection_time: 1s, max_ejection_time: 10s }}
    slow_start: 3s
    retries: {{ attempts: 3, backoff: {{ base: 5ms, max: 50ms }}, budget: {{ ratio: 0.5, min_per_second: 100 }} }}
routes:
  - name: r
    upstream: u
"#,
        a.addr, b.addr, c.addr
    ));
    let load = Load::start(&url, 4);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(b.hits() > 0, "b took traffic before it died");

    // Kill b: its listener and open connections close.
    drop(b);
    let b_key = b_addr.to_string();
    let out = eventually(Duration::from_secs(3), || async {
        let v = upstream_view(&admin, "u").await;
        target(&v, &b_key)["health"] != "healthy"
    })
    .await;
    assert!(out, "b is taken out within the thresholds");
    let view = upstream_view(&admin, "u").await;
    eprintln!("after kill: {}", target(&view, &b_key));

    // Restart b on the same address: re-admitted by the active check, then ramped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = Backend::start_on("b", Kind::Echo, b_addr).await;
    let back = eventually(Duration::from_secs(3), || async {
        target(&upstream_view(&admin, "u").await, &b_key)["health"] == "healthy"
    })
    .await;
    assert!(back, "b is re-admitted");
    let share = target(&upstream_view(&admin, "u").await, &b_key)["slow_start_share"]
        .as_f64()
        .unwrap();
    assert!(share < 1.0, "b ramps up under slow_start (share {share})");
    let first = b.hits();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, failed, errors) = load.finish().await;
    eprintln!(
        "{ok} ok, {failed} failed; b served {} after restart",
        b.hits()
    );
    assert!(b.hits() > first, "b takes traffic again");
    assert_eq!(failed, 0, "failed requests: {errors:?}");
    assert!(ok > 200, "load ran ({ok} requests)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_target_is_retried_elsewhere_but_post_is_not() {
    let hang = Backend::start("hang", Kind::Hang).await;
    let ok = Backend::start("ok", Kind::Echo).await;
    let (_g, url, _) = embedded(&format!(
        r#"upstreams:
  u:
    targets: [{{ address: "{}" }}, {{ address: "{}" }}]
    retries: {{ attempts: 2, per_try_timeout: 300ms, backoff: {{ base: 1ms, max: 5ms }} }}
routes:
  - name: r
    upstream: u
"#,
        hang.addr, ok.addr
    ));
    let c = Client::new();
    let mut retried = 0;
    for _ in 0..6 {
        let t = Instant::now();
        let r = c.get(&format!("{url}/get")).await;
        assert_eq!(r.status, 200, "GET succeeds on the other target");
        assert!(t.elapsed() < Duration::from_secs(2));
        if r.header("x-gatehouse-attempts").as_deref() == Some("2") {
            retried += 1;
        }
    }
    assert!(
        retried >= 2,
        "round robin sent some GETs to the hanging target first"
    );

    let mut timeouts = 0;
    for _ in 0..4 {
        let req = http::Request::post(format!("{url}/post"))
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"x=1")))
            .unwrap();
        let r = c.send(req).await.unwrap();
        assert_eq!(
            r.header("x-gatehouse-attempts").as_deref(),
            Some("1"),
            "POST is tried once"
        );
        if r.status == 504 {
            assert_problem(&r, 504);
            timeouts += 1;
        } else {
            assert_eq!(r.status, 200);
        }
    }
    assert!(
        timeouts >= 1,
        "a POST that hit the hanging target was not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_targets_down_answers_503_fast_and_recovers() {
    let (p1, p2) = (free_port(), free_port());
    let (g, url, _) = gateway(&format!(
        r#"upstreams:
  u:
    targets: [{{ address: "127.0.0.1:{p1}" }}, {{ address: "127.0.0.1:{p2}" }}]
    health_check:
      active: {{ type: tcp, interval: 200ms, timeout: 100ms, healthy_threshold: 1, unhealthy_threshold: 1 }}
routes:
  - name: r
    upstream: u
"#
    ));
    let c = Client::new();
    // Both fail their first probe within about one interval.
    let down = eventually(Duration::from_secs(3), || async {
        c.get(&format!("{url}/x")).await.status == 503
    })
    .await;
    assert!(down, "all-down upstream answers 503");
    let r = c.get(&format!("{url}/x")).await;
    assert_problem(&r, 503);
    let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&after), "Retry-After {after}");

    // Fast answers and no busy loop while everything is down.
    let pid = g.child.id();
    let cpu0 = cpu_ticks(pid);
    let t = Instant::now();
    for _ in 0..200 {
        assert_eq!(c.get(&format!("{url}/x")).await.status, 503);
    }
    let per = t.elapsed() / 200;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let cpu = (cpu_ticks(pid) - cpu0) as f64 / 100.0;
    assert!(
        per < Duration::from_millis(20),
        "503 took {per:?} per request"
    );
    assert!(
        cpu < 0.8,
        "gateway used {cpu} s CPU for 200 requests and 1 s idle"
    );

    // One target comes back: traffic flows again within a probe interval or two.
    let _b = Backend::start_on(
        "back",
        Kind::Echo,
        format!("127.0.0.1:{p2}").parse().unwrap(),
    )
    .await;
    let up = eventually(Duration::from_secs(3), || async {
        c.get(&format!("{url}/x")).await.status == 200
    })
    .await;
    assert!(up, "recovers when a target returns");
}

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_backend_trips_the_breaker_and_the_budget_caps_retries() {
    let flap = Backend::start("flap", Kind::Flap).await;
    let flap2 = Backend::start("flap2", Kind::Flap).await;
    let addr = flap.addr;
    let (_g, url, admin) = embedded(&format!(
        r#"upstreams:
  cb:
    targets: [{{ address: "{addr}" }}]
    retries: {{ attempts: 3, on: ["503"], backoff: {{ base: 1ms, max: 2ms }} }}
    circuit_breaker: {{ failure_ratio: 0.5, min_requests: 10, window: 10s, open_for: 1s, half_open_requests: 2 }}
  budget:
    targets: [{{ address: "{}" }}]
    retries: {{ attempts: 3, on: ["503"], backoff: {{ base: 1ms, max: 2ms }}, budget: {{ ratio: 0.2, min_per_second: 1 }} }}
routes:
  - name: cb
    match: {{ path: {{ type: prefix, value: /cb }} }}
    upstream: cb
  - name: budget
    upstream: budget
"#,
        flap2.addr
    ));
    let c = Client::new();

    // Breaker: half the tries fail, so it opens after min_requests and fails fast.
    let mut fast_fail = 0;
    for _ in 0..60 {
        let r = c.get(&format!("{url}/cb")).await;
        if r.status == 503
            && r.header("content-type").as_deref() == Some("application/problem+json")
        {
            assert!(r.header("retry-after").is_some());
            fast_fail += 1;
        }
    }
    let v = upstream_view(&admin, "cb").await;
    eprintln!(
        "breaker: {fast_fail} of 60 failed fast, {} at the backend; {v}",
        flap.hits()
    );
    assert!(fast_fail >= 40, "the breaker opened and failed fast");
    assert_eq!(v["circuit_breaker"]["state"], "open");
    assert!(flap.hits() <= 25, "an open breaker sends nothing upstream");

    // After open_for the trials still meet the flapping backend and it opens again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..6 {
        c.get(&format!("{url}/cb")).await;
    }
    let v = upstream_view(&admin, "cb").await;
    assert!(
        v["circuit_breaker"]["times_opened"].as_u64().unwrap() >= 2,
        "{v}"
    );

    // The backend heals; after open_for the half-open trials succeed and it closes.
    drop(flap);
    let _healed = Backend::start_on("healed", Kind::Echo, addr).await;
    let closed = eventually(Duration::from_secs(5), || async {
        let r = c.get(&format!("{url}/cb")).await;
        r.status == 200 && upstream_view(&admin, "cb").await["circuit_breaker"]["state"] == "closed"
    })
    .await;
    assert!(closed, "breaker closed after successful trials");

    // Budget: every other first try fails and would be retried (about 150 tries for 100
    // requests); the budget allows max(10 s x 1/s, 20% of 100) = 20 retries.
    for _ in 0..100 {
        c.get(&format!("{url}/budget")).await;
    }
    let v = upstream_view(&admin, "budget").await;
    let hits = flap2.hits();
    eprintln!(
        "budget: {hits} tries at the backend for 100 requests; {}",
        v["retries"]
    );
    assert!(hits <= 122, "retries went past the budget: {hits}");
    assert!(v["retries"]["denied_by_budget"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejection_survives_reloads() {
    let bad = Backend::start("bad", Kind::Echo).await;
    bad.force_status(503);
    let good = Backend::start("good", Kind::Echo).await;
    let upstream = |extra: &str| {
        format!(
            r#"upstreams:
  u:
    targets: [{{ address: "{}" }}, {{ address: "{}" }}{extra}]
    health_check:
      passive: {{ consecutive_failures: 2, ejection_time: 30s }}
    retries: {{ attempts: 2 }}
"#,
            bad.addr, good.addr
        )
    };
    let routes = "routes:\n  - name: r\n    upstream: u\n";
    let (g, url, admin) = gateway(&format!("{}{routes}", upstream("")));
    let c = Client::new();
    for _ in 0..10 {
        assert_eq!(
            c.get(&format!("{url}/x")).await.status,
            200,
            "retried onto good"
        );
    }
    let key = bad.addr.to_string();
    assert_eq!(
        target(&upstream_view(&admin, "u").await, &key)["health"],
        "ejected"
    );

    // Reload with the upstream unchanged, then with it changed (a third target).
    let port = url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let admin_port = admin.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let extra_route = format!(
        "{routes}  - name: extra\n    match: {{ path: {{ type: prefix, value: /extra }} }}\n    upstream: u\n"
    );
    for body in [
        format!("{}{extra_route}", upstream("")),
        format!(
            "{}{extra_route}",
            upstream(&format!(", {{ address: \"127.0.0.1:{}\" }}", free_port()))
        ),
    ] {
        g.write_config(&config(port, admin_port, &body));
        let r = Client::new()
            .send(
                http::Request::post(format!("{admin}/admin/reload"))
                    .body(http_body_util::Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "reload: {:?}", r.body);
        let v = upstream_view(&admin, "u").await;
        assert_eq!(target(&v, &key)["health"], "ejected", "still ejected: {v}");
        let before = bad.hits();
        for _ in 0..10 {
            let r = c.get(&format!("{url}/x")).await;
            assert_ne!(r.header("x-backend").as_deref(), Some("bad"));
        }
        assert_eq!(bad.hits(), before, "no traffic to the ejected target");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_moves_any_request_to_another_target() {
    // No retries block: the implicit policy moves a failed connect on once, for every
    // method, because nothing reached the target; the streamed body is still unread.
    let ok = Backend::start("ok", Kind::Echo).await;
    let dead = free_port();
    let (_g, url, _) = embedded(&format!(
        r#"
upstreams:
  u: {{ targets: [{{ address: "127.0.0.1:{dead}" }}, {{ address: "{}" }}] }}
routes:
  - name: r
    upstream: u
"#,
        ok.addr
    ));
    let c = Client::new();
    let body = bytes::Bytes::from(vec![b'p'; 200 * 1024]);
    let mut moved = 0;
    for _ in 0..6 {
        let req = http::Request::post(format!("{url}/orders"))
            .body(http_body_util::Full::new(body.clone()))
            .unwrap();
        let r = c.send(req).await.unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.json()["body_len"], 200 * 1024);
        if r.header("x-gatehouse-attempts").as_deref() == Some("2") {
            moved += 1;
        }
    }
    assert!(
        moved >= 2,
        "round robin met the dead target first in some requests"
    );
}
