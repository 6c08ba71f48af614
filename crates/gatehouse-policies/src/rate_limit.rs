//! `type: rate_limit`: at most `limit` requests per `per` for each key (the consumer, the
//! client IP, the route, a header, a claim, or several of them), counted by one of five
//! algorithms (`limiter.rs`) for the whole process. Beyond it: 429 problem+json with
//! `Retry-After` (`on_exceed: reject`), or, for the buckets, a wait of at most
//! `max_delay` for the request's turn (`delay`), in arrival order per key. Every response
//! of a limited route carries `RateLimit-Policy` and `RateLimit` (IETF httpapi draft) and
//! Kong's `X-RateLimit-Limit-*` / `X-RateLimit-Remaining-*`.
//!
//! A named limit keeps one set of counters, shared by every route that lists it and kept
//! across reloads that leave its settings alone. With `scope: cluster` the counters are
//! in Redis, shared by every gateway (`shared_limit.rs`).

use crate::limiter::{Algorithm, Decision, Limiter, Rate};
use crate::shared_limit::{Counting, SharedLimit, Verdict};
use crate::{Build, BuildResult, Kind};
use gatehouse_core::{Fingerprint, Flow, Policy, Problem, RequestCtx, Resume, problem_response};
use http::{HeaderName, HeaderValue, StatusCode};
use schemars::JsonSchema;
use serde::Deserialize;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// `type: rate_limit`.
pub const KIND: Kind = Kind {
    name: "rate_limit",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// The settings of `type: rate_limit`.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RateLimitPolicy")]
pub struct Config {
    /// `token_bucket` (default), `leaky_bucket`, `fixed_window`, `sliding_window` or
    /// `sliding_log`.
    #[serde(default)]
    pub algorithm: AlgorithmName,
    /// Requests allowed per `per`.
    pub limit: u64,
    /// The period; default 1s.
    #[serde(default = "default_per")]
    pub per: gatehouse_config::Duration,
    /// Token bucket: tokens held at most (default `limit`); leaky bucket: requests let in
    /// beyond the steady rate (default 0).
    #[serde(default)]
    pub burst: Option<u64>,
    /// What is counted apart: `consumer` (default; the client IP when no consumer),
    /// `ip`, `route`, `header:NAME`, `claim:NAME`, or a list of them.
    #[serde(default)]
    pub key: KeySpec,
    /// `local` (default): counters in this process. `cluster` needs `cluster.redis`.
    #[serde(default)]
    pub scope: Scope,
    /// `reject` (default, 429) or `delay` (buckets only: wait up to `max_delay`, then 429).
    #[serde(default)]
    pub on_exceed: OnExceed,
    /// Longest wait in `delay` mode; default 1s; less than the policy's `timeout`.
    #[serde(default = "default_max_delay")]
    pub max_delay: gatehouse_config::Duration,
    /// Keys tracked at most (memory bound; keys at rest are dropped first); default 100000.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// Cluster scope: requests each gateway reserves from Redis at a time; default
    /// `limit / 1000`, at least 1. At most `gateways x batch` requests pass beyond the
    /// limit.
    #[serde(default)]
    pub batch: Option<u64>,
}

fn default_per() -> gatehouse_config::Duration {
    gatehouse_config::Duration::from_millis(1_000)
}
fn default_max_delay() -> gatehouse_config::Duration {
    gatehouse_config::Duration::from_millis(1_000)
}
fn default_max_keys() -> usize {
    100_000
}

/// The algorithm names of the config.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmName {
    /// GCRA with a bucket of `burst` tokens.
    #[default]
    TokenBucket,
    /// GCRA at the steady rate, `burst` extra.
    LeakyBucket,
    /// A count per aligned window.
    FixedWindow,
    /// The current window plus the previous one weighted.
    SlidingWindow,
    /// Every request's time.
    SlidingLog,
}

/// Where the counters live.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// In this process.
    #[default]
    Local,
    /// In Redis, shared by every gateway.
    Cluster,
}

/// What happens beyond the limit.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnExceed {
    /// 429 at once.
    #[default]
    Reject,
    /// Wait for a turn, up to `max_delay`.
    Delay,
}

/// One key part or several.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(untagged)]
pub enum KeySpec {
    /// One part.
    One(String),
    /// Parts counted together.
    Many(Vec<String>),
}

impl Default for KeySpec {
    fn default() -> Self {
        Self::One("consumer".into())
    }
}

/// A compiled key part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The consumer's name (the client IP when there is none).
    Consumer,
    /// The client IP.
    Ip,
    /// The route's name.
    Route,
    /// A request header's value (requests without it share one count).
    Header(HeaderName),
    /// A claim of the consumer's credential (dotted paths reach nested claims).
    Claim(String),
}

impl KeyPart {
    /// Parses `consumer`, `ip`, `route`, `header:NAME` or `claim:NAME`.
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "consumer" => Self::Consumer,
            "ip" => Self::Ip,
            "route" => Self::Route,
            _ => match s.split_once(':') {
                Some(("header", name)) => Self::Header(
                    HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| format!("{name:?} is not a header name"))?,
                ),
                Some(("claim", name)) if !name.is_empty() => Self::Claim(name.to_string()),
                _ => {
                    return Err(format!(
                        "unknown key {s:?}; expected consumer, ip, route, header:NAME or claim:NAME"
                    ));
                }
            },
        })
    }

    /// Writes this part's value as text (the form the admin API names keys in): the
    /// consumer's name (`ip:ADDRESS` without one), the IP, the route, the header's values
    /// (joined by `;`), the claim (empty when absent).
    pub fn write_text(
        &self,
        req: Option<&http::request::Parts>,
        ctx: &RequestCtx,
        out: &mut String,
    ) {
        use std::fmt::Write;
        match self {
            Self::Consumer => match &ctx.consumer {
                Some(c) => out.push_str(&c.name),
                None => {
                    let _ = write!(out, "ip:{}", ctx.client_ip);
                }
            },
            Self::Ip => {
                let _ = write!(out, "{}", ctx.client_ip);
            }
            Self::Route => out.push_str(ctx.route.as_deref().unwrap_or_default()),
            Self::Header(name) => {
                for (i, v) in req
                    .into_iter()
                    .flat_map(|r| r.headers.get_all(name))
                    .enumerate()
                {
                    if i > 0 {
                        out.push(';');
                    }
                    out.push_str(&String::from_utf8_lossy(v.as_bytes()));
                }
            }
            Self::Claim(path) => {
                let v = ctx
                    .consumer
                    .as_ref()
                    .and_then(|c| crate::claims::lookup(&c.claims, path));
                match v {
                    Some(serde_json::Value::String(s)) => out.push_str(s),
                    Some(other) => {
                        let _ = write!(out, "{other}");
                    }
                    None => {}
                }
            }
        }
    }

    /// Feeds this part of `req` into `h` (a tag first, so parts of different kinds with
    /// the same text never share a count).
    pub fn hash(&self, req: Option<&http::request::Parts>, ctx: &RequestCtx, h: &mut impl Hasher) {
        match self {
            Self::Consumer => match &ctx.consumer {
                Some(c) => (0u8, c.name.as_str()).hash(h),
                None => (1u8, ctx.client_ip).hash(h),
            },
            Self::Ip => (1u8, ctx.client_ip).hash(h),
            Self::Route => (2u8, ctx.route.as_deref().unwrap_or_default()).hash(h),
            Self::Header(name) => {
                3u8.hash(h);
                for v in req.into_iter().flat_map(|r| r.headers.get_all(name)) {
                    v.as_bytes().hash(h);
                }
            }
            Self::Claim(path) => {
                4u8.hash(h);
                let v = ctx
                    .consumer
                    .as_ref()
                    .and_then(|c| crate::claims::lookup(&c.claims, path));
                match v {
                    Some(serde_json::Value::String(s)) => s.hash(h),
                    Some(other) => other.to_string().hash(h),
                    None => 0u8.hash(h),
                }
            }
        }
    }
}

/// Whether a local answer is a limit's refusal (then the other limits of the route give
/// back what they counted for the request).
pub fn refused_by_a_limit(s: &gatehouse_core::ShortCircuit) -> bool {
    matches!(
        s.reason,
        "rate_limited" | "concurrency_full" | "quota_exceeded" | "limit_unavailable"
    )
}

/// The key `parts` make of a request, hashed with `h` (keyed by the caller's secret);
/// without the head (`None`) only parts the context holds count.
pub fn hash_key(
    parts: &[KeyPart],
    mut h: impl Hasher,
    req: Option<&http::request::Parts>,
    ctx: &RequestCtx,
) -> u64 {
    for p in parts {
        p.hash(req, ctx, &mut h);
    }
    h.finish()
}

/// Compiles a `key` setting; the error names the bad entry.
pub fn key_parts(spec: &KeySpec) -> Result<Vec<KeyPart>, (String, String)> {
    match spec {
        KeySpec::One(s) => Ok(vec![KeyPart::parse(s).map_err(|m| ("key".to_string(), m))?]),
        KeySpec::Many(list) if list.is_empty() => {
            Err(("key".into(), "must name at least one part".into()))
        }
        KeySpec::Many(list) => list
            .iter()
            .enumerate()
            .map(|(i, s)| KeyPart::parse(s).map_err(|m| (format!("key[{i}]"), m)))
            .collect(),
    }
}

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    let issue = |field: &str, m: &str| vec![b.issue(Some(field), m)];
    if c.limit == 0 {
        return Err(issue("limit", "must be at least 1"));
    }
    let per = c.per.get();
    if per.is_zero() {
        return Err(issue("per", "must be longer than 0s"));
    }
    let algorithm = match c.algorithm {
        AlgorithmName::TokenBucket => Algorithm::TokenBucket,
        AlgorithmName::LeakyBucket => Algorithm::LeakyBucket,
        AlgorithmName::FixedWindow => Algorithm::FixedWindow,
        AlgorithmName::SlidingWindow => Algorithm::SlidingWindow,
        AlgorithmName::SlidingLog => Algorithm::SlidingLog,
    };
    let bucket = matches!(algorithm, Algorithm::TokenBucket | Algorithm::LeakyBucket);
    if c.burst.is_some() && !bucket {
        return Err(issue(
            "burst",
            "applies to token_bucket and leaky_bucket only",
        ));
    }
    if c.on_exceed == OnExceed::Delay && !bucket {
        return Err(issue(
            "on_exceed",
            "delay needs token_bucket or leaky_bucket (windows have no turn to wait for)",
        ));
    }
    if c.on_exceed == OnExceed::Delay && c.max_delay.get() >= b.policy.timeout.get() {
        return Err(issue(
            "max_delay",
            "must be shorter than the policy's timeout (5s by default)",
        ));
    }
    if algorithm == Algorithm::SlidingLog && c.limit > 10_000 {
        return Err(issue(
            "limit",
            "sliding_log keeps every request's time: at most 10000 (use sliding_window)",
        ));
    }
    if c.max_keys == 0 {
        return Err(issue("max_keys", "must be at least 1"));
    }
    let parts = key_parts(&c.key).map_err(|(f, m)| issue(&f, &m))?;
    let cluster = match c.scope {
        Scope::Local => {
            if c.batch.is_some() {
                return Err(issue("batch", "applies to scope: cluster only"));
            }
            None
        }
        Scope::Cluster => {
            if c.on_exceed == OnExceed::Delay {
                return Err(issue(
                    "on_exceed",
                    "delay needs scope: local (a cluster-wide turn would wait on Redis)",
                ));
            }
            if c.batch == Some(0) {
                return Err(issue("batch", "must be at least 1"));
            }
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
    let rate = Rate {
        limit: c.limit,
        per_ns: u64::try_from(per.as_nanos()).unwrap_or(u64::MAX),
        burst: c.burst.unwrap_or(match algorithm {
            Algorithm::LeakyBucket => 0,
            _ => c.limit,
        }),
    };
    let batch = c.batch.unwrap_or(c.limit / 1000).max(1);
    // A new link to Redis (other settings) builds new state, which uses it.
    let link = cluster.as_ref().map(|l| (Arc::as_ptr(l) as usize, batch));
    let fp = Fingerprint::of(&(algorithm, rate, c.max_keys, &parts, link));
    let limit = b
        .state
        .get_or_build("rate_limit", b.name, fp, |_| match &cluster {
            None => LimitState {
                limiter: Limiter::new(algorithm, rate, c.max_keys),
                parts: parts.clone(),
                shared: None,
            },
            Some(cluster) => LimitState {
                // Keys hash alike in every gateway of the cluster (seeded by the shared URL,
                // which holds the password when there is one, and the policy's name).
                limiter: Limiter::seeded(algorithm, rate, 16, shared_seeds(cluster.url(), b.name)),
                parts: parts.clone(),
                shared: Some(SharedLimit::new(
                    cluster.clone(),
                    format!("gatehouse:rl:{}:", b.name),
                    Counting::Rate(algorithm, rate),
                    batch,
                    c.max_keys,
                )),
            },
        });
    let window = per.as_secs_f64().ceil().max(1.0) as u64;
    let quota = rate.limit;
    let kong = match per.as_secs() {
        1 => Some("second"),
        60 => Some("minute"),
        3600 => Some("hour"),
        86_400 => Some("day"),
        _ => None,
    }
    .filter(|_| per.subsec_nanos() == 0);
    let header =
        |s: String| HeaderValue::from_str(&s).map_err(|_| issue("limit", "cannot be sent"));
    let policy_header = header(format!(
        "\"{}\";q={quota};w={window}",
        b.name.replace('"', "")
    ))?;
    Ok(Arc::new(RateLimit {
        name: b.name.into(),
        limit,
        delay: (c.on_exceed == OnExceed::Delay)
            .then(|| u64::try_from(c.max_delay.get().as_nanos()).unwrap_or(u64::MAX)),
        policy_header,
        item_prefix: format!("\"{}\";r=", b.name.replace('"', "")).into_bytes(),
        by_header: parts.iter().any(|p| matches!(p, KeyPart::Header(_))),
        kong: kong.and_then(|unit| {
            HeaderName::from_bytes(format!("x-ratelimit-remaining-{unit}").as_bytes()).ok()
        }),
    }))
}

/// Hash seeds every gateway sharing `url` derives alike for `policy` (keys of cluster-scope
/// limits and quotas).
pub fn shared_seeds(url: &str, policy: &str) -> [u64; 4] {
    use sha2::Digest;
    let d = sha2::Sha256::new()
        .chain_update(url)
        .chain_update([0])
        .chain_update(policy)
        .finalize();
    let mut seeds = [0u64; 4];
    for (s, chunk) in seeds.iter_mut().zip(d.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *s = u64::from_le_bytes(b);
    }
    seeds
}

/// A named limit's counters and what its key is made of: the state kept across reloads,
/// which `GET /admin/limits/{policy}` reads.
#[derive(Debug)]
pub struct LimitState {
    /// The counters (scope local); in cluster scope only its key hashing is used.
    pub limiter: Limiter,
    /// The key's parts.
    pub parts: Vec<KeyPart>,
    /// Cluster scope: the counters in Redis, as this gateway sees them.
    pub shared: Option<SharedLimit>,
}

impl LimitState {
    /// The key of a request; without the head (`None`) only parts the context holds count.
    pub fn key(&self, req: Option<&http::request::Parts>, ctx: &RequestCtx) -> u64 {
        hash_key(&self.parts, self.limiter.hasher(), req, ctx)
    }

    /// The key an operator names as text: the parts' values joined by commas, in the
    /// key's order (`mobile-app`, `10.0.0.7`, `mobile-app,orders`); for a `consumer`
    /// part, `ip:ADDRESS` names the client-IP count of requests without a consumer.
    pub fn key_of(&self, text: &str) -> Result<u64, String> {
        let values: Vec<&str> = if self.parts.len() == 1 {
            vec![text]
        } else {
            text.split(',').collect()
        };
        if values.len() != self.parts.len() {
            return Err(format!(
                "the key has {} parts; give their values joined by commas",
                self.parts.len()
            ));
        }
        let ip = |v: &str| {
            v.parse::<std::net::IpAddr>()
                .map_err(|_| format!("{v:?} is not an IP address"))
        };
        let mut ctx = RequestCtx::detached("admin", std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut req = http::Request::new(()).into_parts().0;
        let mut claims = std::collections::BTreeMap::new();
        let mut name = None;
        for (part, v) in self.parts.iter().zip(values) {
            match part {
                KeyPart::Consumer => match v.strip_prefix("ip:") {
                    Some(a) => ctx.client_ip = ip(a)?,
                    None => name = Some(v.to_string()),
                },
                KeyPart::Ip => ctx.client_ip = ip(v)?,
                KeyPart::Route => ctx.route = Some(v.into()),
                KeyPart::Header(h) => {
                    let value = http::HeaderValue::from_str(v)
                        .map_err(|_| format!("{v:?} is not a header value"))?;
                    req.headers.append(h.clone(), value);
                }
                KeyPart::Claim(path) => {
                    claims.insert(path.clone(), serde_json::Value::String(v.to_string()));
                }
            }
        }
        if name.is_some() || !claims.is_empty() {
            ctx.consumer = Some(Arc::new(gatehouse_core::Consumer {
                name: name.unwrap_or_default(),
                groups: Vec::new(),
                credential: gatehouse_core::Credential::ApiKey,
                claims,
            }));
        }
        Ok(self.key(Some(&req), &ctx))
    }
}

/// The compiled rate_limit policy.
#[derive(Debug)]
pub struct RateLimit {
    name: Arc<str>,
    /// The counters and the key, kept in the state registry by name.
    limit: Arc<LimitState>,
    /// `Some(max_delay_ns)` in delay mode.
    delay: Option<u64>,
    /// This limit's `RateLimit-Policy` item.
    policy_header: HeaderValue,
    /// `"NAME";r=`, the start of its `RateLimit` item.
    item_prefix: Vec<u8>,
    /// Whether the key has header parts (then the request phase keeps the key).
    by_header: bool,
    /// Kong's remaining-budget header, when `per` is a second, minute, hour or day.
    kong: Option<HeaderName>,
}

/// A refusing limit's decision, kept for its response headers.
#[derive(Debug, Clone, Copy)]
struct Refused(Decision);

/// The key of a limit that counts by header, kept for its response phase.
#[derive(Debug, Clone, Copy)]
struct HeaderKey(u64);

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

fn secs(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

impl RateLimit {
    /// The request's key; without the head (`None`) only parts the context holds count.
    fn key(&self, req: Option<&http::request::Parts>, ctx: &RequestCtx) -> u64 {
        self.limit.key(req, ctx)
    }

    fn refuse(&self, ctx: &mut RequestCtx, d: Decision) -> Flow {
        crate::notes::keep(ctx, &self.name, Refused(d));
        // Going over a rate limit counts toward a ban (`protection.ban`).
        ctx.offence = Some(gatehouse_core::Offence::RateLimit);
        let p = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("rate limit {} exceeded; retry later", self.name),
        );
        let mut r = problem_response(&p, &ctx.request_id);
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(secs(d.retry_ns).max(1)),
        );
        Flow::respond("rate_limited", r)
    }
}

impl Policy for RateLimit {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        let key = self.key(Some(req), ctx);
        if self.by_header {
            crate::notes::keep(ctx, &self.name, HeaderKey(key));
        }
        // The request's start stands for now: no clock read per decision.
        let now = crate::limiter::at(ctx.started);
        if let Some(shared) = &self.limit.shared {
            return match shared.check(key, now) {
                Verdict::Pass => Flow::Continue,
                Verdict::Refused(d) => self.refuse(ctx, d),
                Verdict::Unavailable => {
                    crate::shared_limit::unavailable(&format!("rate limit {}", self.name), ctx)
                }
            };
        }
        let Some(max_delay) = self.delay else {
            let d = self.limit.limiter.check(key, now);
            if d.allowed {
                return Flow::Continue;
            }
            return self.refuse(ctx, d);
        };
        match self.limit.limiter.reserve(key, now, max_delay) {
            Ok(0) => Flow::Continue,
            Ok(wait) => Flow::wait(async move {
                tokio::time::sleep(std::time::Duration::from_nanos(wait)).await;
                let resume: Resume = Box::new(|_, _| Flow::Continue);
                Ok(resume)
            }),
            Err(d) => self.refuse(ctx, d),
        }
    }

    fn on_response(&self, resp: &mut http::response::Parts, ctx: &mut RequestCtx) {
        // A refusal remembered its decision; an admitted request reads the budget as it
        // is now (no allocation on the way through).
        let refused = crate::notes::kept::<Refused>(ctx, &self.name)
            .next()
            .map(|r| r.0);
        let d = match refused {
            Some(d) => d,
            None => {
                // The request head is gone: the key is rebuilt from the context, which
                // is all it depends on unless it has header parts (then the request
                // phase kept it).
                let key = if self.by_header {
                    let Some(k) = crate::notes::kept::<HeaderKey>(ctx, &self.name).next() else {
                        return;
                    };
                    k.0
                } else {
                    self.key(None, ctx)
                };
                let now = crate::limiter::at(ctx.started);
                // Refused by another limit after this one counted it: every limit of a
                // route applies, and a refused request uses none of their budgets.
                if ctx
                    .short_circuit
                    .as_ref()
                    .is_some_and(|s| refused_by_a_limit(s) && s.policy != *self.name)
                {
                    match &self.limit.shared {
                        Some(shared) => shared.refund(key),
                        None => self.limit.limiter.refund(key, now),
                    }
                }
                match &self.limit.shared {
                    Some(shared) => {
                        let rate = self.limit.limiter.rate();
                        shared.peek(key, now, rate.limit.max(rate.burst))
                    }
                    None => self.limit.limiter.peek(key, now),
                }
            }
        };
        // Both values in one buffer: one allocation, no formatting machinery.
        let mut digits = itoa::Buffer::new();
        let remaining = digits.format(d.remaining).as_bytes();
        let mut reset = itoa::Buffer::new();
        let reset = reset.format(secs(d.reset_ns)).as_bytes();
        let mut buf =
            Vec::with_capacity(self.item_prefix.len() + 2 * remaining.len() + reset.len() + 3);
        buf.extend_from_slice(&self.item_prefix);
        buf.extend_from_slice(remaining);
        buf.extend_from_slice(b";t=");
        buf.extend_from_slice(reset);
        let item_end = buf.len();
        buf.extend_from_slice(remaining);
        let buf = bytes::Bytes::from(buf);
        let h = &mut resp.headers;
        h.append(RATELIMIT_POLICY, self.policy_header.clone());
        if let Ok(v) = HeaderValue::from_maybe_shared(buf.slice(..item_end)) {
            h.append(RATELIMIT, v);
        }
        if let Some(name) = &self.kong
            && let Ok(v) = HeaderValue::from_maybe_shared(buf.slice(item_end..))
        {
            h.append(name.clone(), v);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::kind::tests::build_one;

    fn error(settings: &str) -> String {
        let yaml = format!("policies:\n  l: {{ type: rate_limit, {settings} }}\n");
        build_one(&yaml, "l").unwrap_err()[0].path.clone()
    }

    #[test]
    fn an_operator_names_the_same_key_a_request_counts_under() {
        let state = LimitState {
            limiter: Limiter::new(
                Algorithm::TokenBucket,
                Rate {
                    limit: 1,
                    per_ns: 1,
                    burst: 1,
                },
                16,
            ),
            parts: key_parts(&KeySpec::Many(vec![
                "consumer".into(),
                "route".into(),
                "header:x-t".into(),
            ]))
            .unwrap(),
            shared: None,
        };
        let mut ctx = RequestCtx::detached("id", "10.0.0.1:1".parse().unwrap());
        ctx.route = Some("orders".into());
        ctx.consumer = Some(Arc::new(gatehouse_core::Consumer {
            name: "a".into(),
            groups: vec![],
            credential: gatehouse_core::Credential::ApiKey,
            claims: Default::default(),
        }));
        let (req, ()) = http::Request::get("/")
            .header("x-t", "t1")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(
            state.key_of("a,orders,t1").unwrap(),
            state.key(Some(&req), &ctx)
        );
        ctx.consumer = None;
        assert_eq!(
            state.key_of("ip:10.0.0.1,orders,t1").unwrap(),
            state.key(Some(&req), &ctx)
        );
        assert!(state.key_of("a,orders").is_err());
        assert!(state.key_of("ip:nope,orders,t1").is_err());
    }

    #[test]
    fn settings_are_checked_when_the_config_loads() {
        assert_eq!(error("limit: 0"), "policies.l.limit");
        assert_eq!(error("limit: 5, per: 0s"), "policies.l.per");
        assert_eq!(error("limit: 5, key: nope"), "policies.l.key");
        assert_eq!(
            error("limit: 5, key: [ip, \"header:bad name\"]"),
            "policies.l.key[1]"
        );
        assert_eq!(
            error("limit: 5, algorithm: fixed_window, burst: 3"),
            "policies.l.burst"
        );
        assert_eq!(
            error("limit: 5, algorithm: sliding_log, on_exceed: delay"),
            "policies.l.on_exceed"
        );
        assert_eq!(
            error("limit: 5, on_exceed: delay, max_delay: 10s"),
            "policies.l.max_delay"
        );
        assert_eq!(
            error("limit: 50000, algorithm: sliding_log"),
            "policies.l.limit"
        );
        assert_eq!(error("limit: 5, scope: cluster"), "policies.l.scope");
        assert_eq!(error("limit: 5, batch: 3"), "policies.l.batch");
    }

    #[test]
    fn each_key_kind_separates_what_it_should() {
        let p = |s: &str| KeyPart::parse(s).unwrap();
        let l = Limiter::new(
            Algorithm::TokenBucket,
            Rate {
                limit: 1,
                per_ns: 1,
                burst: 1,
            },
            16,
        );
        let key =
            |part: &KeyPart, ip: &str, consumer: Option<&str>, hdr: Option<&str>, route: &str| {
                let mut ctx = RequestCtx::detached("id", format!("{ip}:1").parse().unwrap());
                ctx.route = Some(route.into());
                ctx.consumer = consumer.map(|n| {
                    Arc::new(gatehouse_core::Consumer {
                        name: n.into(),
                        groups: vec![],
                        credential: gatehouse_core::Credential::ApiKey,
                        claims: serde_json::from_value(serde_json::json!({"org": {"id": n}}))
                            .unwrap(),
                    })
                });
                let mut b = http::Request::get("/");
                if let Some(h) = hdr {
                    b = b.header("x-tenant", h);
                }
                let (req, ()) = b.body(()).unwrap().into_parts();
                let mut h = l.hasher();
                part.hash(Some(&req), &ctx, &mut h);
                h.finish()
            };
        let (consumer, ip, route) = (p("consumer"), p("ip"), p("route"));
        let (header, claim) = (p("header:x-tenant"), p("claim:org.id"));
        assert_eq!(
            key(&consumer, "10.0.0.1", Some("a"), None, "r"),
            key(&consumer, "10.0.0.2", Some("a"), None, "r")
        );
        assert_ne!(
            key(&consumer, "10.0.0.1", Some("a"), None, "r"),
            key(&consumer, "10.0.0.1", Some("b"), None, "r")
        );
        assert_ne!(
            key(&consumer, "10.0.0.1", None, None, "r"),
            key(&consumer, "10.0.0.2", None, None, "r"),
            "no consumer: by IP"
        );
        assert_ne!(
            key(&ip, "10.0.0.1", Some("a"), None, "r"),
            key(&ip, "10.0.0.2", Some("a"), None, "r")
        );
        assert_ne!(
            key(&route, "10.0.0.1", None, None, "r"),
            key(&route, "10.0.0.1", None, None, "s")
        );
        assert_ne!(
            key(&header, "10.0.0.1", None, Some("t1"), "r"),
            key(&header, "10.0.0.1", None, Some("t2"), "r")
        );
        assert_eq!(
            key(&header, "10.0.0.1", None, Some("t1"), "r"),
            key(&header, "10.0.0.9", None, Some("t1"), "r")
        );
        assert_ne!(
            key(&claim, "10.0.0.1", Some("a"), None, "r"),
            key(&claim, "10.0.0.1", Some("b"), None, "r")
        );
    }
}
