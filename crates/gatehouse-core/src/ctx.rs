//! Per-request context: what every phase of the pipeline may read or record.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a policy answered a request itself; reaches the access log.
#[derive(Debug, Clone)]
pub struct ShortCircuit {
    /// Name of the policy that answered.
    pub policy: String,
    /// Short machine-readable reason (`ip_denied`, ...).
    pub reason: &'static str,
    /// Status of the local response.
    pub status: u16,
}

/// Where the time of one request went, for the access log.
#[derive(Debug, Clone, Default)]
pub struct PhaseTimings {
    /// Time spent in request and response policies.
    pub policies: Duration,
    /// Time to obtain an upstream connection (zero when a pooled one was reused).
    pub upstream_connect: Option<Duration>,
    /// Time from sending the request upstream to the response head.
    pub upstream_first_byte: Option<Duration>,
}

/// State carried by one request through the pipeline.
#[derive(Debug)]
pub struct RequestCtx {
    /// The request id (kept from the client when well formed, generated otherwise).
    pub request_id: String,
    /// The TCP peer address of the downstream connection.
    pub peer: SocketAddr,
    /// The client IP after applying trusted proxies.
    pub client_ip: IpAddr,
    /// When the request head was received.
    pub started: Instant,
    /// Name of the matched route, if any.
    pub route: Option<Arc<str>>,
    /// Path parameters captured by a template match.
    pub params: Vec<(String, String)>,
    /// Set when a policy or the gateway answered locally.
    pub short_circuit: Option<ShortCircuit>,
    /// Name of the upstream the request was sent to (the split side, for a split).
    pub upstream: Option<Arc<str>>,
    /// Upstream target address that served the request.
    pub upstream_target: Option<Arc<str>>,
    /// Tries sent upstream, retries included.
    pub attempts: u32,
    /// Per-phase timings.
    pub timings: PhaseTimings,
}

impl RequestCtx {
    /// Starts a context for a request from `peer` at `started`.
    pub fn new(request_id: String, peer: SocketAddr, started: Instant) -> Self {
        Self {
            request_id,
            peer,
            client_ip: peer.ip(),
            started,
            route: None,
            params: Vec::new(),
            short_circuit: None,
            upstream: None,
            upstream_target: None,
            attempts: 0,
            timings: PhaseTimings::default(),
        }
    }

    /// The value of a captured path parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}
