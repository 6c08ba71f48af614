//! Local rate-limit counters: one table per named `rate_limit` policy, shared by every
//! worker thread (a limit of 100/s is 100/s whatever `--threads` says) and kept in the
//! state registry across reloads that do not change the policy.
//!
//! Keys are 64-bit hashes of the request's key parts under a per-process random key (no
//! allocation per request; a client cannot aim for another's counter). The table is
//! sharded, each shard a small map behind its own lock, and bounded: when a shard is
//! full, keys at rest (a bucket refilled, a window over: forgetting them changes
//! nothing) go first, and only if too few are at rest are active ones dropped, which can
//! only make the limit more lenient for them, never stricter. A flood of distinct keys
//! therefore costs bounded memory.
//!
//! The algorithms are pure functions of the state and a clock (`now`, nanoseconds on a
//! monotonic clock aligned to the Unix epoch at start), so tests drive them with a
//! controlled clock:
//! - token bucket and leaky bucket: GCRA, one "theoretical arrival time" per key; a
//!   token bucket holds `burst` (default `limit`), a leaky bucket lets `burst` (default 0)
//!   requests in beyond the steady rate (nginx's `limit_req ... burst=N nodelay`);
//! - fixed window: a count per window aligned to the clock (`per` long);
//! - sliding window: the current window's count plus the previous one's weighted by how
//!   much of it still overlaps the last `per` (Cloudflare's approximation);
//! - sliding log: the exact time of each of the last `limit` requests.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// How requests are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// GCRA with a bucket of `burst` tokens.
    TokenBucket,
    /// GCRA at the steady rate with `burst` extra.
    LeakyBucket,
    /// A count per aligned window.
    FixedWindow,
    /// Two windows, the previous one weighted.
    SlidingWindow,
    /// Every request's time over the last window.
    SlidingLog,
}

/// What a limit allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per `per_ns`.
    pub limit: u64,
    /// The window, in nanoseconds.
    pub per_ns: u64,
    /// Bucket size (token bucket) or extra requests (leaky bucket); ignored by windows.
    pub burst: u64,
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may pass (it was counted).
    pub allowed: bool,
    /// Requests still allowed now.
    pub remaining: u64,
    /// Nanoseconds until the budget is whole again.
    pub reset_ns: u64,
    /// When refused: nanoseconds until a request would pass.
    pub retry_ns: u64,
}

/// The clock's origin: an instant and the Unix time then, read once.
fn origin() -> &'static (Instant, u64) {
    static START: OnceLock<(Instant, u64)> = OnceLock::new();
    START.get_or_init(|| {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        (Instant::now(), unix)
    })
}

/// Nanoseconds since the Unix epoch, on a monotonic clock (wall time read once).
pub fn now() -> u64 {
    at(Instant::now())
}

/// [`now`] at `instant` (a request's start, already read: no clock call).
pub fn at(instant: Instant) -> u64 {
    let (start, unix) = origin();
    let since = instant.saturating_duration_since(*start);
    unix.saturating_add(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

/// One key's state.
#[derive(Debug, Clone)]
enum State {
    /// GCRA: the theoretical arrival time.
    Gcra(u64),
    /// A window's start and count, and the previous window's count.
    Window { start: u64, count: u64, prev: u64 },
    /// Times of the requests in the last window, oldest first.
    Log(VecDeque<u64>),
}

/// A hasher for keys that are already hashes.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = Mutex<HashMap<u64, State, BuildHasherDefault<Prehashed>>>;

const SHARDS: usize = 64;

/// The counters of one limit.
pub struct Limiter {
    algorithm: Algorithm,
    rate: Rate,
    shards: Box<[Shard]>,
    per_shard: usize,
    keys: ahash::RandomState,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Limiter({:?}, {:?})", self.algorithm, self.rate)
    }
}

impl Limiter {
    /// Counters for `rate` by `algorithm`, for at most about `max_keys` keys.
    pub fn new(algorithm: Algorithm, rate: Rate, max_keys: usize) -> Self {
        Self::keyed(algorithm, rate, max_keys, ahash::RandomState::new())
    }

    /// Like [`Limiter::new`], with keys hashed under `seeds`: every process given the same
    /// seeds hashes a key alike (cluster scope, where gateways share counters by key).
    pub fn seeded(algorithm: Algorithm, rate: Rate, max_keys: usize, seeds: [u64; 4]) -> Self {
        let [a, b, c, d] = seeds;
        Self::keyed(
            algorithm,
            rate,
            max_keys,
            ahash::RandomState::with_seeds(a, b, c, d),
        )
    }

    fn keyed(algorithm: Algorithm, rate: Rate, max_keys: usize, keys: ahash::RandomState) -> Self {
        Self {
            algorithm,
            rate,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: (max_keys / SHARDS).max(16),
            keys,
        }
    }

    /// The limit it enforces.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// The key of a request from its parts (any hashable value), under this process's
    /// secret.
    pub fn key(&self, parts: impl Hash) -> u64 {
        self.keys.hash_one(parts)
    }

    /// A hasher under this process's secret, to build a key part by part.
    pub fn hasher(&self) -> impl Hasher {
        self.keys.build_hasher()
    }

    fn shard(
        &self,
        key: u64,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, State, BuildHasherDefault<Prehashed>>> {
        let i = (key >> 58) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a request of `key` at `now` if the limit allows it.
    pub fn check(&self, key: u64, now: u64) -> Decision {
        let mut shard = self.shard(key);
        if let Some(state) = shard.get_mut(&key) {
            return step(self.algorithm, self.rate, state, now, 0).0;
        }
        if shard.len() >= self.per_shard {
            self.make_room(&mut shard, now);
        }
        let state = shard.entry(key).or_insert_with(|| self.fresh(now));
        step(self.algorithm, self.rate, state, now, 0).0
    }

    /// Like [`Limiter::check`], but a request that would be refused may instead take a
    /// slot at most `max_delay_ns` ahead (buckets only): `Ok(delay)` to wait before
    /// passing (0: at once), `Err` when even that is too far.
    pub fn reserve(&self, key: u64, now: u64, max_delay_ns: u64) -> Result<u64, Decision> {
        let mut shard = self.shard(key);
        if !shard.contains_key(&key) && shard.len() >= self.per_shard {
            self.make_room(&mut shard, now);
        }
        let state = shard.entry(key).or_insert_with(|| self.fresh(now));
        match step(self.algorithm, self.rate, state, now, max_delay_ns) {
            (d, delay) if d.allowed => Ok(delay),
            (d, _) => Err(d),
        }
    }

    /// The budget of `key` at `now`, without counting a request.
    pub fn peek(&self, key: u64, now: u64) -> Decision {
        let shard = self.shard(key);
        let mut state = shard.get(&key).cloned().unwrap_or_else(|| self.fresh(now));
        let mut d = step(self.algorithm, self.rate, &mut state, now, 0).0;
        if d.allowed {
            d.remaining += 1;
        }
        d
    }

    /// Gives back the request of `key` counted last (another limit refused it, so it
    /// used no budget here). Windows give back a count, buckets a token, the log its
    /// latest time.
    pub fn refund(&self, key: u64, now: u64) {
        let mut shard = self.shard(key);
        let Some(state) = shard.get_mut(&key) else {
            return;
        };
        match state {
            State::Gcra(tat) => {
                let t = (self.rate.per_ns / self.rate.limit.max(1)).max(1);
                *tat = tat.saturating_sub(t).max(now.min(*tat));
            }
            State::Window { count, .. } => *count = count.saturating_sub(1),
            State::Log(times) => {
                times.pop_back();
            }
        }
    }

    /// Forgets `key` (its budget is whole again).
    pub fn reset(&self, key: u64) {
        self.shard(key).remove(&key);
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fresh(&self, now: u64) -> State {
        match self.algorithm {
            Algorithm::TokenBucket | Algorithm::LeakyBucket => State::Gcra(now),
            Algorithm::FixedWindow | Algorithm::SlidingWindow => State::Window {
                start: now - now % self.rate.per_ns.max(1),
                count: 0,
                prev: 0,
            },
            Algorithm::SlidingLog => State::Log(VecDeque::new()),
        }
    }

    /// Drops keys at rest; if that frees less than an eighth of the shard, drops others
    /// until it does (each flood of new keys pays for the next eighth at once).
    fn make_room(&self, shard: &mut HashMap<u64, State, BuildHasherDefault<Prehashed>>, now: u64) {
        let (algorithm, rate) = (self.algorithm, self.rate);
        shard.retain(|_, s| !at_rest(algorithm, rate, s, now));
        let target = self.per_shard - self.per_shard / 8;
        if shard.len() > target {
            let extra: Vec<u64> = shard.keys().take(shard.len() - target).copied().collect();
            for k in extra {
                shard.remove(&k);
            }
        }
    }
}

/// Whether forgetting this state changes no future decision.
fn at_rest(algorithm: Algorithm, rate: Rate, s: &State, now: u64) -> bool {
    match (algorithm, s) {
        (_, State::Gcra(tat)) => *tat <= now,
        (Algorithm::FixedWindow, State::Window { start, .. }) => {
            now >= start.saturating_add(rate.per_ns)
        }
        (_, State::Window { start, .. }) => now >= start.saturating_add(2 * rate.per_ns),
        (_, State::Log(times)) => times
            .back()
            .is_none_or(|t| now >= t.saturating_add(rate.per_ns)),
    }
}

/// One decision: counts the request when allowed. For buckets, `max_delay` > 0 lets a
/// request that is too early take the slot it would get if it waited, up to that long;
/// the second value is that wait.
fn step(
    algorithm: Algorithm,
    rate: Rate,
    s: &mut State,
    now: u64,
    max_delay: u64,
) -> (Decision, u64) {
    match s {
        State::Gcra(tat) => {
            // In u64 nanoseconds, saturating: a bucket longer than 584 years is endless.
            let capacity = match algorithm {
                Algorithm::LeakyBucket => rate.burst.saturating_add(1),
                _ => rate.burst.max(1),
            };
            let t = (rate.per_ns / rate.limit.max(1)).max(1);
            let cap = t.saturating_mul(capacity);
            let base = (*tat).max(now);
            let next = base.saturating_add(t);
            let ahead = next - now;
            let delay = ahead.saturating_sub(cap);
            let allowed = delay <= max_delay;
            if allowed {
                *tat = next;
            }
            let used = if allowed { ahead } else { base - now };
            let d = Decision {
                allowed,
                remaining: cap.saturating_sub(used) / t,
                reset_ns: used,
                retry_ns: if allowed { 0 } else { delay },
            };
            (d, if allowed { delay } else { 0 })
        }
        State::Window { start, count, prev } => {
            let per = u128::from(rate.per_ns.max(1));
            let limit = u128::from(rate.limit.max(1));
            let per64 = rate.per_ns.max(1);
            if now >= start.saturating_add(per64) {
                let aligned = now - now % per64;
                *prev = if aligned == start.saturating_add(per64) {
                    *count
                } else {
                    0
                };
                *count = 0;
                *start = aligned;
            }
            // Another thread may have read the clock later and rolled the window first.
            let into = u128::from(now.saturating_sub(*start)).min(per);
            let reset = start.saturating_add(per64).saturating_sub(now);
            let weighted = match algorithm {
                // Rounded up: the estimate never admits more than the limit.
                Algorithm::SlidingWindow => (u128::from(*prev) * (per - into)).div_ceil(per),
                _ => 0,
            };
            let used = weighted + u128::from(*count);
            let allowed = used < limit;
            if allowed {
                *count += 1;
            }
            let after = used + u128::from(allowed);
            let retry = match algorithm {
                // The previous window's weight falls as time passes: wait until one
                // request's worth of it has gone, or the window ends.
                Algorithm::SlidingWindow if !allowed && *prev > 0 && u128::from(*count) < limit => {
                    let excess = (after + 1).saturating_sub(limit);
                    let ns = excess * per / u128::from(*prev);
                    u64::try_from(ns).unwrap_or(reset).min(reset)
                }
                _ => reset,
            };
            let d = Decision {
                allowed,
                remaining: u64::try_from(limit.saturating_sub(after)).unwrap_or(0),
                reset_ns: reset,
                retry_ns: if allowed { 0 } else { retry.max(1) },
            };
            (d, 0)
        }
        State::Log(times) => {
            let limit = u128::from(rate.limit.max(1));
            while times
                .front()
                .is_some_and(|t| now >= t.saturating_add(rate.per_ns))
            {
                times.pop_front();
            }
            let allowed = (times.len() as u128) < limit;
            if allowed {
                times.push_back(now);
            }
            let oldest_end = times
                .front()
                .map_or(0, |t| t.saturating_add(rate.per_ns).saturating_sub(now));
            let d = Decision {
                allowed,
                remaining: u64::try_from(limit.saturating_sub(times.len() as u128)).unwrap_or(0),
                reset_ns: times
                    .back()
                    .map_or(0, |t| t.saturating_add(rate.per_ns).saturating_sub(now)),
                retry_ns: if allowed { 0 } else { oldest_end.max(1) },
            };
            (d, 0)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn rate(limit: u64, per_s: u64, burst: u64) -> Rate {
        Rate {
            limit,
            per_ns: per_s * S,
            burst,
        }
    }

    /// How many of `n` requests at `at` (ns) pass.
    fn passed(l: &Limiter, key: u64, at: u64, n: u64) -> u64 {
        (0..n).filter(|_| l.check(key, at).allowed).count() as u64
    }

    #[test]
    fn a_token_bucket_allows_its_burst_then_refills_at_the_rate() {
        let l = Limiter::new(Algorithm::TokenBucket, rate(10, 1, 5), 1000);
        let t0 = 1_000 * S;
        assert_eq!(passed(&l, 1, t0, 20), 5, "the bucket holds 5");
        let d = l.check(1, t0);
        assert!(!d.allowed);
        assert_eq!(d.retry_ns, S / 10, "one token every 100 ms");
        assert_eq!(passed(&l, 1, t0 + S / 10, 3), 1);
        assert_eq!(
            passed(&l, 1, t0 + 10 * S, 20),
            5,
            "never more than the bucket"
        );
        assert_eq!(passed(&l, 2, t0, 3), 3, "keys are apart");
        // Over a long run the rate holds: 10/s plus the bucket.
        let l = Limiter::new(Algorithm::TokenBucket, rate(10, 1, 10), 1000);
        let total: u64 = (0..1000).map(|i| passed(&l, 7, t0 + i * S / 100, 1)).sum();
        assert_eq!(total, 10 * 10 + 10 - 1);
    }

    #[test]
    fn a_leaky_bucket_spaces_requests_and_reserves_slots_in_order() {
        let l = Limiter::new(Algorithm::LeakyBucket, rate(2, 1, 0), 1000);
        let t0 = 5 * S;
        assert_eq!(passed(&l, 1, t0, 5), 1, "no burst: one at a time");
        assert_eq!(passed(&l, 1, t0 + S / 2, 5), 1);
        // Delay mode: slots 500 ms apart, first come first served, up to 1.2 s ahead.
        let l = Limiter::new(Algorithm::LeakyBucket, rate(2, 1, 0), 1000);
        let delays: Vec<_> = (0..4).map(|_| l.reserve(9, t0, 1_200_000_000)).collect();
        assert_eq!(delays[0], Ok(0));
        assert_eq!(delays[1], Ok(S / 2));
        assert_eq!(delays[2], Ok(S));
        assert!(delays[3].is_err(), "1.5 s is beyond max_delay");
    }

    #[test]
    fn windows_count_per_window_and_the_sliding_one_weighs_the_previous() {
        let l = Limiter::new(Algorithm::FixedWindow, rate(10, 60, 0), 1000);
        let t0 = 600 * S; // a minute boundary
        assert_eq!(passed(&l, 1, t0 + 59 * S, 15), 10);
        let d = l.check(1, t0 + 59 * S);
        assert_eq!(d.retry_ns, S, "the window ends in a second");
        assert_eq!(
            passed(&l, 1, t0 + 60 * S, 15),
            10,
            "a new window: 20 in 2 s (fixed windows)"
        );

        let l = Limiter::new(Algorithm::SlidingWindow, rate(10, 60, 0), 1000);
        assert_eq!(passed(&l, 1, t0 + 59 * S, 15), 10);
        // 1 s into the next window the previous one still weighs 59/60 of 10.
        assert_eq!(passed(&l, 1, t0 + 61 * S, 15), 0);
        assert_eq!(
            passed(&l, 1, t0 + 90 * S, 15),
            5,
            "half of it is gone at 30 s"
        );
        assert_eq!(passed(&l, 1, t0 + 200 * S, 15), 10);
    }

    #[test]
    fn a_sliding_log_is_exact() {
        let l = Limiter::new(Algorithm::SlidingLog, rate(3, 10, 0), 1000);
        let t0 = 100 * S;
        assert_eq!(passed(&l, 1, t0, 1), 1);
        assert_eq!(passed(&l, 1, t0 + 5 * S, 5), 2);
        let d = l.check(1, t0 + 9 * S);
        assert!(!d.allowed);
        assert_eq!(d.retry_ns, S, "the first one leaves the window at 10 s");
        assert_eq!(passed(&l, 1, t0 + 10 * S, 5), 1);
        assert_eq!(l.peek(1, t0 + 10 * S).remaining, 0);
        assert_eq!(l.peek(1, t0 + 15 * S).remaining, 2);
    }

    #[test]
    fn memory_is_bounded_and_keys_at_rest_go_first() {
        let l = Limiter::new(Algorithm::TokenBucket, rate(1, 60, 1), 64 * 16);
        let t0 = 1000 * S;
        // An active key, then a flood of distinct keys: the table stays bounded.
        let keys: Vec<u64> = (0..100_000u64).map(|i| l.key(i)).collect();
        for k in &keys {
            l.check(*k, t0);
        }
        assert!(l.len() <= 64 * 16, "{} keys held", l.len());
        // Keys at rest are forgotten without changing any decision.
        let l = Limiter::new(Algorithm::TokenBucket, rate(100, 1, 100), 64 * 16);
        let busy = l.key("busy");
        assert!(l.check(busy, t0).allowed);
        for k in &keys[..5000] {
            l.check(*k, t0 + 10 * S);
        }
        assert_eq!(l.peek(busy, t0 + 10 * S).remaining, 100);
        l.reset(busy);
    }

    #[test]
    fn a_refund_gives_the_last_request_back() {
        let t0 = 100 * S;
        for alg in [
            Algorithm::TokenBucket,
            Algorithm::FixedWindow,
            Algorithm::SlidingWindow,
            Algorithm::SlidingLog,
        ] {
            let l = Limiter::new(alg, rate(2, 10, 2), 64);
            assert_eq!(passed(&l, 1, t0, 2), 2);
            l.refund(1, t0);
            assert_eq!(passed(&l, 1, t0, 5), 1, "{alg:?}");
        }
    }
}
