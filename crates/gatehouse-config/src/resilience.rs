//! Upstream resilience settings: health checks (active and passive), slow start, retries
//! and the circuit breaker. Defaults are documented in docs/resilience.md.

use crate::units::{Duration, Size};
use schemars::JsonSchema;
use serde::Deserialize;

/// `health_check:` of an upstream.
#[derive(Debug, Clone, Deserialize, PartialEq, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Probes sent by the gateway on a timer.
    #[serde(default)]
    pub active: Option<ActiveCheck>,
    /// Ejection on failures seen in real traffic.
    #[serde(default)]
    pub passive: Option<PassiveCheck>,
}

/// What an active probe does.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// `GET path` on a fresh connection; healthy when the status is in `expect_status`.
    #[default]
    Http,
    /// A TCP connect that succeeds within the timeout.
    Tcp,
}

/// `health_check.active`.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveCheck {
    /// `http` (default) or `tcp`.
    #[serde(default, rename = "type")]
    pub kind: CheckKind,
    /// Path probed by `http` checks; default `/`.
    #[serde(default = "default_path")]
    pub path: String,
    /// Time between probes of one target; default 5s.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// A probe slower than this fails; default 1s.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Consecutive passes that make an unhealthy target healthy; default 2.
    #[serde(default = "default_healthy")]
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy target unhealthy; default 3.
    #[serde(default = "default_unhealthy")]
    pub unhealthy_threshold: u32,
    /// Statuses (`"200"`, `"200-399"`) that pass; default `["200-399"]`.
    #[serde(default = "default_expect")]
    pub expect_status: Vec<String>,
    /// Host header of the probe; default the target's address.
    #[serde(default)]
    pub host: Option<String>,
}

fn default_path() -> String {
    "/".into()
}
fn default_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_healthy() -> u32 {
    2
}
fn default_unhealthy() -> u32 {
    3
}
fn default_expect() -> Vec<String> {
    vec!["200-399".into()]
}

/// `health_check.passive` (outlier ejection).
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PassiveCheck {
    /// Consecutive failed requests that eject a target; default 5.
    #[serde(default = "default_consecutive")]
    pub consecutive_failures: u32,
    /// Response statuses that count as failures (besides connect errors, resets and
    /// timeouts); default 502, 503, 504.
    #[serde(default = "default_failure_statuses")]
    pub failure_statuses: Vec<u16>,
    /// First ejection lasts this long, doubling with each repeat ejection; default 30s.
    #[serde(default = "default_ejection_time")]
    pub ejection_time: Duration,
    /// Cap on the doubled ejection time; default 5m.
    #[serde(default = "default_max_ejection_time")]
    pub max_ejection_time: Duration,
    /// At most this share of the targets is ejected at once; default 50.
    #[serde(default = "default_max_ejected_percent")]
    pub max_ejected_percent: u32,
}

impl Default for PassiveCheck {
    fn default() -> Self {
        Self {
            consecutive_failures: default_consecutive(),
            failure_statuses: default_failure_statuses(),
            ejection_time: default_ejection_time(),
            max_ejection_time: default_max_ejection_time(),
            max_ejected_percent: default_max_ejected_percent(),
        }
    }
}

fn default_consecutive() -> u32 {
    5
}
fn default_failure_statuses() -> Vec<u16> {
    vec![502, 503, 504]
}
fn default_ejection_time() -> Duration {
    Duration::from_secs(30)
}
fn default_max_ejection_time() -> Duration {
    Duration::from_secs(300)
}
fn default_max_ejected_percent() -> u32 {
    50
}

/// Which methods may be retried.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RetryMethods {
    /// GET HEAD OPTIONS PUT DELETE TRACE.
    #[default]
    Idempotent,
    /// Every method (only for upstreams whose POSTs are safe to repeat).
    All,
    /// An explicit list, upper case.
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for RetryMethods {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, JsonSchema)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            List(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "idempotent" => Ok(Self::Idempotent),
            Raw::Word(w) if w == "all" => Ok(Self::All),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "methods must be `idempotent`, `all` or a list of methods, not `{w}`"
            ))),
            Raw::List(l) => Ok(Self::List(
                l.into_iter().map(|m| m.to_ascii_uppercase()).collect(),
            )),
        }
    }
}

impl JsonSchema for RetryMethods {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RetryMethods".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [
                {"enum": ["idempotent", "all"]},
                {"type": "array", "items": {"type": "string"}}
            ],
            "description": "`idempotent` (GET HEAD OPTIONS PUT DELETE TRACE), `all`, or a list of methods."
        })
    }
}

impl RetryMethods {
    /// Whether `method` may be retried after the request was sent.
    pub fn allows(&self, method: &str) -> bool {
        match self {
            Self::Idempotent => matches!(
                method,
                "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
            ),
            Self::All => true,
            Self::List(l) => l.iter().any(|m| m == method),
        }
    }
}

/// `retries.backoff`: exponential with full jitter.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Cap of the first wait; default 25ms.
    #[serde(default = "default_backoff_base")]
    pub base: Duration,
    /// Cap of any wait; default 1s.
    #[serde(default = "default_backoff_max")]
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: default_backoff_base(),
            max: default_backoff_max(),
        }
    }
}

fn default_backoff_base() -> Duration {
    Duration::from_millis(25)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(1)
}

/// `retries.budget`: retries may add at most `ratio` of the requests, or
/// `min_per_second`, whichever is larger (over a sliding 10 s window).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    /// Share of requests that may be retries; default 0.2.
    #[serde(default = "default_ratio")]
    pub ratio: f64,
    /// Retries per second always allowed; default 5.
    #[serde(default = "default_min_per_second")]
    pub min_per_second: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            ratio: default_ratio(),
            min_per_second: default_min_per_second(),
        }
    }
}

fn default_ratio() -> f64 {
    0.2
}
fn default_min_per_second() -> u32 {
    5
}

/// `retries:` of an upstream.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Total tries including the first; default 2 (1 turns retries off).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Retryable outcomes: `connect_failure`, `reset`, `timeout` and statuses as strings;
    /// default `[connect_failure, reset, timeout, "502", "503", "504"]`.
    #[serde(default = "default_on", rename = "on")]
    pub on: Vec<String>,
    /// Methods retried once the request was sent: `idempotent` (default), `all`, or a list.
    /// A connect failure is retried for every method: nothing reached the target.
    #[serde(default)]
    pub methods: RetryMethods,
    /// Time limit of one try (to the response head); default: `timeouts.request`.
    #[serde(default)]
    pub per_try_timeout: Option<Duration>,
    /// Wait between tries.
    #[serde(default)]
    pub backoff: Backoff,
    /// Cap on the extra load retries may add.
    #[serde(default)]
    pub budget: RetryBudget,
    /// Request bodies up to this size are buffered so they can be sent again; larger or
    /// unsized (chunked) bodies are streamed and only retried on connect failure.
    /// Default 64KiB.
    #[serde(default = "default_replay_buffer")]
    pub replay_buffer: Size,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            attempts: default_attempts(),
            on: default_on(),
            methods: RetryMethods::default(),
            per_try_timeout: None,
            backoff: Backoff::default(),
            budget: RetryBudget::default(),
            replay_buffer: default_replay_buffer(),
        }
    }
}

fn default_attempts() -> u32 {
    2
}
fn default_on() -> Vec<String> {
    ["connect_failure", "reset", "timeout", "502", "503", "504"]
        .map(String::from)
        .to_vec()
}
fn default_replay_buffer() -> Size {
    Size(64 * 1024)
}

/// `circuit_breaker:` of an upstream.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Opens when at least this share of the window's calls failed; default 0.5.
    #[serde(default = "default_failure_ratio")]
    pub failure_ratio: f64,
    /// Calls in the window before the ratio is judged; default 20.
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    /// Sliding window of the ratio; default 10s.
    #[serde(default = "default_window")]
    pub window: Duration,
    /// Time open (failing fast) before half-open; default 30s.
    #[serde(default = "default_open_for")]
    pub open_for: Duration,
    /// Trial calls let through half-open; that many successes close it; default 5.
    #[serde(default = "default_half_open")]
    pub half_open_requests: u32,
    /// In-flight cap for the upstream; excess gets 503. Default: no cap.
    #[serde(default)]
    pub max_concurrent_requests: Option<u64>,
}

fn default_failure_ratio() -> f64 {
    0.5
}
fn default_min_requests() -> u32 {
    20
}
fn default_window() -> Duration {
    Duration::from_secs(10)
}
fn default_open_for() -> Duration {
    Duration::from_secs(30)
}
fn default_half_open() -> u32 {
    5
}

/// A status range of `expect_status`: `"200"` or `"200-399"`.
pub fn parse_status_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("`{s}` is not a status or a range like \"200-399\"");
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let lo: u16 = lo.parse().map_err(|_| bad())?;
    let hi: u16 = hi.parse().map_err(|_| bad())?;
    if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// The parsed `retries.on` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// Retry when no connection could be made (nothing was sent).
    pub connect_failure: bool,
    /// Retry when the connection broke before a response head.
    pub reset: bool,
    /// Retry when a try hit its time limit.
    pub timeout: bool,
    /// Retry on these response statuses.
    pub statuses: Vec<u16>,
}

impl RetryOn {
    /// Parses `on:` entries; the error names the first bad entry.
    pub fn parse(list: &[String]) -> Result<Self, String> {
        let mut on = Self::default();
        for e in list {
            match e.as_str() {
                "connect_failure" => on.connect_failure = true,
                "reset" => on.reset = true,
                "timeout" => on.timeout = true,
                s => match s.parse::<u16>() {
                    Ok(code) if (100..=599).contains(&code) => on.statuses.push(code),
                    _ => {
                        return Err(format!(
                            "`{s}` is not connect_failure, reset, timeout or a status code"
                        ));
                    }
                },
            }
        }
        Ok(on)
    }
}

impl Retries {
    /// What applies when an upstream has no `retries:` block: like NGINX's
    /// `proxy_next_upstream error`, a failed connect moves on to another target once;
    /// nothing that reached a target is repeated.
    pub fn implicit() -> Self {
        Self {
            on: vec!["connect_failure".into()],
            ..Self::default()
        }
    }
}

/// Semantic checks of an upstream's resilience blocks: `(field path, message)` per issue.
pub fn check(
    base: &str,
    health: &HealthCheck,
    retries: Option<&Retries>,
    breaker: Option<&CircuitBreaker>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut push = |p: String, m: String| out.push((p, m));
    if let Some(a) = &health.active {
        let b = format!("{base}.health_check.active");
        if a.interval.get().is_zero() {
            push(format!("{b}.interval"), "must be above zero".into());
        }
        if a.timeout.get().is_zero() {
            push(format!("{b}.timeout"), "must be above zero".into());
        }
        if a.healthy_threshold == 0 {
            push(
                format!("{b}.healthy_threshold"),
                "must be at least 1".into(),
            );
        }
        if a.unhealthy_threshold == 0 {
            push(
                format!("{b}.unhealthy_threshold"),
                "must be at least 1".into(),
            );
        }
        if !a.path.starts_with('/') {
            push(format!("{b}.path"), "must start with `/`".into());
        }
        for (i, s) in a.expect_status.iter().enumerate() {
            if let Err(m) = parse_status_range(s) {
                push(format!("{b}.expect_status[{i}]"), m);
            }
        }
    }
    if let Some(p) = &health.passive {
        let b = format!("{base}.health_check.passive");
        if p.consecutive_failures == 0 {
            push(
                format!("{b}.consecutive_failures"),
                "must be at least 1".into(),
            );
        }
        if p.max_ejected_percent > 100 {
            push(format!("{b}.max_ejected_percent"), "must be 0-100".into());
        }
        if p.max_ejection_time.get() < p.ejection_time.get() {
            push(
                format!("{b}.max_ejection_time"),
                "must not be shorter than ejection_time".into(),
            );
        }
        for (i, s) in p.failure_statuses.iter().enumerate() {
            if !(100..=599).contains(s) {
                push(
                    format!("{b}.failure_statuses[{i}]"),
                    "not a status code".into(),
                );
            }
        }
    }
    if let Some(r) = retries {
        let b = format!("{base}.retries");
        if !(1..=10).contains(&r.attempts) {
            push(format!("{b}.attempts"), "must be 1-10".into());
        }
        if let Err(m) = RetryOn::parse(&r.on) {
            push(format!("{b}.on"), m);
        }
        if r.per_try_timeout.is_some_and(|t| t.get().is_zero()) {
            push(format!("{b}.per_try_timeout"), "must be above zero".into());
        }
        if r.backoff.max.get() < r.backoff.base.get() {
            push(
                format!("{b}.backoff.max"),
                "must not be below backoff.base".into(),
            );
        }
        if !(0.0..=1.0).contains(&r.budget.ratio) {
            push(
                format!("{b}.budget.ratio"),
                "must be between 0 and 1".into(),
            );
        }
    }
    if let Some(c) = breaker {
        let b = format!("{base}.circuit_breaker");
        if !(c.failure_ratio > 0.0 && c.failure_ratio <= 1.0) {
            push(
                format!("{b}.failure_ratio"),
                "must be above 0 and at most 1".into(),
            );
        }
        if c.window.get() < std::time::Duration::from_secs(1) {
            push(format!("{b}.window"), "must be at least 1s".into());
        }
        if c.half_open_requests == 0 {
            push(
                format!("{b}.half_open_requests"),
                "must be at least 1".into(),
            );
        }
        if c.max_concurrent_requests == Some(0) {
            push(
                format!("{b}.max_concurrent_requests"),
                "must be at least 1".into(),
            );
        }
    }
    out
}
