//! OpenTelemetry span export (docs/operations.md, "Tracing"): head sampling by trace id,
//! a bounded queue the request path never waits on (a full queue drops and counts), and
//! one exporter thread per `tracing` config that sends OTLP/HTTP protobuf batches,
//! retries 429/502/503/504 as `Retry-After` asks, and flushes on shutdown.

use crate::metrics::Exposition;
use gatehouse_config::observability::{OtlpCompression, TracingConfig};
use gatehouse_core::TraceContext;
use gatehouse_core::trace::{AttributeValue, SpanKind, SpanRecord};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Metric name: spans not exported, by reason.
pub const DROPPED: &str = "gatehouse_tracing_spans_dropped_total";

/// Why spans were not exported: the queue was full, the collector kept failing, or it
/// refused the batch outright.
#[derive(Debug, Clone, Copy)]
enum Dropped {
    QueueFull = 0,
    ExportFailed = 1,
    Rejected = 2,
}

const REASONS: [&str; 3] = ["queue_full", "export_failed", "rejected"];
static DROPS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

fn drop_spans(why: Dropped, n: usize) {
    DROPS[why as usize].fetch_add(n as u64, Ordering::Relaxed);
}

/// Writes `gatehouse_tracing_spans_dropped_total{reason}` (every reason, zeros too).
pub fn write_metrics(e: &mut Exposition) {
    e.family(DROPPED, "counter", "Spans not exported, by reason.");
    for (i, reason) in REASONS.iter().enumerate() {
        let n = DROPS[i].load(Ordering::Relaxed);
        e.sample(DROPPED, &[("reason", reason)], n as f64);
    }
}

/// Tries per batch: the first and up to four retries.
const TRIES: u32 = 5;
/// Longest wait a collector's `Retry-After` may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The tracing of one config: which requests are recorded, and where their spans go.
#[derive(Debug)]
pub struct Tracer {
    config: TracingConfig,
    queue: Arc<Queue>,
}

/// The spans of one request on their way to the exporter thread.
struct Finished {
    trace: TraceContext,
    /// A Unix time and the instant it was read at, to place the spans' instants.
    anchor: (SystemTime, Instant),
    spans: Vec<SpanRecord>,
}

enum Msg {
    Spans(Finished),
    Flush(mpsc::Sender<()>),
}

#[derive(Debug)]
struct Queue {
    /// Spans sent and not yet taken by the exporter thread (shared with it: the queue
    /// may go away first, when its snapshot is replaced).
    queued: Arc<AtomicUsize>,
    max: usize,
    /// Started on the first span, so `validate` and unsampled configs start no thread.
    sender: OnceLock<Mutex<Option<mpsc::Sender<Msg>>>>,
    config: TracingConfig,
}

/// Every live queue, for the flush at shutdown.
fn live() -> &'static Mutex<Vec<Weak<Queue>>> {
    static LIVE: OnceLock<Mutex<Vec<Weak<Queue>>>> = OnceLock::new();
    LIVE.get_or_init(Mutex::default)
}

impl Tracer {
    /// The tracer of `config` (its exporter thread starts with the first span).
    pub fn new(config: &TracingConfig) -> Arc<Self> {
        let queue = Arc::new(Queue {
            queued: Arc::new(AtomicUsize::new(0)),
            max: config.batch.max_queue,
            sender: OnceLock::new(),
            config: config.clone(),
        });
        if let Ok(mut l) = live().lock() {
            l.retain(|w| w.strong_count() > 0);
            l.push(Arc::downgrade(&queue));
        }
        Arc::new(Self {
            config: config.clone(),
            queue,
        })
    }

    /// The config it was made from.
    pub fn config(&self) -> &TracingConfig {
        &self.config
    }

    /// Decides whether the request's trace is recorded and sets its sampled flag: the
    /// caller's flag when it sent a `traceparent` and sampling is `parent_based`, else
    /// the trace id against `ratio` (OpenTelemetry's TraceIdRatioBased: its low 8 bytes).
    pub fn sample(&self, trace: &mut TraceContext) -> bool {
        let s = &self.config.sampling;
        if !(s.parent_based && trace.parent_id.is_some()) {
            trace.sampled = by_ratio(&trace.trace_id, s.ratio);
        }
        trace.sampled
    }

    /// Queues a request's spans (its server span among them); drops and counts them when
    /// the queue is full. Never waits.
    pub fn export(&self, trace: TraceContext, spans: Vec<SpanRecord>) {
        let n = spans.len();
        let q = &self.queue;
        if q.queued.fetch_add(n, Ordering::Relaxed) + n > q.max {
            q.queued.fetch_sub(n, Ordering::Relaxed);
            drop_spans(Dropped::QueueFull, n);
            return;
        }
        let msg = Msg::Spans(Finished {
            trace,
            anchor: (SystemTime::now(), Instant::now()),
            spans,
        });
        if !q.send(msg) {
            q.queued.fetch_sub(n, Ordering::Relaxed);
            drop_spans(Dropped::ExportFailed, n);
        }
    }
}

/// OpenTelemetry's trace-id ratio rule: sampled when the id's last 8 bytes, as a
/// number, fall below `ratio` of their range.
fn by_ratio(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    (u64::from_be_bytes(low) >> 1) < bound
}

impl Queue {
    /// Hands `msg` to the exporter thread, starting it first if need be; false when it
    /// cannot run.
    fn send(&self, msg: Msg) -> bool {
        let slot = self.sender.get_or_init(|| Mutex::new(self.start()));
        let Ok(guard) = slot.lock() else { return false };
        guard.as_ref().is_some_and(|tx| tx.send(msg).is_ok())
    }

    fn start(&self) -> Option<mpsc::Sender<Msg>> {
        let (tx, rx) = mpsc::channel();
        let exporter = match Exporter::new(&self.config) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the span exporter");
                return None;
            }
        };
        let queued = Arc::clone(&self.queued);
        let spawned = std::thread::Builder::new()
            .name("gatehouse-otlp".into())
            .spawn(move || exporter.run(rx, queued));
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the span exporter thread");
                None
            }
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // The exporter thread ends when its channel closes, after sending what is left.
        if let Some(slot) = self.sender.get()
            && let Ok(mut g) = slot.lock()
        {
            g.take();
        }
    }
}

/// Bytes the queued spans take (an estimate: a span and its attributes).
pub fn memory_bytes() -> usize {
    const PER_SPAN: usize = std::mem::size_of::<SpanRecord>() + 8 * 48;
    let queued: usize = match live().lock() {
        Ok(l) => l
            .iter()
            .filter_map(Weak::upgrade)
            .map(|q| q.queued.load(Ordering::Relaxed))
            .sum(),
        Err(_) => 0,
    };
    queued * PER_SPAN
}

/// Sends every live queue's spans now and waits for them, at most `within`.
pub fn flush_all(within: Duration) {
    let deadline = Instant::now() + within;
    let queues: Vec<Arc<Queue>> = match live().lock() {
        Ok(l) => l.iter().filter_map(Weak::upgrade).collect(),
        Err(_) => return,
    };
    let mut acks = Vec::new();
    for q in &queues {
        let Some(slot) = q.sender.get() else { continue };
        let (tx, rx) = mpsc::channel();
        let sent = slot
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|s| s.send(Msg::Flush(tx)).is_ok()));
        if sent == Some(true) {
            acks.push(rx);
        }
    }
    for rx in acks {
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = rx.recv_timeout(left);
    }
}

/// The exporter thread's side: batches, encodes and sends.
struct Exporter {
    client: reqwest::Client,
    endpoint: String,
    headers: reqwest::header::HeaderMap,
    gzip: bool,
    timeout: Duration,
    max_batch: usize,
    interval: Duration,
    resource: Resource,
    /// In a streak of failed exports (logged once when it starts and once when it ends).
    failing: bool,
}

impl Exporter {
    fn new(c: &TracingConfig) -> Result<Self, String> {
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &c.otlp.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| format!("header {k:?}: {e}"))?;
            let value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|e| format!("header {k:?}: {e}"))?;
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .timeout(c.otlp.timeout.get())
            .build()
            .map_err(|e| format!("cannot make the HTTP client: {e}"))?;
        let resource = Resource {
            attributes: vec![
                kv(
                    "service.name",
                    any_value::Value::StringValue(c.service_name.clone()),
                ),
                kv(
                    "service.version",
                    any_value::Value::StringValue(env!("CARGO_PKG_VERSION").into()),
                ),
            ],
            ..Default::default()
        };
        Ok(Self {
            client,
            endpoint: c.otlp.endpoint.clone(),
            headers,
            gzip: c.otlp.compression == OtlpCompression::Gzip,
            timeout: c.otlp.timeout.get(),
            max_batch: c.batch.max_batch,
            interval: c.batch.interval.get(),
            resource,
            failing: false,
        })
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>, queued: Arc<AtomicUsize>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the span exporter's runtime");
                return;
            }
        };
        let mut pending: Vec<Span> = Vec::new();
        // When the oldest pending span must be sent.
        let mut due: Option<Instant> = None;
        loop {
            let msg = match due {
                Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(Msg::Spans(f)) => {
                    queued.fetch_sub(f.spans.len(), Ordering::Relaxed);
                    convert(f, &mut pending);
                    due.get_or_insert_with(|| Instant::now() + self.interval);
                    while pending.len() >= self.max_batch {
                        let batch: Vec<Span> = pending.drain(..self.max_batch).collect();
                        rt.block_on(self.send(batch));
                    }
                }
                Ok(Msg::Flush(ack)) => {
                    self.send_all(&rt, &mut pending);
                    let _ = ack.send(());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => self.send_all(&rt, &mut pending),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.send_all(&rt, &mut pending);
                    return;
                }
            }
            if pending.is_empty() {
                due = None;
            }
        }
    }

    fn send_all(&mut self, rt: &tokio::runtime::Runtime, pending: &mut Vec<Span>) {
        while !pending.is_empty() {
            let n = pending.len().min(self.max_batch);
            let batch: Vec<Span> = pending.drain(..n).collect();
            rt.block_on(self.send(batch));
        }
    }

    /// One batch: sent, retried on 429/502/503/504 and network failures (after the
    /// collector's `Retry-After`, else 1 s doubling), dropped and counted at last.
    async fn send(&mut self, spans: Vec<Span>) {
        use prost::Message;
        let n = spans.len();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "gatehouse".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let mut body = request.encode_to_vec();
        if self.gzip {
            body = gzip(&body);
        }
        let body = bytes::Bytes::from(body);
        for attempt in 0..TRIES {
            let mut req = self
                .client
                .post(&self.endpoint)
                .headers(self.headers.clone())
                .header("content-type", "application/x-protobuf")
                .timeout(self.timeout)
                .body(body.clone());
            if self.gzip {
                req = req.header("content-encoding", "gzip");
            }
            let wait = match req.send().await {
                Ok(r) if r.status().is_success() => {
                    if std::mem::take(&mut self.failing) {
                        tracing::info!(endpoint = %self.endpoint, "OTLP collector accepts spans again");
                    }
                    return;
                }
                Ok(r) if matches!(r.status().as_u16(), 429 | 502 | 503 | 504) => {
                    let asked = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(retry_after);
                    self.failed(&format!("collector answered {}", r.status()));
                    asked.unwrap_or_else(|| backoff(attempt))
                }
                Ok(r) => {
                    self.failed(&format!("collector refused the batch: {}", r.status()));
                    drop_spans(Dropped::Rejected, n);
                    return;
                }
                Err(e) => {
                    self.failed(&format!("cannot reach the collector: {e}"));
                    backoff(attempt)
                }
            };
            if attempt + 1 < TRIES {
                tokio::time::sleep(wait.min(MAX_RETRY_AFTER)).await;
            }
        }
        drop_spans(Dropped::ExportFailed, n);
    }

    fn failed(&mut self, why: &str) {
        if !std::mem::replace(&mut self.failing, true) {
            tracing::warn!(endpoint = %self.endpoint, cause = why, "span export failing; retrying, then dropping");
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(5))
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v.trim()).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Unix nanoseconds of `at`, placed by `anchor`.
fn unix_nanos((wall, mono): (SystemTime, Instant), at: Instant) -> u64 {
    let wall = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let t = match mono.checked_duration_since(at) {
        Some(before) => wall.saturating_sub(before),
        None => wall + at.duration_since(mono),
    };
    u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
}

/// A request's spans in OTLP form: the server span under the caller's (remote) span,
/// the others under the server span.
fn convert(f: Finished, out: &mut Vec<Span>) {
    /// W3C flags in the low byte; bit 8: whether the parent is remote is known; bit 9: it is.
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    let t = &f.trace;
    let sampled = u32::from(t.sampled);
    for s in f.spans {
        let (kind, parent, flags) = match s.kind {
            SpanKind::Server => (
                span::SpanKind::Server,
                t.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
                sampled | HAS_IS_REMOTE | if t.parent_id.is_some() { IS_REMOTE } else { 0 },
            ),
            SpanKind::Internal => (
                span::SpanKind::Internal,
                t.span_id.to_vec(),
                sampled | HAS_IS_REMOTE,
            ),
            SpanKind::Client => (
                span::SpanKind::Client,
                t.span_id.to_vec(),
                sampled | HAS_IS_REMOTE,
            ),
        };
        let attributes = s
            .attributes
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    AttributeValue::Str(s) => any_value::Value::StringValue(s.to_string()),
                    AttributeValue::Int(i) => any_value::Value::IntValue(i),
                };
                kv(k, v)
            })
            .collect();
        let status = s.error.map(|_| Status {
            message: String::new(),
            code: status::StatusCode::Error as i32,
        });
        out.push(Span {
            trace_id: t.trace_id.to_vec(),
            span_id: s.span_id.to_vec(),
            parent_span_id: parent,
            flags,
            name: s.name.to_string(),
            kind: kind as i32,
            start_time_unix_nano: unix_nanos(f.anchor, s.start),
            end_time_unix_nano: unix_nanos(f.anchor, s.end),
            attributes,
            status,
            ..Default::default()
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_keeps_about_its_share_of_trace_ids() {
        let kept = (0..20_000)
            .filter(|_| by_ratio(&fastrand::u128(..).to_be_bytes(), 0.1))
            .count();
        assert!((1_600..2_400).contains(&kept), "{kept}");
        assert!(by_ratio(&[0xff; 16], 1.0));
        assert!(!by_ratio(&[0; 16], 0.0));
        // The same trace id always gets the same answer, whichever gateway asks.
        let id = fastrand::u128(..).to_be_bytes();
        assert_eq!(by_ratio(&id, 0.5), by_ratio(&id, 0.5));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn span_times_are_placed_by_the_anchor() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_000);
        let before = now.checked_sub(Duration::from_millis(5)).unwrap();
        assert_eq!(
            unix_nanos((wall, now), before),
            1_000 * 1_000_000_000 - 5_000_000
        );
        let after = now + Duration::from_millis(5);
        assert_eq!(
            unix_nanos((wall, now), after),
            1_000 * 1_000_000_000 + 5_000_000
        );
    }
}
