//! The circuit breaker of one upstream: closed, open (fail fast), half-open (a few trial
//! requests decide). Lock-free; shared by every worker and kept across reloads while the
//! upstream's definition is unchanged.

use crate::window::{Counter, Window};
use gatehouse_config::CircuitBreaker as Config;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// Breaker state, as shown by the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests flow.
    Closed,
    /// Requests fail fast.
    Open,
    /// A few trial requests are let through.
    HalfOpen,
}

impl State {
    /// Lower-case name for logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// How a request was let through; hand it back to [`Breaker::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: counted in the window.
    Normal,
    /// Half-open: one of the trial requests.
    Trial,
}

/// The breaker of one upstream.
#[derive(Debug)]
pub struct Breaker {
    upstream: String,
    config: Config,
    state: AtomicU8,
    opened_at: AtomicU64,
    trials_in_flight: AtomicU32,
    trial_successes: AtomicU32,
    window: Window,
    opened: AtomicU64,
}

impl Breaker {
    /// A closed breaker for `upstream`.
    pub fn new(upstream: &str, config: Config) -> Self {
        Self {
            upstream: upstream.to_string(),
            window: Window::new(config.window.get().as_millis() as u64),
            config,
            state: AtomicU8::new(CLOSED),
            opened_at: AtomicU64::new(0),
            trials_in_flight: AtomicU32::new(0),
            trial_successes: AtomicU32::new(0),
            opened: AtomicU64::new(0),
        }
    }

    /// The current state at `now` (an open breaker past `open_for` reads half-open).
    pub fn state(&self, now: u64) -> State {
        match self.state.load(Ordering::Acquire) {
            CLOSED => State::Closed,
            OPEN if now >= self.reopen_at() => State::HalfOpen,
            OPEN => State::Open,
            _ => State::HalfOpen,
        }
    }

    /// Times the breaker opened.
    pub fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    fn reopen_at(&self) -> u64 {
        self.opened_at.load(Ordering::Acquire) + self.config.open_for.get().as_millis() as u64
    }

    /// Lets a request through, or says how many ms until it might (fail fast).
    pub fn admit(&self, now: u64) -> Result<Admission, u64> {
        match self.state.load(Ordering::Acquire) {
            CLOSED => return Ok(Admission::Normal),
            OPEN => {
                let at = self.reopen_at();
                if now < at {
                    return Err(at - now);
                }
                if self
                    .state
                    .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.trials_in_flight.store(0, Ordering::Release);
                    self.trial_successes.store(0, Ordering::Release);
                    tracing::warn!(upstream = %self.upstream, "circuit breaker half-open");
                }
            }
            _ => {}
        }
        if self.state.load(Ordering::Acquire) == CLOSED {
            return Ok(Admission::Normal);
        }
        let permits = self.config.half_open_requests;
        if self.trials_in_flight.fetch_add(1, Ordering::AcqRel) < permits {
            Ok(Admission::Trial)
        } else {
            self.trials_in_flight.fetch_sub(1, Ordering::AcqRel);
            // Trials are out; they decide within one request time. Ask for a second.
            Err(1000)
        }
    }

    /// Hands back a trial permit whose request ended without an outcome (the client went
    /// away, or no target could be tried), so half-open never runs out of permits.
    pub fn release(&self, how: Admission) {
        if how == Admission::Trial {
            self.trials_in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Records the outcome of a request admitted as `how`.
    pub fn record(&self, how: Admission, failed: bool, now: u64) {
        match how {
            Admission::Trial => {
                self.trials_in_flight.fetch_sub(1, Ordering::AcqRel);
                if self.state.load(Ordering::Acquire) != HALF_OPEN {
                    return;
                }
                if failed {
                    self.open(HALF_OPEN, now, "a half-open trial failed");
                } else if self.trial_successes.fetch_add(1, Ordering::AcqRel) + 1
                    >= self.config.half_open_requests
                    && self
                        .state
                        .compare_exchange(HALF_OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    self.window.clear();
                    tracing::warn!(upstream = %self.upstream, "circuit breaker closed");
                }
            }
            Admission::Normal => {
                self.window
                    .add(if failed { Counter::B } else { Counter::A }, now);
                if !failed || self.state.load(Ordering::Acquire) != CLOSED {
                    return;
                }
                let (ok, bad) = self.window.totals(now);
                let total = ok + bad;
                if total >= u64::from(self.config.min_requests)
                    && bad as f64 >= self.config.failure_ratio * total as f64
                {
                    self.open(CLOSED, now, "failure ratio reached");
                }
            }
        }
    }

    fn open(&self, from: u8, now: u64, why: &str) {
        self.opened_at.store(now, Ordering::Release);
        if self
            .state
            .compare_exchange(from, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(upstream = %self.upstream, reason = why, open_for = ?self.config.open_for.get(), "circuit breaker open");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::Duration;

    fn config() -> Config {
        Config {
            failure_ratio: 0.5,
            min_requests: 4,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            half_open_requests: 2,
            max_concurrent_requests: None,
        }
    }

    #[test]
    fn opens_half_opens_and_closes() {
        let b = Breaker::new("u", config());
        let t = 100_000;
        for failed in [false, true, false] {
            let a = b.admit(t).unwrap();
            b.record(a, failed, t);
        }
        assert_eq!(b.state(t), State::Closed, "below min_requests");
        let a = b.admit(t).unwrap();
        b.record(a, true, t);
        assert_eq!(b.state(t), State::Open, "2 of 4 failed");
        assert_eq!(b.admit(t + 1000), Err(4000));

        // Half-open after open_for: two trials at most, a failure reopens.
        let t2 = t + 5000;
        assert_eq!(b.admit(t2), Ok(Admission::Trial));
        assert_eq!(b.admit(t2), Ok(Admission::Trial));
        assert!(b.admit(t2).is_err(), "only half_open_requests trials");
        b.record(Admission::Trial, true, t2);
        assert_eq!(b.state(t2), State::Open);
        b.record(Admission::Trial, false, t2);
        assert_eq!(b.state(t2), State::Open, "a late success does not close it");

        // Next half-open: two successes close it.
        let t3 = t2 + 5000;
        let a1 = b.admit(t3).unwrap();
        let a2 = b.admit(t3).unwrap();
        b.record(a1, false, t3);
        assert_eq!(b.state(t3), State::HalfOpen);
        b.record(a2, false, t3);
        assert_eq!(b.state(t3), State::Closed);
        assert_eq!(b.admit(t3), Ok(Admission::Normal));
        assert_eq!(b.times_opened(), 2);
    }

    #[test]
    fn released_trials_free_their_permits() {
        let b = Breaker::new("u", config());
        let t = 100_000;
        for _ in 0..4 {
            let a = b.admit(t).unwrap();
            b.record(a, true, t);
        }
        let t2 = t + 5000;
        let a1 = b.admit(t2).unwrap();
        let a2 = b.admit(t2).unwrap();
        assert!(b.admit(t2).is_err());
        // Both requests were cancelled before an outcome.
        b.release(a1);
        b.release(a2);
        assert_eq!(b.admit(t2), Ok(Admission::Trial));
        assert_eq!(b.state(t2), State::HalfOpen);
    }
}
