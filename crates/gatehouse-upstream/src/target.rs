//! One target: its address, resolved socket addresses, and live load figures.

use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Live state of one target, shared by every worker and kept across reloads.
#[derive(Debug)]
pub struct TargetState {
    /// The address as configured (`host:port`), the target's identity.
    pub address: Arc<str>,
    /// Host part (name or IP).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Current resolution of `host` (one entry for IP literals).
    resolved: ArcSwap<Vec<SocketAddr>>,
    in_flight: AtomicU64,
    /// EWMA of response-head latency in nanoseconds (0 = no sample yet).
    ewma_ns: AtomicU64,
    /// Active and passive health, slow-start ramp.
    pub health: crate::health::Health,
}

/// Decrements the in-flight count when dropped, so every exit path counts.
#[derive(Debug)]
pub struct InFlight(Arc<TargetState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TargetState {
    /// A target for `host:port`; IP literals are resolved at once, names by [`crate::resolve`].
    pub fn new(address: String, host: String, port: u16) -> Self {
        let resolved = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => Vec::new(),
        };
        Self {
            address: address.into(),
            host,
            port,
            resolved: ArcSwap::from_pointee(resolved),
            in_flight: AtomicU64::new(0),
            ewma_ns: AtomicU64::new(0),
            health: crate::health::Health::default(),
        }
    }

    /// Whether the host is a name that needs resolving.
    pub fn is_hostname(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_err()
    }

    /// The socket address to connect to (first resolved), if any is known.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.resolved.load().first().copied()
    }

    /// Replaces the resolved addresses.
    pub fn set_resolved(&self, addrs: Vec<SocketAddr>) {
        self.resolved.store(Arc::new(addrs));
    }

    /// Marks a request as started on this target.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Requests currently in flight to this target (all workers).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Folds a latency sample into the moving average (weight 1/8 for the new sample).
    pub fn record_latency(&self, d: Duration) {
        let sample = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        // A lost race only drops one sample; a CAS loop is not worth it here.
        let old = self.ewma_ns.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.ewma_ns.store(new.max(1), Ordering::Relaxed);
    }

    /// The latency average in nanoseconds (0 before the first sample).
    pub fn ewma_ns(&self) -> u64 {
        self.ewma_ns.load(Ordering::Relaxed)
    }
}
