//! The retry budget of one upstream: retries may add at most `ratio` of the requests (or
//! `min_per_second`, whichever allows more) over a sliding 10 s window, so retries cannot
//! multiply the load on an upstream that is already failing.

use crate::window::{Counter, Window};
use gatehouse_config::RetryBudget;
use std::sync::atomic::{AtomicU64, Ordering};

const SPAN_MS: u64 = 10_000;

/// Requests and retries of one upstream.
#[derive(Debug)]
pub struct Budget {
    config: RetryBudget,
    window: Window,
    retries: AtomicU64,
    denied: AtomicU64,
}

impl Budget {
    /// A budget with these limits.
    pub fn new(config: RetryBudget) -> Self {
        Self {
            config,
            window: Window::new(SPAN_MS),
            retries: AtomicU64::new(0),
            denied: AtomicU64::new(0),
        }
    }

    /// Counts a first try.
    pub fn request(&self, now: u64) {
        self.window.add(Counter::A, now);
    }

    /// Takes one retry from the budget at `now`, if there is one left.
    pub fn try_retry(&self, now: u64) -> bool {
        let (requests, retries) = self.window.totals(now);
        let floor = u64::from(self.config.min_per_second) * SPAN_MS / 1000;
        let allowed = floor.max((self.config.ratio * requests as f64) as u64);
        if retries >= allowed {
            self.denied.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.window.add(Counter::B, now);
        self.retries.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Retries sent since the upstream was built.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Retries refused by the budget since the upstream was built.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_capped_by_ratio_or_floor() {
        let b = Budget::new(RetryBudget {
            ratio: 0.2,
            min_per_second: 1,
        });
        let t = 50_000;
        // Floor: 1/s over 10 s = 10 retries even with no requests.
        assert_eq!((0..20).filter(|_| b.try_retry(t)).count(), 10);
        // 200 requests: 20% = 40 retries in the window, 10 already used.
        for _ in 0..200 {
            b.request(t);
        }
        assert_eq!((0..100).filter(|_| b.try_retry(t)).count(), 30);
        assert_eq!(b.retries(), 40);
        assert_eq!(b.denied(), 80);
        // Ten seconds later the window is empty again.
        assert_eq!((0..20).filter(|_| b.try_retry(t + 10_000)).count(), 10);
    }
}
