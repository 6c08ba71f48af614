//! Tallies per route, upstream and consumer for the quality score and the latency
//! breakdown (docs/operations.md, "Quality score" and "Where the time goes"). A
//! finished request adds to counters its worker thread alone writes (no lock, no shared
//! cache line); every 5 s the traffic sampler thread sums the workers' counters and keeps
//! what changed: 5 s buckets for the last 5 minutes and 1-minute buckets for the hour,
//! only for subjects that had traffic. A query for a window sums the buckets it covers
//! plus what happened since the last sample.

use crate::phases::Breakdown;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a tally is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// A route, by name.
    Route,
    /// An upstream, by name.
    Upstream,
    /// A consumer, by name.
    Consumer,
}

/// Requests finished.
pub const REQUESTS: usize = 0;
/// Requests no slower than the apdex target (and not 5xx).
pub const SATISFIED: usize = 1;
/// Requests no slower than four times the target (and not 5xx).
pub const TOLERATED: usize = 2;
/// Slower requests, and every 5xx.
pub const FRUSTRATED: usize = 3;
/// 5xx answers.
pub const ERRORS: usize = 4;
/// 4xx answers.
pub const CLIENT_ERRORS: usize = 5;
/// Requests refused by a security policy.
pub const BLOCKED: usize = 6;
/// Retries the budget or an open breaker denied (upstreams).
pub const RETRIES_DENIED: usize = 7;
/// 1xx, 2xx and 3xx answers (4xx and 5xx are [`CLIENT_ERRORS`] and [`ERRORS`]).
pub const CLASSES_1_TO_3: [usize; 3] = [8, 9, 10];
const COUNTERS: usize = 11;

/// Sums for one subject over some time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Indexed by [`REQUESTS`], [`SATISFIED`], ...
    pub counts: [u64; COUNTERS],
    /// Per phase (`phases::NAMES` order): total nanoseconds (routes only).
    pub phase_nanos: [u64; 4],
    /// Per phase: request counts per duration bucket (the metrics buckets, then +Inf),
    /// flattened phase after phase; empty for upstreams and consumers.
    pub phase_buckets: Vec<u64>,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        for (a, b) in self.counts.iter_mut().zip(o.counts) {
            *a += b;
        }
        for (a, b) in self.phase_nanos.iter_mut().zip(o.phase_nanos) {
            *a += b;
        }
        if self.phase_buckets.len() < o.phase_buckets.len() {
            self.phase_buckets.resize(o.phase_buckets.len(), 0);
        }
        for (a, b) in self.phase_buckets.iter_mut().zip(&o.phase_buckets) {
            *a += b;
        }
    }

    /// `self - before`, per counter (never below zero).
    fn since(&self, before: Option<&Tally>) -> Tally {
        let Some(b) = before else {
            return self.clone();
        };
        let mut d = self.clone();
        for (a, x) in d.counts.iter_mut().zip(b.counts) {
            *a = a.saturating_sub(x);
        }
        for (a, x) in d.phase_nanos.iter_mut().zip(b.phase_nanos) {
            *a = a.saturating_sub(x);
        }
        for (a, x) in d.phase_buckets.iter_mut().zip(&b.phase_buckets) {
            *a = a.saturating_sub(*x);
        }
        d
    }

    /// The counts of one phase's histogram.
    pub fn phase_histogram(&self, phase: usize) -> &[u64] {
        let n = self.phase_buckets.len() / 4;
        self.phase_buckets
            .get(phase * n..(phase + 1) * n)
            .unwrap_or(&[])
    }
}

/// The tallies of every subject, by subject and name.
pub type Tallies = HashMap<(Subject, Arc<str>), Tally>;

/// One thread's counters for one subject.
struct Cell {
    subject: Subject,
    name: Arc<str>,
    counts: [AtomicU64; COUNTERS],
    phase_nanos: [AtomicU64; 4],
    phase_buckets: Box<[AtomicU64]>,
}

impl Cell {
    fn new(subject: Subject, name: Arc<str>) -> Self {
        let buckets = if subject == Subject::Route {
            4 * (crate::metrics::bucket_bounds().len() + 1)
        } else {
            0
        };
        Self {
            subject,
            name,
            counts: Default::default(),
            phase_nanos: Default::default(),
            phase_buckets: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn read(&self) -> Tally {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Tally {
            counts: self.counts.each_ref().map(load),
            phase_nanos: self.phase_nanos.each_ref().map(load),
            phase_buckets: self.phase_buckets.iter().map(load).collect(),
        }
    }
}

/// Adds to a counter only this thread writes: a load and a store, no locked instruction.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Every thread's cells (the list is locked when a thread adds a subject and when the
/// sampler reads, never to count).
fn cells() -> &'static Mutex<Vec<Arc<Cell>>> {
    static CELLS: OnceLock<Mutex<Vec<Arc<Cell>>>> = OnceLock::new();
    CELLS.get_or_init(Mutex::default)
}

/// Consumers with a tally of their own, at most [`set_consumer_capacity`]; the others
/// count as `other`.
fn consumers_seen() -> &'static Mutex<HashMap<Arc<str>, usize>> {
    static SEEN: OnceLock<Mutex<HashMap<Arc<str>, usize>>> = OnceLock::new();
    SEEN.get_or_init(Mutex::default)
}

/// The order in which a consumer was first seen (0 for the first), if it has a tally
/// of its own.
pub fn consumer_rank(name: &str) -> Option<usize> {
    consumers_seen()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        .copied()
}

static CONSUMER_CAPACITY: AtomicUsize = AtomicUsize::new(1000);

/// How many consumers get a tally (and a score) of their own (`analytics.top_capacity`).
pub fn set_consumer_capacity(n: usize) {
    CONSUMER_CAPACITY.store(n.max(1), Ordering::Relaxed);
}

/// The name consumers beyond the capacity are counted under.
pub const OTHER: &str = "other";

#[derive(Default)]
struct Local {
    /// Routes and upstreams by the address of their shared name (kept alive by the cell,
    /// so the address cannot be reused by another name).
    by_ptr: HashMap<(Subject, usize), Arc<Cell>, ahash::RandomState>,
    consumers: HashMap<Box<str>, Arc<Cell>, ahash::RandomState>,
    /// The last route's and upstream's cells: a worker mostly serves the same few, and
    /// a pointer compare is cheaper than a hash.
    last: [Option<(usize, Arc<Cell>)>; 2],
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::default();
}

fn new_cell(subject: Subject, name: Arc<str>) -> Arc<Cell> {
    let c = Arc::new(Cell::new(subject, name));
    cells()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(c.clone());
    c
}

fn named<'a>(local: &'a mut Local, subject: Subject, name: &Arc<str>) -> &'a Cell {
    let ptr = Arc::as_ptr(name).cast::<u8>() as usize;
    let Local { by_ptr, last, .. } = local;
    let entry = &mut last[usize::from(subject != Subject::Route)];
    if !matches!(entry, Some((p, _)) if *p == ptr) {
        let cell = by_ptr
            .entry((subject, ptr))
            .or_insert_with(|| new_cell(subject, name.clone()))
            .clone();
        *entry = Some((ptr, cell));
    }
    // Filled just above when it missed: the closure never runs.
    &entry
        .get_or_insert_with(|| (ptr, new_cell(subject, name.clone())))
        .1
}

fn consumer(local: &mut Local, name: &str) -> Arc<Cell> {
    if let Some(c) = local.consumers.get(name) {
        return c.clone();
    }
    let admitted: Arc<str> = {
        let mut seen = consumers_seen().lock().unwrap_or_else(|p| p.into_inner());
        if let Some((n, _)) = seen.get_key_value(name) {
            n.clone()
        } else if seen.len() < CONSUMER_CAPACITY.load(Ordering::Relaxed) {
            let n: Arc<str> = name.into();
            let rank = seen.len();
            seen.insert(n.clone(), rank);
            n
        } else {
            OTHER.into()
        }
    };
    let c = match local.consumers.get(&*admitted) {
        Some(c) => c.clone(),
        None => new_cell(Subject::Consumer, admitted.clone()),
    };
    // Bounded by the capacity (plus `other`) per thread.
    local.consumers.insert(name.into(), c.clone());
    c
}

/// A finished request, as the tallies see it.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// Its route.
    pub route: Option<&'a Arc<str>>,
    /// The upstream it went to.
    pub upstream: Option<&'a Arc<str>>,
    /// The consumer that made it.
    pub consumer: Option<&'a str>,
    /// Response status.
    pub status: u16,
    /// Total time.
    pub total: Duration,
    /// The apdex target of its route.
    pub target: Duration,
    /// Refused by a security policy.
    pub blocked: bool,
    /// Where the time went.
    pub breakdown: &'a Breakdown,
}

static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns the request-path analytics (tallies and Top-N) on or off (`analytics.enabled`).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether finished requests are tallied.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Adds a finished request to its route's, upstream's and consumer's tallies.
pub fn record(o: &Outcome<'_>) {
    let class = if o.status >= 500 || o.total > o.target * 4 {
        FRUSTRATED
    } else if o.total > o.target {
        TOLERATED
    } else {
        SATISFIED
    };
    let count = |c: &Cell| {
        bump(&c.counts[REQUESTS], 1);
        bump(&c.counts[class], 1);
        let class = match o.status {
            500.. => ERRORS,
            400..500 => CLIENT_ERRORS,
            300..400 => CLASSES_1_TO_3[2],
            200..300 => CLASSES_1_TO_3[1],
            _ => CLASSES_1_TO_3[0],
        };
        bump(&c.counts[class], 1);
        if o.blocked {
            bump(&c.counts[BLOCKED], 1);
        }
    };
    let _ = LOCAL.try_with(|l| {
        let Ok(mut local) = l.try_borrow_mut() else {
            return;
        };
        if let Some(r) = o.route {
            let c = named(&mut local, Subject::Route, r);
            count(c);
            let bounds = crate::metrics::bucket_bounds();
            let per = bounds.len() + 1;
            for (i, d) in o.breakdown.as_array().iter().enumerate() {
                let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
                bump(&c.phase_nanos[i], n);
                let b = bounds.iter().position(|x| n <= *x).unwrap_or(bounds.len());
                if let Some(slot) = c.phase_buckets.get(i * per + b) {
                    bump(slot, 1);
                }
            }
        }
        if let Some(u) = o.upstream {
            count(named(&mut local, Subject::Upstream, u));
        }
        if let Some(name) = o.consumer {
            count(&consumer(&mut local, name));
        }
    });
}

/// A retry the budget or an open breaker denied.
pub fn retry_denied(upstream: &Arc<str>) {
    let _ = LOCAL.try_with(|l| {
        if let Ok(mut local) = l.try_borrow_mut() {
            bump(
                &named(&mut local, Subject::Upstream, upstream).counts[RETRIES_DENIED],
                1,
            );
        }
    });
}

/// Everything counted since the process started, summed over threads.
pub fn totals() -> Tallies {
    let cells: Vec<Arc<Cell>> = cells().lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut out = Tallies::with_capacity(cells.len());
    for c in cells {
        out.entry((c.subject, c.name.clone()))
            .or_default()
            .add(&c.read());
    }
    out
}

/// Writes `gatehouse_phase_duration_seconds{route,phase}` from the totals.
pub fn write_phase_metrics(e: &mut crate::metrics::Exposition, totals: &Tallies) {
    use crate::metrics::name::PHASE_DURATION;
    e.family(
        PHASE_DURATION,
        "histogram",
        "Request time by phase: client, gateway, upstream_network, upstream_app (a phase that never took time on the route has no series).",
    );
    let mut routes: Vec<(&Arc<str>, &Tally)> = totals
        .iter()
        .filter(|((s, _), _)| *s == Subject::Route)
        .map(|((_, n), t)| (n, t))
        .collect();
    routes.sort_by(|a, b| a.0.cmp(b.0));
    for (route, t) in routes {
        for (i, phase) in crate::phases::NAMES.iter().enumerate() {
            // A phase that never took time on this route (the upstream phases of a
            // route that answers itself) has no series: all-zero buckets would read as
            // a latency in histogram_quantile.
            if t.phase_nanos[i] == 0 {
                continue;
            }
            let labels = [("route", &**route), ("phase", *phase)];
            crate::metrics::write_histogram(
                e,
                PHASE_DURATION,
                &labels,
                t.phase_histogram(i),
                t.phase_nanos[i],
            );
        }
    }
}

/// 5 s buckets kept (5 minutes).
const FINE: usize = 60;
/// 1-minute buckets kept (an hour).
const COARSE: usize = 60;
/// Fine buckets per coarse one.
const PER_MINUTE: usize = 12;

/// One bucket: what changed, per subject with traffic, until `end` (Unix seconds).
struct Bucket {
    end: u64,
    tallies: Tallies,
}

#[derive(Default)]
struct History {
    fine: VecDeque<Bucket>,
    coarse: VecDeque<Bucket>,
    /// Fine buckets since the last coarse one, summed.
    minute: Tallies,
    minute_buckets: usize,
    /// The totals at the last sample.
    last: Tallies,
}

fn history() -> &'static Mutex<History> {
    static H: OnceLock<Mutex<History>> = OnceLock::new();
    H.get_or_init(|| {
        Mutex::new(History {
            last: totals(),
            ..History::default()
        })
    })
}

fn unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What changed since `last`, for subjects that had requests (or denied retries).
fn delta(now: &Tallies, last: &Tallies) -> Tallies {
    now.iter()
        .filter_map(|(k, t)| {
            let d = t.since(last.get(k));
            (d.counts[REQUESTS] > 0 || d.counts[RETRIES_DENIED] > 0).then(|| (k.clone(), d))
        })
        .collect()
}

fn merge(into: &mut Tallies, from: &Tallies) {
    for (k, t) in from {
        into.entry(k.clone()).or_default().add(t);
    }
}

/// Closes the current 5 s bucket (the traffic sampler calls it).
pub fn sample() {
    let now = totals();
    let mut h = history().lock().unwrap_or_else(|p| p.into_inner());
    let tallies = delta(&now, &h.last);
    let end = unix();
    merge(&mut h.minute, &tallies);
    h.minute_buckets += 1;
    if h.fine.len() >= FINE {
        h.fine.pop_front();
    }
    h.fine.push_back(Bucket { end, tallies });
    if h.minute_buckets >= PER_MINUTE {
        let tallies = std::mem::take(&mut h.minute);
        h.minute_buckets = 0;
        if h.coarse.len() >= COARSE {
            h.coarse.pop_front();
        }
        h.coarse.push_back(Bucket { end, tallies });
    }
    h.last = now;
}

/// Bytes the kept buckets take (an estimate).
pub fn memory_bytes() -> usize {
    let h = history().lock().unwrap_or_else(|p| p.into_inner());
    let tally = |t: &Tallies| -> usize {
        t.values()
            .map(|x| std::mem::size_of::<Tally>() + 64 + x.phase_buckets.len() * 8)
            .sum()
    };
    h.fine
        .iter()
        .chain(&h.coarse)
        .map(|b| tally(&b.tallies))
        .sum::<usize>()
        + tally(&h.minute)
        + tally(&h.last)
}

/// Longest window a query may ask for.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// The tallies of the last `window` (5 s steps up to 5 minutes, then whole minutes),
/// including what happened since the last sample.
pub fn window(window: Duration) -> Tallies {
    let now_totals = totals();
    let h = history().lock().unwrap_or_else(|p| p.into_inner());
    let now = unix();
    let from = now.saturating_sub(window.as_secs());
    let mut out = delta(&now_totals, &h.last);
    if window <= Duration::from_secs(300) {
        for b in h.fine.iter().filter(|b| b.end > from) {
            merge(&mut out, &b.tallies);
        }
    } else {
        merge(&mut out, &h.minute);
        for b in h.coarse.iter().filter(|b| b.end > from) {
            merge(&mut out, &b.tallies);
        }
    }
    out
}

/// The `q` quantile (0 to 1) of a histogram over `bounds` (nanoseconds; the last count
/// is +Inf), interpolated inside its bucket as Prometheus' `histogram_quantile` does.
pub fn quantile(counts: &[u64], bounds: &[u64], q: f64) -> Option<Duration> {
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return None;
    }
    let rank = q * n as f64;
    let mut seen = 0u64;
    for (i, c) in counts.iter().enumerate() {
        if *c > 0 && (seen + c) as f64 >= rank {
            let Some(upper) = bounds.get(i) else {
                // +Inf: the highest finite bound is all that is known.
                return bounds.last().map(|b| Duration::from_nanos(*b));
            };
            let lower = if i == 0 { 0 } else { bounds[i - 1] };
            let within = (rank - seen as f64) / *c as f64;
            let v = lower as f64 + (*upper - lower) as f64 * within.clamp(0.0, 1.0);
            return Some(Duration::from_nanos(v as u64));
        }
        seen += c;
    }
    bounds.last().map(|b| Duration::from_nanos(*b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        let bounds = [10, 20, 40];
        // 10 in (0,10], 10 in (10,20], 0 in (20,40], 0 above.
        let q = |p| quantile(&[10, 10, 0, 0], &bounds, p).unwrap().as_nanos();
        assert_eq!(q(0.5), 10);
        assert_eq!(q(0.75), 15);
        assert_eq!(q(1.0), 20);
        assert_eq!(quantile(&[0, 0, 0, 0], &bounds, 0.5), None);
        assert_eq!(
            quantile(&[0, 0, 0, 5], &bounds, 0.95),
            Some(Duration::from_nanos(40))
        );
    }

    #[test]
    fn requests_are_classed_against_the_target_and_5xx_frustrates() {
        let route: Arc<str> = "quality-unit-route".into();
        let b = Breakdown::default();
        let ms = Duration::from_millis;
        for (status, took) in [(200, 10), (200, 150), (200, 900), (503, 1), (404, 1)] {
            record(&Outcome {
                route: Some(&route),
                upstream: None,
                consumer: None,
                status,
                total: ms(took),
                target: ms(100),
                blocked: status == 404,
                breakdown: &b,
            });
        }
        let t = totals().remove(&(Subject::Route, route.clone())).unwrap();
        assert_eq!(t.counts[REQUESTS], 5);
        assert_eq!(t.counts[SATISFIED], 2);
        assert_eq!(t.counts[TOLERATED], 1);
        assert_eq!(t.counts[FRUSTRATED], 2);
        assert_eq!(t.counts[ERRORS], 1);
        assert_eq!(t.counts[CLIENT_ERRORS], 1);
        assert_eq!(t.counts[BLOCKED], 1);
        assert_eq!(t.phase_histogram(0).iter().sum::<u64>(), 5);
    }
}
