//! The last requests, kept for `GET /admin/transactions` whatever the access log's
//! sampling: a ring of at most `analytics.transactions` records, newest first on read,
//! shared by every worker and kept across reloads (the capacity follows the config).
//! Long fields are cut to [`FIELD_LIMIT`] bytes in the ring, so its memory is bounded by
//! the capacity, not by what clients send.

use crate::access_log::AccessRecord;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Longest path, query, host, user agent or error kept in the ring, in bytes.
pub const FIELD_LIMIT: usize = 512;

struct Ring {
    items: Mutex<VecDeque<Arc<AccessRecord>>>,
    capacity: AtomicUsize,
}

fn ring() -> &'static Ring {
    static RING: OnceLock<Ring> = OnceLock::new();
    RING.get_or_init(|| Ring {
        items: Mutex::new(VecDeque::new()),
        capacity: AtomicUsize::new(0),
    })
}

/// Sets how many records are kept (`analytics.transactions`); 0 keeps none.
pub fn set_capacity(n: usize) {
    let r = ring();
    r.capacity.store(n, Ordering::Relaxed);
    let mut items = r.items.lock().unwrap_or_else(|p| p.into_inner());
    while items.len() > n {
        items.pop_front();
    }
    items.shrink_to(n);
}

/// Whether records are kept at all (saves building them).
pub fn is_on() -> bool {
    ring().capacity.load(Ordering::Relaxed) > 0
}

fn cut(s: &mut String) {
    if s.len() > FIELD_LIMIT {
        let end = (0..=FIELD_LIMIT)
            .rev()
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        s.truncate(end);
    }
}

/// Keeps `rec` (cut to the field limit), dropping the oldest beyond the capacity.
pub fn keep(rec: Arc<AccessRecord>) {
    let r = ring();
    let cap = r.capacity.load(Ordering::Relaxed);
    if cap == 0 {
        return;
    }
    let long = |s: Option<&String>| s.is_some_and(|s| s.len() > FIELD_LIMIT);
    let rec = if long(Some(&rec.path))
        || long(Some(&rec.host))
        || long(rec.query.as_ref())
        || long(rec.user_agent.as_ref())
        || long(rec.error.as_ref())
    {
        let mut c = (*rec).clone();
        cut(&mut c.path);
        cut(&mut c.host);
        for s in [&mut c.query, &mut c.user_agent, &mut c.error]
            .into_iter()
            .flatten()
        {
            cut(s);
        }
        Arc::new(c)
    } else {
        rec
    };
    let mut items = r.items.lock().unwrap_or_else(|p| p.into_inner());
    while items.len() >= cap {
        items.pop_front();
    }
    items.push_back(rec);
}

/// The kept records that `matches` accepts, newest first, at most `limit`.
pub fn search(limit: usize, matches: impl Fn(&AccessRecord) -> bool) -> Vec<Arc<AccessRecord>> {
    let items: Vec<Arc<AccessRecord>> = {
        let items = ring().items.lock().unwrap_or_else(|p| p.into_inner());
        // Copy the pointers out: filtering runs without holding the workers' lock.
        items.iter().cloned().collect()
    };
    items
        .into_iter()
        .rev()
        .filter(|r| matches(r))
        .take(limit)
        .collect()
}

/// How many records are kept now.
pub fn len() -> usize {
    ring().items.lock().unwrap_or_else(|p| p.into_inner()).len()
}
