//! The protection client table (`protection`, docs/protection.md): the offences each
//! client address committed lately and its ban history, bounded at
//! `client_table_size` addresses with the least recently seen forgotten first, and the
//! bans themselves, kept apart (at most `max_bans`) so a flood of new addresses can
//! never push a ban out.
//!
//! An address enters the table with its first offence, not with its first request: a
//! flood of well-behaved (or spoofed-looking) new addresses then cannot flush the
//! records of the ones that misbehave, and a request that offends nobody costs nothing
//! here. Runtime state: one table for the process, kept across reloads.

use lru::LruCache;
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use gatehouse_core::Offence;

/// Shards of the client table: workers recording offences at once rarely meet on a lock.
const SHARDS: usize = 16;

/// When repeated offences ban a client (`protection.ban`), in table milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanPolicy {
    /// Offences that ban ...
    pub after: u32,
    /// ... within this sliding window.
    pub within_ms: u64,
    /// The first ban's length.
    pub duration_ms: u64,
    /// The longest ban, and how long a client stays clean to start again at `duration_ms`.
    pub max_ms: u64,
    /// The offences that count, one bit per [`Offence::index`].
    pub triggers: u8,
}

impl BanPolicy {
    /// Whether `o` is one of the triggers.
    pub fn counts(&self, o: Offence) -> bool {
        self.triggers & (1 << o.index()) != 0
    }
}

/// Why a client was refused, for `GET /admin/protection`: each offence, and the two
/// refusals that are not offences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An offence (counted whether or not it leads to a ban).
    Offence(Offence),
    /// In `protection.deny`.
    Denied,
    /// Banned.
    Banned,
}

impl Refusal {
    const COUNT: usize = Offence::ALL.len() + 2;

    fn index(self) -> usize {
        match self {
            Self::Offence(o) => o.index(),
            Self::Denied => Offence::ALL.len(),
            Self::Banned => Offence::ALL.len() + 1,
        }
    }

    fn name(i: usize) -> &'static str {
        match Offence::ALL.get(i) {
            Some(o) => o.name(),
            None if i == Offence::ALL.len() => "denied",
            None => "banned",
        }
    }
}

/// What the table remembers of one address: offences in a sliding window (two fixed
/// windows weighted, as nginx and Cloudflare count) and its last ban.
#[derive(Debug, Default, Clone, Copy)]
struct Client {
    /// Index of the current window (table ms / window length).
    window: u64,
    /// Offences in the current window.
    current: u32,
    /// Offences in the window before it.
    previous: u32,
    /// Length of the last ban (0: none remembered).
    last_ban_ms: u64,
    /// The ban history is forgotten after this (table ms).
    history_until: u64,
    /// Bans since the history last started afresh.
    bans: u32,
}

impl Client {
    /// Counts one offence at `now`; whether the offences within the sliding window
    /// reach `after`.
    fn count(&mut self, now: u64, within: u64, after: u32) -> bool {
        let w = now / within;
        if w == self.window {
            self.current = self.current.saturating_add(1);
        } else {
            self.previous = if w == self.window + 1 {
                self.current
            } else {
                0
            };
            self.current = 1;
            self.window = w;
        }
        // The part of the previous window still inside the sliding one, compared in
        // units of 1/within so no fraction is rounded away.
        let elapsed = now % within;
        let carried = u128::from(self.previous) * u128::from(within - elapsed);
        let counted = carried + u128::from(self.current) * u128::from(within);
        counted >= u128::from(after) * u128::from(within)
    }
}

/// One ban.
#[derive(Debug, Clone)]
pub struct Ban {
    /// Why: the offence that tipped it, or the reason given to the admin API.
    pub reason: Arc<str>,
    /// When it started (table ms).
    pub since: u64,
    /// When it ends (table ms).
    pub until: u64,
    /// Bans of this address since its history last started afresh (this one included).
    pub count: u32,
}

/// Counts for `GET /admin/protection`.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Addresses in the table.
    pub clients_tracked: usize,
    /// Its capacity.
    pub client_table_size: usize,
    /// Addresses forgotten to make room.
    pub clients_evicted: u64,
    /// Bans in force.
    pub bans_active: usize,
    /// The most bans held.
    pub max_bans: usize,
    /// Refusals by reason since start.
    pub refusals: Vec<(&'static str, u64)>,
}

/// The client table and the bans.
#[derive(Debug)]
pub struct ClientTable {
    shards: Box<[Mutex<LruCache<IpAddr, Client>>]>,
    size: usize,
    evicted: AtomicU64,
    bans: RwLock<HashMap<IpAddr, Ban>>,
    /// Entries in `bans`, expired ones included: zero lets every request skip the lock.
    ban_entries: AtomicUsize,
    max_bans: usize,
    refusals: [AtomicU64; Refusal::COUNT],
    /// Table time zero, and the wall-clock time it stands for.
    epoch: Instant,
    epoch_wall: SystemTime,
}

impl ClientTable {
    /// A table of `size` addresses and at most `max_bans` bans; `old` (a table of other
    /// sizes being replaced) hands over its clock, counters, bans and as many clients as fit.
    pub fn new(size: usize, max_bans: usize, old: Option<&ClientTable>) -> Self {
        let per_shard = NonZeroUsize::new(size.div_ceil(SHARDS)).unwrap_or(NonZeroUsize::MIN);
        let shards: Box<[_]> = (0..SHARDS)
            .map(|_| Mutex::new(LruCache::new(per_shard)))
            .collect();
        let t = Self {
            shards,
            size,
            evicted: AtomicU64::new(0),
            bans: RwLock::new(HashMap::new()),
            ban_entries: AtomicUsize::new(0),
            max_bans,
            refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            epoch: old.map_or_else(Instant::now, |o| o.epoch),
            epoch_wall: old.map_or_else(SystemTime::now, |o| o.epoch_wall),
        };
        if let Some(old) = old {
            t.evicted
                .store(old.evicted.load(Ordering::Relaxed), Ordering::Relaxed);
            for (mine, theirs) in t.refusals.iter().zip(&old.refusals) {
                mine.store(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            for (mine, theirs) in t.shards.iter().zip(old.shards.iter()) {
                let theirs = lock(theirs);
                let mut mine = lock(mine);
                // Least recently seen first, so the most recent end up most recent.
                for (ip, c) in theirs.iter().rev() {
                    mine.push(*ip, *c);
                }
            }
            let now = t.now();
            for (ip, ban) in old.bans.read().unwrap_or_else(|p| p.into_inner()).iter() {
                if ban.until > now {
                    t.insert_ban(*ip, ban.clone(), now);
                }
            }
        }
        t
    }

    /// Table time: milliseconds since the table's epoch.
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Unix seconds of table time `ms`, for the admin API.
    pub fn unix_secs(&self, ms: u64) -> u64 {
        let t = self.epoch_wall + std::time::Duration::from_millis(ms);
        t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    /// Whether any ban is held (expired ones included): false lets a request skip the
    /// ban check without reading the clock.
    pub fn holds_bans(&self) -> bool {
        self.ban_entries.load(Ordering::Relaxed) > 0
    }

    /// Milliseconds left of `key`'s ban at `now`, if it is banned.
    pub fn banned(&self, key: IpAddr, now: u64) -> Option<u64> {
        if !self.holds_bans() {
            return None;
        }
        let bans = self.bans.read().unwrap_or_else(|p| p.into_inner());
        let ban = bans.get(&key)?;
        ban.until.checked_sub(now).filter(|left| *left > 0)
    }

    /// Counts a refusal that is not an offence (denied, banned).
    pub fn refused(&self, why: Refusal) {
        self.refusals[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Records offence `o` by `key` at `now`; under `policy`, when it is one of the
    /// triggers and tips the client over, bans it and yields the ban. A banned client
    /// commits no new offences.
    pub fn offend(
        &self,
        key: IpAddr,
        o: Offence,
        policy: Option<&BanPolicy>,
        now: u64,
    ) -> Option<Ban> {
        self.refused(Refusal::Offence(o));
        let policy = policy.filter(|p| p.counts(o))?;
        if self.banned(key, now).is_some() {
            return None;
        }
        let ban = {
            let mut shard = lock(self.shard(key));
            let c = self.entry(&mut shard, key);
            if !c.count(now, policy.within_ms, policy.after) {
                return None;
            }
            c.current = 0;
            c.previous = 0;
            let length = if c.last_ban_ms > 0 && now < c.history_until {
                c.last_ban_ms.saturating_mul(2).min(policy.max_ms)
            } else {
                c.bans = 0;
                policy.duration_ms
            };
            remember_ban(c, now, length, policy.max_ms)
        };
        let ban = Ban {
            reason: Arc::from(o.name()),
            since: now,
            until: now + ban.0,
            count: ban.1,
        };
        self.insert_ban(key, ban.clone(), now);
        Some(ban)
    }

    /// Bans `key` for `length_ms` from `now` for `reason` (the admin API), replacing a
    /// ban in force; the address's history counts it as one more ban.
    pub fn ban(&self, key: IpAddr, length_ms: u64, reason: &str, now: u64) -> Ban {
        let (_, count) = {
            let mut shard = lock(self.shard(key));
            let c = self.entry(&mut shard, key);
            remember_ban(c, now, length_ms, length_ms)
        };
        let ban = Ban {
            reason: Arc::from(reason),
            since: now,
            until: now.saturating_add(length_ms),
            count,
        };
        self.insert_ban(key, ban.clone(), now);
        ban
    }

    /// Lifts `key`'s ban and forgets its history (a pardon starts afresh); whether it
    /// was banned.
    pub fn unban(&self, key: IpAddr, now: u64) -> bool {
        let removed = {
            let mut bans = self.bans.write().unwrap_or_else(|p| p.into_inner());
            let removed = bans.remove(&key);
            self.ban_entries.store(bans.len(), Ordering::Relaxed);
            removed
        };
        lock(self.shard(key)).pop(&key);
        removed.is_some_and(|b| b.until > now)
    }

    /// The bans in force at `now`, longest-standing first (expired ones are dropped).
    pub fn bans(&self, now: u64) -> Vec<(IpAddr, Ban)> {
        let mut bans = self.bans.write().unwrap_or_else(|p| p.into_inner());
        bans.retain(|_, b| b.until > now);
        self.ban_entries.store(bans.len(), Ordering::Relaxed);
        let mut list: Vec<_> = bans.iter().map(|(ip, b)| (*ip, b.clone())).collect();
        list.sort_by_key(|(ip, b)| (b.since, *ip));
        list
    }

    /// The counts `GET /admin/protection` shows.
    pub fn stats(&self, now: u64) -> Stats {
        Stats {
            clients_tracked: self.shards.iter().map(|s| lock(s).len()).sum(),
            client_table_size: self.size,
            clients_evicted: self.evicted.load(Ordering::Relaxed),
            bans_active: self.bans(now).len(),
            max_bans: self.max_bans,
            refusals: self
                .refusals
                .iter()
                .enumerate()
                .map(|(i, n)| (Refusal::name(i), n.load(Ordering::Relaxed)))
                .collect(),
        }
    }

    fn shard(&self, key: IpAddr) -> &Mutex<LruCache<IpAddr, Client>> {
        // The low bits of the address spread clients (IPv6 keys are network prefixes,
        // so their host bits are zero: fold the whole address).
        let n = match key {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => {
                let b = u128::from(v6);
                (b ^ (b >> 64)) as u64
            }
        };
        let mixed = (n ^ (n >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 60;
        &self.shards[mixed as usize % SHARDS]
    }

    /// `key`'s record, made (and the least recently seen forgotten) when new.
    fn entry<'a>(&self, shard: &'a mut LruCache<IpAddr, Client>, key: IpAddr) -> &'a mut Client {
        if !shard.contains(&key) && shard.len() == shard.cap().get() {
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        shard.get_or_insert_mut(key, Client::default)
    }

    /// Holds `ban` for `key`, making room when `max_bans` are held: expired bans go
    /// first, then the one that ends soonest.
    fn insert_ban(&self, key: IpAddr, ban: Ban, now: u64) {
        let mut bans = self.bans.write().unwrap_or_else(|p| p.into_inner());
        if !bans.contains_key(&key) && bans.len() >= self.max_bans {
            bans.retain(|_, b| b.until > now);
            if bans.len() >= self.max_bans
                && let Some(soonest) = bans.iter().min_by_key(|(_, b)| b.until).map(|(ip, _)| *ip)
            {
                tracing::warn!(dropped = %soonest, "protection.max_bans reached; the ban ending soonest was lifted");
                bans.remove(&soonest);
            }
        }
        bans.insert(key, ban);
        self.ban_entries.store(bans.len(), Ordering::Relaxed);
    }
}

/// Notes a ban of `length` from `now` in `c`'s history (kept for `clean` after it ends);
/// yields the length and the ban's number.
fn remember_ban(c: &mut Client, now: u64, length: u64, clean: u64) -> (u64, u32) {
    c.last_ban_ms = length;
    c.history_until = now.saturating_add(length).saturating_add(clean);
    c.bans = c.bans.saturating_add(1);
    (length, c.bans)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1000;

    fn policy(after: u32) -> BanPolicy {
        BanPolicy {
            after,
            within_ms: 60 * SEC,
            duration_ms: 10 * SEC,
            max_ms: 40 * SEC,
            triggers: u8::MAX,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn offences_within_the_window_ban_and_the_ban_ends() {
        let t = ClientTable::new(100, 100, None);
        let (a, b) = (ip("127.0.0.2"), ip("127.0.0.3"));
        let p = policy(3);
        assert!(t.offend(a, Offence::Waf, Some(&p), 1000).is_none());
        assert!(t.offend(b, Offence::Waf, Some(&p), 1000).is_none());
        assert!(t.offend(a, Offence::Waf, Some(&p), 2000).is_none());
        let ban = t.offend(a, Offence::RateLimit, Some(&p), 3000).unwrap();
        assert_eq!(
            (&*ban.reason, ban.until, ban.count),
            ("rate_limit", 13_000, 1)
        );
        assert_eq!(t.banned(a, 3000), Some(10_000));
        assert_eq!(t.banned(b, 3000), None);
        // No new offences while banned.
        assert!(t.offend(a, Offence::Waf, Some(&p), 4000).is_none());
        assert_eq!(t.banned(a, 13_000), None);
        assert_eq!(t.bans(13_000).len(), 0);
    }

    #[test]
    fn offences_spread_beyond_the_window_do_not_ban() {
        let t = ClientTable::new(100, 100, None);
        let a = ip("127.0.0.2");
        let p = policy(3);
        // Two windows apart each time: the earlier offences no longer count.
        for i in 0..10 {
            assert!(t.offend(a, Offence::Waf, Some(&p), i * 130 * SEC).is_none());
        }
        // The previous window counts in part: 2 offences late in one window weigh just
        // under 2 early in the next, so 1 more stays under 3 and 2 more reach it.
        let at = |ms| t.offend(a, Offence::Waf, Some(&p), ms);
        assert!(at(1_379 * SEC).is_none());
        assert!(at(1_379 * SEC).is_none());
        assert!(at(1_380 * SEC + 1).is_none());
        assert!(at(1_380 * SEC + 1).is_some());
    }

    #[test]
    fn repeat_bans_double_up_to_the_maximum_and_a_clean_client_starts_again() {
        let t = ClientTable::new(100, 100, None);
        let a = ip("127.0.0.2");
        let p = policy(1);
        let mut now = 0;
        let mut lengths = Vec::new();
        for _ in 0..4 {
            let ban = t.offend(a, Offence::Bot, Some(&p), now).unwrap();
            lengths.push((ban.until - ban.since) / SEC);
            now = ban.until;
        }
        assert_eq!(lengths, [10, 20, 40, 40]);
        // Clean for max_duration after the last ban: back to the first length.
        let ban = t.offend(a, Offence::Bot, Some(&p), now + 40 * SEC).unwrap();
        assert_eq!(((ban.until - ban.since) / SEC, ban.count), (10, 1));
    }

    #[test]
    fn only_triggers_count_and_every_offence_is_tallied() {
        let t = ClientTable::new(100, 100, None);
        let a = ip("127.0.0.2");
        let mut p = policy(1);
        p.triggers = 1 << Offence::Waf.index();
        assert!(t.offend(a, Offence::BadRequest, Some(&p), 0).is_none());
        assert!(t.offend(a, Offence::BadRequest, None, 0).is_none());
        t.refused(Refusal::Denied);
        let s = t.stats(0);
        let n = |name| s.refusals.iter().find(|(r, _)| *r == name).unwrap().1;
        assert_eq!((n("bad_request"), n("denied"), n("waf")), (2, 1, 0));
        assert_eq!(
            s.clients_tracked, 0,
            "an offence that is no trigger tracks nobody"
        );
        assert!(t.offend(a, Offence::Waf, Some(&p), 0).is_some());
    }

    #[test]
    fn the_table_keeps_its_size_and_new_addresses_cannot_evict_bans() {
        let t = ClientTable::new(1_000, 10, None);
        let p = policy(1);
        // Ten bans first, then a flood of addresses that offend once each under a
        // policy that needs two offences.
        for i in 0..10u32 {
            t.offend(
                IpAddr::from((0x0a00_0000 + i).to_be_bytes()),
                Offence::Waf,
                Some(&p),
                0,
            )
            .unwrap();
        }
        let two = policy(2);
        for i in 0..100_000u32 {
            t.offend(
                IpAddr::from((0x0b00_0000 + i).to_be_bytes()),
                Offence::Waf,
                Some(&two),
                1,
            );
        }
        let s = t.stats(1);
        assert!(s.clients_tracked <= 1_000 + SHARDS, "{}", s.clients_tracked);
        assert!(s.clients_evicted >= 99_000);
        assert_eq!(s.bans_active, 10);
        // A new ban beyond max_bans lifts the one that ends soonest.
        t.ban(ip("127.0.0.9"), 60 * SEC, "manual", 2);
        assert_eq!(t.stats(2).bans_active, 10);
        assert!(t.banned(ip("127.0.0.9"), 2).is_some());
    }

    #[test]
    fn manual_bans_count_and_a_pardon_forgets_the_history() {
        let t = ClientTable::new(100, 100, None);
        let a = ip("2001:db8::");
        let ban = t.ban(a, 5 * SEC, "abuse report", 0);
        assert_eq!(
            (&*ban.reason, ban.until, ban.count),
            ("abuse report", 5 * SEC, 1)
        );
        assert_eq!(t.ban(a, 5 * SEC, "again", 1).count, 2);
        assert!(t.unban(a, 2));
        assert!(!t.unban(a, 2));
        assert_eq!(t.banned(a, 2), None);
        assert_eq!(t.stats(2).clients_tracked, 0);
    }

    #[test]
    fn a_resized_table_keeps_bans_counters_and_clients() {
        let old = ClientTable::new(100, 100, None);
        let p = policy(2);
        old.offend(ip("127.0.0.2"), Offence::Waf, Some(&p), 0);
        old.ban(ip("127.0.0.3"), 60 * SEC, "manual", 0);
        let new = ClientTable::new(200, 50, Some(&old));
        assert!(new.banned(ip("127.0.0.3"), 1).is_some());
        // The remembered offence still counts: one more bans.
        assert!(
            new.offend(ip("127.0.0.2"), Offence::Waf, Some(&p), 1)
                .is_some()
        );
        assert_eq!(new.stats(1).refusals[0], ("waf", 2));
    }

    proptest::proptest! {
        /// Whatever addresses offend, in whatever order: the table never holds more than
        /// its size (rounded up per shard), the bans never more than `max_bans`, and a
        /// ban just made is in force.
        #[test]
        fn the_table_and_the_bans_keep_their_bounds(
            steps in proptest::collection::vec((0u32..5_000, 0usize..7, 0u64..2_000), 1..2_000)
        ) {
            let t = ClientTable::new(64, 8, None);
            let p = BanPolicy { after: 2, within_ms: 10 * SEC, duration_ms: SEC, max_ms: 8 * SEC, triggers: u8::MAX };
            let mut now = 0;
            for (addr, o, dt) in steps {
                now += dt;
                let key = IpAddr::from((0x0a00_0000 + addr).to_be_bytes());
                if let Some(ban) = t.offend(key, Offence::ALL[o], Some(&p), now) {
                    proptest::prop_assert!(t.banned(key, now).is_some());
                    proptest::prop_assert!(ban.until - ban.since <= 8 * SEC);
                }
                let s = t.stats(now);
                proptest::prop_assert!(s.clients_tracked <= 64 + SHARDS);
                proptest::prop_assert!(s.bans_active <= 8);
            }
        }
    }
}
