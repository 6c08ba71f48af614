//! Live traffic per route for `GET /admin/traffic` and the dashboard: every 5 s a
//! sampler thread reads the request counters the metrics already keep (no cost on the
//! request path) and stores what each route answered in those 5 s; an hour of buckets
//! is kept. A query gets the finished buckets of its window plus the one in progress.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Length of a bucket.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Buckets kept: one hour.
pub const KEPT: usize = 720;

/// What one route answered in one bucket: `[requests, 4xx, 5xx]`.
pub type Counts = [u64; 3];

/// One bucket: when it ended (Unix seconds) and the counts per route.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// End of the bucket, Unix seconds.
    pub end: u64,
    /// Counts per route name (`""` for requests without a route).
    pub routes: HashMap<String, Counts>,
}

struct History {
    buckets: VecDeque<Bucket>,
    /// The totals at the last sample.
    last: HashMap<String, Counts>,
    last_at: u64,
}

fn history() -> &'static Mutex<History> {
    static H: OnceLock<Mutex<History>> = OnceLock::new();
    H.get_or_init(|| {
        Mutex::new(History {
            buckets: VecDeque::with_capacity(KEPT),
            last: crate::metrics::route_totals(),
            last_at: unix(),
        })
    })
}

fn unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What changed per route since `last`.
fn delta(now: &HashMap<String, Counts>, last: &HashMap<String, Counts>) -> HashMap<String, Counts> {
    now.iter()
        .filter_map(|(route, c)| {
            let before = last.get(route).copied().unwrap_or_default();
            let d = [
                c[0].saturating_sub(before[0]),
                c[1].saturating_sub(before[1]),
                c[2].saturating_sub(before[2]),
            ];
            (d[0] > 0).then(|| (route.clone(), d))
        })
        .collect()
}

/// Closes the current bucket.
fn sample() {
    let totals = crate::metrics::route_totals();
    let mut h = history().lock().unwrap_or_else(|p| p.into_inner());
    let routes = delta(&totals, &h.last);
    let end = unix();
    if h.buckets.len() >= KEPT {
        h.buckets.pop_front();
    }
    h.buckets.push_back(Bucket { end, routes });
    h.last = totals;
    h.last_at = end;
}

/// Starts the sampler thread (once per process).
pub fn start() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let _ = history();
        crate::stats::sample();
        let _ = std::thread::Builder::new()
            .name("gatehouse-traffic".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(INTERVAL);
                    sample();
                    crate::stats::sample();
                    crate::top::flush();
                }
            });
    });
}

/// The buckets that ended within the last `window`, oldest first, then the bucket in
/// progress (ending now).
pub fn recent(window: Duration) -> Vec<Bucket> {
    let totals = crate::metrics::route_totals();
    let h = history().lock().unwrap_or_else(|p| p.into_inner());
    let now = unix();
    let from = now.saturating_sub(window.as_secs());
    let mut out: Vec<Bucket> = h.buckets.iter().filter(|b| b.end > from).cloned().collect();
    out.push(Bucket {
        end: now,
        routes: delta(&totals, &h.last),
    });
    out
}
