//! `type: concurrency_limit`: at most `max` requests of a key in flight at once, for the
//! whole process; one more is answered 429 at once (reason `concurrency_full`), never
//! queued. A request holds its place from its request phase until it is complete
//! (`on_complete`, which runs on every exit: answered, failed or abandoned by the client).
//! The table holds only keys with requests in flight.

use crate::rate_limit::{KeyPart, KeySpec, hash_key, key_parts};
use crate::{Build, BuildResult, Kind};
use gatehouse_core::{Fingerprint, Flow, Policy, Problem, RequestCtx, problem_response};
use http::StatusCode;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

/// `type: concurrency_limit`.
pub const KIND: Kind = Kind {
    name: "concurrency_limit",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// The settings of `type: concurrency_limit`.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ConcurrencyLimitPolicy")]
pub struct Config {
    /// Requests in flight at most, per key.
    pub max: u64,
    /// What is counted apart, as for `rate_limit`; default `route`.
    #[serde(default = "default_key")]
    pub key: KeySpec,
}

fn default_key() -> KeySpec {
    KeySpec::One("route".into())
}

const SHARDS: usize = 16;

/// Requests in flight per key, for one named policy.
#[derive(Debug)]
pub struct InFlight {
    shards: Box<[Mutex<HashMap<u64, u64>>]>,
    keys: ahash::RandomState,
}

impl InFlight {
    fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            keys: ahash::RandomState::new(),
        }
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        self.shards[(key >> 60) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for `key` unless `max` are taken.
    fn enter(&self, key: u64, max: u64) -> bool {
        let mut s = self.shard(key);
        let n = s.entry(key).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    /// Gives a place of `key` back.
    fn leave(&self, key: u64) {
        let mut s = self.shard(key);
        if let Some(n) = s.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.remove(&key);
            }
        }
    }

    /// Requests in flight for `key`.
    pub fn count(&self, key: u64) -> u64 {
        self.shard(key).get(&key).copied().unwrap_or(0)
    }
}

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    if c.max == 0 {
        return Err(vec![b.issue(Some("max"), "must be at least 1")]);
    }
    let parts = key_parts(&c.key).map_err(|(f, m)| vec![b.issue(Some(&f), m)])?;
    // Counts of requests in flight carry across any reload (they are facts, not settings).
    let table = b
        .state
        .get_or_build("concurrency_limit", b.name, Fingerprint(0), |_| {
            InFlight::new()
        });
    Ok(Arc::new(ConcurrencyLimit {
        name: b.name.into(),
        max: c.max,
        parts,
        table,
    }))
}

/// The compiled concurrency_limit policy.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    name: Arc<str>,
    max: u64,
    parts: Vec<KeyPart>,
    table: Arc<InFlight>,
}

/// A place a request holds (its key), to give back when it completes.
#[derive(Debug, Clone, Copy)]
struct Place(u64);

impl Policy for ConcurrencyLimit {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        let key = hash_key(&self.parts, self.table.keys.build_hasher(), Some(req), ctx);
        if !self.table.enter(key, self.max) {
            let p = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many requests in flight ({} at most); retry later",
                    self.max
                ),
            );
            let mut r = problem_response(&p, &ctx.request_id);
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
            return Flow::respond("concurrency_full", r);
        }
        crate::notes::keep(ctx, &self.name, Place(key));
        Flow::Continue
    }

    fn on_complete(&self, ctx: &RequestCtx) {
        for place in crate::notes::kept::<Place>(ctx, &self.name) {
            self.table.leave(place.0);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn places_are_taken_up_to_max_and_given_back() {
        let t = InFlight::new();
        assert!(t.enter(1, 2) && t.enter(1, 2));
        assert!(!t.enter(1, 2), "full");
        assert!(t.enter(2, 2), "another key");
        t.leave(1);
        assert_eq!(t.count(1), 1);
        assert!(t.enter(1, 2));
        t.leave(1);
        t.leave(1);
        t.leave(1);
        assert_eq!(t.count(1), 0);
        assert!(t.shard(1).get(&1).is_none(), "idle keys are not kept");
    }
}
