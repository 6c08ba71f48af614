//! The observability settings: `access_log` (a target, or the object form with
//! sampling), `analytics` (what the gateway keeps about recent requests) and `tracing`
//! (OpenTelemetry span export).

use crate::units::Duration;
use schemars::JsonSchema;
use serde::Deserialize;

/// `access_log:` as the gateway uses it, whichever form the config wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    /// `stdout`, `stderr`, `off` or a file path (appended).
    pub output: String,
    /// Share of the other requests written, 0 to 1; default 1 (every request).
    pub sample: f64,
    /// Requests written whatever `sample` says (and every short circuit).
    pub always: AlwaysLog,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogForm::Target(default_output()).into()
    }
}

/// The two forms `access_log` may take (its schema; YAML's `off`, a boolean, is read as
/// `off` too).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum AccessLogForm {
    /// `access_log: stdout` (every request, to that target).
    Target(String),
    /// `access_log: { output, sample, always }`.
    Detailed(DetailedAccessLog),
}

impl JsonSchema for AccessLogConfig {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AccessLog".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        AccessLogForm::json_schema(g)
    }
}

impl<'de> Deserialize<'de> for AccessLogConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Form;
        impl<'de> serde::de::Visitor<'de> for Form {
            type Value = AccessLogForm;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("stdout, stderr, off, a file path, or { output, sample, always }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(AccessLogForm::Target(v.to_string()))
            }
            // YAML 1.1 reads `off` (and `on`) as booleans.
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(AccessLogForm::Target(
                    if v { "stdout" } else { "off" }.into(),
                ))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                DetailedAccessLog::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(AccessLogForm::Detailed)
            }
        }
        d.deserialize_any(Form).map(Self::from)
    }
}

/// The object form of `access_log`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetailedAccessLog {
    /// `stdout` (default), `stderr`, `off` or a file path.
    #[serde(default = "default_output")]
    pub output: String,
    /// Share of the other requests written; default 1.
    #[serde(default = "one")]
    pub sample: f64,
    /// Requests always written.
    #[serde(default)]
    pub always: AlwaysLog,
}

/// `access_log.always`: what is written whatever the sampling.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlwaysLog {
    /// Responses with this status or higher; default 400.
    #[serde(default = "default_status_from")]
    pub status_from: u16,
    /// Requests that took longer than this; default 1s.
    #[serde(default = "default_slower_than")]
    pub slower_than: Duration,
}

impl Default for AlwaysLog {
    fn default() -> Self {
        Self {
            status_from: default_status_from(),
            slower_than: default_slower_than(),
        }
    }
}

impl From<AccessLogForm> for AccessLogConfig {
    fn from(f: AccessLogForm) -> Self {
        match f {
            AccessLogForm::Target(output) => Self {
                output,
                sample: 1.0,
                always: AlwaysLog::default(),
            },
            AccessLogForm::Detailed(d) => Self {
                output: d.output,
                sample: d.sample,
                always: d.always,
            },
        }
    }
}

fn default_output() -> String {
    "stdout".into()
}
fn one() -> f64 {
    1.0
}
fn default_status_from() -> u16 {
    400
}
fn default_slower_than() -> Duration {
    Duration::from_millis(1_000)
}

/// `analytics:`: what the gateway keeps about recent requests for the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Record the quality score, latency breakdown, Top-N and transactions; default
    /// true. When false their endpoints answer empty and requests pay nothing for them.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Apdex target T of the quality score: satisfied at most T, tolerated at most 4T;
    /// default 500ms (a route may set its own).
    #[serde(default = "default_latency_target")]
    pub latency_target: Duration,
    /// Counters per Top-N list (space-saving summary size); default 1000.
    #[serde(default = "default_top_capacity")]
    pub top_capacity: usize,
    /// The last requests kept for `GET /admin/transactions`; default 10000, 0 keeps none.
    #[serde(default = "default_transactions")]
    pub transactions: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            latency_target: default_latency_target(),
            top_capacity: default_top_capacity(),
            transactions: default_transactions(),
        }
    }
}

/// `routes[].analytics`: a route's own quality-score settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteAnalytics {
    /// The route's apdex target; default `analytics.latency_target`.
    #[serde(default)]
    pub latency_target: Option<Duration>,
}

fn default_latency_target() -> Duration {
    Duration::from_millis(500)
}
fn default_top_capacity() -> usize {
    1_000
}

/// `tracing:`: OpenTelemetry spans exported over OTLP/HTTP (absent: no export; requests
/// still carry and pass on W3C trace context).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Where and how spans are sent.
    pub otlp: OtlpConfig,
    /// `service.name` of the exported resource; default `gatehouse`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Which traces are recorded.
    #[serde(default)]
    pub sampling: TraceSampling,
    /// The export queue and batches.
    #[serde(default)]
    pub batch: SpanBatch,
}

/// `tracing.otlp`: the OTLP/HTTP (protobuf) collector.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The traces URL, e.g. `http://127.0.0.1:4318/v1/traces` (http or https).
    pub endpoint: String,
    /// Headers sent with every export (e.g. `authorization`).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Longest wait for one export request; default 5s.
    #[serde(default = "default_otlp_timeout")]
    pub timeout: Duration,
    /// `none` (default, as the OpenTelemetry SDKs) or `gzip`.
    #[serde(default)]
    pub compression: OtlpCompression,
}

/// Body compression of OTLP exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OtlpCompression {
    /// Plain protobuf.
    #[default]
    None,
    /// `Content-Encoding: gzip`.
    Gzip,
}

/// `tracing.sampling`: head sampling.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceSampling {
    /// Share of new traces recorded, by trace id, 0 to 1; default 1.
    #[serde(default = "one")]
    pub ratio: f64,
    /// A request that arrives with a `traceparent` follows its sampled flag; default true.
    #[serde(default = "yes")]
    pub parent_based: bool,
}

impl Default for TraceSampling {
    fn default() -> Self {
        Self {
            ratio: 1.0,
            parent_based: true,
        }
    }
}

/// `tracing.batch`: the span queue between the request path and the exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpanBatch {
    /// Spans waiting for export at most; beyond, new spans are dropped (and counted);
    /// default 4096.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Spans per export request at most; default 512.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Longest a span waits before its batch is sent; default 1s.
    #[serde(default = "default_batch_interval")]
    pub interval: Duration,
}

impl Default for SpanBatch {
    fn default() -> Self {
        Self {
            max_queue: default_max_queue(),
            max_batch: default_max_batch(),
            interval: default_batch_interval(),
        }
    }
}

fn default_service_name() -> String {
    "gatehouse".into()
}
fn default_otlp_timeout() -> Duration {
    Duration::from_secs(5)
}
fn yes() -> bool {
    true
}
fn default_max_queue() -> usize {
    4096
}
fn default_max_batch() -> usize {
    512
}
fn default_batch_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_transactions() -> usize {
    10_000
}
