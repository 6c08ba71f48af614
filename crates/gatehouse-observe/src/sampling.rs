//! Which requests the access log writes: every request the `always` rule names (errors
//! from `status_from`, requests slower than `slower_than`, every short circuit), and the
//! others with probability `sample`, drawn from a per-thread generator (no lock, no
//! syscall per request).

use gatehouse_config::observability::AccessLogConfig;
use std::time::Duration;

/// The sampling rule of one config.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    sample: f64,
    status_from: u16,
    slower_than: Duration,
}

impl Sampling {
    /// The rule of `cfg`.
    pub fn of(cfg: &AccessLogConfig) -> Self {
        Self {
            sample: cfg.sample,
            status_from: cfg.always.status_from,
            slower_than: cfg.always.slower_than.get(),
        }
    }

    /// `Some(sample_rate)` when a request with `status`, taking `took`, that a policy
    /// answered (`short_circuit`) is written: 1 for the `always` ones, `sample` for a
    /// sampled one; `None` when it is left out.
    pub fn decide(&self, status: u16, took: Duration, short_circuit: bool) -> Option<f64> {
        if status >= self.status_from || took > self.slower_than || short_circuit {
            return Some(1.0);
        }
        if self.sample >= 1.0 {
            return Some(1.0);
        }
        (self.sample > 0.0 && fastrand::f64() < self.sample).then_some(self.sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_lines_are_kept_and_others_follow_the_share() {
        let cfg: AccessLogConfig = gatehouse_config::observability::AccessLogForm::Detailed(
            serde_json::from_value(serde_json::json!({"sample": 0.1})).unwrap(),
        )
        .into();
        let s = Sampling::of(&cfg);
        let ms = Duration::from_millis;
        assert_eq!(s.decide(500, ms(1), false), Some(1.0));
        assert_eq!(s.decide(200, ms(1_500), false), Some(1.0));
        assert_eq!(s.decide(200, ms(1), true), Some(1.0));
        let kept = (0..20_000)
            .filter(|_| s.decide(200, ms(1), false).is_some())
            .count();
        assert!((1_600..2_400).contains(&kept), "{kept} of 20000 at 0.1");
        assert_eq!(s.decide(200, ms(1), false).unwrap_or(0.1), 0.1);
    }
}
