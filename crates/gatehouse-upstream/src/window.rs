//! A sliding window of two counters in ten buckets, lock-free: the circuit breaker counts
//! successes and failures in it, the retry budget requests and retries.

use std::sync::atomic::{AtomicU64, Ordering};

const BUCKETS: usize = 10;

#[derive(Debug, Default)]
struct Bucket {
    /// Which bucket period (now / bucket_ms) the counts belong to.
    period: AtomicU64,
    a: AtomicU64,
    b: AtomicU64,
}

/// Two counters summed over the last `BUCKETS` bucket periods.
#[derive(Debug)]
pub struct Window {
    bucket_ms: u64,
    buckets: [Bucket; BUCKETS],
}

/// Which of the two counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// The first (successes, requests).
    A,
    /// The second (failures, retries).
    B,
}

impl Window {
    /// A window of `span_ms` milliseconds.
    pub fn new(span_ms: u64) -> Self {
        Self {
            bucket_ms: (span_ms / BUCKETS as u64).max(1),
            buckets: Default::default(),
        }
    }

    /// Adds one to `which` at `now` (ms).
    pub fn add(&self, which: Counter, now: u64) {
        let period = now / self.bucket_ms;
        let b = &self.buckets[(period % BUCKETS as u64) as usize];
        let seen = b.period.load(Ordering::Acquire);
        if seen != period
            && b.period
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This bucket held an older period: start it over. A concurrent add in the
            // instant between may be lost, which a statistical window tolerates.
            b.a.store(0, Ordering::Relaxed);
            b.b.store(0, Ordering::Relaxed);
        }
        match which {
            Counter::A => b.a.fetch_add(1, Ordering::Relaxed),
            Counter::B => b.b.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Sums of (A, B) over the window ending at `now`.
    pub fn totals(&self, now: u64) -> (u64, u64) {
        let period = now / self.bucket_ms;
        let oldest = period.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| (oldest..=period).contains(&b.period.load(Ordering::Acquire)))
            .fold((0, 0), |(a, c), b| {
                (
                    a + b.a.load(Ordering::Relaxed),
                    c + b.b.load(Ordering::Relaxed),
                )
            })
    }

    /// Forgets everything.
    pub fn clear(&self) {
        for b in &self.buckets {
            b.period.store(u64::MAX, Ordering::Release);
            b.a.store(0, Ordering::Relaxed);
            b.b.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_slide_out_of_the_window() {
        let w = Window::new(1000); // 100 ms buckets
        w.add(Counter::A, 1000);
        w.add(Counter::B, 1050);
        w.add(Counter::A, 1500);
        assert_eq!(w.totals(1500), (2, 1));
        assert_eq!(
            w.totals(2050),
            (1, 0),
            "the 1000-1099 bucket left the window"
        );
        assert_eq!(w.totals(5000), (0, 0));
        w.add(Counter::B, 5000);
        assert_eq!(w.totals(5000), (0, 1), "a reused bucket starts from zero");
        w.clear();
        assert_eq!(w.totals(5000), (0, 0));
    }
}
