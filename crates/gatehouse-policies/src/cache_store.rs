//! The memory of a `cache` policy: responses by key, each key holding its variants (one
//! per combination of the request headers its `Vary` names), bounded in bytes (bodies,
//! headers and keys), least recently and least frequently used evicted first. Kept by
//! the policy's name across reloads; purged by path, prefix or tag from the admin API.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Most variants kept per key; a new one beyond replaces the oldest.
const MAX_VARIANTS: usize = 16;

/// Bytes counted per entry besides its body, headers and key (the entry's own fields).
const ENTRY_OVERHEAD: u64 = 256;

/// One stored response.
#[derive(Debug)]
pub struct Entry {
    /// Status.
    pub status: StatusCode,
    /// Headers as stored (hop-by-hop and the tag header removed).
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The request values of the headers `Vary` names, in its order.
    pub vary: Vec<Option<HeaderValue>>,
    /// Host it was stored for (lower case, no port).
    pub host: String,
    /// Path and query it was stored for.
    pub path_and_query: String,
    /// Its surrogate keys.
    pub tags: Vec<String>,
    /// When it was stored.
    pub stored: Instant,
    /// Its age when stored.
    pub initial_age: Duration,
    /// Its freshness lifetime: fresh while its age is below this.
    pub fresh_for: Duration,
    /// Whether requests with `Authorization` may be answered with it.
    pub shared_with_auth: bool,
    /// Set by a soft purge: stale from then on.
    pub invalidated: AtomicBool,
}

impl Entry {
    /// Its current age.
    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored)
    }

    /// Whether it may be served without asking the upstream: its age, counting the
    /// age it arrived with (RFC 9111 4.2), is below its lifetime.
    pub fn is_fresh(&self, now: Instant) -> bool {
        !self.invalidated.load(Ordering::Relaxed) && self.age(now) < self.fresh_for
    }

    /// How far past its freshness lifetime it is (zero while fresh).
    pub fn staleness(&self, now: Instant) -> Duration {
        self.age(now).saturating_sub(self.fresh_for)
    }

    fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 8)
            .sum();
        ENTRY_OVERHEAD
            + self.body.len() as u64
            + headers as u64
            + (self.host.len() + self.path_and_query.len()) as u64
            + self.tags.iter().map(|t| t.len() as u64 + 8).sum::<u64>()
    }
}

/// The variants of one key: the header names `Vary` named, and a response per
/// combination of their request values.
#[derive(Debug)]
pub struct Variants {
    /// Lower-case header names from `Vary`.
    pub names: Vec<HeaderName>,
    /// Entries, oldest first.
    pub entries: Vec<Arc<Entry>>,
}

impl Variants {
    /// The entry whose stored request values match `request`'s.
    pub fn select(&self, request: &HeaderMap) -> Option<&Arc<Entry>> {
        let values = vary_values(&self.names, request);
        self.entries.iter().find(|e| e.vary == values)
    }

    fn weight(&self) -> u64 {
        self.entries.iter().map(|e| e.weight()).sum::<u64>() + 64
    }
}

/// The request's values of `names`, normalized so that equal lists compare equal
/// (RFC 9111 4.1): all of a header's lines joined, whitespace around the commas
/// dropped (`1,2`, ` 1, 2 ` and two lines `1` and `2` select the same variant).
pub fn vary_values(names: &[HeaderName], request: &HeaderMap) -> Vec<Option<HeaderValue>> {
    names
        .iter()
        .map(|n| {
            let mut all = request.get_all(n).iter().peekable();
            let first = all.peek()?;
            // The common case, one plain value: kept as it is, no copy.
            let plain = |v: &HeaderValue| {
                let b = v.as_bytes();
                !b.contains(&b',') && b.trim_ascii().len() == b.len()
            };
            if plain(first) && request.get_all(n).iter().count() == 1 {
                return Some((*first).clone());
            }
            let mut joined: Vec<u8> = Vec::new();
            let items = all.flat_map(|line| line.as_bytes().split(|b| *b == b','));
            for (i, item) in items.enumerate() {
                if i > 0 {
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(item.trim_ascii());
            }
            HeaderValue::from_bytes(&joined).ok()
        })
        .collect()
}

#[derive(Clone)]
struct Weigher;

impl quick_cache::Weighter<Arc<str>, Arc<Variants>> for Weigher {
    fn weight(&self, key: &Arc<str>, v: &Arc<Variants>) -> u64 {
        v.weight() + key.len() as u64
    }
}

/// Counts entries evicted to make room.
#[derive(Clone, Default)]
struct Evictions(Arc<AtomicU64>);

impl quick_cache::Lifecycle<Arc<str>, Arc<Variants>> for Evictions {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _state: &mut (), _key: Arc<str>, val: Arc<Variants>) {
        self.0
            .fetch_add(val.entries.len() as u64, Ordering::Relaxed);
    }
}

type Map =
    quick_cache::sync::Cache<Arc<str>, Arc<Variants>, Weigher, ahash::RandomState, Evictions>;

/// What a purge removes (or, soft, marks stale).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purge {
    /// One path and query, on one host or any.
    Path {
        /// Path and query.
        path: String,
        /// Host (any when absent).
        host: Option<String>,
    },
    /// Every path starting with this, on one host or any.
    Prefix {
        /// The prefix.
        prefix: String,
        /// Host (any when absent).
        host: Option<String>,
    },
    /// Entries carrying any of these tags.
    Tags(Vec<String>),
    /// Everything.
    All,
}

impl Purge {
    fn matches(&self, e: &Entry) -> bool {
        let host_ok =
            |h: &Option<String>| h.as_ref().is_none_or(|h| h.eq_ignore_ascii_case(&e.host));
        match self {
            Self::Path { path, host } => host_ok(host) && e.path_and_query == *path,
            Self::Prefix { prefix, host } => {
                host_ok(host) && e.path_and_query.starts_with(prefix.as_str())
            }
            Self::Tags(tags) => e.tags.iter().any(|t| tags.contains(t)),
            Self::All => true,
        }
    }
}

/// One fetch that concurrent misses on a key wait for.
#[derive(Debug, Default)]
pub struct Fill {
    done: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Fill {
    /// Waits until the fetch ends (stored or not), at most `within`.
    pub async fn wait(&self, within: Duration) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Registered before the check, so an end in between is not missed.
        notified.as_mut().enable();
        if self.done.load(Ordering::Acquire) {
            return;
        }
        let _ = tokio::time::timeout(within, notified).await;
    }
}

/// The request that fetches a key for the others; when it ends (dropped with the
/// request), they are woken.
#[derive(Debug)]
pub struct Leader {
    store: Arc<CacheStore>,
    key: Arc<str>,
    fill: Arc<Fill>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut fills = self.store.fills.lock().unwrap_or_else(|p| p.into_inner());
        if fills
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.fill))
        {
            fills.remove(&self.key);
        }
        drop(fills);
        self.fill.done.store(true, Ordering::Release);
        self.fill.notify.notify_waiters();
    }
}

/// A running background refresh of one key (stale-while-revalidate).
#[derive(Debug)]
pub struct Refreshing {
    store: Arc<CacheStore>,
    key: Arc<str>,
}

impl Drop for Refreshing {
    fn drop(&mut self) {
        let mut running = self
            .store
            .refreshing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        running.remove(&self.key);
    }
}

/// A miss's place among the concurrent misses on its key.
pub enum Join {
    /// It fetches; the guard (kept with the request) wakes the others when it ends.
    Leader(Arc<Leader>),
    /// Another request is fetching: wait for it.
    Follower(Arc<Fill>),
}

/// A cache policy's store.
pub struct CacheStore {
    map: Map,
    fills: std::sync::Mutex<std::collections::HashMap<Arc<str>, Arc<Fill>>>,
    hit_for_miss: quick_cache::sync::Cache<Arc<str>, Instant>,
    relay: std::sync::Mutex<Option<Arc<crate::purge_relay::PurgeRelay>>>,
    refreshing: std::sync::Mutex<std::collections::HashSet<Arc<str>>>,
    evictions: Evictions,
    hits: AtomicU64,
    misses: AtomicU64,
    memory: AtomicU64,
}

impl std::fmt::Debug for CacheStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheStore")
            .field("bytes", &self.map.weight())
            .finish_non_exhaustive()
    }
}

/// `GET /admin/caches/{policy}`.
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Responses stored (variants counted apart).
    pub entries: u64,
    /// Bytes they take (bodies, headers, keys).
    pub bytes: u64,
    /// The bound on `bytes`.
    pub memory: u64,
    /// Requests answered from the cache.
    pub hits: u64,
    /// Requests that had to go upstream.
    pub misses: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
}

impl CacheStore {
    /// An empty store of at most `memory` bytes.
    pub fn new(memory: u64) -> Self {
        let evictions = Evictions::default();
        // One item per ~8 KiB is only the index's sizing estimate, not a bound.
        let estimated = usize::try_from(memory / 8192)
            .unwrap_or(usize::MAX)
            .clamp(16, 1 << 20);
        let map = Map::with(
            estimated,
            memory.max(1),
            Weigher,
            ahash::RandomState::new(),
            evictions.clone(),
        );
        Self {
            map,
            fills: Default::default(),
            hit_for_miss: quick_cache::sync::Cache::new(10_000),
            relay: std::sync::Mutex::new(None),
            refreshing: Default::default(),
            evictions,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            memory: AtomicU64::new(memory),
        }
    }

    /// Applies a reloaded config's bound (entries beyond it are evicted).
    pub fn set_memory(&self, memory: u64) {
        if self.memory.swap(memory, Ordering::Relaxed) != memory {
            self.map.set_capacity(memory.max(1));
        }
    }

    /// Shares purges over `cluster` (the config's Redis link) as policy `policy`, or
    /// stops sharing them when there is none; returns the relay in use.
    pub fn share_purges(
        &self,
        cluster: Option<&Arc<gatehouse_cluster::Cluster>>,
        policy: &str,
    ) -> Option<Arc<crate::purge_relay::PurgeRelay>> {
        let mut relay = self.relay.lock().unwrap_or_else(|p| p.into_inner());
        match (cluster, relay.as_ref()) {
            (Some(c), Some(r)) if r.uses(c) => {}
            (c, old) => {
                if let Some(old) = old {
                    old.stop();
                }
                *relay =
                    c.map(|c| Arc::new(crate::purge_relay::PurgeRelay::new(Arc::clone(c), policy)));
            }
        }
        relay.clone()
    }

    /// The relay sharing this store's purges, if any.
    pub fn relay(&self) -> Option<Arc<crate::purge_relay::PurgeRelay>> {
        self.relay.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Claims the background refresh of `key`, unless one is already running; the
    /// claim ends when the guard is dropped (with the refresh request).
    pub fn begin_refresh(self: &Arc<Self>, key: &Arc<str>) -> Option<Arc<Refreshing>> {
        let mut running = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        running.insert(Arc::clone(key)).then(|| {
            Arc::new(Refreshing {
                store: Arc::clone(self),
                key: Arc::clone(key),
            })
        })
    }

    /// Joins the misses on `key`: the first leads, the others follow.
    pub fn join(self: &Arc<Self>, key: &Arc<str>) -> Join {
        let mut fills = self.fills.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = fills.get(key) {
            return Join::Follower(Arc::clone(f));
        }
        let fill = Arc::new(Fill::default());
        fills.insert(Arc::clone(key), Arc::clone(&fill));
        Join::Leader(Arc::new(Leader {
            store: Arc::clone(self),
            key: Arc::clone(key),
            fill,
        }))
    }

    /// Marks `key` as answered with something not cacheable, for `how_long`.
    pub fn mark_hit_for_miss(&self, key: &Arc<str>, how_long: Duration) {
        self.hit_for_miss
            .insert(Arc::clone(key), Instant::now() + how_long);
    }

    /// Whether `key` is marked not cacheable (its misses do not wait for each other).
    pub fn is_hit_for_miss(&self, key: &str) -> bool {
        self.hit_for_miss
            .get(key)
            .is_some_and(|until| until > Instant::now())
    }

    /// The variants stored under `key`.
    pub fn get(&self, key: &str) -> Option<Arc<Variants>> {
        self.map.get(key)
    }

    /// Counts a request answered from the cache.
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request that went upstream.
    pub fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Stores `entry` under `key` as the variant for its request values (`names`
    /// being the response's `Vary`), replacing a variant with the same values; a key
    /// whose `Vary` changed starts its variants afresh.
    pub fn insert(&self, key: &str, names: Vec<HeaderName>, entry: Entry) {
        self.hit_for_miss.remove(key);
        let entry = Arc::new(entry);
        let mut entries = match self.map.get(key) {
            Some(v) if v.names == names => v
                .entries
                .iter()
                .filter(|e| e.vary != entry.vary)
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        if entries.len() >= MAX_VARIANTS {
            entries.remove(0);
        }
        entries.push(entry);
        self.map
            .insert(Arc::from(key), Arc::new(Variants { names, entries }));
    }

    /// Drops every variant stored under `key`.
    pub fn invalidate(&self, key: &str) {
        self.map.remove(key);
    }

    /// Removes (or, `soft`, marks stale) what `purge` names; how many entries.
    pub fn purge(&self, purge: &Purge, soft: bool) -> u64 {
        if matches!(purge, Purge::All) && !soft {
            let count = self.stats().entries;
            self.map.clear();
            return count;
        }
        // `retain` takes a `Fn`: the tallies live in cells.
        let count = std::cell::Cell::new(0u64);
        let rewrite = std::cell::RefCell::new(Vec::new());
        self.map.retain(|key, v| {
            let hit = v.entries.iter().filter(|e| purge.matches(e)).count() as u64;
            if hit == 0 {
                return true;
            }
            count.set(count.get() + hit);
            if soft {
                for e in v.entries.iter().filter(|e| purge.matches(e)) {
                    e.invalidated.store(true, Ordering::Relaxed);
                }
                return true;
            }
            if hit < v.entries.len() as u64 {
                rewrite.borrow_mut().push((Arc::clone(key), Arc::clone(v)));
            }
            false
        });
        // Keys where only some variants went keep the others.
        for (key, v) in rewrite.into_inner() {
            let entries = v
                .entries
                .iter()
                .filter(|e| !purge.matches(e))
                .cloned()
                .collect();
            self.map.insert(
                key,
                Arc::new(Variants {
                    names: v.names.clone(),
                    entries,
                }),
            );
        }
        count.get()
    }

    /// The counters and sizes.
    pub fn stats(&self) -> Stats {
        Stats {
            entries: self.map.iter().map(|(_, v)| v.entries.len() as u64).sum(),
            bytes: self.map.weight(),
            memory: self.memory.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.0.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, tags: &[&str], body: usize, vary: Vec<Option<HeaderValue>>) -> Entry {
        Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; body]),
            vary,
            host: "h".into(),
            path_and_query: path.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            stored: Instant::now(),
            initial_age: Duration::ZERO,
            fresh_for: Duration::from_secs(60),
            shared_with_auth: false,
            invalidated: AtomicBool::new(false),
        }
    }

    #[test]
    fn variants_are_kept_apart_by_vary_values() {
        let s = CacheStore::new(1 << 20);
        let lang = HeaderName::from_static("accept-language");
        let v = |x: &'static str| vec![Some(HeaderValue::from_static(x))];
        s.insert("k", vec![lang.clone()], entry("/a", &[], 10, v("fr")));
        s.insert("k", vec![lang.clone()], entry("/a", &[], 20, v("de")));
        let mut req = HeaderMap::new();
        req.insert(&lang, HeaderValue::from_static("de"));
        assert_eq!(s.get("k").unwrap().select(&req).unwrap().body.len(), 20);
        req.insert(&lang, HeaderValue::from_static("en"));
        assert!(s.get("k").unwrap().select(&req).is_none());
        assert_eq!(s.stats().entries, 2);
        // A changed Vary starts afresh.
        s.insert("k", vec![], entry("/a", &[], 5, vec![]));
        assert_eq!(s.stats().entries, 1);
    }

    #[test]
    fn the_age_an_entry_arrived_with_counts_against_its_lifetime() {
        let mut e = entry("/a", &[], 1, vec![]);
        e.initial_age = Duration::from_secs(59);
        let now = Instant::now();
        assert!(e.is_fresh(now));
        assert!(!e.is_fresh(now + Duration::from_secs(2)));
        assert_eq!(e.staleness(now + Duration::from_secs(5)).as_secs(), 4);
    }

    #[test]
    fn equal_lists_select_the_same_variant() {
        let foo = HeaderName::from_static("foo");
        let values = |lines: &[&'static str]| {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append(&foo, HeaderValue::from_static(l));
            }
            vary_values(std::slice::from_ref(&foo), &h)
        };
        let want = values(&["1, 2"]);
        assert_eq!(values(&["1,2"]), want);
        assert_eq!(values(&[" 1 ,  2 "]), want);
        assert_eq!(values(&["1", "2"]), want);
        assert_ne!(values(&["2, 1"]), want);
        assert_eq!(values(&[]), vec![None]);
    }

    #[test]
    fn bytes_never_exceed_memory() {
        let s = CacheStore::new(64 * 1024);
        for i in 0..100 {
            s.insert(&format!("k{i}"), vec![], entry("/a", &[], 4000, vec![]));
            assert!(s.stats().bytes <= 64 * 1024);
        }
        let st = s.stats();
        assert!(st.evictions > 0 && st.entries < 100, "{st:?}");
        s.set_memory(16 * 1024);
        assert!(s.stats().bytes <= 16 * 1024);
    }

    #[test]
    fn purges_by_path_prefix_and_tag_hard_or_soft() {
        let s = CacheStore::new(1 << 20);
        s.insert("1", vec![], entry("/p/1?x=1", &["a"], 1, vec![]));
        s.insert("2", vec![], entry("/p/2", &["b"], 1, vec![]));
        s.insert("3", vec![], entry("/q", &["a", "c"], 1, vec![]));
        let path = |p: &str| Purge::Path {
            path: p.into(),
            host: None,
        };
        assert_eq!(s.purge(&path("/p/1"), false), 0);
        assert_eq!(s.purge(&path("/p/1?x=1"), false), 1);
        assert_eq!(s.purge(&Purge::Tags(vec!["c".into()]), true), 1);
        let e = s.get("3").unwrap();
        assert!(!e.entries[0].is_fresh(Instant::now()));
        assert_eq!(
            s.purge(
                &Purge::Prefix {
                    prefix: "/p/".into(),
                    host: Some("other".into())
                },
                false
            ),
            0
        );
        assert_eq!(
            s.purge(
                &Purge::Prefix {
                    prefix: "/p/".into(),
                    host: Some("H".into())
                },
                false
            ),
            1
        );
        assert_eq!(s.purge(&Purge::All, false), 1);
        assert_eq!(s.stats().entries, 0);
    }
}

#[cfg(test)]
mod hfm_tests {
    use super::*;

    #[test]
    fn hit_for_miss_marks_hold_until_stored() {
        let s = CacheStore::new(1 << 20);
        let k: Arc<str> = "k".into();
        assert!(!s.is_hit_for_miss(&k));
        s.mark_hit_for_miss(&k, Duration::from_secs(60));
        assert!(s.is_hit_for_miss(&k));
    }
}
