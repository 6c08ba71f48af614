//! The observability settings: `access_log` (a target, or the object form with
//! sampling) and `analytics` (what the gateway keeps about recent requests).

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
    /// The last requests kept for `GET /admin/transactions`; default 10000, 0 keeps none.
    #[serde(default = "default_transactions")]
    pub transactions: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            transactions: default_transactions(),
        }
    }
}

fn default_transactions() -> usize {
    10_000
}
