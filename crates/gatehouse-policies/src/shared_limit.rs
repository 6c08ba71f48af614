//! Cluster-scope counters (`scope: cluster`): the count lives in Redis, one key per
//! limited key, changed only by an atomic script that runs the same algorithm as the
//! local limiter (`limiter.rs`) on Redis's clock. No request waits for Redis: each
//! gateway reserves budget in batches (`batch` requests at a time) and spends it
//! locally, asking for the next batch while half of the current one is left.
//!
//! The bound: a gateway admits at most `batch` requests of a key on credit while its
//! first reservation (or one after a refusal ran out) is on its way, and credit is paid
//! back from the next batch; so across `n` gateways at most `n x batch` requests pass
//! beyond the limit, and at most as many go unused (budget reserved and not spent within
//! `sync_interval`, or within its fixed window, is dropped). When Redis says a key is
//! spent, the gateway refuses it locally until the moment Redis named, asking Redis
//! again at most once per `sync_interval` meanwhile (so a reset through the admin API
//! reaches every gateway within it).
//!
//! While Redis is down (`gatehouse-cluster` keeps the flag), `cluster.redis.on_failure`
//! decides: `allow` lets requests through unlimited, `deny` refuses them with 503.

use crate::limiter::{Algorithm, Decision, Rate};
use gatehouse_cluster::{Cluster, Unavailable};
use gatehouse_config::schema::OnFailure;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The reservation script. KEYS[1]: the key. ARGV: algorithm (`gcra`, `fixed`,
/// `sliding`, `log`), limit, period in microseconds, GCRA capacity in requests, the
/// budget wanted (0 only reads), a prefix unique to this call (sliding log members).
/// Returns {granted, remaining, microseconds until whole again, microseconds until the
/// next request would pass (0 when all was granted)}. Times are Redis's (`TIME`), so
/// gateways with skewed clocks agree; numbers are stored with `%.0f` because Lua prints
/// large ones in exponent form.
const SCRIPT: &str = r"
local alg, limit, per = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local capn, want = tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local key = KEYS[1]
local function int(x) return string.format('%.0f', x) end
if alg == 'gcra' then
  local step = math.max(1, math.floor(per / limit))
  local cap = step * capn
  local tat = tonumber(redis.call('GET', key) or now)
  local base = math.max(tat, now)
  local avail = math.max(0, math.floor((now + cap - base) / step))
  local g = math.min(want, avail)
  local new = base + g * step
  if g > 0 then
    redis.call('SET', key, int(new), 'PX', int(math.ceil((new - now) / 1000) + 1000))
  end
  local retry = 0
  if g < want then retry = math.max(1, base + (g + 1) * step - now - cap) end
  return {g, math.max(0, math.floor((now + cap - math.max(new, now)) / step)), math.max(0, new - now), retry}
elseif alg == 'fixed' or alg == 'sliding' then
  local idx = math.floor(now / per)
  local start = idx * per
  local v = redis.call('HMGET', key, 'w', 'c', 'p')
  local w, c, p = tonumber(v[1] or -1), tonumber(v[2] or 0), tonumber(v[3] or 0)
  if w ~= idx then
    if w == idx - 1 then p = c else p = 0 end
    c = 0
  end
  if alg == 'fixed' then p = 0 end
  local weighted = math.ceil(p * (per - (now - start)) / per)
  local g = math.max(0, math.min(want, limit - weighted - c))
  c = c + g
  redis.call('HSET', key, 'w', int(idx), 'c', int(c), 'p', int(p))
  redis.call('PEXPIRE', key, int(math.ceil(2 * per / 1000) + 1000))
  local reset = start + per - now
  local retry = 0
  if g < want then
    retry = reset
    if p > 0 and c < limit then
      local excess = weighted + c + 1 - limit
      retry = math.min(reset, math.ceil(excess * per / p))
    end
    retry = math.max(1, retry)
  end
  return {g, math.max(0, limit - weighted - c), reset, retry}
else
  redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now - per))
  local n = redis.call('ZCARD', key)
  local g = math.max(0, math.min(want, limit - n))
  for i = 1, g do redis.call('ZADD', key, int(now), ARGV[6] .. ':' .. i) end
  if g > 0 then redis.call('PEXPIRE', key, int(math.ceil(per / 1000) + 1000)) end
  local retry, reset = 0, 0
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if newest[2] then reset = math.max(0, tonumber(newest[2]) + per - now) end
  if g < want then
    retry = 1
    if oldest[2] then retry = math.max(1, tonumber(oldest[2]) + per - now) end
  end
  return {g, math.max(0, limit - n - g), reset, retry}
end
";

/// The quota script. KEYS[1]: the key. ARGV: the period's start and end (Unix seconds,
/// from the gateway's calendar), the allowance, the budget wanted (0 only reads).
/// Returns the same four numbers as `SCRIPT`. The key expires a day after its period.
const CALENDAR_SCRIPT: &str = r"
local start, stop = tonumber(ARGV[1]), tonumber(ARGV[2])
local limit, want = tonumber(ARGV[3]), tonumber(ARGV[4])
local v = redis.call('HMGET', KEYS[1], 's', 'u')
local s, used = tonumber(v[1] or -1), tonumber(v[2] or 0)
if s ~= start then used = 0 end
local g = math.max(0, math.min(want, limit - used))
used = used + g
if g > 0 or s ~= start then
  redis.call('HSET', KEYS[1], 's', string.format('%.0f', start), 'u', string.format('%.0f', used))
  redis.call('EXPIREAT', KEYS[1], string.format('%.0f', stop + 86400))
end
local t = redis.call('TIME')
local reset = math.max(0, (stop - tonumber(t[1])) * 1000000)
local retry = 0
if g < want then retry = math.max(1, reset) end
return {g, math.max(0, limit - used), reset, retry}
";

/// The script call that reserves `want` of `limit` for the period `(start, end)` (Unix
/// seconds) under `redis_key` (a quota's).
pub fn calendar_command(
    redis_key: &str,
    limit: u64,
    (start, end): (i64, i64),
    want: u64,
) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(CALENDAR_SCRIPT)
        .arg(1)
        .arg(redis_key)
        .arg(start)
        .arg(end)
        .arg(limit)
        .arg(want);
    cmd
}

/// What a shared count counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// A rate limit's algorithm and rate (`SCRIPT`).
    Rate(Algorithm, Rate),
    /// A quota's calendar periods (`CALENDAR_SCRIPT`; the caller makes the commands).
    Calendar,
}

/// The answer of a cluster-scope limit (`what`: "rate limit NAME", "quota NAME") while
/// Redis is down and `on_failure: deny`: 503 with `Retry-After: 1`, reason
/// `limit_unavailable`.
pub fn unavailable(what: &str, ctx: &gatehouse_core::RequestCtx) -> gatehouse_core::Flow {
    let p = gatehouse_core::Problem::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        format!("{what} cannot be checked now; retry later"),
    );
    let mut r = gatehouse_core::problem_response(&p, &ctx.request_id);
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, http::HeaderValue::from(1u32));
    gatehouse_core::Flow::respond("limit_unavailable", r)
}

/// One key as this gateway knows it.
#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    /// Reserved and not yet spent.
    budget: u64,
    /// Admitted on credit, to be paid from the next grant.
    debt: u64,
    /// A reservation is on its way.
    pending: bool,
    /// The budget is good until then (local clock, ns).
    valid_until: u64,
    /// Redis said the key is spent until then.
    retry_at: u64,
    /// Refusals are decided locally until then (at most `sync_interval` after Redis's
    /// answer); a refused request after it asks Redis again, so a reset elsewhere is seen.
    recheck_at: u64,
    /// Budget left in Redis at the last answer.
    remaining: u64,
    /// When the key's budget is whole again, at the last answer.
    reset_at: u64,
}

type Shard = Mutex<HashMap<u64, Entry>>;
const SHARDS: usize = 64;

/// What a cluster-scope limit says of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counted; it may pass.
    Pass,
    /// Over the limit.
    Refused(Decision),
    /// Redis is down and `on_failure: deny`.
    Unavailable,
}

/// A cluster-scope limit's local view.
pub struct SharedLimit {
    cluster: Arc<Cluster>,
    counting: Counting,
    batch: u64,
    /// `gatehouse:rl:POLICY:` (rate limits), followed by the key's hash.
    prefix: String,
    /// How long reserved budget is kept (ns).
    hold_ns: u64,
    shards: Arc<[Shard]>,
    per_shard: usize,
    /// Makes sliding-log members unique across calls (with the process's random id).
    calls: AtomicU64,
    node: u64,
}

impl std::fmt::Debug for SharedLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedLimit({}, batch {})", self.prefix, self.batch)
    }
}

fn lock(shard: &Shard) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

/// A Redis answer's four numbers.
fn numbers(v: &redis::Value) -> Option<[u64; 4]> {
    let redis::Value::Array(items) = v else {
        return None;
    };
    let mut out = [0u64; 4];
    for (o, item) in out.iter_mut().zip(items) {
        *o = match item {
            redis::Value::Int(n) => u64::try_from(*n).unwrap_or(0),
            _ => return None,
        };
    }
    (items.len() == 4).then_some(out)
}

impl SharedLimit {
    /// The view of a count in `cluster` under Redis keys starting with `prefix`,
    /// reserving `batch` at a time.
    pub fn new(
        cluster: Arc<Cluster>,
        prefix: String,
        counting: Counting,
        batch: u64,
        max_keys: usize,
    ) -> Self {
        let hold_ns = u64::try_from(cluster.sync_interval().as_nanos()).unwrap_or(u64::MAX);
        Self {
            cluster,
            counting,
            batch: batch.max(1),
            prefix,
            hold_ns,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: (max_keys / SHARDS).max(16),
            calls: AtomicU64::new(0),
            node: ahash::RandomState::new().hash_one(std::process::id()),
        }
    }

    /// The Redis key of `key`.
    pub fn redis_key(&self, key: u64) -> String {
        format!("{}{key:016x}", self.prefix)
    }

    fn shard(&self, key: u64) -> &Shard {
        &self.shards[(key >> 58) as usize % SHARDS]
    }

    /// Runs `cmd` on the shared Redis and waits (for the admin API).
    pub async fn call(&self, cmd: redis::Cmd) -> Result<redis::Value, Unavailable> {
        self.cluster.call(cmd).await
    }

    /// The Redis key prefix (`gatehouse:quota:POLICY:` for a quota).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The rate script call that reserves `want` for `key` (0: reads only). A quota's
    /// calls come from its caller (`check_with`); asked here for one, this reads nothing.
    fn command(&self, key: u64, want: u64) -> redis::Cmd {
        let Counting::Rate(algorithm, rate) = self.counting else {
            return redis::cmd("PING");
        };
        let (alg, capacity) = match algorithm {
            Algorithm::TokenBucket => ("gcra", rate.burst.max(1)),
            Algorithm::LeakyBucket => ("gcra", rate.burst.saturating_add(1)),
            Algorithm::FixedWindow => ("fixed", 0),
            Algorithm::SlidingWindow => ("sliding", 0),
            Algorithm::SlidingLog => ("log", 0),
        };
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SCRIPT)
            .arg(1)
            .arg(self.redis_key(key))
            .arg(alg)
            .arg(rate.limit)
            .arg((rate.per_ns / 1_000).max(1))
            .arg(capacity)
            .arg(want)
            .arg(format!("{:x}.{call:x}", self.node));
        cmd
    }

    /// Decides a request of `key` at `now` (ns, local clock) without waiting (a rate
    /// limit's).
    pub fn check(&self, key: u64, now: u64) -> Verdict {
        self.check_with(key, now, self.batch, &|want| self.command(key, want))
    }

    /// Decides a request of `key` at `now`, reserving `batch` at a time; `command(want)`
    /// is the script call that reserves `want` for it, sent when this gateway needs more.
    pub fn check_with(
        &self,
        key: u64,
        now: u64,
        batch: u64,
        command: &dyn Fn(u64) -> redis::Cmd,
    ) -> Verdict {
        if !self.cluster.is_up() {
            return match self.cluster.on_failure() {
                OnFailure::Allow => Verdict::Pass,
                OnFailure::Deny => Verdict::Unavailable,
            };
        }
        let batch = batch.max(1);
        let mut want = None;
        let verdict = {
            let mut shard = lock(self.shard(key));
            if !shard.contains_key(&key) && shard.len() >= self.per_shard {
                make_room(&mut shard, self.per_shard, now);
            }
            let e = shard.entry(key).or_default();
            if now >= e.valid_until {
                e.budget = 0;
            }
            let verdict = if e.budget > 0 {
                e.budget -= 1;
                Verdict::Pass
            } else if e.retry_at > now {
                if e.recheck_at <= now && !e.pending {
                    e.pending = true;
                    want = Some(batch + e.debt);
                }
                Verdict::Refused(self.refusal(e, now, e.retry_at - now))
            } else if e.debt < batch {
                e.debt += 1;
                Verdict::Pass
            } else if !self.cluster.has_connected() {
                // Credit is spent before the first connection is made (a gateway that
                // just started): as if Redis were down.
                match self.cluster.on_failure() {
                    OnFailure::Allow => Verdict::Pass,
                    OnFailure::Deny => Verdict::Unavailable,
                }
            } else {
                // Credit is spent and the reservation has not answered yet: Redis is slow.
                Verdict::Refused(self.refusal(e, now, self.hold_ns))
            };
            // Half the batch left: ask for the next while this one lasts (not while Redis
            // says the key is spent: the first request after that moment asks).
            if !e.pending && e.budget * 2 < batch && e.retry_at <= now {
                e.pending = true;
                want = Some(batch + e.debt);
            }
            verdict
        };
        if let Some(n) = want {
            self.reserve(key, n, command(n));
        }
        verdict
    }

    fn refusal(&self, e: &Entry, now: u64, retry_ns: u64) -> Decision {
        Decision {
            allowed: false,
            remaining: 0,
            reset_ns: e.reset_at.saturating_sub(now),
            retry_ns: retry_ns.max(1),
        }
    }

    /// Asks Redis for `want` more of `key`; the answer lands in the entry.
    fn reserve(&self, key: u64, want: u64, command: redis::Cmd) {
        let shards = self.shards.clone();
        let hold = self.hold_ns;
        let fixed = matches!(
            self.counting,
            Counting::Rate(Algorithm::FixedWindow, _) | Counting::Calendar
        );
        let i = (key >> 58) as usize % SHARDS;
        self.cluster.submit(
            command,
            Box::new(move |answer| {
                let now = crate::limiter::now();
                let mut shard = lock(&shards[i]);
                let Some(e) = shard.get_mut(&key) else {
                    return;
                };
                e.pending = false;
                let Some([granted, remaining, reset_us, retry_us]) =
                    answer.ok().as_ref().and_then(numbers)
                else {
                    return;
                };
                if now >= e.valid_until {
                    e.budget = 0;
                }
                let paid = granted.min(e.debt);
                e.debt -= paid;
                e.budget += granted - paid;
                let reset_ns = reset_us.saturating_mul(1_000);
                // A fixed window's (a period's) budget belongs to it; other budget is held
                // `sync_interval` at most.
                e.valid_until = now.saturating_add(if fixed { reset_ns } else { hold });
                e.remaining = remaining;
                e.reset_at = now.saturating_add(reset_ns);
                if granted < want {
                    let retry = retry_us.saturating_mul(1_000);
                    e.retry_at = now.saturating_add(retry);
                    e.recheck_at = now.saturating_add(retry.min(hold));
                } else {
                    e.retry_at = 0;
                }
            }),
        );
    }

    /// The budget as this gateway sees it (for response headers): what Redis had left
    /// at its last answer plus what this gateway holds.
    /// `full` is a fresh key's budget.
    pub fn peek(&self, key: u64, now: u64, full: u64) -> Decision {
        let shard = lock(self.shard(key));
        let Some(e) = shard.get(&key) else {
            return Decision {
                allowed: true,
                remaining: full,
                reset_ns: 0,
                retry_ns: 0,
            };
        };
        let held = if now < e.valid_until { e.budget } else { 0 };
        Decision {
            allowed: true,
            remaining: e.remaining.saturating_add(held).min(full),
            reset_ns: e.reset_at.saturating_sub(now),
            retry_ns: 0,
        }
    }

    /// Gives back one request counted for `key` (another limit refused it).
    pub fn refund(&self, key: u64) {
        if let Some(e) = lock(self.shard(key)).get_mut(&key) {
            if e.debt > 0 {
                e.debt -= 1;
            } else {
                e.budget += 1;
            }
        }
    }

    /// The key's budget as Redis holds it (for `GET /admin/limits`).
    pub async fn inspect(&self, key: u64) -> Result<Decision, Unavailable> {
        self.inspect_with(self.command(key, 0)).await
    }

    /// What `read` (a script call wanting 0) answers, as a budget.
    pub async fn inspect_with(&self, read: redis::Cmd) -> Result<Decision, Unavailable> {
        let v = self.cluster.call(read).await?;
        let [_, remaining, reset_us, _] = numbers(&v).ok_or(Unavailable)?;
        Ok(Decision {
            allowed: true,
            remaining,
            reset_ns: reset_us.saturating_mul(1_000),
            retry_ns: 0,
        })
    }

    /// Starts the key afresh everywhere (for `DELETE /admin/limits`): its Redis key and
    /// this gateway's view. Other gateways spend what they hold, then see the fresh key.
    pub async fn reset(&self, key: u64) -> Result<(), Unavailable> {
        self.reset_with(key, self.redis_key(key)).await
    }

    /// [`SharedLimit::reset`] of `key`, kept in Redis under `redis_key`.
    pub async fn reset_with(&self, key: u64, redis_key: String) -> Result<(), Unavailable> {
        let mut del = redis::cmd("DEL");
        del.arg(redis_key);
        self.cluster.call(del).await?;
        lock(self.shard(key)).remove(&key);
        Ok(())
    }
}

/// Drops entries that hold nothing (no budget, debt, refusal or reservation in flight) to keep a
/// shard within its bound; if too few, drops others, which only forgets local budget.
fn make_room(shard: &mut HashMap<u64, Entry>, per_shard: usize, now: u64) {
    shard.retain(|_, e| {
        e.pending || e.debt > 0 || e.retry_at > now || (e.budget > 0 && now < e.valid_until)
    });
    let target = per_shard - per_shard / 8;
    if shard.len() > target {
        let extra: Vec<u64> = shard.keys().take(shard.len() - target).copied().collect();
        for k in extra {
            shard.remove(&k);
        }
    }
}
