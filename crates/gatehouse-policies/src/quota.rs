//! `type: quota`: requests per calendar period (UTC minute, hour, day, ISO week, month or
//! year) for each key, the allowance chosen by the consumer's plan: the first of its
//! groups (in the consumer's order) that `limits` names, else the `"*"` entry, else the
//! request is not counted. Beyond it: 429 problem+json with `Retry-After` until the
//! period ends, reason `quota_exceeded`; every counted response carries the `RateLimit`
//! headers and Kong's `X-RateLimit-Remaining-<period>`.
//!
//! Durable: counts live in memory for the request path and are written to the embedded
//! store (`store.path`) every second and when the policy's state is dropped; a key not
//! in memory is read from the store once. A crash loses at most the last second's
//! counts. Periods restart at calendar boundaries in UTC, whatever the process did in
//! between (a restart mid-month keeps the month's count). With `scope: cluster` the
//! counts are in Redis instead, reserved in batches (`shared_limit.rs`).

use crate::rate_limit::{KeyPart, KeySpec, key_parts};
use crate::shared_limit::{Counting, SharedLimit, Verdict};
use crate::{Build, BuildResult, Kind};
use gatehouse_core::{Fingerprint, Flow, Policy, Problem, RequestCtx, problem_response};
use gatehouse_store::{Store, Usage};
use http::{HeaderName, HeaderValue, StatusCode};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `type: quota`.
pub const KIND: Kind = Kind {
    name: "quota",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// The settings of `type: quota`.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "QuotaPolicy")]
pub struct Config {
    /// Plan per consumer group: `N/minute`, `N/hour`, `N/day`, `N/week`, `N/month` or
    /// `N/year`; `"*"` for consumers (and anonymous clients) of no listed group.
    pub limits: BTreeMap<String, String>,
    /// What is counted apart, as for `rate_limit`; default `consumer`.
    #[serde(default)]
    pub key: KeySpec,
    /// `local` (default): counts in the embedded store; `cluster`: in Redis.
    #[serde(default)]
    pub scope: crate::rate_limit::Scope,
    /// Keys kept in memory at most (others are read from the store when they return);
    /// default 100000.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_max_keys() -> usize {
    100_000
}

/// A calendar period in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// From second 0 of a minute.
    Minute,
    /// From minute 0 of an hour.
    Hour,
    /// From midnight UTC.
    Day,
    /// From Monday midnight UTC (ISO 8601 weeks).
    Week,
    /// From the 1st, midnight UTC.
    Month,
    /// From January 1st, midnight UTC.
    Year,
}

impl Period {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "minute" => Self::Minute,
            "hour" => Self::Hour,
            "day" => Self::Day,
            "week" => Self::Week,
            "month" => Self::Month,
            "year" => Self::Year,
            _ => return None,
        })
    }

    /// Kong's header for the budget left in this period.
    fn remaining_header(self) -> HeaderName {
        HeaderName::from_static(match self {
            Self::Minute => "x-ratelimit-remaining-minute",
            Self::Hour => "x-ratelimit-remaining-hour",
            Self::Day => "x-ratelimit-remaining-day",
            Self::Week => "x-ratelimit-remaining-week",
            Self::Month => "x-ratelimit-remaining-month",
            Self::Year => "x-ratelimit-remaining-year",
        })
    }

    /// The period's name in config (`day`, `month`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Year => "year",
        }
    }

    /// The period holding Unix second `now`: its start and end (Unix seconds).
    pub fn bounds(self, now: i64) -> (i64, i64) {
        const DAY: i64 = 86_400;
        let fixed = |len: i64| {
            let start = now - now.rem_euclid(len);
            (start, start + len)
        };
        match self {
            Self::Minute => fixed(60),
            Self::Hour => fixed(3_600),
            Self::Day => fixed(DAY),
            Self::Week => {
                // 1970-01-01 was a Thursday: three days after a Monday.
                let days = now.div_euclid(DAY);
                let monday = days - (days + 3).rem_euclid(7);
                (monday * DAY, (monday + 7) * DAY)
            }
            Self::Month | Self::Year => {
                let midnight = |y: i32, m: time::Month| {
                    time::Date::from_calendar_date(y, m, 1)
                        .map(|d| d.midnight().assume_utc().unix_timestamp())
                        .unwrap_or(now)
                };
                let date = time::OffsetDateTime::from_unix_timestamp(now)
                    .map(|t| t.date())
                    .unwrap_or(time::Date::MIN);
                let (y, m) = (date.year(), date.month());
                if self == Self::Year {
                    (
                        midnight(y, time::Month::January),
                        midnight(y + 1, time::Month::January),
                    )
                } else {
                    let (ny, nm) = match m {
                        time::Month::December => (y + 1, time::Month::January),
                        _ => (y, m.next()),
                    };
                    (midnight(y, m), midnight(ny, nm))
                }
            }
        }
    }
}

/// One plan: `limit` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Plan {
    /// Requests per period.
    pub limit: u64,
    /// The calendar period.
    pub period: Period,
}

impl Plan {
    /// Parses `N/period`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected N/minute, N/hour, N/day, N/week, N/month or N/year");
        let (n, p) = s.split_once('/').ok_or_else(bad)?;
        let limit = n
            .trim()
            .replace('_', "")
            .parse::<u64>()
            .map_err(|_| bad())?;
        let period = Period::parse(p.trim()).ok_or_else(bad)?;
        if limit == 0 {
            return Err(format!("{s:?}: the allowance must be at least 1"));
        }
        Ok(Self { limit, period })
    }
}

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    let issue = |field: &str, m: &str| vec![b.issue(Some(field), m)];
    if c.limits.is_empty() {
        return Err(issue("limits", "must name at least one plan"));
    }
    let mut plans = HashMap::new();
    for (group, spec) in &c.limits {
        let plan = Plan::parse(spec).map_err(|m| issue(&format!("limits.{group}"), &m))?;
        plans.insert(group.clone(), plan);
    }
    let cluster = match c.scope {
        crate::rate_limit::Scope::Local => {
            if b.config.store.is_none() {
                return Err(issue(
                    "limits",
                    "quotas are durable: set `store.path` (the embedded store that keeps their counts) or use scope: cluster",
                ));
            }
            None
        }
        crate::rate_limit::Scope::Cluster => {
            let Some(redis) = &b.config.cluster.redis else {
                return Err(issue(
                    "scope",
                    "cluster scope needs `cluster.redis` (the Redis server the gateways share)",
                ));
            };
            match &gatehouse_cluster::Cluster::staged(b.state, redis, b.dir).0 {
                Ok(cluster) => Some(cluster.clone()),
                // The link's own error is reported at `cluster.redis`.
                Err(_) => return Err(issue("scope", "`cluster.redis` is not usable")),
            }
        }
    };
    if c.max_keys == 0 {
        return Err(issue("max_keys", "must be at least 1"));
    }
    let parts = key_parts(&c.key).map_err(|(f, m)| issue(&f, &m))?;
    // The store this config opened (absent while a config is only checked).
    let store = {
        let (kind, name) = gatehouse_store::STATE;
        b.state
            .staged::<gatehouse_store::Opened>(kind, name)
            .and_then(|o| o.0.as_ref().ok().cloned())
    };
    let fp = Fingerprint::of(&(
        &parts,
        c.max_keys,
        store.as_ref().map(|s| Arc::as_ptr(s) as usize),
        cluster.as_ref().map(|s| Arc::as_ptr(s) as usize),
    ));
    let counts = b.state.get_or_build("quota", b.name, fp, |_| {
        let mut counts = Counts::new(b.name, parts.clone(), c.max_keys, store.clone());
        if let Some(cluster) = &cluster {
            let [k0, k1, k2, k3] = crate::rate_limit::shared_seeds(cluster.url(), b.name);
            counts.hasher = ahash::RandomState::with_seeds(k0, k1, k2, k3);
            counts.store = None;
            counts.shared = Some(SharedLimit::new(
                cluster.clone(),
                format!("gatehouse:quota:{}:", b.name),
                Counting::Calendar,
                1,
                c.max_keys,
            ));
        }
        counts
    });
    counts.start_flushing();
    Ok(Arc::new(Quota {
        name: b.name.into(),
        quoted: format!("\"{}\"", b.name.replace('"', "")),
        plans,
        counts,
    }))
}

/// One key's count in its current period.
#[derive(Debug, Clone, Copy)]
struct Count {
    start: i64,
    used: u64,
    /// The plan last applied to the key (for the admin API).
    plan: Option<Plan>,
    /// Changed since the last write to the store.
    dirty: bool,
}

const SHARDS: usize = 16;
type Shard = Mutex<HashMap<String, Count>>;

/// A quota policy's counts: the state kept across reloads, written to the store.
pub struct Counts {
    policy: String,
    parts: Vec<KeyPart>,
    shards: Box<[Shard]>,
    per_shard: usize,
    store: Option<Arc<Store>>,
    hasher: ahash::RandomState,
    /// Cluster scope: the counts in Redis, as this gateway sees them (then nothing is
    /// kept in `shards` or the store).
    shared: Option<SharedLimit>,
    /// Whether the writer thread runs.
    flushing: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counts({})", self.policy)
    }
}

fn lock(s: &Shard) -> std::sync::MutexGuard<'_, HashMap<String, Count>> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Unix seconds now (wall clock: periods follow the calendar).
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// How often counts are written to the store.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

impl Counts {
    fn new(policy: &str, parts: Vec<KeyPart>, max_keys: usize, store: Option<Arc<Store>>) -> Self {
        Self {
            policy: policy.to_string(),
            parts,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: (max_keys / SHARDS).max(16),
            store,
            hasher: ahash::RandomState::new(),
            shared: None,
            flushing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Starts the thread that writes counts to the store every second (once; not while
    /// a config is only checked, which has no store); it ends when the counts are dropped.
    fn start_flushing(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.store.is_none() || self.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let _ = std::thread::Builder::new()
            .name("gatehouse-quota".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    match weak.upgrade() {
                        Some(c) => c.flush(),
                        None => return,
                    }
                }
            });
    }

    /// Writes the changed counts to the store.
    pub fn flush(&self) {
        let Some(store) = &self.store else {
            return;
        };
        let mut rows = Vec::new();
        for shard in self.shards.iter() {
            for (key, c) in lock(shard).iter_mut().filter(|(_, c)| c.dirty) {
                c.dirty = false;
                rows.push(Usage {
                    key: key.clone(),
                    period_start: c.start,
                    used: c.used,
                });
            }
        }
        if rows.is_empty() {
            return;
        }
        if let Err(e) = store.save_quota_usage(&self.policy, &rows) {
            tracing::error!(policy = %self.policy, error = %e, "cannot save quota counts");
            // Marked again so the next flush retries them.
            for u in rows {
                if let Some(c) = lock(self.shard(&u.key)).get_mut(&u.key) {
                    c.dirty = true;
                }
            }
        }
    }

    fn shard(&self, key: &str) -> &Shard {
        &self.shards[(self.hasher.hash_one(key) % SHARDS as u64) as usize]
    }

    /// The key text of a request: each part's value, joined by commas (a `consumer` part
    /// without a consumer is `ip:ADDRESS`). The admin API names keys the same way.
    pub fn key(&self, req: Option<&http::request::Parts>, ctx: &RequestCtx) -> String {
        let mut out = String::new();
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            part.write_text(req, ctx, &mut out);
        }
        out
    }

    /// Counts one request of `key` against `plan` at Unix second `now`; `Err` with the
    /// count when the allowance is spent.
    #[cfg(test)]
    fn take(&self, key: &str, plan: Plan, now: i64) -> Result<(u64, i64), (u64, i64)> {
        self.take_in(key, plan, plan.period.bounds(now))
    }

    /// Counts one request of `key` against `plan` in the period `(start, end)` (Unix
    /// seconds): `Ok` with the count and the period's end, `Err` when the allowance is spent.
    fn take_in(
        &self,
        key: &str,
        plan: Plan,
        (start, end): (i64, i64),
    ) -> Result<(u64, i64), (u64, i64)> {
        let mut shard = lock(self.shard(key));
        if !shard.contains_key(key) {
            let stored = self
                .store
                .as_ref()
                .and_then(|s| s.quota_usage(&self.policy, key).ok().flatten());
            if shard.len() >= self.per_shard {
                // Counts already written can be read again; changed ones stay.
                shard.retain(|_, c| c.dirty);
            }
            let c = stored.map_or(
                Count {
                    start,
                    used: 0,
                    plan: None,
                    dirty: false,
                },
                |u| Count {
                    start: u.period_start,
                    used: u.used,
                    plan: None,
                    dirty: false,
                },
            );
            shard.insert(key.to_string(), c);
        }
        let Some(c) = shard.get_mut(key) else {
            return Err((plan.limit, end));
        };
        if c.start != start {
            *c = Count {
                start,
                used: 0,
                plan: None,
                dirty: true,
            };
        }
        c.plan = Some(plan);
        if c.used >= plan.limit {
            return Err((c.used, end));
        }
        c.used += 1;
        c.dirty = true;
        Ok((c.used, end))
    }

    /// What `key` used in the period of the plan last applied to it (for the admin API):
    /// `(used, Some((plan, seconds until the period ends)))`, or `(used, None)` for a key
    /// known only from the store, whose plan is not known until it next makes a request.
    pub fn usage(&self, key: &str, now: i64) -> (u64, Option<(Plan, i64)>) {
        let from_memory = lock(self.shard(key))
            .get(key)
            .map(|c| (c.start, c.used, c.plan));
        let found = from_memory.or_else(|| {
            self.store
                .as_ref()
                .and_then(|s| s.quota_usage(&self.policy, key).ok().flatten())
                .map(|u| (u.period_start, u.used, None))
        });
        match found {
            Some((start, used, Some(plan))) => {
                let (current, end) = plan.period.bounds(now);
                let used = if current == start { used } else { 0 };
                (used, Some((plan, end - now)))
            }
            Some((_, used, None)) => (used, None),
            None => (0, None),
        }
    }

    /// Gives back one request of `key` (another limit refused it).
    fn give_back(&self, key: &str) {
        if let Some(c) = lock(self.shard(key)).get_mut(key) {
            c.used = c.used.saturating_sub(1);
            c.dirty = true;
        }
    }

    /// Starts `key` afresh (`DELETE /admin/limits`), in memory and in the store, or in
    /// Redis (cluster scope).
    pub async fn reset(&self, key: &str) -> Result<(), String> {
        if let Some(shared) = &self.shared {
            let redis_key = format!("{}{key}", shared.prefix());
            return shared
                .reset_with(self.hasher.hash_one(key), redis_key)
                .await
                .map_err(|_| "Redis does not answer".to_string());
        }
        lock(self.shard(key)).remove(key);
        match &self.store {
            Some(s) => s.delete_quota_usage(&self.policy, key),
            None => Ok(()),
        }
    }

    /// Cluster scope: what `key` used in the period that started at `start` (Unix
    /// seconds), as Redis holds it; `None` in local scope.
    pub async fn shared_usage(&self, key: &str) -> Option<Result<(u64, i64), String>> {
        let shared = self.shared.as_ref()?;
        let mut read = redis::cmd("HMGET");
        read.arg(format!("{}{key}", shared.prefix()))
            .arg("s")
            .arg("u");
        let answer = shared.call(read).await;
        Some(match answer {
            Ok(redis::Value::Array(v)) => {
                let num = |i: usize| match v.get(i) {
                    Some(redis::Value::BulkString(b)) => std::str::from_utf8(b)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok()),
                    _ => None,
                };
                Ok((
                    num(1).unwrap_or(0).max(0).unsigned_abs(),
                    num(0).unwrap_or(0),
                ))
            }
            _ => Err("Redis does not answer".to_string()),
        })
    }
}

impl Drop for Counts {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The compiled quota policy.
#[derive(Debug)]
pub struct Quota {
    name: Arc<str>,
    /// `"NAME"`, as the RateLimit headers carry it.
    quoted: String,
    plans: HashMap<String, Plan>,
    counts: Arc<Counts>,
}

/// What the request phase counted, for the response phase.
#[derive(Debug, Clone)]
struct Counted {
    key: String,
    plan: Plan,
    used: u64,
    /// The period's bounds, Unix seconds.
    start: i64,
    end: i64,
    refused: bool,
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

impl Quota {
    /// The plan of the request's consumer: its first group with one, else `"*"`.
    pub fn plan(&self, ctx: &RequestCtx) -> Option<Plan> {
        ctx.consumer
            .iter()
            .flat_map(|c| c.groups.iter())
            .find_map(|g| self.plans.get(g))
            .or_else(|| self.plans.get("*"))
            .copied()
    }
}

impl Policy for Quota {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        let Some(plan) = self.plan(ctx) else {
            return Flow::Continue;
        };
        let key = self.counts.key(Some(req), ctx);
        let now = unix_now();
        let (start, end) = plan.period.bounds(now);
        let (used, refused) = match &self.counts.shared {
            None => match self.counts.take_in(&key, plan, (start, end)) {
                Ok((used, _)) => (used, false),
                Err((used, _)) => (used, true),
            },
            Some(shared) => {
                let hash = self.counts.hasher.hash_one(key.as_str());
                let batch = (plan.limit / 1000).clamp(1, 1000);
                // The Redis key is written only when a reservation is sent.
                let verdict =
                    shared.check_with(hash, crate::limiter::at(ctx.started), batch, &|want| {
                        crate::shared_limit::calendar_command(
                            &format!("{}{key}", shared.prefix()),
                            plan.limit,
                            (start, end),
                            want,
                        )
                    });
                match verdict {
                    Verdict::Pass => {
                        let d = shared.peek(hash, crate::limiter::at(ctx.started), plan.limit);
                        (plan.limit - d.remaining.min(plan.limit), false)
                    }
                    Verdict::Refused(_) => (plan.limit, true),
                    Verdict::Unavailable => {
                        return crate::shared_limit::unavailable(
                            &format!("quota {}", self.name),
                            ctx,
                        );
                    }
                }
            }
        };
        crate::notes::keep(
            ctx,
            &self.name,
            Counted {
                key,
                plan,
                used,
                start,
                end,
                refused,
            },
        );
        if !refused {
            return Flow::Continue;
        }
        let p = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "quota {} exceeded: {} requests per {}; retry when the {} ends",
                self.name,
                plan.limit,
                plan.period.name(),
                plan.period.name()
            ),
        );
        let mut r = problem_response(&p, &ctx.request_id);
        let wait = u64::try_from((end - now).max(1)).unwrap_or(1);
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(wait));
        Flow::respond("quota_exceeded", r)
    }

    fn on_response(&self, resp: &mut http::response::Parts, ctx: &mut RequestCtx) {
        let Some(c) = crate::notes::kept::<Counted>(ctx, &self.name).next() else {
            return;
        };
        let mut used = c.used;
        if !c.refused
            && ctx
                .short_circuit
                .as_ref()
                .is_some_and(|s| crate::rate_limit::refused_by_a_limit(s) && s.policy != *self.name)
        {
            match &self.counts.shared {
                Some(shared) => shared.refund(self.counts.hasher.hash_one(c.key.as_str())),
                None => self.counts.give_back(&c.key),
            }
            used = used.saturating_sub(1);
        }
        let remaining = c.plan.limit.saturating_sub(used);
        let reset = u64::try_from(c.end - unix_now()).unwrap_or(0);
        let window = u64::try_from(c.end - c.start).unwrap_or(0);
        // The three values in one buffer: one allocation, no formatting machinery.
        let (mut a, mut b, mut d, mut e) = (
            itoa::Buffer::new(),
            itoa::Buffer::new(),
            itoa::Buffer::new(),
            itoa::Buffer::new(),
        );
        let (limit, window) = (a.format(c.plan.limit), b.format(window));
        let (remaining, reset) = (d.format(remaining), e.format(reset));
        let mut buf = Vec::with_capacity(2 * self.quoted.len() + 48);
        for part in [self.quoted.as_str(), ";q=", limit, ";w=", window] {
            buf.extend_from_slice(part.as_bytes());
        }
        let policy_end = buf.len();
        for part in [self.quoted.as_str(), ";r=", remaining, ";t=", reset] {
            buf.extend_from_slice(part.as_bytes());
        }
        let item_end = buf.len();
        buf.extend_from_slice(remaining.as_bytes());
        let buf = bytes::Bytes::from(buf);
        let h = &mut resp.headers;
        if let Ok(v) = HeaderValue::from_maybe_shared(buf.slice(..policy_end)) {
            h.append(RATELIMIT_POLICY, v);
        }
        if let Ok(v) = HeaderValue::from_maybe_shared(buf.slice(policy_end..item_end)) {
            h.append(RATELIMIT, v);
        }
        if let Ok(v) = HeaderValue::from_maybe_shared(buf.slice(item_end..)) {
            h.append(c.plan.period.remaining_header(), v);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn utc(s: &str) -> i64 {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    }

    #[test]
    fn periods_follow_the_utc_calendar() {
        let t = utc("2026-02-18T13:45:10Z");
        assert_eq!(
            Period::Day.bounds(t),
            (utc("2026-02-18T00:00:00Z"), utc("2026-02-19T00:00:00Z"))
        );
        assert_eq!(
            Period::Week.bounds(t),
            (utc("2026-02-16T00:00:00Z"), utc("2026-02-23T00:00:00Z")),
            "ISO weeks start on Monday"
        );
        assert_eq!(
            Period::Month.bounds(t),
            (utc("2026-02-01T00:00:00Z"), utc("2026-03-01T00:00:00Z"))
        );
        assert_eq!(
            Period::Month.bounds(utc("2026-12-31T23:59:59Z")),
            (utc("2026-12-01T00:00:00Z"), utc("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            Period::Year.bounds(t),
            (utc("2026-01-01T00:00:00Z"), utc("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            Period::Hour.bounds(t),
            (utc("2026-02-18T13:00:00Z"), utc("2026-02-18T14:00:00Z"))
        );
        assert_eq!(
            Period::Month.bounds(utc("2028-02-29T12:00:00Z")).1,
            utc("2028-03-01T00:00:00Z")
        );
    }

    #[test]
    fn counts_restart_on_the_calendar_boundary() {
        let counts = Counts::new("p", vec![KeyPart::Consumer], 100, None);
        let plan = Plan::parse("2/day").unwrap();
        let t = utc("2026-03-31T23:59:58Z");
        assert!(counts.take("a", plan, t).is_ok());
        assert!(counts.take("a", plan, t + 1).is_ok());
        assert_eq!(
            counts.take("a", plan, t + 1),
            Err((2, utc("2026-04-01T00:00:00Z")))
        );
        assert!(counts.take("b", plan, t + 1).is_ok(), "keys are apart");
        assert_eq!(
            counts.take("a", plan, t + 2),
            Ok((1, utc("2026-04-02T00:00:00Z")))
        );
    }

    #[test]
    fn plans_are_checked_when_the_config_loads() {
        assert!(Plan::parse("1000/day").is_ok());
        assert_eq!(Plan::parse("1_000_000/month").unwrap().limit, 1_000_000);
        assert!(Plan::parse("0/day").is_err());
        assert!(Plan::parse("10/fortnight").is_err());
        assert!(Plan::parse("ten/day").is_err());
    }
}
