//! The tries of one request against its upstream (docs/resilience.md): each try picks a
//! healthy target other than the ones already tried, a failed connect moves on at once,
//! and a failure after sending is retried only for retryable methods, replayable bodies
//! and outcomes listed in `retries.on`, after a jittered backoff, within the retry budget
//! and the request deadline. Every outcome feeds passive health and the breaker.

use crate::body::RequestBody;
use crate::error::{ProxyError, RetryClass, retry_after_secs};
use crate::forward::{self, Forwarded};
use crate::upstream_tls::ClientTls;
use bytes::Bytes;
use gatehouse_core::trace::{AttributeValue as V, SpanKind, SpanRecord, new_span_id};
use gatehouse_observe::metrics;
use gatehouse_upstream::balancer::Pick;
use gatehouse_upstream::breaker::Admission;
use gatehouse_upstream::clock::now_ms;
use gatehouse_upstream::{PickInput, TargetState, UpstreamState};
use http::{HeaderMap, Method, Request, Uri, Version};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The request head sent upstream, kept apart from its body so a retry can rebuild it.
pub struct Head {
    /// Method.
    pub method: Method,
    /// Origin-form (HTTP/1) or absolute (HTTP/2) target.
    pub uri: Uri,
    /// Version spoken upstream.
    pub version: Version,
    /// Headers, already rewritten for upstream.
    pub headers: HeaderMap,
    /// The request's trace: each try carries a `traceparent` naming a span of its own.
    pub trace: gatehouse_core::TraceContext,
    /// Record each try as a CLIENT span (the request is sampled and spans are exported).
    pub record: bool,
}

impl Head {
    /// The request of one try, whose `traceparent` names `span` as the parent.
    fn request(&mut self, body: RequestBody, keep: bool, span: [u8; 8]) -> Request<RequestBody> {
        let mut r = Request::new(body);
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = self.version;
        // Only a try that may be followed by another needs its own copy of the headers.
        *r.headers_mut() = if keep {
            self.headers.clone()
        } else {
            std::mem::take(&mut self.headers)
        };
        r.headers_mut().insert(
            gatehouse_core::trace::TRACEPARENT.clone(),
            self.trace.traceparent(span),
        );
        r
    }
}

/// One try as a CLIENT span: where it went, which resend it was, how it ended.
pub fn try_span(
    method: &Method,
    target: &str,
    resend: u32,
    (span_id, start): ([u8; 8], Instant),
    ended: Result<u16, &ProxyError>,
) -> SpanRecord {
    let (host, port) = match target.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse().ok(),
        ),
        None => (target, None),
    };
    let mut attributes = vec![
        ("http.request.method", V::Str(method.as_str().into())),
        ("server.address", V::Str(host.into())),
    ];
    if let Some(p) = port {
        attributes.push(("server.port", V::Int(p)));
    }
    if resend > 0 {
        attributes.push(("http.request.resend_count", V::Int(i64::from(resend))));
    }
    let error = match ended {
        Ok(status) => {
            attributes.push(("http.response.status_code", V::Int(i64::from(status))));
            (status >= 500).then(|| status.to_string().into())
        }
        Err(e) => Some(e.kind().into()),
    };
    if let Some(e) = &error {
        attributes.push(("error.type", V::Str(Arc::clone(e))));
    }
    SpanRecord {
        span_id,
        kind: SpanKind::Client,
        name: method.as_str().into(),
        start,
        end: Instant::now(),
        attributes,
        error,
    }
}

/// The body to send: a buffered copy any try can resend, or the client's stream, which
/// only the first try that reaches a target can use.
pub enum Payload {
    /// Fully read (or empty); replayable.
    Replay(Bytes),
    /// Streamed; after it was sent no retry is possible.
    Stream(RequestBody),
}

/// A response that made it back, with the target that sent it.
pub struct Served {
    /// The response and its timings.
    pub forwarded: Forwarded,
    /// The target that answered.
    pub target: Arc<TargetState>,
    /// The balancer's pick (for the sticky cookie).
    pub pick: Pick,
}

/// The most recent failure: an error, or a response whose status asked for a retry.
enum Last {
    Error(ProxyError),
    Response(Box<Served>),
}

/// Asks the upstream's breaker whether this request may go at all; an open breaker
/// fails it fast, before its body is read.
pub fn admit(up: &UpstreamState) -> Result<Pending<'_>, ProxyError> {
    let admission = match up.breaker.as_ref().map(|b| b.admit(now_ms())) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(wait_ms)) => {
            return Err(ProxyError::Unavailable {
                upstream: up.name.clone(),
                reason: "circuit breaker open",
                retry_after: retry_after_secs(wait_ms),
            });
        }
    };
    Ok(Pending {
        breaker: up.breaker.as_ref(),
        admission,
    })
}

/// The breaker's admission of this request until its first try has an outcome; dropped
/// unrecorded (cancelled request, no target), it hands a half-open permit back.
pub struct Pending<'a> {
    breaker: Option<&'a gatehouse_upstream::breaker::Breaker>,
    admission: Option<Admission>,
}

impl Pending<'_> {
    /// The admission to record a try's outcome under: the original for the first try,
    /// plain window counting for the others.
    fn take(&mut self) -> Option<Admission> {
        self.breaker?;
        Some(self.admission.take().unwrap_or(Admission::Normal))
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let (Some(b), Some(a)) = (self.breaker, self.admission.take()) {
            b.release(a);
        }
    }
}

/// What the tries of one request came to, for the caller to record: the response (or
/// the last error) and what was tried. Returned rather than written into the request's
/// record, so one action can run several upstream calls at once.
pub struct Outcome {
    /// The response that made it back, or why none did.
    pub result: Result<Served, ProxyError>,
    /// Tries made on the way.
    pub tried: Tried,
}

/// The tries of one request so far.
#[derive(Default)]
pub struct Tried {
    /// Tries sent, retries included (0 when none was).
    pub attempts: u32,
    /// The last target tried.
    pub target: Option<Arc<str>>,
    /// In-flight guard of that target, held until the response body ends.
    pub inflight: Option<gatehouse_upstream::InFlight>,
    /// The tries as CLIENT spans, when the head asked for them.
    pub spans: Vec<SpanRecord>,
    /// Time spent sending and waiting for response heads (or failures), all tries.
    pub exchange: Duration,
    /// The rest of the tries' time: picks, connects (TCP, TLS) and retry backoff.
    pub network: Duration,
}

impl Tried {
    /// Records try `k` (0-based) as a CLIENT span when its start was taken.
    fn traced(
        &mut self,
        method: &Method,
        target: &TargetState,
        k: usize,
        (id, start): ([u8; 8], Option<Instant>),
        ended: Result<u16, &ProxyError>,
    ) {
        if let Some(start) = start {
            let span = try_span(method, &target.address, k as u32, (id, start), ended);
            self.spans.push(span);
        }
    }

    /// Try number `attempts` goes to `target`.
    fn trying(&mut self, attempts: u32, target: &Arc<TargetState>) {
        self.attempts = attempts;
        self.target = Some(Arc::clone(&target.address));
        self.inflight = Some(target.begin());
    }
}

/// An upgrade handshake: one try on a fresh connection (the client's upgrade cannot be
/// replayed once the target agreed to it).
pub async fn upgrade(
    up: &UpstreamState,
    tls: Option<&ClientTls>,
    input: &PickInput<'_>,
    parts: http::request::Parts,
) -> Outcome {
    let mut tried = Tried::default();
    let Some((pick, target)) = up.pick(input, &[]) else {
        let result = Err(crate::error::no_healthy_target(up));
        return Outcome { result, tried };
    };
    let target = target.clone();
    tried.trying(1, &target);
    let req = Request::from_parts(parts, RequestBody::empty());
    let result = forward::send_upgrade(up, &target, tls, req)
        .await
        .inspect(|f| {
            tried.network = f.connect;
            tried.exchange = f.first_byte;
        })
        .map(|forwarded| Served {
            forwarded,
            target,
            pick,
        });
    Outcome { result, tried }
}

/// Runs the tries for one request admitted by [`admit`]. One async fn, not a wrapper
/// around another: the arguments of an async fn live for its whole run, so a wrapper
/// would hold the request head and body twice in the request's future.
pub async fn run(
    up: &UpstreamState,
    tls: Option<&ClientTls>,
    input: &PickInput<'_>,
    mut head: Head,
    payload: Payload,
    mut admission: Pending<'_>,
) -> Outcome {
    let mut record = Tried::default();
    let begun;
    let result = 'tries: {
        let policy = &up.retries;
        let on = &up.retry_on;
        let max = policy.attempts.clamp(1, 10) as usize;
        let resend_allowed = up.resends_after_send(head.method.as_str());
        let (mut replay, mut stream) = match payload {
            Payload::Replay(b) => (Some(b), None),
            Payload::Stream(s) => (None, Some(s)),
        };
        begun = Instant::now();
        let deadline = begun + up.config.timeouts.request.get();
        let per_try = policy
            .per_try_timeout
            .map_or(up.config.timeouts.request.get(), |d| d.get());
        let mut tried = [usize::MAX; 10];
        let mut last: Option<Last> = None;
        up.budget.request(now_ms());

        for k in 0..max {
            if k > 0 {
                let open = up
                    .breaker
                    .as_ref()
                    .is_some_and(|b| b.state(now_ms()) == gatehouse_upstream::breaker::State::Open);
                if open || !up.budget.try_retry(now_ms()) {
                    metrics::retry(&up.name, false);
                    gatehouse_observe::stats::retry_denied(&up.name);
                    break;
                }
                metrics::retry(&up.name, true);
                tokio::time::sleep(backoff(policy, k)).await;
            }
            let Some((pick, target)) = up.pick(input, &tried[..k]) else {
                break;
            };
            tried[k] = pick.index;
            let target = target.clone();
            record.trying(k as u32 + 1, &target);
            let more = k + 1 < max;
            // The span covers the connect too; its id is the parent-id sent upstream.
            let span = (new_span_id(), head.record.then(Instant::now));

            let conn = match forward::connect(up, &target, tls).await {
                Ok(c) => c,
                Err(e) => {
                    record.traced(&head.method, &target, k, span, Err(&e));
                    metered(up, &target, e.status().as_u16(), None);
                    outcome(up, pick.index, admission.take(), true);
                    let retry = on.connect_failure;
                    last = Some(Last::Error(e));
                    if retry {
                        continue;
                    }
                    break;
                }
            };
            // With a stream body this try is the only one that can send it.
            let resend = resend_allowed && more && replay.is_some();
            let body = match (&replay, stream.take()) {
                (Some(b), _) => RequestBody::buffered(b.clone()),
                (None, Some(s)) => s,
                (None, None) => RequestBody::empty(),
            };
            if !resend {
                replay = None;
            }
            let limit = per_try.min(deadline.saturating_duration_since(Instant::now()));
            let limit = limit.max(Duration::from_millis(1));
            let req = head.request(body, resend, span.0);
            let sent = Instant::now();
            let exchanged = forward::exchange(up, &target, conn, req, limit).await;
            record.exchange += match &exchanged {
                Ok(f) => f.first_byte,
                Err(_) => sent.elapsed(),
            };
            let ended = exchanged.as_ref().map(|f| f.response.status().as_u16());
            record.traced(&head.method, &target, k, span, ended);
            match exchanged {
                // The client broke the exchange: nothing is known about the target, so
                // neither health nor the breaker hears of it (the admission is handed back
                // when `admission` drops), and nothing is retried.
                Err(e) if e.is_client_fault() => break 'tries Err(e),
                Err(e) => {
                    metered(up, &target, e.status().as_u16(), None);
                    outcome(up, pick.index, admission.take(), true);
                    let class = e.retry_class();
                    let listed = match class {
                        RetryClass::Reset => on.reset,
                        RetryClass::Timeout => on.timeout,
                        RetryClass::ConnectFailure => on.connect_failure,
                        RetryClass::Never => false,
                    };
                    if resend && listed {
                        last = Some(Last::Error(e));
                        continue;
                    }
                    break 'tries Err(e);
                }
                Ok(forwarded) => {
                    let status = forwarded.response.status().as_u16();
                    metered(
                        up,
                        &target,
                        status,
                        Some(forwarded.connect + forwarded.first_byte),
                    );
                    outcome(
                        up,
                        pick.index,
                        admission.take(),
                        is_failure_status(up, status),
                    );
                    let served = Served {
                        forwarded,
                        target,
                        pick,
                    };
                    if resend && on.statuses.contains(&status) {
                        last = Some(Last::Response(Box::new(served)));
                        continue;
                    }
                    break 'tries Ok(served);
                }
            }
        }
        match last {
            Some(Last::Response(served)) => Ok(*served),
            Some(Last::Error(e)) => Err(e),
            None => Err(crate::error::no_healthy_target(up)),
        }
    };
    record.network = begun.elapsed().saturating_sub(record.exchange);
    Outcome {
        result,
        tried: record,
    }
}

/// Counts one try in the upstream metrics; `took` (connect and time to the response
/// head, already measured by the exchange) only for a try that got a response, so the
/// metrics read no clock of their own.
fn metered(up: &UpstreamState, target: &TargetState, status: u16, took: Option<Duration>) {
    if metrics::enabled() {
        metrics::upstream_try(&up.name, &target.address, status, took);
    }
}

/// Statuses that count as failures for passive health and the breaker.
fn is_failure_status(up: &UpstreamState, status: u16) -> bool {
    match &up.config.health_check.passive {
        Some(p) => p.failure_statuses.contains(&status),
        None => matches!(status, 502..=504),
    }
}

fn outcome(up: &UpstreamState, index: usize, how: Option<Admission>, failed: bool) {
    up.record_outcome(index, failed);
    if let (Some(b), Some(how)) = (&up.breaker, how) {
        b.record(how, failed, now_ms());
    }
}

/// Exponential backoff with full jitter before retry `k` (1-based): a uniform wait in
/// `[0, min(max, base * 2^(k-1))]`.
fn backoff(policy: &gatehouse_config::Retries, k: usize) -> Duration {
    let base = policy.backoff.base.get().as_micros() as u64;
    let max = policy.backoff.max.get().as_micros() as u64;
    let cap = base.saturating_mul(1u64 << (k - 1).min(20)).min(max);
    Duration::from_micros(fastrand::u64(..=cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let mut p = gatehouse_config::Retries::default();
        p.backoff.base = gatehouse_config::Duration::from_millis(10);
        p.backoff.max = gatehouse_config::Duration::from_millis(35);
        for _ in 0..200 {
            assert!(backoff(&p, 1) <= Duration::from_millis(10));
            assert!(backoff(&p, 2) <= Duration::from_millis(20));
            assert!(backoff(&p, 5) <= Duration::from_millis(35));
        }
        let spread: std::collections::HashSet<_> = (0..50).map(|_| backoff(&p, 3)).collect();
        assert!(spread.len() > 10, "full jitter spreads the waits");
    }
}
