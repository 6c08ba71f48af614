//! The access log: records are serialized on the worker and handed to a writer thread
//! through a channel, so a slow disk never stalls a request.

use serde::Serialize;
use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::SystemTime;

/// The line's own fields: a policy's annotation under one of these names is left out.
pub const FIELDS: &[&str] = &[
    "timestamp",
    "request_id",
    "trace_id",
    "client_ip",
    "listener",
    "consumer",
    "method",
    "host",
    "path",
    "query",
    "http_version",
    "user_agent",
    "device",
    "status",
    "bytes_in",
    "bytes_out",
    "route",
    "upstream",
    "upstream_target",
    "attempts",
    "upstream_latency_ms",
    "total_latency_ms",
    "phases",
    "short_circuit",
    "error",
    "sample_rate",
];

/// One request as logged and as kept for `GET /admin/transactions`. Latencies are
/// milliseconds with microsecond precision.
#[derive(Debug, Clone, Serialize)]
pub struct AccessRecord {
    /// RFC 3339 time the request started; the same key as the process log's JSON lines.
    pub timestamp: String,
    /// Request id.
    pub request_id: String,
    /// The W3C trace id (32 hex digits): the client's when it sent a valid `traceparent`.
    pub trace_id: String,
    /// Client IP after trusted proxies.
    pub client_ip: std::net::IpAddr,
    /// The listener the request arrived on.
    pub listener: Arc<str>,
    /// The authenticated consumer's name, when an authentication policy set one.
    pub consumer: Option<String>,
    /// Method.
    pub method: String,
    /// Host.
    pub host: String,
    /// Path (without query), as received.
    pub path: String,
    /// Query string, without `?`; absent when the target had none.
    pub query: Option<String>,
    /// Protocol version: `HTTP/1.0`, `HTTP/1.1`, `HTTP/2.0`.
    pub http_version: &'static str,
    /// The client's User-Agent.
    pub user_agent: Option<String>,
    /// The kind of client the User-Agent names (`desktop`, `mobile`, `tablet`, `bot`,
    /// `library`, `unknown`).
    pub device: &'static str,
    /// Response status.
    pub status: u16,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Matched route.
    pub route: Option<Arc<str>>,
    /// Upstream the request was proxied to.
    pub upstream: Option<Arc<str>>,
    /// Upstream target address.
    pub upstream_target: Option<Arc<str>>,
    /// Tries sent upstream (1 without retries; 0 when none was sent).
    pub attempts: u32,
    /// Time to the upstream response head.
    pub upstream_latency_ms: Option<f64>,
    /// Total time until the response body ended.
    pub total_latency_ms: f64,
    /// Per-phase timings.
    pub phases: Phases,
    /// Policy that answered locally, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub short_circuit: Option<ShortCircuitRecord>,
    /// Error detail when the gateway produced the response.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// In the access log: 1 for lines written whatever the sampling, else the sampled
    /// share (`access_log.sample`), so counts can be scaled back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<f64>,
    /// Objects policies added (`waf`: ...), each under its key.
    #[serde(flatten)]
    pub annotations: serde_json::Map<String, serde_json::Value>,
}

/// Per-phase timings in milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Phases {
    /// Request and response policies.
    pub policies_ms: f64,
    /// Obtaining an upstream connection (0 when pooled).
    pub upstream_connect_ms: Option<f64>,
    /// Sending the request until the response head.
    pub upstream_first_byte_ms: Option<f64>,
    /// Whole request.
    pub total_ms: f64,
    /// Request body arrival and response write back-pressure.
    pub client_ms: f64,
    /// Routing, policies and the gateway's own work.
    pub gateway_ms: f64,
    /// Upstream connects (TCP, TLS), target picks and retry backoff.
    pub upstream_network_ms: f64,
    /// Upstream request sent to response head, and waiting on its body.
    pub upstream_app_ms: f64,
}

/// A short circuit, as logged.
#[derive(Debug, Clone, Serialize)]
pub struct ShortCircuitRecord {
    /// Policy name.
    pub policy: String,
    /// Reason.
    pub reason: &'static str,
}

/// Milliseconds with microsecond precision.
pub fn ms(d: std::time::Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// Formats a system time as RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        d.subsec_millis()
    )
}

/// Where access-log lines go.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<String>>,
}

impl AccessLog {
    /// A log that drops everything (`access_log: off`).
    pub fn off() -> Self {
        Self { tx: None }
    }

    /// Opens the sink named by the config value: stdout, stderr, off or a file path (appended).
    pub fn open(target: &str) -> std::io::Result<Self> {
        let sink: Box<dyn Write + Send> = match target {
            "off" => return Ok(Self::off()),
            "stdout" => Box::new(std::io::stdout()),
            "stderr" => Box::new(std::io::stderr()),
            path => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        // Bounded: under a burst that the sink cannot absorb we drop lines, never block requests.
        let (tx, rx) = sync_channel::<String>(65_536);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, sink))?;
        Ok(Self { tx: Some(tx) })
    }

    /// Whether records are wanted at all (saves building them when off).
    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues one record.
    pub fn write(&self, rec: &AccessRecord) {
        let Some(tx) = &self.tx else { return };
        if let Ok(mut line) = serde_json::to_string(rec) {
            line.push('\n');
            match tx.try_send(line) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => tracing::warn!("access log behind; dropped a line"),
            }
        }
    }
}

fn write_loop(rx: Receiver<String>, sink: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(line.as_bytes());
        // Drain what is queued, then flush once: one syscall per burst, not per line.
        while let Ok(more) = rx.try_recv() {
            let _ = out.write_all(more.as_bytes());
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
