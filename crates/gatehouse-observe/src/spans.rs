//! OpenTelemetry span export (docs/operations.md, "Tracing"): head sampling by trace id,
//! a bounded queue the request path never waits on (a full queue drops and counts), and
//! one exporter thread per `tracing` config that sends OTLP/HTTP protobuf batches,
//! retries 429/502/503/504 as `Retry-After` asks, and flushes on shutdown.

use crate::metrics::Exposition;
use crate::otlp::Batch;
use gatehouse_config::observability::{OtlpCompression, TracingConfig};
use gatehouse_core::TraceContext;
use gatehouse_core::trace::SpanRecord;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak, mpsc};
use std::time::{Duration, Instant, SystemTime};

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
    queue: Arc<Queue>,
}

/// The spans of one request on their way to the exporter thread.
struct Finished {
    trace: TraceContext,
    /// A Unix time and the instant it was read at, to place the spans' instants.
    anchor: (SystemTime, Instant),
    spans: Vec<SpanRecord>,
}

/// What the request path hands the exporter thread. A request only pushes under an
/// uncontended lock: the thread is not woken per request (that would cost a futex call
/// and a context switch each) but wakes every `interval`, or when `max_batch` spans
/// wait, a flush is asked for, or the tracer is gone.
#[derive(Debug, Default)]
struct Shared {
    inbox: Mutex<Inbox>,
    wake: Condvar,
    /// Spans in the inbox.
    queued: AtomicUsize,
}

#[derive(Debug, Default)]
struct Inbox {
    items: Vec<Finished>,
    /// Waiters of a flush, answered once what was queued before them is sent.
    flushes: Vec<mpsc::Sender<()>>,
    /// The tracer is gone: send what is left and stop.
    closed: bool,
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Finished({} spans)", self.spans.len())
    }
}

#[derive(Debug)]
struct Queue {
    /// Shared with the exporter thread (which may outlive the queue a little, to send
    /// what is left).
    shared: Arc<Shared>,
    /// Whether the exporter thread runs; started with the first span, so `validate`
    /// and configs that sample nothing start no thread.
    started: OnceLock<bool>,
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
            shared: Arc::default(),
            started: OnceLock::new(),
            config: config.clone(),
        });
        if let Ok(mut l) = live().lock() {
            l.retain(|w| w.strong_count() > 0);
            l.push(Arc::downgrade(&queue));
        }
        Arc::new(Self { queue })
    }

    /// The config it was made from.
    pub fn config(&self) -> &TracingConfig {
        &self.queue.config
    }

    /// Decides whether the request's trace is recorded and sets its sampled flag: the
    /// caller's flag when it sent a `traceparent` and sampling is `parent_based`, else
    /// the trace id against `ratio` (OpenTelemetry's TraceIdRatioBased: its low 8 bytes).
    pub fn sample(&self, trace: &mut TraceContext) -> bool {
        let s = &self.config().sampling;
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
        if !*q.started.get_or_init(|| q.start()) {
            drop_spans(Dropped::ExportFailed, n);
            return;
        }
        let shared = &q.shared;
        let batch = &q.config.batch;
        let before = shared.queued.fetch_add(n, Ordering::Relaxed);
        if before + n > batch.max_queue {
            shared.queued.fetch_sub(n, Ordering::Relaxed);
            drop_spans(Dropped::QueueFull, n);
            return;
        }
        let item = Finished {
            trace,
            anchor: (SystemTime::now(), Instant::now()),
            spans,
        };
        shared
            .inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .items
            .push(item);
        // Woken only when this request completes a batch.
        if before < batch.max_batch && before + n >= batch.max_batch {
            shared.wake.notify_one();
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
    /// Starts the exporter thread; false when it cannot run.
    fn start(&self) -> bool {
        let exporter = match Exporter::new(&self.config) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the span exporter");
                return false;
            }
        };
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("gatehouse-otlp".into())
            .spawn(move || exporter.run(&shared));
        match spawned {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the span exporter thread");
                false
            }
        }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // The exporter thread sends what is left, then ends.
        let mut inbox = self.shared.inbox.lock().unwrap_or_else(|p| p.into_inner());
        inbox.closed = true;
        drop(inbox);
        self.shared.wake.notify_one();
    }
}

/// Bytes the queued spans take (an estimate: a span and its attributes).
pub fn memory_bytes() -> usize {
    const PER_SPAN: usize = std::mem::size_of::<SpanRecord>() + 8 * 48;
    let queued: usize = match live().lock() {
        Ok(l) => l
            .iter()
            .filter_map(Weak::upgrade)
            .map(|q| q.shared.queued.load(Ordering::Relaxed))
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
    for q in queues.iter().filter(|q| q.started.get() == Some(&true)) {
        let (tx, rx) = mpsc::channel();
        q.shared
            .inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flushes
            .push(tx);
        q.shared.wake.notify_one();
        acks.push(rx);
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
    /// Present when batches are gzipped.
    gzip: Option<Gzip>,
    timeout: Duration,
    max_batch: usize,
    interval: Duration,
    /// The encoded `Resource` and `InstrumentationScope` every batch carries.
    resource: Vec<u8>,
    scope: Vec<u8>,
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
        Ok(Self {
            client,
            endpoint: c.otlp.endpoint.clone(),
            headers,
            gzip: (c.otlp.compression == OtlpCompression::Gzip).then(Gzip::new),
            timeout: c.otlp.timeout.get(),
            max_batch: c.batch.max_batch,
            interval: c.batch.interval.get(),
            resource: crate::otlp::resource(&c.service_name),
            scope: crate::otlp::scope(),
            failing: false,
        })
    }

    fn run(mut self, shared: &Shared) {
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
        let mut batch = Batch::default();
        loop {
            let (items, flushes, closed) = {
                let mut inbox = shared.inbox.lock().unwrap_or_else(|p| p.into_inner());
                let idle = |i: &Inbox| {
                    !i.closed
                        && i.flushes.is_empty()
                        && shared.queued.load(Ordering::Relaxed) < self.max_batch
                };
                if idle(&inbox) {
                    inbox = shared
                        .wake
                        .wait_timeout(inbox, self.interval)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                (
                    std::mem::take(&mut inbox.items),
                    std::mem::take(&mut inbox.flushes),
                    inbox.closed,
                )
            };
            for f in items {
                shared.queued.fetch_sub(f.spans.len(), Ordering::Relaxed);
                for s in &f.spans {
                    batch.push(&f.trace, s, f.anchor);
                    if batch.len() >= self.max_batch {
                        self.send_batch(&rt, &mut batch);
                    }
                }
            }
            if !batch.is_empty() {
                self.send_batch(&rt, &mut batch);
            }
            for ack in flushes {
                let _ = ack.send(());
            }
            if closed {
                return;
            }
        }
    }

    fn send_batch(&mut self, rt: &tokio::runtime::Runtime, batch: &mut Batch) {
        let n = batch.len();
        let body = batch.finish(&self.resource, &self.scope);
        rt.block_on(self.send(body, n));
    }

    /// One batch: sent, retried on 429/502/503/504 and network failures (after the
    /// collector's `Retry-After`, else 1 s doubling), dropped and counted at last.
    async fn send(&mut self, plain: Vec<u8>, n: usize) {
        let zipped = self
            .gzip
            .as_mut()
            .map(|g| g.compress(&plain))
            .filter(|z| !z.is_empty());
        let gzipped = zipped.is_some();
        let body = bytes::Bytes::from(zipped.unwrap_or(plain));
        for attempt in 0..TRIES {
            let mut req = self
                .client
                .post(&self.endpoint)
                .headers(self.headers.clone())
                .header("content-type", "application/x-protobuf")
                .timeout(self.timeout)
                .body(body.clone());
            if gzipped {
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

/// Gzip (RFC 1952) with one deflate state kept for the exporter's life: making a new
/// one per batch zeroes a few hundred kilobytes each time, which cost more than the
/// compression itself.
struct Gzip {
    deflate: flate2::Compress,
}

impl Gzip {
    fn new() -> Self {
        Self {
            deflate: flate2::Compress::new(flate2::Compression::fast(), false),
        }
    }

    fn compress(&mut self, data: &[u8]) -> Vec<u8> {
        // ID1 ID2, deflate, no flags, no mtime, no extra flags, unknown OS.
        const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
        self.deflate.reset();
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        out.extend_from_slice(&HEADER);
        loop {
            let read = usize::try_from(self.deflate.total_in()).unwrap_or(data.len());
            let status = self.deflate.compress_vec(
                &data[read.min(data.len())..],
                &mut out,
                flate2::FlushCompress::Finish,
            );
            match status {
                Ok(flate2::Status::StreamEnd) => break,
                Ok(_) => out.reserve(out.capacity().max(1024)),
                // Deflating into memory fails only on a bug; send it uncompressed then.
                Err(_) => return Vec::new(),
            }
        }
        let mut crc = flate2::Crc::new();
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
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
    fn the_kept_gzip_state_makes_valid_streams_again_and_again() {
        use std::io::Read;
        let mut g = Gzip::new();
        for n in [0usize, 10, 100_000] {
            let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let z = g.compress(&data);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&z[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
        }
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
}
