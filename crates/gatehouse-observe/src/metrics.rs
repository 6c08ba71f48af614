//! Metrics: every name in one place ([`name`]), per-worker counters on the request path,
//! and the Prometheus text exposition (format 0.0.4) that sums them at scrape.
//!
//! Each thread that records gets its own shard of series. A series is written only by
//! the thread that owns it (a plain load and store of relaxed atomics, no lock, no
//! read-modify-write, no cache line shared with another worker); the scrape reads every
//! shard and sums series with equal labels. Series are found per thread by the address
//! of their label strings, which each series keeps alive (so an address is never reused
//! while it is a key); labels are names from the config (routes, listeners, upstreams,
//! targets, policies) and fixed vocabularies (methods, status classes, reasons), never a
//! path, address or header of a request. Counters live for the process, so they survive
//! reloads, and summing by label text merges a route's series across reloads.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Every metric name Gatehouse exposes.
pub mod name {
    /// Requests served, by listener, route, method and status class.
    pub const HTTP_SERVER_REQUESTS: &str = "gatehouse_http_server_requests_total";
    /// Request duration histogram, by route, method and status class.
    pub const HTTP_SERVER_REQUEST_DURATION: &str = "gatehouse_http_server_request_duration_seconds";
    /// Requests in progress.
    pub const HTTP_SERVER_ACTIVE_REQUESTS: &str = "gatehouse_http_server_active_requests";
    /// Request time by phase (client, gateway, upstream_network, upstream_app), by route.
    pub const PHASE_DURATION: &str = "gatehouse_phase_duration_seconds";
    /// The quality score (0 to 100) over the last 5 minutes, by kind and name.
    pub const QUALITY_SCORE: &str = "gatehouse_quality_score";
    /// Memory the gateway's own bounded stores take, by component.
    pub const MEMORY: &str = "gatehouse_memory_bytes";
    /// Requests per consumer (`metrics.consumers`), by consumer and status class.
    pub const CONSUMER_REQUESTS: &str = "gatehouse_consumer_requests_total";
    /// Upstream tries, by upstream, target and status class.
    pub const UPSTREAM_REQUESTS: &str = "gatehouse_upstream_requests_total";
    /// Upstream try duration (to the response head), by upstream and target.
    pub const UPSTREAM_REQUEST_DURATION: &str = "gatehouse_upstream_request_duration_seconds";
    /// 1 when a target is in rotation, else 0.
    pub const UPSTREAM_TARGET_HEALTHY: &str = "gatehouse_upstream_target_healthy";
    /// Passive ejections of a target.
    pub const UPSTREAM_EJECTIONS: &str = "gatehouse_upstream_ejections_total";
    /// 1 on the breaker's current state (closed, open, half_open).
    pub const CIRCUIT_BREAKER_STATE: &str = "gatehouse_circuit_breaker_state";
    /// Retries sent, or denied by the budget or an open breaker.
    pub const UPSTREAM_RETRIES: &str = "gatehouse_upstream_retries_total";
    /// Upstream connections, open and idle in the pools.
    pub const UPSTREAM_CONNECTIONS: &str = "gatehouse_upstream_connections";
    /// Answers a policy gave itself, by route, policy and reason.
    pub const SHORT_CIRCUITS: &str = "gatehouse_short_circuits_total";
    /// Connections accepted or rejected (max_connections), by listener.
    pub const LISTENER_CONNECTIONS: &str = "gatehouse_listener_connections_total";
    /// Connections open, by listener.
    pub const LISTENER_CONNECTIONS_OPEN: &str = "gatehouse_listener_connections_open";
    /// Requests refused before routing or for their body, by listener and reason.
    pub const REQUEST_REJECTIONS: &str = "gatehouse_request_rejections_total";
    /// Config reloads, by result (success, failure).
    pub const CONFIG_RELOADS: &str = "gatehouse_config_reloads_total";
    /// When the last successful reload (or the start) happened, Unix seconds.
    pub const CONFIG_LAST_RELOAD: &str = "gatehouse_config_last_reload_timestamp_seconds";
    /// 1, labelled with the SHA-256 of the running config.
    pub const CONFIG_HASH_INFO: &str = "gatehouse_config_hash_info";
    /// 1, labelled with the version and commit of the binary.
    pub const BUILD_INFO: &str = "gatehouse_build_info";
    /// CPU time used, user plus system.
    pub const PROCESS_CPU_SECONDS: &str = "process_cpu_seconds_total";
    /// Resident memory.
    pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
    /// Open file descriptors.
    pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
    /// Descriptor limit.
    pub const PROCESS_MAX_FDS: &str = "process_max_fds";
    /// Start time, Unix seconds.
    pub const PROCESS_START_TIME: &str = "process_start_time_seconds";
}

/// Default histogram bucket bounds, seconds (the OpenTelemetry HTTP defaults, cut at 10 s).
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Most bucket bounds a config may set.
pub const MAX_BUCKETS: usize = 30;

/// The bucket bounds in force, nanoseconds: set once, by the config the process starts
/// with (a series' buckets cannot change while it lives).
fn bounds() -> &'static [u64] {
    BOUNDS.get_or_init(|| to_nanos(&BUCKETS))
}

static BOUNDS: OnceLock<Box<[u64]>> = OnceLock::new();

/// The duration bucket bounds in force, nanoseconds (ascending; +Inf not included).
pub fn bucket_bounds() -> &'static [u64] {
    bounds()
}

/// Writes one histogram series over the bounds in force: `counts` per bucket (+Inf last)
/// and the sum of the observations in nanoseconds.
pub fn write_histogram(
    e: &mut Exposition,
    name: &str,
    labels: &[(&str, &str)],
    counts: &[u64],
    sum_nanos: u64,
) {
    let n = bounds().len() + 1;
    let mut buckets = counts.to_vec();
    buckets.resize(n, 0);
    let h = HistSum {
        buckets,
        sum_nanos,
        exemplars: vec![None; n],
    };
    h.write(e, name, labels);
}

fn to_nanos(secs: &[f64]) -> Box<[u64]> {
    secs.iter().map(|s| (s * 1e9).round() as u64).collect()
}

/// Sets the bucket bounds (seconds, ascending) for the life of the process; false when
/// others were set already (a reload cannot change them: a restart does).
pub fn set_buckets(secs: &[f64]) -> bool {
    let wanted = to_nanos(secs);
    let now = BOUNDS.get_or_init(|| wanted.clone());
    **now == *wanted
}

/// Methods with a label of their own; any other is `_OTHER`.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
];

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns recording on or off (`metrics.enabled`); the scrape still answers.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether recording is on.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Why a request was refused before it could be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Request head or target over the limit (431, 414).
    HeaderTooLarge,
    /// Body over the limit (413).
    BodyTooLarge,
    /// Unparseable or ambiguous request (400).
    Malformed,
    /// The head did not arrive in time.
    Timeout,
    /// The TLS handshake failed or did not finish in time (no request was read).
    TlsHandshake,
    /// The client went over its listener's `request_rate_per_ip` (429).
    RateLimited,
    /// An HTTP/2 connection ended for abuse (resets, floods): GOAWAY ENHANCE_YOUR_CALM.
    Http2Abuse,
}

impl Rejection {
    fn as_str(self) -> &'static str {
        match self {
            Self::HeaderTooLarge => "header_too_large",
            Self::BodyTooLarge => "body_too_large",
            Self::Malformed => "malformed",
            Self::Timeout => "timeout",
            Self::TlsHandshake => "tls_handshake",
            Self::RateLimited => "rate_limited",
            Self::Http2Abuse => "http2_abuse",
        }
    }

    /// The rejection a gateway-made answer with `status` stands for, if any.
    pub fn of_status(status: u16) -> Option<Self> {
        Some(match status {
            400 => Self::Malformed,
            408 => Self::Timeout,
            413 => Self::BodyTooLarge,
            414 | 431 => Self::HeaderTooLarge,
            429 => Self::RateLimited,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Family {
    Request,
    Upstream,
    ShortCircuit,
    Connection,
    Rejection,
    Retry,
    PoolOpen,
    PoolIdle,
}

/// A series key: its family, two small indexes and up to three label addresses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Key {
    family: Family,
    small: [u8; 2],
    ptrs: [usize; 3],
}

/// One word per key: the derived hash would feed the hasher field by field (and the
/// small indexes byte by byte), on every request. Equality still compares whole keys.
impl std::hash::Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let tag =
            (self.family as u64) << 16 | u64::from(self.small[0]) << 8 | u64::from(self.small[1]);
        let [a, b, c] = self.ptrs.map(|p| p as u64);
        state.write_u64(a ^ b.rotate_left(21) ^ c.rotate_left(42) ^ tag.rotate_left(56));
    }
}

/// One series: its labels (kept alive, see the module docs), a counter or gauge, and a
/// histogram for the families that have one.
struct Series {
    family: Family,
    small: [u8; 2],
    labels: [Option<Arc<str>>; 3],
    addr: Option<SocketAddr>,
    value: AtomicI64,
    hist: Option<Box<Hist>>,
}

struct Hist {
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
    /// The last sampled trace seen in each bucket, for OpenMetrics exemplars.
    exemplars: Box<[Mutex<Option<Exemplar>>]>,
}

/// A trace that fell in a bucket: its id, the observed value and when.
#[derive(Debug, Clone, Copy)]
struct Exemplar {
    trace_id: [u8; 16],
    nanos: u64,
    unix_ms: u64,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

impl Series {
    fn observe(&self, d: Duration, trace: Option<[u8; 16]>) {
        let Some(h) = &self.hist else { return };
        let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let b = bounds();
        let i = b.iter().position(|x| n <= *x).unwrap_or(b.len());
        bump(&h.buckets[i], 1);
        bump(&h.sum_nanos, n);
        if let Some(trace_id) = trace
            && let Some(slot) = h.exemplars.get(i)
        {
            // Only sampled requests reach here; their lock is this thread's and the scrape's.
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Exemplar {
                trace_id,
                nanos: n,
                unix_ms: unix_ms(),
            });
        }
    }
}

/// Adds `n` to a counter only this thread writes: a load and a store, no locked
/// instruction (the scrape may read a value one increment old).
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

#[inline]
fn add(c: &AtomicI64, n: i64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// The series of one thread. The mutex guards only the list: taken when the thread adds
/// a series (once per label set) and by the scrape, never to record.
#[derive(Default)]
struct Shard {
    series: Mutex<Vec<Arc<Series>>>,
    active: AtomicI64,
}

fn shards() -> &'static Mutex<Vec<Arc<Shard>>> {
    static SHARDS: OnceLock<Mutex<Vec<Arc<Shard>>>> = OnceLock::new();
    SHARDS.get_or_init(Default::default)
}

/// A multiply-and-rotate hasher for keys that are already integers and addresses.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type Index = HashMap<Key, Arc<Series>, BuildHasherDefault<KeyHasher>>;

struct Local {
    shard: Arc<Shard>,
    index: RefCell<Index>,
}

impl Local {
    fn new() -> Self {
        let shard = Arc::new(Shard::default());
        shards()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(shard.clone());
        Self {
            shard,
            index: RefCell::new(Index::default()),
        }
    }

    /// This thread's series for `key`, made with `labels` on first use.
    fn with<R>(
        &self,
        key: Key,
        labels: impl FnOnce() -> ([Option<Arc<str>>; 3], Option<SocketAddr>),
        f: impl FnOnce(&Series) -> R,
    ) -> R {
        let Ok(mut index) = self.index.try_borrow_mut() else {
            // Re-entered from inside a recording call: nothing to do but skip.
            return f(&detached(key));
        };
        let series = index.entry(key).or_insert_with(|| {
            let (labels, addr) = labels();
            let hist = matches!(key.family, Family::Request | Family::Upstream).then(|| {
                let n = bounds().len() + 1;
                Box::new(Hist {
                    buckets: (0..n).map(|_| AtomicU64::new(0)).collect(),
                    sum_nanos: AtomicU64::new(0),
                    exemplars: (0..n).map(|_| Mutex::new(None)).collect(),
                })
            });
            let s = Arc::new(Series {
                family: key.family,
                small: key.small,
                labels,
                addr,
                value: AtomicI64::new(0),
                hist,
            });
            self.shard
                .series
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(s.clone());
            s
        });
        f(series)
    }
}

fn detached(key: Key) -> Series {
    Series {
        family: key.family,
        small: key.small,
        labels: [None, None, None],
        addr: None,
        value: AtomicI64::new(0),
        hist: None,
    }
}

thread_local! {
    static LOCAL: Local = Local::new();
}

fn ptr(s: &Arc<str>) -> usize {
    Arc::as_ptr(s).cast::<u8>() as usize
}

fn method_index(m: &http::Method) -> u8 {
    METHODS
        .iter()
        .position(|x| *x == m.as_str())
        .unwrap_or(METHODS.len() - 1) as u8
}

fn class_index(status: u16) -> u8 {
    match status {
        100..=599 => (status / 100 - 1) as u8,
        _ => 5,
    }
}

fn no_route() -> &'static Arc<str> {
    static EMPTY: OnceLock<Arc<str>> = OnceLock::new();
    EMPTY.get_or_init(|| Arc::from(""))
}

fn record(
    key: Key,
    labels: impl FnOnce() -> ([Option<Arc<str>>; 3], Option<SocketAddr>),
    f: impl FnOnce(&Series),
) {
    if !enabled() {
        return;
    }
    let _ = LOCAL.try_with(|l| l.with(key, labels, f));
}

/// One request answered: counts it and observes its duration (with its trace id as the
/// bucket's exemplar when the trace is sampled).
pub fn request(
    listener: &Arc<str>,
    route: Option<&Arc<str>>,
    method: &http::Method,
    status: u16,
    took: Duration,
    sampled_trace: Option<[u8; 16]>,
) {
    let route = route.unwrap_or_else(|| no_route());
    let key = Key {
        family: Family::Request,
        small: [method_index(method), class_index(status)],
        ptrs: [ptr(listener), ptr(route), 0],
    };
    let labels = || ([Some(listener.clone()), Some(route.clone()), None], None);
    record(key, labels, |s| {
        add(&s.value, 1);
        s.observe(took, sampled_trace);
    });
}

/// A request started (`+1`) or finished (`-1`).
pub fn active_requests(delta: i64) {
    if !enabled() {
        return;
    }
    let _ = LOCAL.try_with(|l| add(&l.shard.active, delta));
}

/// One upstream try ended with `status` (the gateway's answer for a failed try); `took`
/// is observed when known (tries that got a response head).
pub fn upstream_try(upstream: &Arc<str>, target: &Arc<str>, status: u16, took: Option<Duration>) {
    let key = Key {
        family: Family::Upstream,
        small: [class_index(status), 0],
        ptrs: [ptr(upstream), ptr(target), 0],
    };
    let labels = || ([Some(upstream.clone()), Some(target.clone()), None], None);
    record(key, labels, |s| {
        add(&s.value, 1);
        if let Some(d) = took {
            s.observe(d, None);
        }
    });
}

/// A retry was sent, or denied (budget spent or breaker open).
pub fn retry(upstream: &Arc<str>, sent: bool) {
    let key = Key {
        family: Family::Retry,
        small: [u8::from(sent), 0],
        ptrs: [ptr(upstream), 0, 0],
    };
    record(
        key,
        || ([Some(upstream.clone()), None, None], None),
        |s| add(&s.value, 1),
    );
}

/// A policy answered a request itself.
pub fn short_circuit(route: Option<&Arc<str>>, policy: &Arc<str>, reason: &'static str) {
    let route = route.unwrap_or_else(|| no_route());
    let key = Key {
        family: Family::ShortCircuit,
        // The length too: two reasons may share a start in the binary's string table.
        small: [reason.len() as u8, (reason.len() >> 8) as u8],
        ptrs: [ptr(route), ptr(policy), reason.as_ptr() as usize],
    };
    let labels = || {
        (
            [
                Some(route.clone()),
                Some(policy.clone()),
                Some(Arc::from(reason)),
            ],
            None,
        )
    };
    record(key, labels, |s| add(&s.value, 1));
}

/// A connection was accepted, or rejected at accept.
pub fn connection(listener: &Arc<str>, accepted: bool) {
    let key = Key {
        family: Family::Connection,
        small: [u8::from(accepted), 0],
        ptrs: [ptr(listener), 0, 0],
    };
    record(
        key,
        || ([Some(listener.clone()), None, None], None),
        |s| add(&s.value, 1),
    );
}

/// A request was refused for `why`.
pub fn rejection(listener: &Arc<str>, why: Rejection) {
    let key = Key {
        family: Family::Rejection,
        small: [why as u8, 0],
        ptrs: [ptr(listener), 0, 0],
    };
    let labels = || {
        (
            [Some(listener.clone()), Some(Arc::from(why.as_str())), None],
            None,
        )
    };
    record(key, labels, |s| add(&s.value, 1));
}

/// An upstream connection to `addr` opened (`+1`) or closed (`-1`).
pub fn pool_open(addr: SocketAddr, delta: i64) {
    pool(Family::PoolOpen, addr, delta);
}

/// A connection to `addr` went idle in a pool (`+1`) or left it (`-1`).
pub fn pool_idle(addr: SocketAddr, delta: i64) {
    pool(Family::PoolIdle, addr, delta);
}

fn pool(family: Family, addr: SocketAddr, delta: i64) {
    let (ip, port) = match addr {
        SocketAddr::V4(a) => (u128::from(a.ip().to_bits()), a.port()),
        SocketAddr::V6(a) => (a.ip().to_bits(), a.port()),
    };
    let key = Key {
        family,
        small: [0, u8::from(addr.is_ipv6())],
        ptrs: [(ip >> 64) as usize, ip as usize, usize::from(port)],
    };
    record(
        key,
        || ([None, None, None], Some(addr)),
        |s| add(&s.value, delta),
    );
}

/// Requests answered so far per route (`""` without one), summed over workers:
/// `[all, 4xx, 5xx]`.
pub fn route_totals() -> HashMap<String, [u64; 3]> {
    let mut out: HashMap<String, [u64; 3]> = HashMap::new();
    for_each_series(|s| {
        if s.family != Family::Request {
            return;
        }
        let v = u64::try_from(s.value.load(Ordering::Relaxed)).unwrap_or(0);
        let e = out.entry(text(&s.labels[1])).or_default();
        e[0] += v;
        match s.small[1] {
            3 => e[1] += v,
            4 => e[2] += v,
            _ => {}
        }
    });
    out
}

/// Bytes the request-path series take, every worker's (an estimate).
pub fn memory_bytes() -> usize {
    let mut n = 0usize;
    for_each_series(|s| {
        n += std::mem::size_of::<Series>() + 64;
        if let Some(h) = &s.hist {
            n += h.buckets.len() * (8 + std::mem::size_of::<Mutex<Option<Exemplar>>>());
        }
    });
    n
}

/// Upstream connections by target address: (open, idle), summed over workers.
pub fn pool_gauges() -> HashMap<SocketAddr, (i64, i64)> {
    let mut out: HashMap<SocketAddr, (i64, i64)> = HashMap::new();
    for_each_series(|s| {
        let Some(addr) = s.addr else { return };
        let e = out.entry(addr).or_default();
        let v = s.value.load(Ordering::Relaxed);
        match s.family {
            Family::PoolOpen => e.0 += v,
            Family::PoolIdle => e.1 += v,
            _ => {}
        }
    });
    out
}

fn for_each_series(mut f: impl FnMut(&Series)) {
    let shards: Vec<Arc<Shard>> = shards().lock().unwrap_or_else(|p| p.into_inner()).clone();
    for shard in shards {
        let series = shard
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for s in &series {
            f(s);
        }
    }
}

/// The text being written for one scrape: Prometheus text 0.0.4, or OpenMetrics 1.0
/// (counter and info families named without their sample suffix, exemplars on histogram
/// buckets, `# EOF` at the end).
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    open_metrics: bool,
    /// A reused buffer for one sample's labels.
    labels: String,
    /// Samples written so far.
    written: usize,
    /// Yield the thread after every this many samples (0: never).
    yield_every: usize,
}

impl Exposition {
    /// An OpenMetrics 1.0 exposition.
    pub fn open_metrics() -> Self {
        Self {
            open_metrics: true,
            ..Self::default()
        }
    }

    /// An exposition written into `buffer` (emptied first): a scraper that keeps its
    /// buffers saves a large allocation, and the kernel zeroing its pages, per scrape.
    pub fn in_buffer(mut buffer: String, open_metrics: bool) -> Self {
        buffer.clear();
        Self {
            out: buffer,
            open_metrics,
            ..Self::default()
        }
    }

    /// Yields the thread to any other that wants its core after every `samples` samples:
    /// a long scrape then never holds a core a worker waits for longer than that takes
    /// (tens of microseconds), whatever the scheduler's time slice.
    pub fn yield_every(&mut self, samples: usize) {
        self.yield_every = samples;
    }

    /// Room for `bytes` more text: a caller that knows the last scrape's size saves the
    /// string's repeated doubling (a copy and fresh zeroed pages each time).
    pub fn reserve(&mut self, bytes: usize) {
        self.out.reserve(bytes);
    }

    /// Starts a family: its HELP and TYPE lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let (name, kind) = if !self.open_metrics {
            (name, kind)
        } else if kind == "counter" {
            (name.strip_suffix("_total").unwrap_or(name), kind)
        } else if kind == "gauge" && name.ends_with("_info") {
            (name.strip_suffix("_info").unwrap_or(name), "info")
        } else {
            (name, kind)
        };
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.sample_with(name, labels, value, None);
    }

    /// One sample, with an exemplar in OpenMetrics.
    fn sample_with(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: f64,
        exemplar: Option<Exemplar>,
    ) {
        let mut text = std::mem::take(&mut self.labels);
        text.clear();
        label_text(&mut text, labels);
        self.sample_text(name, &text, None, value, exemplar);
        self.labels = text;
    }

    /// One sample whose labels are already written out (`a="x",b="y"`, escaped), plus
    /// `extra`: a histogram writes its series' labels once, not once per bucket.
    fn sample_text(
        &mut self,
        name: &str,
        labels: &str,
        extra: Option<(&str, &str)>,
        value: f64,
        exemplar: Option<Exemplar>,
    ) {
        self.written += 1;
        if self.yield_every > 0 && self.written.is_multiple_of(self.yield_every) {
            std::thread::yield_now();
        }
        let out = &mut self.out;
        out.push_str(name);
        if !labels.is_empty() || extra.is_some() {
            out.push('{');
            out.push_str(labels);
            if let Some((k, v)) = extra {
                if !labels.is_empty() {
                    out.push(',');
                }
                label_text(out, &[(k, v)]);
            }
            out.push('}');
        }
        out.push(' ');
        push_number(out, value);
        if let Some(x) = exemplar.filter(|_| self.open_metrics) {
            let _ = write!(
                out,
                " # {{trace_id=\"{}\"}} {} {}.{:03}",
                gatehouse_core::trace::hex(&x.trace_id),
                x.nanos as f64 / 1e9,
                x.unix_ms / 1000,
                x.unix_ms % 1000
            );
        }
        out.push('\n');
    }

    /// The text.
    pub fn finish(mut self) -> String {
        if self.open_metrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// Writes `k="v",...` with the values escaped.
fn label_text(out: &mut String, labels: &[(&str, &str)]) {
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape(out, v);
        out.push('"');
    }
}

fn escape(out: &mut String, v: &str) {
    // Most values need no escaping: copied whole.
    if !v.contains(['\\', '"', '\n']) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Writes a sample value: whole numbers without a fraction, infinities as `+Inf`/`-Inf`.
fn push_number(out: &mut String, v: f64) {
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        out.push_str(itoa::Buffer::new().format(v as i64));
    } else {
        let _ = write!(out, "{v}");
    }
}

/// The `le` label of each bucket (seconds; `+Inf` last), written once per process.
fn le_labels() -> &'static [String] {
    static LE: OnceLock<Vec<String>> = OnceLock::new();
    LE.get_or_init(|| {
        let mut le: Vec<String> = bounds()
            .iter()
            .map(|b| {
                let mut t = String::new();
                push_number(&mut t, *b as f64 / 1e9);
                t
            })
            .collect();
        le.push("+Inf".into());
        le
    })
}

struct HistSum {
    buckets: Vec<u64>,
    sum_nanos: u64,
    exemplars: Vec<Option<Exemplar>>,
}

impl Default for HistSum {
    fn default() -> Self {
        let n = bounds().len() + 1;
        Self {
            buckets: vec![0; n],
            sum_nanos: 0,
            exemplars: vec![None; n],
        }
    }
}

impl HistSum {
    fn add(&mut self, h: &Hist) {
        for (a, b) in self.buckets.iter_mut().zip(h.buckets.iter()) {
            *a += b.load(Ordering::Relaxed);
        }
        self.sum_nanos += h.sum_nanos.load(Ordering::Relaxed);
        // The newest exemplar of each bucket across the workers.
        for (mine, theirs) in self.exemplars.iter_mut().zip(h.exemplars.iter()) {
            let theirs = *theirs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = theirs
                && mine.is_none_or(|m| m.unix_ms <= t.unix_ms)
            {
                *mine = Some(t);
            }
        }
    }

    fn write(&self, e: &mut Exposition, name: &str, labels: &[(&str, &str)]) {
        let mut text = String::new();
        label_text(&mut text, labels);
        let mut suffixed = String::with_capacity(name.len() + 7);
        suffixed.push_str(name);
        suffixed.push_str("_bucket");
        let mut cumulative = 0u64;
        for (i, le) in le_labels().iter().enumerate() {
            cumulative += self.buckets[i];
            e.sample_text(
                &suffixed,
                &text,
                Some(("le", le)),
                cumulative as f64,
                self.exemplars[i],
            );
        }
        suffixed.truncate(name.len());
        suffixed.push_str("_sum");
        e.sample_text(&suffixed, &text, None, self.sum_nanos as f64 / 1e9, None);
        suffixed.truncate(name.len());
        suffixed.push_str("_count");
        e.sample_text(&suffixed, &text, None, cumulative as f64, None);
    }
}

/// A label's value: its name, or empty.
fn label_of(l: &Option<Arc<str>>) -> &str {
    l.as_deref().unwrap_or("")
}

fn text(l: &Option<Arc<str>>) -> String {
    l.as_deref().unwrap_or("").to_string()
}

/// Writes the families recorded on the request path, summed over every worker.
pub fn write_recorded(e: &mut Exposition) {
    type Labels = Vec<String>;
    type Name = Option<Arc<str>>;
    // Keyed by the series' own names (shared, not copied) and label indexes.
    let mut requests: BTreeMap<(Name, Name, u8, u8), i64> = BTreeMap::new();
    let mut durations: BTreeMap<(Name, u8, u8), HistSum> = BTreeMap::new();
    let mut upstream: BTreeMap<(Name, Name, u8), i64> = BTreeMap::new();
    let mut upstream_durations: BTreeMap<(Name, Name), HistSum> = BTreeMap::new();
    let mut plain: BTreeMap<(u8, Labels), i64> = BTreeMap::new();
    let mut active = 0i64;
    let shards: Vec<Arc<Shard>> = shards().lock().unwrap_or_else(|p| p.into_inner()).clone();
    for shard in &shards {
        active += shard.active.load(Ordering::Relaxed);
    }
    for_each_series(|s| {
        let v = s.value.load(Ordering::Relaxed);
        let [a, b, c] = &s.labels;
        match s.family {
            Family::Request => {
                let (method, class) = (s.small[0], s.small[1]);
                *requests
                    .entry((a.clone(), b.clone(), method, class))
                    .or_default() += v;
                if let Some(h) = &s.hist {
                    durations
                        .entry((b.clone(), method, class))
                        .or_default()
                        .add(h);
                }
            }
            Family::Upstream => {
                let class = s.small[0];
                *upstream.entry((a.clone(), b.clone(), class)).or_default() += v;
                if let Some(h) = &s.hist {
                    upstream_durations
                        .entry((a.clone(), b.clone()))
                        .or_default()
                        .add(h);
                }
            }
            Family::ShortCircuit => {
                *plain
                    .entry((0, vec![text(a), text(b), text(c)]))
                    .or_default() += v;
            }
            Family::Connection => {
                let result = if s.small[0] == 1 {
                    "accepted"
                } else {
                    "rejected"
                };
                *plain.entry((1, vec![text(a), result.into()])).or_default() += v;
            }
            Family::Rejection => {
                *plain.entry((2, vec![text(a), text(b)])).or_default() += v;
            }
            Family::Retry => {
                let result = if s.small[0] == 1 { "sent" } else { "denied" };
                *plain.entry((3, vec![text(a), result.into()])).or_default() += v;
            }
            Family::PoolOpen | Family::PoolIdle => {}
        }
    });

    e.family(name::HTTP_SERVER_REQUESTS, "counter", "Requests served.");
    for ((listener, route, method, class), v) in &requests {
        let labels = [
            ("listener", label_of(listener)),
            ("route", label_of(route)),
            ("method", METHODS[usize::from(*method)]),
            ("status_class", CLASSES[usize::from(*class)]),
        ];
        e.sample(name::HTTP_SERVER_REQUESTS, &labels, *v as f64);
    }
    e.family(
        name::HTTP_SERVER_REQUEST_DURATION,
        "histogram",
        "Time from the request head to the end of the response.",
    );
    for ((route, method, class), h) in &durations {
        let labels = [
            ("route", label_of(route)),
            ("method", METHODS[usize::from(*method)]),
            ("status_class", CLASSES[usize::from(*class)]),
        ];
        h.write(e, name::HTTP_SERVER_REQUEST_DURATION, &labels);
    }
    e.family(
        name::HTTP_SERVER_ACTIVE_REQUESTS,
        "gauge",
        "Requests in progress.",
    );
    e.sample(name::HTTP_SERVER_ACTIVE_REQUESTS, &[], active.max(0) as f64);
    e.family(
        name::UPSTREAM_REQUESTS,
        "counter",
        "Upstream tries, retries included.",
    );
    for ((up, target, class), v) in &upstream {
        let labels = [
            ("upstream", label_of(up)),
            ("target", label_of(target)),
            ("status_class", CLASSES[usize::from(*class)]),
        ];
        e.sample(name::UPSTREAM_REQUESTS, &labels, *v as f64);
    }
    e.family(
        name::UPSTREAM_REQUEST_DURATION,
        "histogram",
        "Time of a try that got a response: connect and wait for the response head.",
    );
    for ((up, target), h) in &upstream_durations {
        let labels = [("upstream", label_of(up)), ("target", label_of(target))];
        h.write(e, name::UPSTREAM_REQUEST_DURATION, &labels);
    }
    let families: [(&str, &str, [&str; 3]); 4] = [
        (
            name::SHORT_CIRCUITS,
            "Answers a policy gave itself.",
            ["route", "policy", "reason"],
        ),
        (
            name::LISTENER_CONNECTIONS,
            "Connections accepted or rejected at accept.",
            ["listener", "result", ""],
        ),
        (
            name::REQUEST_REJECTIONS,
            "Requests refused for their head or body.",
            ["listener", "reason", ""],
        ),
        (
            name::UPSTREAM_RETRIES,
            "Retries sent or denied.",
            ["upstream", "result", ""],
        ),
    ];
    for (i, (metric, help, keys)) in families.iter().enumerate() {
        e.family(metric, "counter", help);
        for ((_, l), v) in plain.range((i as u8, Vec::new())..(i as u8 + 1, Vec::new())) {
            let labels: Vec<(&str, &str)> = keys
                .iter()
                .zip(l)
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (*k, v.as_str()))
                .collect();
            e.sample(metric, &labels, *v as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_summed_over_threads_and_reloaded_names() {
        let listener: Arc<str> = Arc::from("unit-listener");
        let route_a: Arc<str> = Arc::from("unit-route");
        // The same route name compiled again by a reload: another allocation.
        let route_b: Arc<str> = Arc::from("unit-route");
        let get = http::Method::GET;
        request(
            &listener,
            Some(&route_a),
            &get,
            200,
            Duration::from_millis(3),
            None,
        );
        let (l2, r2) = (listener.clone(), route_b.clone());
        std::thread::spawn(move || {
            request(
                &l2,
                Some(&r2),
                &http::Method::GET,
                204,
                Duration::from_millis(30),
                None,
            );
            request(
                &l2,
                Some(&r2),
                &http::Method::from_bytes(b"BREW").unwrap(),
                503,
                Duration::from_secs(20),
                None,
            );
        })
        .join()
        .unwrap();
        let mut e = Exposition::default();
        write_recorded(&mut e);
        let text = e.finish();
        assert!(text.contains("gatehouse_http_server_requests_total{listener=\"unit-listener\",route=\"unit-route\",method=\"GET\",status_class=\"2xx\"} 2"), "{text}");
        assert!(
            text.contains("method=\"_OTHER\",status_class=\"5xx\"} 1"),
            "{text}"
        );
        assert!(text.contains("gatehouse_http_server_request_duration_seconds_bucket{route=\"unit-route\",method=\"GET\",status_class=\"2xx\",le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("gatehouse_http_server_request_duration_seconds_bucket{route=\"unit-route\",method=\"GET\",status_class=\"2xx\",le=\"0.05\"} 2"), "{text}");
        assert!(text.contains("gatehouse_http_server_request_duration_seconds_bucket{route=\"unit-route\",method=\"_OTHER\",status_class=\"5xx\",le=\"+Inf\"} 1"), "{text}");
        assert!(text.contains("gatehouse_http_server_request_duration_seconds_sum{route=\"unit-route\",method=\"GET\",status_class=\"2xx\"} 0.033"), "{text}");
    }

    #[test]
    fn open_metrics_names_counters_by_family_and_ends_with_eof() {
        let mut e = Exposition::open_metrics();
        e.family("x_requests_total", "counter", "h");
        e.sample("x_requests_total", &[], 2.0);
        e.family("x_build_info", "gauge", "h");
        e.sample("x_build_info", &[("version", "1")], 1.0);
        let t = e.finish();
        assert!(
            t.contains("# TYPE x_requests counter\nx_requests_total 2\n"),
            "{t}"
        );
        assert!(
            t.contains("# TYPE x_build info\nx_build_info{version=\"1\"} 1\n"),
            "{t}"
        );
        assert!(t.ends_with("# EOF\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::default();
        e.sample("m", &[("k", "a\"b\\c\nd")], 1.5);
        assert_eq!(e.finish(), "m{k=\"a\\\"b\\\\c\\nd\"} 1.5\n");
    }
}
