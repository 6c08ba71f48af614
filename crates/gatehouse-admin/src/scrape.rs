//! `GET /metrics`: the Prometheus text exposition (format 0.0.4), or OpenMetrics 1.0 with
//! trace exemplars when the scraper asks for it (`Accept: application/openmetrics-text`). Request-path families
//! come summed from the workers' shards; gauges of upstream state, listeners, reloads
//! and the process are read here, at scrape time, so they cost the request path nothing.

use bytes::Bytes;
use gatehouse_observe::metrics::{self, Exposition, name};
use gatehouse_proxy::Gateway;
use gatehouse_upstream::health::Verdict;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The exposition text for one scrape: OpenMetrics 1.0 when `open_metrics`, else
/// Prometheus text 0.0.4.
pub fn render(gw: &Gateway, open_metrics: bool) -> String {
    render_into(gw, open_metrics, String::new(), 0)
}

/// Samples the report thread writes between two yields of its core (about 20 us).
const SAMPLES_PER_TURN: usize = 256;

/// The body of one scrape, gzip-compressed when `gzip` (then true). The text is written
/// into a kept buffer (see [`Buffer`]), yielding the core every [`SAMPLES_PER_TURN`]
/// samples.
pub fn body(gw: &Gateway, open_metrics: bool, gzip: bool) -> (Bytes, bool) {
    let text = render_into(gw, open_metrics, Buffer::take(), SAMPLES_PER_TURN);
    if gzip && let Some(z) = self::gzip(&text) {
        Buffer::give_back(text);
        return (Bytes::from(z), true);
    }
    (Bytes::from_owner(Buffer(Some(text))), false)
}

fn render_into(gw: &Gateway, open_metrics: bool, buffer: String, turn: usize) -> String {
    // The text is about as long as the last one: room for it up front, and some more.
    static LAST_SIZE: AtomicUsize = AtomicUsize::new(0);
    let mut e = Exposition::in_buffer(buffer, open_metrics);
    e.yield_every(turn);
    let last = LAST_SIZE.load(Ordering::Relaxed);
    e.reserve(last + last / 8);
    metrics::write_recorded(&mut e);
    gatehouse_observe::spans::write_metrics(&mut e);
    analytics_families(gw, &mut e);
    upstream_gauges(gw, &mut e);
    listener_gauges(gw, &mut e);
    config_families(gw, &mut e);
    process_families(&mut e);
    let text = e.finish();
    LAST_SIZE.store(text.len(), Ordering::Relaxed);
    text
}

/// A scrape's text on its way to the scraper; its memory goes back to the spares when
/// the body is sent. A 1,000-route scrape is about 6 MiB: allocating it anew each time
/// cost more than writing it (the kernel zeroes every fresh page), so up to [`SPARES`]
/// buffers are kept.
struct Buffer(Option<String>);

/// Buffers kept between scrapes: one for the scrape being written, one for a scraper
/// still reading the last.
const SPARES: usize = 2;

fn spares() -> &'static Mutex<Vec<String>> {
    static SPARE: Mutex<Vec<String>> = Mutex::new(Vec::new());
    &SPARE
}

impl Buffer {
    /// A kept buffer, or a new one.
    fn take() -> String {
        spares()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }

    /// Keeps `text`'s memory for a later scrape, unless enough is kept.
    fn give_back(text: String) {
        let mut spare = spares().lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < SPARES {
            spare.push(text);
        }
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default().as_bytes()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(text) = self.0.take() {
            Buffer::give_back(text);
        }
    }
}

/// Bytes the kept scrape buffers hold (part of `gatehouse_memory_bytes{component="metrics"}`).
pub fn buffer_bytes() -> usize {
    spares()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(String::capacity)
        .sum()
}

/// The phase histograms, the quality scores (5 minutes) and, with
/// `metrics.consumers.enabled`, requests per consumer (the first `max` consumers seen by
/// name, the rest as `other`).
fn analytics_families(gw: &Gateway, e: &mut Exposition) {
    use gatehouse_observe::stats::{self, Subject};
    let totals = stats::totals();
    stats::write_phase_metrics(e, &totals);
    let consumers = gw.live.load().config.metrics.consumers;
    // The first `max` consumers seen have series of their own; the rest are `other`.
    let own_series = |name: &str| stats::consumer_rank(name).is_some_and(|r| r < consumers.max);
    e.family(
        name::QUALITY_SCORE,
        "gauge",
        "Quality score (0 to 100) over the last 5 minutes; absent without traffic.",
    );
    for q in crate::quality::report(gw, std::time::Duration::from_secs(300)) {
        let kind = match q.kind {
            Subject::Route => "route",
            Subject::Upstream => "upstream",
            Subject::Consumer if consumers.enabled && own_series(&q.name) => "consumer",
            Subject::Consumer => continue,
        };
        if let Some(score) = q.score {
            e.sample(
                name::QUALITY_SCORE,
                &[("kind", kind), ("name", &q.name)],
                score,
            );
        }
    }
    e.family(
        name::MEMORY,
        "gauge",
        "Memory the gateway's bounded stores take (estimates), by component.",
    );
    let memory = [
        (
            "metrics",
            gatehouse_observe::metrics::memory_bytes() + buffer_bytes(),
        ),
        ("analytics", stats::memory_bytes()),
        ("top_n", gatehouse_observe::top::memory_bytes()),
        (
            "transactions",
            gatehouse_observe::transactions::memory_bytes(),
        ),
        ("span_queue", gatehouse_observe::spans::memory_bytes()),
    ];
    for (component, bytes) in memory {
        e.sample(name::MEMORY, &[("component", component)], bytes as f64);
    }
    if !consumers.enabled {
        return;
    }
    e.family(
        name::CONSUMER_REQUESTS,
        "counter",
        "Requests per consumer, by status class.",
    );
    let mut per: std::collections::BTreeMap<(String, &str), u64> = Default::default();
    for ((kind, n), t) in &totals {
        if *kind != Subject::Consumer {
            continue;
        }
        let l = if own_series(n) {
            n.to_string()
        } else {
            stats::OTHER.to_string()
        };
        let classes = [
            ("1xx", t.counts[stats::CLASSES_1_TO_3[0]]),
            ("2xx", t.counts[stats::CLASSES_1_TO_3[1]]),
            ("3xx", t.counts[stats::CLASSES_1_TO_3[2]]),
            ("4xx", t.counts[stats::CLIENT_ERRORS]),
            ("5xx", t.counts[stats::ERRORS]),
        ];
        for (class, v) in classes {
            if v > 0 {
                *per.entry((l.clone(), class)).or_default() += v;
            }
        }
    }
    for ((consumer, class), v) in per {
        e.sample(
            name::CONSUMER_REQUESTS,
            &[("consumer", &consumer), ("status_class", class)],
            v as f64,
        );
    }
}

fn upstream_gauges(gw: &Gateway, e: &mut Exposition) {
    let snap = gw.live.load();
    let now = gatehouse_upstream::clock::now_ms();
    let mut ups: Vec<_> = snap.upstreams.iter().collect();
    ups.sort_by(|a, b| a.0.cmp(b.0));

    e.family(
        name::UPSTREAM_TARGET_HEALTHY,
        "gauge",
        "1 when the target is in rotation.",
    );
    for (n, u) in &ups {
        for t in &u.targets {
            let up = matches!(t.health.verdict(now), Verdict::Healthy);
            let labels = [("upstream", n.as_str()), ("target", &*t.address)];
            e.sample(
                name::UPSTREAM_TARGET_HEALTHY,
                &labels,
                f64::from(u8::from(up)),
            );
        }
    }
    e.family(
        name::UPSTREAM_EJECTIONS,
        "counter",
        "Passive ejections of the target.",
    );
    for (n, u) in &ups {
        for t in &u.targets {
            let labels = [("upstream", n.as_str()), ("target", &*t.address)];
            e.sample(
                name::UPSTREAM_EJECTIONS,
                &labels,
                t.health.ejections_total() as f64,
            );
        }
    }
    e.family(
        name::CIRCUIT_BREAKER_STATE,
        "gauge",
        "1 on the breaker's current state.",
    );
    for (n, u) in &ups {
        let Some(b) = &u.breaker else { continue };
        let current = b.state(now).as_str();
        for state in ["closed", "open", "half_open"] {
            let labels = [("upstream", n.as_str()), ("state", state)];
            e.sample(
                name::CIRCUIT_BREAKER_STATE,
                &labels,
                f64::from(u8::from(state == current)),
            );
        }
    }
    let pools = metrics::pool_gauges();
    e.family(
        name::UPSTREAM_CONNECTIONS,
        "gauge",
        "Upstream connections: open, and idle in the pools.",
    );
    for (n, u) in &ups {
        let (mut open, mut idle) = (0i64, 0i64);
        for t in &u.targets {
            // Connections go to the first resolved address.
            if let Some((o, i)) = t.socket_addr().and_then(|a| pools.get(&a)) {
                open += o;
                idle += i;
            }
        }
        e.sample(
            name::UPSTREAM_CONNECTIONS,
            &[("upstream", n.as_str()), ("state", "open")],
            open.max(0) as f64,
        );
        e.sample(
            name::UPSTREAM_CONNECTIONS,
            &[("upstream", n.as_str()), ("state", "idle")],
            idle.max(0) as f64,
        );
    }
}

fn listener_gauges(gw: &Gateway, e: &mut Exposition) {
    e.family(
        name::LISTENER_CONNECTIONS_OPEN,
        "gauge",
        "Connections open on the listener.",
    );
    for l in gw.listeners() {
        e.sample(
            name::LISTENER_CONNECTIONS_OPEN,
            &[("listener", l.name.as_str())],
            l.open_connections as f64,
        );
    }
}

fn config_families(gw: &Gateway, e: &mut Exposition) {
    e.family(name::CONFIG_RELOADS, "counter", "Config reloads by result.");
    for (i, result) in ["success", "failure"].iter().enumerate() {
        let n = gw.reloads[i].load(Ordering::Relaxed);
        e.sample(name::CONFIG_RELOADS, &[("result", result)], n as f64);
    }
    e.family(
        name::CONFIG_LAST_RELOAD,
        "gauge",
        "When the running config went live, Unix seconds.",
    );
    e.sample(
        name::CONFIG_LAST_RELOAD,
        &[],
        gw.last_reload.load(Ordering::Relaxed) as f64,
    );
    e.family(
        name::CONFIG_HASH_INFO,
        "gauge",
        "The SHA-256 of the running config text.",
    );
    let hash = crate::config_hash(&gw.live.load().source);
    e.sample(name::CONFIG_HASH_INFO, &[("hash", &hash)], 1.0);
    e.family(
        name::BUILD_INFO,
        "gauge",
        "The version and commit of this binary.",
    );
    let labels = [
        ("version", env!("CARGO_PKG_VERSION")),
        (
            "commit",
            option_env!("GATEHOUSE_COMMIT").unwrap_or("unknown"),
        ),
    ];
    e.sample(name::BUILD_INFO, &labels, 1.0);
}

/// Linux reports CPU times in clock ticks of USER_HZ, which is 100 on every platform
/// the kernel ABI exposes to user space.
const TICKS_PER_SECOND: f64 = 100.0;

fn process_families(e: &mut Exposition) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which may hold spaces, start at field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        e.family(
            name::PROCESS_CPU_SECONDS,
            "counter",
            "CPU time used, user and system.",
        );
        e.sample(
            name::PROCESS_CPU_SECONDS,
            &[],
            (utime + stime) / TICKS_PER_SECOND,
        );
    }
    let rss_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok());
    if let Some(pages) = rss_pages {
        e.family(name::PROCESS_RESIDENT_MEMORY, "gauge", "Resident memory.");
        e.sample(name::PROCESS_RESIDENT_MEMORY, &[], pages * 4096.0);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        e.family(name::PROCESS_OPEN_FDS, "gauge", "Open file descriptors.");
        e.sample(name::PROCESS_OPEN_FDS, &[], dir.count() as f64);
    }
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<f64>().ok()
        });
    if let Some(m) = max_fds {
        e.family(name::PROCESS_MAX_FDS, "gauge", "Descriptor limit.");
        e.sample(name::PROCESS_MAX_FDS, &[], m);
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse::<f64>()
            .ok()
    });
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        e.family(
            name::PROCESS_START_TIME,
            "gauge",
            "Start time, Unix seconds.",
        );
        e.sample(
            name::PROCESS_START_TIME,
            &[],
            boot + start / TICKS_PER_SECOND,
        );
    }
}

/// Whether an `Accept` header prefers OpenMetrics (Prometheus asks for it first, with a
/// higher q, when exemplars are enabled).
pub fn wants_open_metrics(accept: Option<&http::HeaderValue>) -> bool {
    let Some(a) = accept.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let q = |kind: &str| {
        a.split(',')
            .filter_map(|part| {
                let mut it = part.split(';').map(str::trim);
                let media = it.next()?;
                (media == kind).then(|| {
                    it.find_map(|p| p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()))
                        .unwrap_or(1.0)
                })
            })
            .fold(None, |m: Option<f32>, q| Some(m.map_or(q, |m| m.max(q))))
    };
    match (q("application/openmetrics-text"), q("text/plain")) {
        (Some(om), Some(text)) => om > 0.0 && om >= text,
        (Some(om), None) => om > 0.0,
        _ => false,
    }
}

/// Whether an `Accept-Encoding` header takes gzip.
pub fn accepts_gzip(accept_encoding: Option<&http::HeaderValue>) -> bool {
    accept_encoding
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',').any(|part| {
                let mut it = part.split(';').map(str::trim);
                it.next()
                    .is_some_and(|c| c.eq_ignore_ascii_case("gzip") || c == "*")
                    && !it.any(|p| p.replace(' ', "") == "q=0")
            })
        })
}

/// Bytes compressed between two yields of the core (about 100 us).
const GZIP_TURN: usize = 16 * 1024;

/// `text` gzip-compressed, a turn at a time (see [`GZIP_TURN`]).
fn gzip(text: &str) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(text.len() / 8),
        flate2::Compression::fast(),
    );
    for turn in text.as_bytes().chunks(GZIP_TURN) {
        enc.write_all(turn).ok()?;
        std::thread::yield_now();
    }
    enc.finish().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn the_format_follows_the_scrapers_preference() {
        let h = |s: &'static str| Some(HeaderValue::from_static(s));
        assert!(wants_open_metrics(h("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1").as_ref()));
        assert!(wants_open_metrics(
            h("application/openmetrics-text").as_ref()
        ));
        assert!(!wants_open_metrics(h("text/plain;version=0.0.4").as_ref()));
        assert!(!wants_open_metrics(
            h("application/openmetrics-text;q=0.2,text/plain;q=0.9").as_ref()
        ));
        assert!(!wants_open_metrics(None));
        assert!(accepts_gzip(h("gzip, deflate").as_ref()));
        assert!(!accepts_gzip(h("gzip;q=0, br").as_ref()));
        assert!(!accepts_gzip(None));
    }

    #[test]
    fn a_sent_body_leaves_its_memory_for_the_next_scrape() {
        let mut text = Buffer::take();
        text.push_str(&"x".repeat(1 << 20));
        let body = Bytes::from_owner(Buffer(Some(text)));
        assert_eq!(body.len(), 1 << 20);
        let kept = buffer_bytes();
        drop(body);
        assert!(buffer_bytes() >= kept + (1 << 20));
        let again = Buffer::take();
        assert!(again.capacity() >= 1 << 20, "the kept buffer is reused");
        for _ in 0..SPARES + 2 {
            Buffer::give_back(String::with_capacity(16));
        }
        assert!(
            spares().lock().unwrap().len() <= SPARES,
            "no more than SPARES kept"
        );
    }
}
