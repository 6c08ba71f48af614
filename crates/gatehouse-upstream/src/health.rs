//! Health of one target: the verdict of active probes, passive ejection with doubling
//! ejection times, and the slow-start ramp after re-admission. Lives in `TargetState`,
//! so it survives reloads for as long as the target's address stays.

use crate::clock::now_ms;
use gatehouse_config::PassiveCheck;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Health state of one target, shared by every worker.
#[derive(Debug, Default)]
pub struct Health {
    /// Set by the active checker when probes failed `unhealthy_threshold` times.
    active_down: AtomicBool,
    /// Passive ejection end (ms on [`now_ms`]'s clock); 0 when never ejected.
    ejected_until: AtomicU64,
    /// Ejections so far; each doubles the next ejection time.
    ejections: AtomicU32,
    /// Failed requests in a row seen by the passive check.
    consecutive_failures: AtomicU32,
    /// When the target last became usable again (ms); 0 = since start, no ramp.
    admitted_at: AtomicU64,
    /// Health transitions (down or up, active or passive), for the admin API.
    transitions: AtomicU64,
    /// Passive ejections since start (never reset; the metric of the same name).
    ejections_total: AtomicU64,
}

/// Why a target is not taking traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Usable.
    Healthy,
    /// Failed active probes.
    ActiveDown,
    /// Ejected by the passive check until this time (ms).
    Ejected(u64),
}

impl Health {
    /// Passive ejections since start.
    pub fn ejections_total(&self) -> u64 {
        self.ejections_total.load(Ordering::Relaxed)
    }

    /// Whether the target may get new requests at `now` (ms).
    pub fn usable(&self, now: u64) -> bool {
        self.usable_with(|| now)
    }

    /// Like [`Health::usable`], reading the clock only when an ejection was ever recorded.
    pub fn usable_with(&self, now: impl Fn() -> u64) -> bool {
        if self.active_down.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || until <= now()
    }

    /// The target's state at `now`.
    pub fn verdict(&self, now: u64) -> Verdict {
        if self.active_down.load(Ordering::Relaxed) {
            return Verdict::ActiveDown;
        }
        match self.ejected_until.load(Ordering::Relaxed) {
            until if until > now => Verdict::Ejected(until),
            _ => Verdict::Healthy,
        }
    }

    /// Passive ejection end in ms, when ejected at `now`.
    pub fn ejected_until(&self, now: u64) -> Option<u64> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        (until > now).then_some(until)
    }

    /// Health transitions so far.
    pub fn transitions(&self) -> u64 {
        self.transitions.load(Ordering::Relaxed)
    }

    /// Share of its normal traffic the target should get at `now` under `slow_start`:
    /// from 10% right after re-admission up to 100% at the end of the window.
    pub fn ramp(&self, slow_start: Option<Duration>, now: u64) -> f64 {
        let Some(window) = slow_start else {
            return 1.0;
        };
        let since = self.admitted_at.load(Ordering::Relaxed);
        let window_ms = window.as_millis() as f64;
        if since == 0 || window_ms <= 0.0 {
            return 1.0;
        }
        if now <= since {
            return 0.1;
        }
        ((now - since) as f64 / window_ms).clamp(0.1, 1.0)
    }

    /// Records an active probe verdict change; returns true when it changed the state.
    pub fn set_active(&self, healthy: bool) -> bool {
        let was_down = self.active_down.swap(!healthy, Ordering::Relaxed);
        let changed = was_down == healthy;
        if changed {
            self.transitions.fetch_add(1, Ordering::Relaxed);
            self.ejections_total.fetch_add(1, Ordering::Relaxed);
            if healthy {
                self.admitted_at.store(now_ms().max(1), Ordering::Relaxed);
                // A target that proved itself again starts over on ejection doubling.
                self.ejections.store(0, Ordering::Relaxed);
            }
        }
        changed
    }

    /// Whether active probes currently hold the target down.
    pub fn active_down(&self) -> bool {
        self.active_down.load(Ordering::Relaxed)
    }

    /// Records a request outcome for the passive check. Returns the ejection end when
    /// this failure ejected the target. `ejected_now` counts the upstream's targets
    /// ejected at this moment, `total` its targets, for `max_ejected_percent`.
    pub fn record(
        &self,
        failed: bool,
        p: &PassiveCheck,
        ejected_now: usize,
        total: usize,
    ) -> Option<u64> {
        if !failed {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            return None;
        }
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now_ms();
        if n < p.consecutive_failures || self.ejected_until.load(Ordering::Relaxed) > now {
            return None;
        }
        // Never eject past the cap, but always allow one ejection (Envoy does the same):
        // with 2 targets and 50% one may go.
        let cap = (total * p.max_ejected_percent as usize / 100).max(1);
        if ejected_now >= cap {
            return None;
        }
        let k = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let base = p.ejection_time.get().as_millis() as u64;
        let max = p.max_ejection_time.get().as_millis() as u64;
        let time = base.saturating_mul(1u64 << k).min(max).max(1);
        let until = now + time;
        self.ejected_until.store(until, Ordering::Relaxed);
        self.admitted_at.store(until, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.transitions.fetch_add(1, Ordering::Relaxed);
        Some(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passive(n: u32) -> PassiveCheck {
        PassiveCheck {
            consecutive_failures: n,
            ejection_time: gatehouse_config::Duration::from_millis(1000),
            max_ejection_time: gatehouse_config::Duration::from_millis(3000),
            ..PassiveCheck::default()
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_with_doubling_times() {
        let h = Health::default();
        let p = passive(3);
        assert!(h.record(true, &p, 0, 4).is_none());
        assert!(
            h.record(false, &p, 0, 4).is_none(),
            "a success resets the run"
        );
        assert!(h.record(true, &p, 0, 4).is_none());
        assert!(h.record(true, &p, 0, 4).is_none());
        let until = h.record(true, &p, 0, 4).expect("third failure ejects");
        let now = now_ms();
        assert!(!h.usable(now));
        assert!(until >= now + 900 && until <= now + 1100);
        // Expire it by hand, then eject again: twice as long, capped at max.
        h.ejected_until.store(1, Ordering::Relaxed);
        for _ in 0..3 {
            h.record(true, &p, 0, 4);
        }
        let second = h.ejected_until(now_ms()).expect("ejected again");
        assert!(second >= now_ms() + 1900);
        h.ejected_until.store(1, Ordering::Relaxed);
        h.ejections.store(10, Ordering::Relaxed);
        for _ in 0..3 {
            h.record(true, &p, 0, 4);
        }
        assert!(h.ejected_until(now_ms()).expect("ejected") <= now_ms() + 3000);
    }

    #[test]
    fn max_ejected_percent_caps_ejections() {
        let h = Health::default();
        let p = passive(1);
        // 2 of 4 already out at 50%: no more.
        assert!(h.record(true, &p, 2, 4).is_none());
        assert!(h.usable(now_ms()));
        assert!(h.record(true, &p, 1, 4).is_some());
    }

    #[test]
    fn slow_start_ramps_from_ten_percent() {
        let h = Health::default();
        let w = Some(Duration::from_secs(10));
        assert_eq!(
            h.ramp(w, now_ms()),
            1.0,
            "targets present from the start are not ramped"
        );
        h.admitted_at.store(1000, Ordering::Relaxed);
        assert_eq!(h.ramp(w, 1000), 0.1);
        assert!((h.ramp(w, 6000) - 0.5).abs() < 1e-9);
        assert_eq!(h.ramp(w, 20_000), 1.0);
        assert_eq!(h.ramp(None, 1000), 1.0);
    }

    #[test]
    fn active_verdicts_count_transitions() {
        let h = Health::default();
        assert!(!h.set_active(true), "already healthy");
        assert!(h.set_active(false));
        assert!(!h.usable(now_ms()));
        assert_eq!(h.verdict(now_ms()), Verdict::ActiveDown);
        assert!(h.set_active(true));
        assert!(h.usable(now_ms()));
        assert_eq!(h.transitions(), 2);
    }
}
