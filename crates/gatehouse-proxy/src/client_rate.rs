//! `request_rate_per_ip`: a token bucket per client address on a listener, checked
//! before routing. The counters are shared by every worker and kept while the
//! listener's rate stays the same (a reload that changes it starts afresh).

use gatehouse_config::RequestRate;
use gatehouse_policies::limiter::{Algorithm, Decision, Limiter, Rate};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Client addresses a listener's limiter tracks at most; beyond, addresses at rest are
/// forgotten first (which can only make the limit more lenient, never stricter).
const MAX_CLIENTS: usize = 100_000;

/// The limiter of one listener's `request_rate_per_ip`, rebuilt only when it changes.
#[derive(Debug, Default)]
pub struct ClientRates {
    current: Mutex<Option<(Rate, Arc<ClientRate>)>>,
}

impl ClientRates {
    /// The limiter for `config` (none without one): the running one when the rate is
    /// unchanged.
    pub fn limiter(&self, config: Option<&RequestRate>) -> Option<Arc<ClientRate>> {
        let config = config?;
        let rate = Rate {
            limit: config.limit,
            per_ns: u64::try_from(config.per.get().as_nanos()).unwrap_or(u64::MAX),
            burst: config.burst.unwrap_or(config.limit),
        };
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match &*current {
            Some((r, l)) if *r == rate => Some(Arc::clone(l)),
            _ => {
                let l = Arc::new(ClientRate(Limiter::new(
                    Algorithm::TokenBucket,
                    rate,
                    MAX_CLIENTS,
                )));
                *current = Some((rate, Arc::clone(&l)));
                Some(l)
            }
        }
    }
}

/// A listener's per-client token buckets.
#[derive(Debug)]
pub struct ClientRate(Limiter);

impl ClientRate {
    /// Counts one request from `key` (a client as `protection` counts it) at `now`
    /// (the limiter's clock).
    pub fn check(&self, key: IpAddr, now: u64) -> Decision {
        self.0.check(self.0.key(key), now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::Duration;

    fn rate(limit: u64, burst: Option<u64>) -> RequestRate {
        RequestRate {
            limit,
            per: Duration(std::time::Duration::from_secs(1)),
            burst,
        }
    }

    #[test]
    fn a_burst_then_the_steady_rate_per_client() {
        let rates = ClientRates::default();
        let l = rates.limiter(Some(&rate(2, Some(3)))).unwrap();
        let (a, b) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let t0 = 1_000_000_000_000;
        let allowed = (0..5).filter(|_| l.check(a, t0).allowed).count();
        assert_eq!(allowed, 3);
        assert!(l.check(b, t0).allowed);
        // Half a second refills one request at 2/s.
        assert!(l.check(a, t0 + 500_000_000).allowed);
        assert!(!l.check(a, t0 + 500_000_000).allowed);
    }

    #[test]
    fn the_limiter_is_kept_while_the_rate_is_unchanged() {
        let rates = ClientRates::default();
        let a = rates.limiter(Some(&rate(5, None))).unwrap();
        let b = rates.limiter(Some(&rate(5, None))).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = rates.limiter(Some(&rate(6, None))).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(rates.limiter(None).is_none());
    }
}
