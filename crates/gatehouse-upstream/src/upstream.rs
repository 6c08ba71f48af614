//! One upstream's live state: its targets, balancer and settings.

use crate::balancer::{Balancer, Pick, PickInput};
use crate::breaker::Breaker;
use crate::budget::Budget;
use crate::clock::now_ms;
use crate::hash::hash64;
use crate::target::TargetState;
use gatehouse_config::validate::{HashOn, parse_hash_on};
use gatehouse_config::{BalancerKind, Retries, RetryOn, Upstream};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// An upstream as the data plane sees it; shared by workers, rebuilt only when its config changes.
#[derive(Debug)]
pub struct UpstreamState {
    /// Upstream name.
    pub name: Arc<str>,
    /// The config it was built from (compared on reload).
    pub config: Upstream,
    /// Targets in config order.
    pub targets: Vec<Arc<TargetState>>,
    weights: Vec<u32>,
    balancer: Balancer,
    hash_on: Option<HashOn>,
    /// The retry policy in force (the implicit one when the config has none).
    pub retries: Retries,
    /// `retries.on`, parsed.
    pub retry_on: RetryOn,
    /// Caps the extra load of retries.
    pub budget: Budget,
    /// The circuit breaker, when configured.
    pub breaker: Option<Breaker>,
    in_flight: Arc<AtomicU64>,
}

/// Holds one slot of the upstream's `max_concurrent_requests` until dropped.
#[derive(Debug)]
pub struct Slot(Option<Arc<AtomicU64>>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl UpstreamState {
    /// Builds the state, reusing target state from `previous` by address.
    pub fn build(name: &str, config: &Upstream, previous: Option<&UpstreamState>) -> Self {
        let targets: Vec<Arc<TargetState>> = config
            .targets
            .iter()
            .map(|t| {
                let reuse = previous
                    .and_then(|p| p.targets.iter().find(|old| *old.address == *t.address))
                    .cloned();
                reuse.unwrap_or_else(|| {
                    let (host, port) = gatehouse_config::validate::parse_target(&t.address)
                        .unwrap_or_else(|_| (t.address.clone(), 80));
                    Arc::new(TargetState::new(t.address.clone(), host, port))
                })
            })
            .collect();
        let weights: Vec<u32> = config.targets.iter().map(|t| t.weight).collect();
        let pairs: Vec<(String, u32)> = config
            .targets
            .iter()
            .map(|t| (t.address.clone(), t.weight))
            .collect();
        let hash_on = match (config.balancer, &config.hash_on) {
            (BalancerKind::IpHash, _) => Some(HashOn::Ip),
            (_, Some(h)) => parse_hash_on(h).ok(),
            _ => None,
        };
        let retries = config.retries.clone().unwrap_or_else(Retries::implicit);
        Self {
            name: name.into(),
            config: config.clone(),
            targets,
            weights,
            balancer: Balancer::new(config.balancer, &pairs),
            hash_on,
            retry_on: RetryOn::parse(&retries.on).unwrap_or_default(),
            budget: Budget::new(retries.budget),
            retries,
            breaker: config.circuit_breaker.map(|c| Breaker::new(name, c)),
            in_flight: Arc::default(),
        }
    }

    /// Takes a slot under `circuit_breaker.max_concurrent_requests`; `None` when full.
    pub fn begin_request(&self) -> Option<Slot> {
        let Some(cap) = self
            .config
            .circuit_breaker
            .and_then(|c| c.max_concurrent_requests)
        else {
            return Some(Slot(None));
        };
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= cap {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Slot(Some(self.in_flight.clone())))
    }

    /// Requests in flight on this upstream (counted only when it has a cap).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Records the outcome of one try on target `index` for the passive health check.
    pub fn record_outcome(&self, index: usize, failed: bool) {
        let Some(p) = &self.config.health_check.passive else {
            return;
        };
        let Some(t) = self.targets.get(index) else {
            return;
        };
        let now = now_ms();
        let ejected = if failed {
            self.targets
                .iter()
                .filter(|t| t.health.ejected_until(now).is_some())
                .count()
        } else {
            0
        };
        if let Some(until) = t.health.record(failed, p, ejected, self.targets.len()) {
            tracing::warn!(
                upstream = %self.name,
                target = %t.address,
                ejected_for_ms = until.saturating_sub(now),
                "target ejected after consecutive failures"
            );
        }
    }

    /// Whether a request with `method` may be sent again after it reached a target: the
    /// policy allows more than one try, the method, and some post-send outcome.
    pub fn resends_after_send(&self, method: &str) -> bool {
        let on = &self.retry_on;
        self.retries.attempts > 1
            && self.retries.methods.allows(method)
            && (on.reset || on.timeout || !on.statuses.is_empty())
    }

    /// Whether any target may take a request now.
    pub fn any_healthy(&self) -> bool {
        let now = std::cell::OnceCell::new();
        self.targets
            .iter()
            .any(|t| t.health.usable_with(|| *now.get_or_init(now_ms)))
    }

    /// Milliseconds until some target might take traffic again, for Retry-After when
    /// none can now: the earliest ejection end, else the active check interval.
    pub fn retry_after_ms(&self) -> u64 {
        let now = now_ms();
        let ejection = self
            .targets
            .iter()
            .filter_map(|t| t.health.ejected_until(now))
            .min()
            .map(|until| until - now);
        let probe = self
            .config
            .health_check
            .active
            .as_ref()
            .map(|a| a.interval.get().as_millis() as u64);
        ejection.or(probe).unwrap_or(1000)
    }

    /// Hash of the request's `hash_on` value; `None` falls back to the client IP.
    pub fn hash_key(&self, req: &http::request::Parts, client_ip: IpAddr) -> Option<u64> {
        request_hash(self.hash_on.as_ref()?, req, client_ip)
    }

    /// Picks a healthy target for a request, avoiding the targets in `tried` (earlier
    /// tries of the same request) when another one is healthy. A target in slow start
    /// keeps only `ramp` of the turns the balancer gives it; a declined turn goes to a
    /// random other healthy target, so the balancer's own rotation is not disturbed and
    /// the target's share is its normal share times the ramp. `None` when no target is
    /// healthy.
    pub fn pick(
        &self,
        input: &PickInput<'_>,
        tried: &[usize],
    ) -> Option<(Pick, &Arc<TargetState>)> {
        // The clock is read only when some target was ever ejected or admitted late.
        let now = std::cell::OnceCell::new();
        let now = || *now.get_or_init(now_ms);
        let healthy = |i: usize| {
            self.targets
                .get(i)
                .is_some_and(|t| t.health.usable_with(now))
        };
        let untried = |i: usize| healthy(i) && !tried.contains(&i);
        let mut p = self
            .balancer
            .pick(&self.targets, &self.weights, input, &untried)
            .or_else(|| {
                self.balancer
                    .pick(&self.targets, &self.weights, input, &healthy)
            })?;
        // A client pinned by its sticky cookie stays where it is.
        let pinned = self.config.balancer == BalancerKind::Sticky && !p.set_cookie;
        if let Some(window) = self.config.slow_start.map(|d| d.get())
            && !pinned
        {
            let ramp = |i: usize| self.targets[i].health.ramp(Some(window), now());
            let share = ramp(p.index);
            if share < 1.0 && fastrand::f64() >= share {
                let n = self.targets.len();
                let start = fastrand::usize(..n);
                let substitute = (0..n)
                    .map(|k| (start + k) % n)
                    .filter(|&i| i != p.index && self.weights[i] > 0 && untried(i))
                    .find(|&i| ramp(i) >= 1.0);
                if let Some(i) = substitute {
                    p = Pick {
                        index: i,
                        set_cookie: p.set_cookie,
                    };
                }
            }
        }
        self.targets.get(p.index).map(|t| (p, t))
    }

    /// The sticky cookie name, when this upstream is sticky.
    pub fn sticky_cookie(&self) -> Option<&str> {
        (self.config.balancer == BalancerKind::Sticky).then_some(self.config.sticky.cookie.as_str())
    }
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// The hash of the part of `req` that `on` names (`None` when the request lacks it): the
/// key of consistent hashing, and of `split_hash_on`.
pub fn request_hash(on: &HashOn, req: &http::request::Parts, client_ip: IpAddr) -> Option<u64> {
    let key = match on {
        HashOn::Ip => return Some(crate::balancer::ip_hash(client_ip)),
        HashOn::Path => return Some(hash64(req.uri.path().as_bytes())),
        HashOn::Header(name) => req.headers.get(name.as_str())?.as_bytes().to_vec(),
        HashOn::Cookie(name) => cookie(&req.headers, name)?.as_bytes().to_vec(),
        HashOn::Query(name) => {
            let q = req.uri.query()?;
            q.split('&')
                .find_map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k == name).then_some(v)
                })?
                .as_bytes()
                .to_vec()
        }
    };
    Some(hash64(&key))
}
