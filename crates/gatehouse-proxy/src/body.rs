//! Body types: what goes upstream (the client's body, counted and capped) and what goes
//! to the client (an upstream body that returns its connection to the pool at its end, or
//! a local one). Enums rather than boxed trait objects: no allocation per request.

use crate::finish::Finish;
use crate::linger::LingeringBody;
use crate::pool::Return;
use bytes::Bytes;
use gatehouse_core::BodyFilter;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

/// Error type of bodies we stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Shared counter of one request body: bytes received from the client.
#[derive(Debug, Default)]
pub struct BodyMeter {
    /// Bytes received from the client.
    pub bytes: AtomicU64,
    /// Nanoseconds spent waiting for the client's body bytes.
    pub wait_nanos: AtomicU64,
}

impl BodyMeter {
    /// Adds a wait for the client's bytes.
    fn waited(&self, d: std::time::Duration) {
        let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.wait_nanos.fetch_add(n, Ordering::Relaxed);
    }

    /// Time spent waiting for the client's body so far.
    pub fn wait(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.wait_nanos.load(Ordering::Relaxed))
    }
}

/// The client failed to deliver its body. It travels as the request body's error, so
/// the exchange that meets it upstream can tell the client's fault from the upstream's
/// and never count it against a target.
#[derive(Debug, thiserror::Error)]
pub enum ClientFault {
    /// The client closed (or reset) before the body was complete.
    #[error("the client closed the connection before its body was complete")]
    Aborted(#[source] hyper::Error),
    /// The body's framing was invalid (a bad chunk size line, for instance).
    #[error("the request body is malformed")]
    Malformed(#[source] hyper::Error),
    /// The body went over the route's `max_body_size` while streaming.
    #[error("the request body exceeds the limit of {0} bytes")]
    TooLarge(u64),
    /// No body bytes for the listener's `body_read_timeout` (seconds).
    #[error("no request body bytes arrived for {0} s")]
    Stalled(u64),
    /// The body arrived slower than the listener's `min_body_rate` (bytes per second).
    #[error("the request body arrived slower than {0} bytes per second")]
    TooSlow(u64),
}

/// How fast a client must deliver its body: the listener's `body_read_timeout` and
/// `min_body_rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPace {
    /// Longest wait for more body bytes.
    pub read_timeout: std::time::Duration,
    /// Least mean rate since the first byte, in bytes per second, once the body is
    /// older than `read_timeout`.
    pub min_rate: Option<u64>,
}

impl Default for BodyPace {
    fn default() -> Self {
        Self {
            read_timeout: std::time::Duration::from_secs(60),
            min_rate: None,
        }
    }
}

/// What a client fault was, without its cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Closed early.
    Aborted,
    /// Bad framing.
    Malformed,
    /// Over this limit.
    TooLarge(u64),
    /// No bytes for this many seconds.
    Stalled(u64),
    /// Slower than this many bytes per second.
    TooSlow(u64),
}

impl ClientFault {
    /// Classifies a failed read of the client's body: invalid framing is malformed,
    /// anything else (early EOF, reset, stream cancelled) is an abort.
    pub fn from_read(e: hyper::Error) -> Self {
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            if let Some(io) = s.downcast_ref::<std::io::Error>()
                && matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
                )
            {
                return Self::Malformed(e);
            }
            src = s.source();
        }
        if e.is_parse() {
            return Self::Malformed(e);
        }
        Self::Aborted(e)
    }

    /// The fault's kind, without its cause.
    pub fn kind(&self) -> FaultKind {
        match self {
            Self::Aborted(_) => FaultKind::Aborted,
            Self::Malformed(_) => FaultKind::Malformed,
            Self::TooLarge(n) => FaultKind::TooLarge(*n),
            Self::Stalled(n) => FaultKind::Stalled(*n),
            Self::TooSlow(n) => FaultKind::TooSlow(*n),
        }
    }

    /// A fault of `kind` around `cause` (the error that carried it out of hyper).
    pub fn with_cause(kind: FaultKind, cause: hyper::Error) -> Self {
        match kind {
            FaultKind::Aborted => Self::Aborted(cause),
            FaultKind::Malformed => Self::Malformed(cause),
            FaultKind::TooLarge(n) => Self::TooLarge(n),
            FaultKind::Stalled(n) => Self::Stalled(n),
            FaultKind::TooSlow(n) => Self::TooSlow(n),
        }
    }

    /// The offence the fault counts as toward a ban: a stalled or trickling body is a
    /// slow client, a malformed one a bad request; aborting or sending too much is not.
    pub fn offence(&self) -> Option<gatehouse_core::Offence> {
        match self {
            Self::Stalled(_) | Self::TooSlow(_) => Some(gatehouse_core::Offence::SlowClient),
            Self::Malformed(_) => Some(gatehouse_core::Offence::BadRequest),
            Self::Aborted(_) | Self::TooLarge(_) => None,
        }
    }

    /// The client fault somewhere in `e`'s source chain, if the error started there.
    pub fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a ClientFault> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(f) = err.downcast_ref::<ClientFault>() {
                return Some(f);
            }
            cur = err.source();
        }
        None
    }
}

/// The request body sent upstream: the client's, streamed, or a buffered copy of it that
/// can be sent again by a retry.
#[derive(Debug)]
pub struct RequestBody {
    inner: Option<LingeringBody>,
    replay: Option<Bytes>,
    limit: u64,
    seen: u64,
    meter: Arc<BodyMeter>,
    /// Since when the client's next bytes are awaited (the clock is read only then).
    waiting: Option<std::time::Instant>,
    pace: BodyPace,
    /// Wakes the body when the client has been silent for `pace.read_timeout`; made
    /// the first time the body waits, then moved.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When the first body byte arrived (read only with a `min_rate`).
    first_byte: Option<std::time::Instant>,
}

impl RequestBody {
    /// Streams `inner`, failing once more than `limit` bytes went through or when the
    /// client is slower than `pace`.
    pub fn new(
        inner: LingeringBody,
        limit: Option<u64>,
        meter: Arc<BodyMeter>,
        pace: BodyPace,
    ) -> Self {
        Self {
            inner: Some(inner),
            replay: None,
            limit: limit.unwrap_or(u64::MAX),
            seen: 0,
            meter,
            waiting: None,
            pace,
            stall: None,
            first_byte: None,
        }
    }

    /// No body (upgrades, bodiless requests).
    pub fn empty() -> Self {
        Self::buffered(Bytes::new())
    }

    /// A body already read into memory; cheap to clone for another try.
    pub fn buffered(b: Bytes) -> Self {
        Self {
            inner: None,
            replay: (!b.is_empty()).then_some(b),
            limit: u64::MAX,
            seen: 0,
            meter: Arc::default(),
            waiting: None,
            pace: BodyPace::default(),
            stall: None,
            first_byte: None,
        }
    }
}

/// Reads the whole client body (known to be small) so retries can send it again.
pub async fn read_for_replay(
    body: LingeringBody,
    meter: &Arc<BodyMeter>,
    pace: BodyPace,
) -> Result<Bytes, ClientFault> {
    RequestBody::new(body, None, Arc::clone(meter), pace)
        .read_all()
        .await
}

impl RequestBody {
    /// The next frame, failing only with the client's fault.
    fn poll_client(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientFault>>> {
        if let Some(b) = self.replay.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if polled.is_pending() {
            let since = *self.waiting.get_or_insert_with(std::time::Instant::now);
            let deadline = tokio::time::Instant::from_std(since + self.pace.read_timeout);
            let stall = self
                .stall
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if stall.deadline() != deadline {
                stall.as_mut().reset(deadline);
            }
            if stall.as_mut().poll(cx).is_ready() {
                if let Some(b) = self.inner.take() {
                    b.abandon();
                }
                let secs = self.pace.read_timeout.as_secs();
                return Poll::Ready(Some(Err(ClientFault::Stalled(secs))));
            }
            return Poll::Pending;
        }
        if let Some(since) = self.waiting.take() {
            self.meter.waited(since.elapsed());
        }
        match ready!(polled) {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    self.seen += d.len() as u64;
                    self.meter.bytes.store(self.seen, Ordering::Relaxed);
                    if self.seen > self.limit {
                        return Poll::Ready(Some(Err(ClientFault::TooLarge(self.limit))));
                    }
                    if let Some(rate) = self.pace.min_rate
                        && self.too_slow(rate)
                    {
                        if let Some(b) = self.inner.take() {
                            b.abandon();
                        }
                        return Poll::Ready(Some(Err(ClientFault::TooSlow(rate))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(ClientFault::from_read(e)))),
            None => Poll::Ready(None),
        }
    }

    /// Whether the body, older than the read timeout, has come slower than `rate`
    /// bytes per second on average since its first byte.
    fn too_slow(&mut self, rate: u64) -> bool {
        let first = *self.first_byte.get_or_insert_with(std::time::Instant::now);
        let age = first.elapsed();
        age > self.pace.read_timeout && (self.seen as f64) < rate as f64 * age.as_secs_f64()
    }

    /// Reads frames until at least `n` bytes came or the body ended: the bytes, and
    /// whether that was all of it.
    pub async fn read_prefix(&mut self, n: u64) -> Result<(Bytes, bool), ClientFault> {
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut got = 0u64;
        let mut ended = false;
        while got < n {
            match std::future::poll_fn(|cx| self.poll_client(cx)).await {
                Some(frame) => {
                    if let Ok(d) = frame?.into_data() {
                        got += d.len() as u64;
                        chunks.push(d);
                    }
                }
                None => {
                    ended = true;
                    break;
                }
            }
        }
        if !ended {
            use http_body::Body as _;
            ended = self.is_end_stream();
        }
        let bytes = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.swap_remove(0),
            _ => Bytes::from(chunks.concat()),
        };
        Ok((bytes, ended))
    }

    /// Puts bytes already read back in front of the rest: they go out first.
    pub fn put_back(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.replay = Some(b);
        }
    }

    /// Reads the whole body (within its limit) into one buffer; trailers are dropped.
    pub async fn read_all(mut self) -> Result<Bytes, ClientFault> {
        let mut chunks: Vec<Bytes> = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| self.poll_client(cx)).await {
            if let Ok(d) = frame?.into_data() {
                chunks.push(d);
            }
        }
        Ok(match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.swap_remove(0),
            _ => Bytes::from(chunks.concat()),
        })
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.poll_client(cx)
            .map(|f| f.map(|r| r.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.replay.is_none() && self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.replay, &self.inner) {
            (Some(b), None) => SizeHint::with_exact(b.len() as u64),
            // Bytes read ahead, then the rest of the client's body.
            (Some(b), Some(rest)) => {
                let ahead = b.len() as u64;
                let rest = rest.size_hint();
                let mut h = SizeHint::new();
                h.set_lower(rest.lower().saturating_add(ahead));
                if let Some(upper) = rest.upper() {
                    h.set_upper(upper.saturating_add(ahead));
                }
                h
            }
            (None, Some(b)) => b.size_hint(),
            (None, None) => SizeHint::with_exact(0),
        }
    }
}

enum Kind {
    Full(Option<Bytes>),
    Upstream(Incoming, Option<Return>),
    Filtered(Box<Filtered>),
}

/// A body passed through the filters policies attached, in order.
struct Filtered {
    inner: Kind,
    filters: Vec<Box<dyn BodyFilter>>,
    done: bool,
    trailers: Option<http::HeaderMap>,
}

impl Filtered {
    /// Feeds `data` through the filters from index `from` on.
    fn through(&mut self, from: usize, mut data: Bytes) -> Result<Bytes, BoxError> {
        for f in &mut self.filters[from..] {
            data = f.on_data(data)?;
        }
        Ok(data)
    }

    /// The end of the stream: each filter flushes, and what it flushes goes through the
    /// filters after it.
    fn finish(&mut self) -> Result<Bytes, BoxError> {
        let mut out = Vec::new();
        for i in 0..self.filters.len() {
            let tail = self.filters[i].on_end()?;
            let passed = self.through(i + 1, tail)?;
            out.extend_from_slice(&passed);
        }
        Ok(Bytes::from(out))
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.done {
                return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match ready!(poll_kind(&mut self.inner, cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(d) => {
                        let out = self.through(0, d)?;
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    // Trailers end the body: the filters flush before them.
                    Err(frame) => {
                        self.done = true;
                        self.trailers = frame.into_trailers().ok();
                        let tail = self.finish()?;
                        if !tail.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(tail))));
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    self.done = true;
                    let tail = self.finish()?;
                    if !tail.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(tail))));
                    }
                }
            }
        }
    }
}

/// Polls one body kind.
fn poll_kind(
    kind: &mut Kind,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    Poll::Ready(match kind {
        Kind::Full(b) => b.take().map(|b| Ok(Frame::data(b))),
        Kind::Upstream(b, ret) => match ready!(Pin::new(b).poll_frame(cx)) {
            None => {
                if let Some(r) = ret.take() {
                    r.give_back();
                }
                None
            }
            Some(Err(e)) => {
                // A broken body must not go back to the pool.
                ret.take();
                Some(Err(e.into()))
            }
            Some(Ok(f)) => Some(Ok(f)),
        },
        Kind::Filtered(f) => return f.poll(cx),
    })
}

/// The response body sent to the client. Dropping it ends the request (access log, finish phase).
pub struct ProxyBody {
    kind: Kind,
    // Boxed: responses are moved several times between here and hyper, and the finish
    // record is large.
    finish: Option<Box<Finish>>,
    /// Since when the upstream's next bytes are awaited (the clock is read only then).
    waiting: Option<std::time::Instant>,
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyBody")
    }
}

impl ProxyBody {
    /// A body made by the gateway.
    pub fn full(b: Bytes) -> Self {
        Self {
            kind: Kind::Full((!b.is_empty()).then_some(b)),
            finish: None,
            waiting: None,
        }
    }

    /// An upstream body; `ret` gives the connection back to the pool at the end.
    pub fn upstream(b: Incoming, ret: Option<Return>) -> Self {
        let mut s = Self {
            kind: Kind::Upstream(b, ret),
            finish: None,
            waiting: None,
        };
        s.release_if_done();
        s
    }

    /// This body passed through `filters`, in order (the finish stays outside).
    pub fn filtered(mut self, filters: Vec<Box<dyn BodyFilter>>) -> Self {
        let inner = std::mem::replace(&mut self.kind, Kind::Full(None));
        self.kind = Kind::Filtered(Box::new(Filtered {
            inner,
            filters,
            done: false,
            trailers: None,
        }));
        self
    }

    /// Attaches the finish phase, run when the body is done or dropped.
    pub fn with_finish(mut self, f: Box<Finish>) -> Self {
        self.finish = Some(f);
        self
    }

    fn release_if_done(&mut self) {
        if let Kind::Upstream(b, ret) = &mut self.kind
            && b.is_end_stream()
            && let Some(r) = ret.take()
        {
            r.give_back();
        }
    }

    fn count(&mut self, n: usize) {
        if let Some(f) = self.finish.as_mut() {
            f.bytes_out += n as u64;
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = poll_kind(&mut this.kind, cx);
        if polled.is_pending() {
            // Only a body with a finish record is timed (the one the client gets).
            if this.finish.is_some() {
                this.waiting.get_or_insert_with(std::time::Instant::now);
            }
            return Poll::Pending;
        }
        if let Some(since) = this.waiting.take()
            && let Some(f) = this.finish.as_mut()
        {
            f.upstream_body_wait += since.elapsed();
        }
        let polled = ready!(polled);
        if let Some(Ok(f)) = &polled
            && let Some(d) = f.data_ref()
        {
            let n = d.len();
            this.count(n);
        }
        this.release_if_done();
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Upstream(b, _) => b.is_end_stream(),
            Kind::Filtered(f) => f.done && f.trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map(|b| b.len() as u64).unwrap_or(0)),
            Kind::Upstream(b, _) => b.size_hint(),
            Kind::Filtered(_) => SizeHint::default(),
        }
    }
}
