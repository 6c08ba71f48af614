//! The last requests, kept for `GET /admin/transactions` whatever the access log's
//! sampling: a ring of at most `analytics.transactions` records, newest first on read,
//! shared by every worker and kept across reloads (the capacity follows the config).
//! Long fields are cut to [`FIELD_LIMIT`] bytes in the ring, so its memory is bounded by
//! the capacity, not by what clients send.

use crate::access_log::{AccessRecord, Phases, ShortCircuitRecord, ms, rfc3339};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// Longest request target (path and query) kept in the ring, in bytes.
pub const TARGET_LIMIT: usize = 1024;
/// Longest user agent, host or error kept in the ring, in bytes.
pub const FIELD_LIMIT: usize = 512;

/// One finished request as the gateway saw it: what the access log and the
/// transactions render, kept cheaply (names and the request target are shared, not
/// copied; text is made only when a line is written or a search reads it).
#[derive(Debug, Clone)]
pub struct Transaction {
    /// When the request started.
    pub started: SystemTime,
    /// Request id.
    pub request_id: String,
    /// W3C trace id.
    pub trace_id: [u8; 16],
    /// Client IP after trusted proxies.
    pub client_ip: IpAddr,
    /// Listener name.
    pub listener: Arc<str>,
    /// The consumer, when one authenticated.
    pub consumer: Option<Arc<gatehouse_core::Consumer>>,
    /// Method.
    pub method: http::Method,
    /// Host.
    pub host: String,
    /// The request target as received.
    pub uri: http::Uri,
    /// Protocol version.
    pub version: http::Version,
    /// User-Agent.
    pub user_agent: Option<http::HeaderValue>,
    /// Response status.
    pub status: u16,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Matched route.
    pub route: Option<Arc<str>>,
    /// Upstream.
    pub upstream: Option<Arc<str>>,
    /// Upstream target.
    pub upstream_target: Option<Arc<str>>,
    /// Tries sent upstream.
    pub attempts: u32,
    /// Time in policies.
    pub policies: Duration,
    /// Time to an upstream connection.
    pub upstream_connect: Option<Duration>,
    /// Time to the upstream response head.
    pub upstream_first_byte: Option<Duration>,
    /// Whole request.
    pub total: Duration,
    /// The total split by who took it.
    pub breakdown: crate::phases::Breakdown,
    /// The policy that answered, and why.
    pub short_circuit: Option<(String, &'static str)>,
    /// Error detail of a response the gateway made.
    pub error: Option<String>,
    /// What policies added to the line (`RequestCtx::log`).
    pub annotations: Vec<(&'static str, serde_json::Value)>,
}

/// The version as written in a request line.
fn version_text(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

impl Transaction {
    /// Its device class (from the User-Agent).
    pub fn device(&self) -> &'static str {
        crate::device::classify(self.user_agent.as_ref().and_then(|v| v.to_str().ok()))
    }

    /// The consumer's name.
    pub fn consumer_name(&self) -> Option<&str> {
        self.consumer.as_ref().map(|c| c.name.as_str())
    }

    /// The record written to the access log (with `sample_rate`) and shown by searches.
    pub fn record(&self, sample_rate: Option<f64>) -> AccessRecord {
        let ua = self.user_agent.as_ref().and_then(|v| v.to_str().ok());
        AccessRecord {
            timestamp: rfc3339(self.started),
            request_id: self.request_id.clone(),
            trace_id: gatehouse_core::trace::hex(&self.trace_id),
            client_ip: self.client_ip,
            listener: self.listener.clone(),
            consumer: self.consumer_name().map(str::to_string),
            method: self.method.as_str().to_string(),
            host: self.host.clone(),
            path: self.uri.path().to_string(),
            query: self.uri.query().map(str::to_string),
            http_version: version_text(self.version),
            user_agent: ua.map(str::to_string),
            device: crate::device::classify(ua),
            status: self.status,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            route: self.route.clone(),
            upstream: self.upstream.clone(),
            upstream_target: self.upstream_target.clone(),
            attempts: self.attempts,
            upstream_latency_ms: self.upstream_first_byte.map(ms),
            total_latency_ms: ms(self.total),
            phases: Phases {
                policies_ms: ms(self.policies),
                upstream_connect_ms: self.upstream_connect.map(ms),
                upstream_first_byte_ms: self.upstream_first_byte.map(ms),
                total_ms: ms(self.total),
                client_ms: ms(self.breakdown.client),
                gateway_ms: ms(self.breakdown.gateway),
                upstream_network_ms: ms(self.breakdown.upstream_network),
                upstream_app_ms: ms(self.breakdown.upstream_app),
            },
            short_circuit: self
                .short_circuit
                .as_ref()
                .map(|(policy, reason)| ShortCircuitRecord {
                    policy: policy.clone(),
                    reason,
                }),
            error: self.error.clone(),
            sample_rate,
            annotations: self
                .annotations
                .iter()
                .filter(|(k, _)| !crate::access_log::FIELDS.contains(k))
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
        }
    }
}

struct Ring {
    items: Mutex<VecDeque<Arc<Transaction>>>,
    capacity: AtomicUsize,
}

fn ring() -> &'static Ring {
    static RING: OnceLock<Ring> = OnceLock::new();
    RING.get_or_init(|| Ring {
        items: Mutex::new(VecDeque::new()),
        capacity: AtomicUsize::new(0),
    })
}

/// Sets how many records are kept (`analytics.transactions`); 0 keeps none.
pub fn set_capacity(n: usize) {
    let r = ring();
    r.capacity.store(n, Ordering::Relaxed);
    let mut items = r.items.lock().unwrap_or_else(|p| p.into_inner());
    while items.len() > n {
        items.pop_front();
    }
    items.shrink_to(n);
}

/// Bytes the kept records take (an estimate: the records and their text).
pub fn memory_bytes() -> usize {
    let items = ring().items.lock().unwrap_or_else(|p| p.into_inner());
    items
        .iter()
        .map(|t| {
            std::mem::size_of::<Transaction>()
                + 16
                + t.request_id.len()
                + t.host.len()
                + t.uri.path_and_query().map_or(0, |pq| pq.as_str().len())
                + t.user_agent.as_ref().map_or(0, http::HeaderValue::len)
                + t.error.as_ref().map_or(0, String::len)
        })
        .sum::<usize>()
        + items.capacity() * std::mem::size_of::<usize>()
}

/// Whether records are kept at all (saves building them).
pub fn is_on() -> bool {
    ring().capacity.load(Ordering::Relaxed) > 0
}

fn cut(s: &mut String, limit: usize) {
    if s.len() > limit {
        let end = (0..=limit)
            .rev()
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        s.truncate(end);
    }
}

/// Cuts what a client made long, so a kept record's memory is bounded.
fn bounded(mut t: Transaction) -> Transaction {
    let target = t.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > TARGET_LIMIT {
        let text = t.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
        // Target bytes are ASCII: any cut is a boundary, and still a valid target.
        t.uri = http::Uri::try_from(&text[..TARGET_LIMIT])
            .unwrap_or_else(|_| http::Uri::from_static("/"));
    }
    if let Some(ua) = &t.user_agent
        && ua.len() > FIELD_LIMIT
    {
        t.user_agent = http::HeaderValue::from_bytes(&ua.as_bytes()[..FIELD_LIMIT]).ok();
    }
    cut(&mut t.host, FIELD_LIMIT);
    if let Some(e) = &mut t.error {
        cut(e, FIELD_LIMIT);
    }
    t
}

/// Keeps `t` (cut to the limits), dropping the oldest beyond the capacity.
pub fn keep(t: Transaction) {
    let r = ring();
    let cap = r.capacity.load(Ordering::Relaxed);
    if cap == 0 {
        return;
    }
    let t = Arc::new(bounded(t));
    let old = {
        let mut items = r.items.lock().unwrap_or_else(|p| p.into_inner());
        let old = if items.len() >= cap {
            items.pop_front()
        } else {
            None
        };
        items.push_back(t);
        old
    };
    // Freed outside the lock.
    drop(old);
}

/// The kept records that `matches` accepts, newest first, at most `limit`.
pub fn search(limit: usize, matches: impl Fn(&Transaction) -> bool) -> Vec<Arc<Transaction>> {
    let items: Vec<Arc<Transaction>> = {
        let items = ring().items.lock().unwrap_or_else(|p| p.into_inner());
        // Copy the pointers out: filtering runs without holding the workers' lock.
        items.iter().cloned().collect()
    };
    items
        .into_iter()
        .rev()
        .filter(|r| matches(r))
        .take(limit)
        .collect()
}
