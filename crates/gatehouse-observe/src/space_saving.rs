//! The space-saving summary (Metwally, Agrawal, El Abbadi 2005), weighted: the heaviest
//! keys of a stream in a fixed number of counters. While the keys fit, every count is
//! exact; once they do not, a new key takes the place of the lightest one and inherits
//! its weight as its possible overcount (`error`), so a reported weight is never below
//! the true one and never above it by more than `error`. Summaries merge (workers,
//! time slices) with the same guarantee.

use std::collections::HashMap;
use std::hash::Hash;

/// What is counted beside the ranking weight: the client's other totals (exact while
/// its entry lives; counted from when it entered).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests.
    pub requests: u64,
    /// Answers of 400 or more that no policy gave (not blocked).
    pub errors: u64,
    /// Of those, 4xx.
    pub client_errors: u64,
    /// Requests a policy refused (short circuits of 400 or more).
    pub blocked: u64,
    /// Response body bytes.
    pub bytes: u64,
    /// `policy/reason` of the refusals, at most [`MAX_REASONS`] of them (the first seen).
    pub reasons: Vec<(std::sync::Arc<str>, u64)>,
    /// Attack types a policy found (`RequestCtx::attack`), at most [`MAX_REASONS`].
    pub attacks: Vec<(&'static str, u64)>,
    /// Ids of the rules that matched, at most [`MAX_RULES`] (the first seen).
    pub rules: Vec<(u32, u64)>,
}

/// Rule ids kept per client.
pub const MAX_RULES: usize = 16;

/// Refusal reasons kept per client.
pub const MAX_REASONS: usize = 8;

impl Counts {
    /// Adds `o`.
    pub fn add(&mut self, o: &Counts) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.client_errors += o.client_errors;
        self.blocked += o.blocked;
        self.bytes += o.bytes;
        for (r, n) in &o.reasons {
            self.reason(r, *n);
        }
        for (a, n) in &o.attacks {
            self.attack(a, *n);
        }
        for (r, n) in &o.rules {
            self.rule(*r, *n);
        }
    }

    /// Counts `n` requests with attack type `kind`.
    pub fn attack(&mut self, kind: &'static str, n: u64) {
        if let Some(e) = self.attacks.iter_mut().find(|(k, _)| *k == kind) {
            e.1 += n;
        } else if self.attacks.len() < MAX_REASONS {
            self.attacks.push((kind, n));
        }
    }

    /// Counts `n` matches of rule `id`.
    pub fn rule(&mut self, id: u32, n: u64) {
        if let Some(e) = self.rules.iter_mut().find(|(r, _)| *r == id) {
            e.1 += n;
        } else if self.rules.len() < MAX_RULES {
            self.rules.push((id, n));
        }
    }

    /// Counts `n` refusals for `reason`.
    pub fn reason(&mut self, reason: &std::sync::Arc<str>, n: u64) {
        if let Some(e) = self.reasons.iter_mut().find(|(r, _)| r == reason) {
            e.1 += n;
        } else if self.reasons.len() < MAX_REASONS {
            self.reasons.push((reason.clone(), n));
        }
    }
}

/// One tracked key.
#[derive(Debug, Clone)]
pub struct Entry<K> {
    /// The key.
    pub key: K,
    /// Its ranking weight: at least the true weight, at most `error` above it.
    pub weight: u64,
    /// How much of `weight` may not be its own.
    pub error: u64,
    /// Its other totals since it entered.
    pub counts: Counts,
}

/// A summary of at most `capacity` keys.
#[derive(Debug, Clone)]
pub struct Summary<K> {
    capacity: usize,
    entries: Vec<Entry<K>>,
    index: HashMap<K, usize>,
    /// Entry indexes as a min-heap by weight; `pos[i]` is entry i's place in it.
    heap: Vec<usize>,
    pos: Vec<usize>,
}

impl<K: Hash + Eq + Clone> Summary<K> {
    /// An empty summary of `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Vec::new(),
            index: HashMap::new(),
            heap: Vec::new(),
            pos: Vec::new(),
        }
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether every counter is taken (a new key now evicts the lightest).
    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.capacity
    }

    /// The lightest weight when full (what an untracked key may have had), else 0.
    pub fn floor(&self) -> u64 {
        if self.is_full() {
            self.heap.first().map_or(0, |i| self.entries[*i].weight)
        } else {
            0
        }
    }

    /// The entries, in no order.
    pub fn entries(&self) -> &[Entry<K>] {
        &self.entries
    }

    /// Counts `weight` (and `counts`) for `key`; a zero weight changes nothing.
    pub fn add(&mut self, key: &K, weight: u64, counts: &Counts) {
        self.add_with_error(key, weight, 0, counts);
    }

    fn add_with_error(&mut self, key: &K, weight: u64, error: u64, counts: &Counts) {
        if weight == 0 {
            return;
        }
        if let Some(&i) = self.index.get(key) {
            let e = &mut self.entries[i];
            e.weight += weight;
            e.error += error;
            e.counts.add(counts);
            self.sift_down(self.pos[i]);
            return;
        }
        if !self.is_full() {
            let i = self.entries.len();
            self.entries.push(Entry {
                key: key.clone(),
                weight,
                error,
                counts: counts.clone(),
            });
            self.index.insert(key.clone(), i);
            self.heap.push(i);
            self.pos.push(self.heap.len() - 1);
            self.sift_up(self.heap.len() - 1);
            return;
        }
        // Full: the lightest entry makes room and hands on its weight as possible error.
        let i = self.heap[0];
        let min = self.entries[i].weight;
        let old = std::mem::replace(&mut self.entries[i].key, key.clone());
        self.index.remove(&old);
        self.index.insert(key.clone(), i);
        let e = &mut self.entries[i];
        e.weight = min + weight;
        e.error = min + error;
        e.counts = counts.clone();
        self.sift_down(0);
    }

    /// Adds every entry of `other`. A key `other` does not track may still have had up
    /// to `other`'s floor there, and one this summary does not track up to this one's:
    /// both go into weight and error, so the bound still holds.
    pub fn merge(&mut self, other: &Summary<K>) {
        let (mine, theirs) = (self.floor(), other.floor());
        if theirs > 0 {
            for e in &mut self.entries {
                if !other.index.contains_key(&e.key) {
                    e.weight += theirs;
                    e.error += theirs;
                }
            }
            self.heapify();
        }
        for e in &other.entries {
            let absent_here = !self.index.contains_key(&e.key);
            let extra = if absent_here { mine } else { 0 };
            self.add_with_error(&e.key, e.weight + extra, e.error + extra, &e.counts);
        }
    }

    /// The entries by weight, heaviest first (ties by smaller error).
    pub fn ranked(&self) -> Vec<&Entry<K>> {
        let mut v: Vec<&Entry<K>> = self.entries.iter().collect();
        v.sort_by(|a, b| b.weight.cmp(&a.weight).then(a.error.cmp(&b.error)));
        v
    }

    fn heapify(&mut self) {
        for p in (0..self.heap.len() / 2).rev() {
            self.sift_down(p);
        }
    }

    fn weight_at(&self, p: usize) -> u64 {
        self.entries[self.heap[p]].weight
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a]] = a;
        self.pos[self.heap[b]] = b;
    }

    fn sift_up(&mut self, mut p: usize) {
        while p > 0 {
            let parent = (p - 1) / 2;
            if self.weight_at(p) >= self.weight_at(parent) {
                break;
            }
            self.swap(p, parent);
            p = parent;
        }
    }

    fn sift_down(&mut self, mut p: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * p + 1, 2 * p + 2);
            let mut least = p;
            if l < n && self.weight_at(l) < self.weight_at(least) {
                least = l;
            }
            if r < n && self.weight_at(r) < self.weight_at(least) {
                least = r;
            }
            if least == p {
                return;
            }
            self.swap(p, least);
            p = least;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one() -> Counts {
        Counts {
            requests: 1,
            ..Counts::default()
        }
    }

    #[test]
    fn attacks_and_rules_are_counted_within_their_bounds() {
        let mut c = Counts::default();
        for id in 0..40u32 {
            c.rule(id, 1);
            c.attack(["sqli", "xss"][id as usize % 2], 1);
        }
        c.rule(3, 2);
        assert_eq!(c.rules.len(), MAX_RULES);
        assert_eq!(c.rules[3], (3, 3));
        assert_eq!(c.attacks, [("sqli", 20), ("xss", 20)]);
        let mut d = Counts::default();
        d.add(&c);
        d.add(&c);
        assert_eq!(d.attacks[0], ("sqli", 40));
        assert_eq!(d.rules.len(), MAX_RULES);
    }

    #[test]
    fn exact_while_the_keys_fit() {
        let mut s = Summary::new(3);
        for k in [1, 2, 1, 3, 1, 2] {
            s.add(&k, 1, &one());
        }
        let r = s.ranked();
        assert_eq!((r[0].key, r[0].weight, r[0].error), (1, 3, 0));
        assert_eq!((r[1].key, r[1].weight), (2, 2));
        assert_eq!(r[0].counts.requests, 3);
        assert!(!s.is_full() || s.floor() == 1);
    }

    #[test]
    fn a_new_key_takes_the_lightest_place() {
        let mut s = Summary::new(2);
        s.add(&"a", 5, &one());
        s.add(&"b", 1, &one());
        s.add(&"c", 2, &one());
        let r = s.ranked();
        assert_eq!(s.len(), 2);
        assert_eq!((r[0].key, r[0].weight), ("a", 5));
        assert_eq!((r[1].key, r[1].weight, r[1].error), ("c", 3, 1));
    }

    fn truth(stream: &[(u8, u64)]) -> HashMap<u8, u64> {
        let mut t = HashMap::new();
        for (k, w) in stream {
            *t.entry(*k).or_default() += w;
        }
        t
    }

    fn check(s: &Summary<u8>, t: &HashMap<u8, u64>) -> Result<(), TestCaseError> {
        for e in s.entries() {
            let real = t.get(&e.key).copied().unwrap_or(0);
            prop_assert!(e.weight >= real, "{} under: {} < {}", e.key, e.weight, real);
            prop_assert!(
                e.weight - real <= e.error,
                "{} over by more than its error",
                e.key
            );
        }
        // Any key heavier than the floor is tracked.
        for (k, w) in t {
            if *w > s.floor() {
                prop_assert!(s.entries().iter().any(|e| e.key == *k), "{k} ({w}) lost");
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn weights_are_never_under_and_over_by_at_most_the_error(
            stream in proptest::collection::vec((0u8..40, 1u64..20), 0..400),
            cap in 1usize..30,
        ) {
            let mut s = Summary::new(cap);
            for (k, w) in &stream {
                s.add(k, *w, &one());
            }
            check(&s, &truth(&stream))?;
            if truth(&stream).len() <= cap {
                prop_assert!(s.entries().iter().all(|e| e.error == 0), "exact while they fit");
            }
        }

        #[test]
        fn merged_summaries_keep_the_bound(
            a in proptest::collection::vec((0u8..40, 1u64..20), 0..300),
            b in proptest::collection::vec((0u8..40, 1u64..20), 0..300),
            cap in 1usize..30,
        ) {
            let (mut sa, mut sb) = (Summary::new(cap), Summary::new(cap));
            for (k, w) in &a {
                sa.add(k, *w, &one());
            }
            for (k, w) in &b {
                sb.add(k, *w, &one());
            }
            sa.merge(&sb);
            let all: Vec<(u8, u64)> = a.iter().chain(&b).copied().collect();
            check(&sa, &truth(&all))?;
        }
    }
}
