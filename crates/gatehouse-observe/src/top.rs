//! Top-N clients and attackers (docs/operations.md, "Top clients and attackers"): per
//! client IP and per consumer, space-saving summaries ranked by requests, errors,
//! blocked requests and bytes, in time slices. A finished request adds to its worker's
//! small buffer (a lock only that worker takes, but for a flush); a full buffer, the
//! 5 s sampler and every query fold the buffers into the current slice. Slices are one
//! minute for the last 5 to 10 minutes, then five minutes up to an hour, so memory is
//! fixed by `analytics.top_capacity` whatever the number of clients.

use crate::space_saving::{Counts, Entry, Summary};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a list is ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// Requests.
    Requests = 0,
    /// Answers of 400 or more not given by a policy.
    Errors = 1,
    /// Requests a policy refused.
    Blocked = 2,
    /// Response body bytes.
    Bytes = 3,
}

impl By {
    /// The weight of `c` in this list.
    fn weight(self, c: &Counts) -> u64 {
        match self {
            By::Requests => c.requests,
            By::Errors => c.errors,
            By::Blocked => c.blocked,
            By::Bytes => c.bytes,
        }
    }
}

const BYS: [By; 4] = [By::Requests, By::Errors, By::Blocked, By::Bytes];

/// Who a list counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    /// A client address.
    Ip(IpAddr),
    /// An authenticated consumer.
    Consumer(Arc<str>),
}

/// A finished request, as the lists see it.
#[derive(Debug)]
pub struct Hit<'a> {
    /// The client address (after trusted proxies).
    pub client_ip: IpAddr,
    /// The consumer, once authenticated.
    pub consumer: Option<&'a str>,
    /// Response status.
    pub status: u16,
    /// The policy that refused it and why (a short circuit of 400 or more).
    pub refused: Option<(&'a str, &'static str)>,
    /// Response body bytes.
    pub bytes: u64,
    /// What an attack-detecting policy found in it.
    pub attack: Option<&'a gatehouse_core::Attack>,
}

/// Distinct clients a worker buffers before it folds them into the shared lists.
const BUFFER_MAX: usize = 256;
/// Distinct `policy/reason` names a worker keeps (more are counted as `other`).
const MAX_REASON_NAMES: usize = 64;

type Fast<K> = HashMap<K, Counts, ahash::RandomState>;

#[derive(Default)]
struct Buffer {
    ips: Fast<IpAddr>,
    consumers: Fast<Box<str>>,
    reasons: Vec<(Box<str>, &'static str, Arc<str>)>,
}

/// What a buffer held, taken out to be folded.
type Taken = (Fast<IpAddr>, Fast<Box<str>>);

impl Buffer {
    fn reason(&mut self, policy: &str, reason: &'static str) -> Arc<str> {
        if let Some((_, _, n)) = self
            .reasons
            .iter()
            .find(|(p, r, _)| **p == *policy && std::ptr::eq(*r, reason))
        {
            return n.clone();
        }
        if self.reasons.len() >= MAX_REASON_NAMES {
            return "other".into();
        }
        let name: Arc<str> = format!("{policy}/{reason}").into();
        self.reasons.push((policy.into(), reason, name.clone()));
        name
    }

    fn take(&mut self) -> Taken {
        (
            std::mem::take(&mut self.ips),
            std::mem::take(&mut self.consumers),
        )
    }
}

/// Adds one request to a client's counts.
fn count(c: &mut Counts, hit: &Hit<'_>, reason: Option<&Arc<str>>) {
    c.requests += 1;
    c.bytes += hit.bytes;
    if let Some(a) = hit.attack {
        for k in &a.kinds {
            c.attack(k, 1);
        }
        for r in &a.rules {
            c.rule(*r, 1);
        }
    }
    match reason {
        Some(r) => {
            c.blocked += 1;
            c.reason(r, 1);
        }
        None if hit.status >= 400 => {
            c.errors += 1;
            if hit.status < 500 {
                c.client_errors += 1;
            }
        }
        None => {}
    }
}

fn buffers() -> &'static Mutex<Vec<Arc<Mutex<Buffer>>>> {
    static B: OnceLock<Mutex<Vec<Arc<Mutex<Buffer>>>>> = OnceLock::new();
    B.get_or_init(Mutex::default)
}

thread_local! {
    static LOCAL: Arc<Mutex<Buffer>> = {
        let b = Arc::new(Mutex::new(Buffer::default()));
        buffers().lock().unwrap_or_else(|p| p.into_inner()).push(b.clone());
        b
    };
}

static CAPACITY: AtomicUsize = AtomicUsize::new(1000);

/// Sets the counters per list (`analytics.top_capacity`); slices started later use it.
pub fn set_capacity(n: usize) {
    CAPACITY.store(n.max(1), Ordering::Relaxed);
}

/// The counters per list.
pub fn capacity() -> usize {
    CAPACITY.load(Ordering::Relaxed)
}

/// Counts a finished request for its client address and consumer.
pub fn record(hit: &Hit<'_>) {
    let full = LOCAL.try_with(|b| {
        let mut b = b.lock().unwrap_or_else(|p| p.into_inner());
        let reason = hit.refused.map(|(p, r)| b.reason(p, r));
        count(
            b.ips.entry(hit.client_ip).or_default(),
            hit,
            reason.as_ref(),
        );
        if let Some(name) = hit.consumer {
            // The name is allocated only when it is new to this buffer.
            let c = match b.consumers.get_mut(name) {
                Some(c) => c,
                None => b.consumers.entry(name.into()).or_default(),
            };
            count(c, hit, reason.as_ref());
        }
        (b.ips.len() >= BUFFER_MAX || b.consumers.len() >= BUFFER_MAX).then(|| b.take())
    });
    if let Ok(Some(taken)) = full {
        let mut g = global().lock().unwrap_or_else(|p| p.into_inner());
        g.fold(taken, minute());
    }
}

/// The lists of one time slice: by [`By`], for addresses then for consumers (apart, so
/// a flood of addresses cannot push the consumers out).
#[derive(Clone)]
struct Slice {
    /// The last minute it covers (Unix minutes).
    minute: u64,
    lists: [[Summary<Client>; 4]; 2],
}

impl Slice {
    fn new(minute: u64, capacity: usize) -> Self {
        Self {
            minute,
            lists: std::array::from_fn(|_| std::array::from_fn(|_| Summary::new(capacity))),
        }
    }

    fn is_empty(&self) -> bool {
        self.lists.iter().flatten().all(Summary::is_empty)
    }

    fn merge(&mut self, other: &Slice) {
        for (a, b) in self
            .lists
            .iter_mut()
            .flatten()
            .zip(other.lists.iter().flatten())
        {
            a.merge(b);
        }
        self.minute = self.minute.max(other.minute);
    }

    fn add(&mut self, kind: usize, who: &Client, c: &Counts) {
        for (i, by) in BYS.iter().enumerate() {
            self.lists[kind][i].add(who, by.weight(c), c);
        }
    }
}

/// One-minute slices kept before five of them are merged into one.
const FINE_MAX: usize = 10;
/// Slices of five minutes kept (with the fine ones, an hour).
const COARSE_MAX: usize = 11;

struct Global {
    current: Slice,
    fine: VecDeque<Slice>,
    coarse: VecDeque<Slice>,
}

fn global() -> &'static Mutex<Global> {
    static G: OnceLock<Mutex<Global>> = OnceLock::new();
    G.get_or_init(|| {
        Mutex::new(Global {
            current: Slice::new(minute(), capacity()),
            fine: VecDeque::new(),
            coarse: VecDeque::new(),
        })
    })
}

fn minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

impl Global {
    /// Starts a new slice when the minute turned, merging and dropping old ones.
    fn roll(&mut self, now: u64) {
        if self.current.minute == now {
            return;
        }
        let done = std::mem::replace(&mut self.current, Slice::new(now, capacity()));
        if !done.is_empty() {
            self.fine.push_back(done);
        }
        if self.fine.len() >= FINE_MAX {
            let mut merged = self.fine.pop_front().unwrap_or_else(|| Slice::new(now, 1));
            for _ in 1..5 {
                if let Some(s) = self.fine.pop_front() {
                    merged.merge(&s);
                }
            }
            self.coarse.push_back(merged);
        }
        let oldest = now.saturating_sub(60);
        self.fine.retain(|s| s.minute > oldest);
        self.coarse.retain(|s| s.minute > oldest);
        while self.coarse.len() > COARSE_MAX {
            self.coarse.pop_front();
        }
    }

    fn fold(&mut self, (ips, consumers): Taken, now: u64) {
        self.roll(now);
        for (ip, c) in ips {
            self.current.add(0, &Client::Ip(ip), &c);
        }
        for (name, c) in consumers {
            self.current.add(1, &Client::Consumer(name.into()), &c);
        }
    }

    /// The slices that end within the last `window` (rounded up to whole slices).
    fn within(&self, window: Duration, now: u64) -> impl Iterator<Item = &Slice> {
        let from = now.saturating_sub(window.as_secs().div_ceil(60));
        self.coarse
            .iter()
            .chain(&self.fine)
            .chain(std::iter::once(&self.current))
            .filter(move |s| s.minute >= from)
    }
}

/// Folds every worker's buffer into the current slice (the sampler calls it every 5 s;
/// queries call it first).
pub fn flush() {
    let list: Vec<Arc<Mutex<Buffer>>> = buffers().lock().unwrap_or_else(|p| p.into_inner()).clone();
    let now = minute();
    let mut g = global().lock().unwrap_or_else(|p| p.into_inner());
    g.roll(now);
    for b in list {
        let taken = b.lock().unwrap_or_else(|p| p.into_inner()).take();
        if !taken.0.is_empty() || !taken.1.is_empty() {
            g.fold(taken, now);
        }
    }
}

/// A ranked list for a window: its capacity, the keys it tracks, the heaviest first.
#[derive(Debug)]
pub struct Ranking {
    /// Counters per list.
    pub capacity: usize,
    /// Keys tracked over the window.
    pub tracked: usize,
    /// Entries, heaviest first (at most the limit asked for).
    pub items: Vec<Entry<Client>>,
}

fn merged(window: Duration, by: By, consumers: bool) -> Summary<Client> {
    flush();
    let g = global().lock().unwrap_or_else(|p| p.into_inner());
    let mut out = Summary::new(capacity());
    for s in g.within(window, minute()) {
        out.merge(&s.lists[usize::from(consumers)][by as usize]);
    }
    out
}

/// The heaviest clients (`consumers`: consumers, else addresses) by `by` over `window`.
pub fn top(window: Duration, by: By, consumers: bool, limit: usize) -> Ranking {
    let s = merged(window, by, consumers);
    let items: Vec<Entry<Client>> = s.ranked().into_iter().take(limit).cloned().collect();
    Ranking {
        capacity: capacity(),
        tracked: s.len(),
        items,
    }
}

/// Clients ranked by requests refused, then by 4xx answers: the blocked list and the
/// error list together.
pub fn attackers(window: Duration, consumers: bool, limit: usize) -> Ranking {
    let blocked = merged(window, By::Blocked, consumers);
    let errors = merged(window, By::Errors, consumers);
    let mut by_key: HashMap<Client, Entry<Client>> = HashMap::new();
    for e in blocked.entries() {
        by_key.insert(e.key.clone(), e.clone());
    }
    for e in errors.entries() {
        if e.counts.client_errors == 0 {
            continue;
        }
        by_key.entry(e.key.clone()).or_insert_with(|| Entry {
            key: e.key.clone(),
            weight: 0,
            error: 0,
            counts: e.counts.clone(),
        });
    }
    let tracked = by_key.len();
    let mut items: Vec<Entry<Client>> = by_key.into_values().collect();
    items.sort_by(|a, b| {
        b.weight
            .cmp(&a.weight)
            .then(b.counts.client_errors.cmp(&a.counts.client_errors))
    });
    items.truncate(limit);
    Ranking {
        capacity: capacity(),
        tracked,
        items,
    }
}

/// Bytes the lists take now (an estimate: entries, their index and heap).
pub fn memory_bytes() -> usize {
    const PER_ENTRY: usize = std::mem::size_of::<Entry<Client>>() + 48;
    let g = global().lock().unwrap_or_else(|p| p.into_inner());
    let entries: usize = g
        .coarse
        .iter()
        .chain(&g.fine)
        .chain(std::iter::once(&g.current))
        .flat_map(|s| s.lists.iter().flatten().map(Summary::len))
        .sum();
    entries * PER_ENTRY
}
