//! What one `waf` policy has done since it was created, for `GET /admin/protection/waf`:
//! requests inspected, blocked and detected, and per rule how often it matched. Runtime
//! state under (`waf`, policy name): a reload keeps the counts (a new mode starts a new
//! tally that carries them over).

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The state kind tallies are found under (named by their policy).
pub const STATE: &str = "waf";

/// One rule's count.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct RuleCount {
    /// Requests it matched in.
    pub hits: u64,
    /// Its attack type, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack: Option<&'static str>,
}

/// A policy's counts.
#[derive(Debug, Default)]
pub struct WafTally {
    /// `block` or `detect`.
    pub mode: &'static str,
    inspected: AtomicU64,
    blocked: AtomicU64,
    detected: AtomicU64,
    /// By rule id; CRS has some 500 request rules, so this stays small.
    rules: Mutex<BTreeMap<u32, RuleCount>>,
}

/// A tally as the admin API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TallyView {
    /// `block` or `detect`.
    pub mode: &'static str,
    /// Requests inspected.
    pub inspected: u64,
    /// Requests refused.
    pub blocked: u64,
    /// Requests that matched and went on (detect mode, or under the threshold).
    pub detected: u64,
    /// Rule id to its count.
    pub rules: BTreeMap<u32, RuleCount>,
}

impl WafTally {
    /// A tally for a policy in `mode`, carrying the counts of `old` (the same policy
    /// before a reload) over.
    pub fn new(mode: &'static str, old: Option<&WafTally>) -> Self {
        let t = Self {
            mode,
            ..Self::default()
        };
        if let Some(o) = old {
            let v = o.view();
            t.inspected.store(v.inspected, Ordering::Relaxed);
            t.blocked.store(v.blocked, Ordering::Relaxed);
            t.detected.store(v.detected, Ordering::Relaxed);
            *t.rules.lock().unwrap_or_else(|p| p.into_inner()) = v.rules;
        }
        t
    }

    /// One request inspected.
    pub fn inspected(&self) {
        self.inspected.fetch_add(1, Ordering::Relaxed);
    }

    /// One request that matched: refused or not, and its rules with their attack types.
    pub fn matched(&self, blocked: bool, rules: impl Iterator<Item = (u32, Option<&'static str>)>) {
        let outcome = if blocked {
            &self.blocked
        } else {
            &self.detected
        };
        outcome.fetch_add(1, Ordering::Relaxed);
        let mut counts = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        for (id, attack) in rules {
            let c = counts.entry(id).or_insert(RuleCount { hits: 0, attack });
            c.hits += 1;
        }
    }

    /// The counts now.
    pub fn view(&self) -> TallyView {
        TallyView {
            mode: self.mode,
            inspected: self.inspected.load(Ordering::Relaxed),
            blocked: self.blocked.load(Ordering::Relaxed),
            detected: self.detected.load(Ordering::Relaxed),
            rules: self.rules.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_carry_over_to_a_new_mode() {
        let t = WafTally::new("block", None);
        t.inspected();
        t.inspected();
        t.matched(true, [(942100, Some("sqli")), (920350, None)].into_iter());
        t.matched(false, [(942100, Some("sqli"))].into_iter());
        let n = WafTally::new("detect", Some(&t));
        let v = n.view();
        assert_eq!(
            (v.mode, v.inspected, v.blocked, v.detected),
            ("detect", 2, 1, 1)
        );
        assert_eq!(
            v.rules[&942100],
            RuleCount {
                hits: 2,
                attack: Some("sqli")
            }
        );
        assert_eq!(v.rules[&920350].attack, None);
    }
}
