//! The downstream connection's byte stream, under hyper: it counts activity for the idle
//! timeout, gives hyper's own protocol-error answers (a malformed head, a head over the
//! buffer: bare `400`/`414`/`431` with no body) the problem+json body and `x-request-id`
//! of every other local answer, and reads an HTTP/1.x request line with a minor version
//! above 1 as HTTP/1.1 (RFC 9112 section 2.3), which hyper's parser would refuse.

use crate::forwarded::new_request_id;
use crate::http2_guard::Http2Guard;
use bytes::{Buf, Bytes};
use gatehouse_core::{Problem, problem::render};
use http::StatusCode;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Counts reads and writes that moved bytes on a connection, for the idle timeout. A
/// counter rather than a timestamp: the idle check reads the clock once per tick instead
/// of the stream reading it on every read and write.
#[derive(Debug, Default)]
pub struct Activity {
    events: AtomicU64,
    /// Bytes of a request came in and no answer went out since: a timeout now cuts a
    /// slow request, not an idle keep-alive connection.
    mid_request: std::sync::atomic::AtomicBool,
}

impl Activity {
    fn touch(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads and writes so far.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Whether a request had started arriving and was not answered yet.
    pub fn mid_request(&self) -> bool {
        self.mid_request.load(Ordering::Relaxed)
    }
}

/// What a connection does once when its client crosses an HTTP/2 abuse limit (count
/// the offence).
pub type OnAbuse = Box<dyn FnOnce() + Send>;

/// How much a connection ended for HTTP/2 abuse may still send before it is closed ...
const DRAIN_LIMIT: usize = 1 << 20;
/// ... and for how long (nginx's `lingering_timeout`).
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// The steps of ending a connection for HTTP/2 abuse.
enum Ending {
    /// Writing the GOAWAY: the frame and how much of it went out.
    Sending([u8; 17], usize),
    /// Closing the sending side.
    Closing,
    /// Dropping what the client still sends: bytes so far, and when to stop waiting.
    Draining(usize, Pin<Box<tokio::time::Sleep>>),
    /// Over: reads fail.
    Done,
}

/// A client's TCP stream as hyper sees it.
pub struct DownstreamStream {
    inner: crate::transport::Transport,
    activity: Arc<Activity>,
    /// A replacement for hyper's bare error answer, and how much of it went out.
    replacement: Option<Bytes>,
    /// The next bytes read are expected to start a request head: at the start, and after
    /// the gateway wrote (answered) something.
    head_next: bool,
    /// The listener's name, for the rejection metric of hyper's own answers.
    listener: Arc<str>,
    /// HTTP/2 abuse limits, on an HTTP/2 connection (boxed: HTTP/1 ones carry a pointer),
    /// and what to do once when they are crossed.
    h2: Option<Box<(Http2Guard, Option<OnAbuse>)>>,
    /// Set once the guard ends the connection.
    ending: Option<Ending>,
}

impl DownstreamStream {
    /// Wraps `inner` of listener `listener`, counting activity on `activity`.
    pub fn new(
        inner: crate::transport::Transport,
        activity: Arc<Activity>,
        listener: Arc<str>,
    ) -> Self {
        Self {
            inner,
            activity,
            replacement: None,
            head_next: true,
            listener,
            h2: None,
            ending: None,
        }
    }

    /// Watches the HTTP/2 frames the client sends with `guard`; `on_abuse` runs when a
    /// limit is crossed.
    pub fn guard_http2(mut self, guard: Http2Guard, on_abuse: OnAbuse) -> Self {
        self.h2 = Some(Box::new((guard, Some(on_abuse))));
        self
    }

    /// Ends the connection the guard stopped: sends its GOAWAY (when it could be placed
    /// between frames), closes the sending side, then reads and drops what the client
    /// still sends (up to [`DRAIN_LIMIT`] or [`DRAIN_TIME`], or until it closes) so
    /// closing does not reset it and lose the GOAWAY (nginx's lingering close). Then
    /// every read fails.
    fn poll_ending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        loop {
            match self.ending.as_mut() {
                Some(Ending::Sending(frame, sent)) => {
                    while *sent < frame.len() {
                        match Pin::new(&mut self.inner).poll_write(cx, &frame[*sent..]) {
                            Poll::Ready(Ok(n)) if n > 0 => *sent += n,
                            Poll::Ready(_) => break,
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    ready!(Pin::new(&mut self.inner).poll_flush(cx)).ok();
                    self.ending = Some(Ending::Closing);
                }
                Some(Ending::Closing) => {
                    ready!(Pin::new(&mut self.inner).poll_shutdown(cx)).ok();
                    let deadline = Box::pin(tokio::time::sleep(DRAIN_TIME));
                    self.ending = Some(Ending::Draining(0, deadline));
                }
                Some(Ending::Draining(drained, deadline)) => {
                    if deadline.as_mut().poll(cx).is_ready() {
                        self.ending = Some(Ending::Done);
                        continue;
                    }
                    let mut scratch = [0u8; 4096];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf)) {
                        Ok(()) if !buf.filled().is_empty() && *drained < DRAIN_LIMIT => {
                            *drained += buf.filled().len();
                        }
                        _ => self.ending = Some(Ending::Done),
                    }
                }
                Some(Ending::Done) | None => {
                    return Poll::Ready(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "HTTP/2 abuse: connection ended with GOAWAY ENHANCE_YOUR_CALM",
                    ));
                }
            }
        }
    }
}

/// hyper's own error answer is exactly this head (its header map is empty, while every
/// answer of the pipeline carries `x-request-id`): status line, then these headers.
const BARE_ERROR_TAIL: &[u8] = b"\r\nconnection: close\r\ncontent-length: 0\r\ndate: ";

/// The status of `buf` when it is one of hyper's bare error heads.
fn bare_error_status(buf: &[u8]) -> Option<StatusCode> {
    let rest = buf.strip_prefix(b"HTTP/1.1 ")?;
    if buf.len() > 160 || !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let status = StatusCode::from_bytes(rest.get(..3)?).ok()?;
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let line_end = rest.iter().position(|b| *b == b'\r')?;
    let after = &rest[line_end..];
    // The date is 29 characters, then the blank line.
    (after.starts_with(BARE_ERROR_TAIL) && after.len() == BARE_ERROR_TAIL.len() + 29 + 4)
        .then_some(status)
}

/// The problem+json answer that replaces a bare one.
fn problem_answer(status: StatusCode) -> Bytes {
    let id = new_request_id();
    let detail = match status.as_u16() {
        400 => "the request head is malformed",
        414 => "the request target is too long",
        431 => "the request head is too large",
        _ => gatehouse_core::problem::generic_detail(status),
    };
    tracing::debug!(request_id = %id, status = status.as_u16(), "{detail}");
    let body = render(
        &Problem::new(status, detail),
        &id,
        &gatehouse_core::ProblemStyle::default(),
    );
    let head = format!(
        "HTTP/1.1 {} {}\r\nconnection: close\r\ncontent-type: application/problem+json\r\nx-request-id: {id}\r\ncontent-length: {}\r\ndate: {}\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        httpdate::fmt_http_date(std::time::SystemTime::now()),
    );
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&body);
    Bytes::from(out)
}

/// Rewrites `HTTP/1.N` (N from 2 to 9) at the end of the first line of `buf` to
/// `HTTP/1.1`, when that line looks like a request line.
fn lenient_version(buf: &mut [u8]) {
    let Some(end) = buf.iter().take(8192).position(|b| *b == b'\n') else {
        return;
    };
    let line = &buf[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let is_request_line = line.first().is_some_and(u8::is_ascii_uppercase)
        && line.iter().filter(|b| **b == b' ').count() == 2;
    if is_request_line
        && line.len() >= 9
        && line[line.len() - 9..line.len() - 1] == *b" HTTP/1."
        && (b'2'..=b'9').contains(&line[line.len() - 1])
    {
        let at = line.len() - 1;
        buf[at] = b'1';
    }
}

impl AsyncRead for DownstreamStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.ending.is_some() {
            return this.poll_ending(cx).map(Err);
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
            if let Some((g, on_abuse)) = this.h2.as_deref_mut()
                && let Some(abuse) = g.inbound(&buf.filled()[before..])
            {
                // The bytes that crossed the limit never reach hyper.
                buf.set_filled(before);
                tracing::debug!(listener = %this.listener, abuse = abuse.name(), "HTTP/2 abuse; sending GOAWAY ENHANCE_YOUR_CALM");
                if let Some(f) = on_abuse.take() {
                    f();
                }
                this.ending = Some(
                    g.goaway()
                        .map_or(Ending::Closing, |f| Ending::Sending(f, 0)),
                );
                return this.poll_ending(cx).map(Err);
            }
            if this.head_next {
                this.head_next = false;
                this.activity.mid_request.store(true, Ordering::Relaxed);
                lenient_version(&mut buf.filled_mut()[before..]);
            }
        }
        r
    }
}

impl DownstreamStream {
    /// Sends the rest of the replacement answer; `Ready` once all of it is out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some(rest) = self.replacement.as_mut().filter(|r| !r.is_empty()) {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            rest.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for DownstreamStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        this.activity.touch();
        this.head_next = true;
        this.activity.mid_request.store(false, Ordering::Relaxed);
        if this.replacement.is_none()
            && let Some(status) = bare_error_status(buf)
        {
            if let Some(why) = gatehouse_observe::metrics::Rejection::of_status(status.as_u16()) {
                gatehouse_observe::metrics::rejection(&this.listener, why);
            }
            this.replacement = Some(problem_answer(status));
        }
        if this.replacement.is_some() {
            // hyper offers the same bytes again after a Pending, so the replacement
            // picks up where it stopped and reports hyper's bytes written once done.
            ready!(this.poll_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        if this.ending.is_some() {
            // What hyper still writes is dropped: the GOAWAY was the last word.
            return Poll::Ready(Ok(buf.len()));
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if let Some((g, _)) = this.h2.as_deref_mut() {
            g.outbound(&buf[..n]);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // A bare error head is one buffer; anything else goes out as it is.
        let mut non_empty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (non_empty.next(), non_empty.next())
            && (self.replacement.is_some() || bare_error_status(only).is_some())
        {
            return self.poll_write(cx, only);
        }
        let this = &mut *self;
        this.activity.touch();
        this.head_next = true;
        this.activity.mid_request.store(false, Ordering::Relaxed);
        if this.ending.is_some() {
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        if let Some((g, _)) = this.h2.as_deref_mut() {
            let mut left = n;
            for b in bufs {
                let take = left.min(b.len());
                g.outbound(&b[..take]);
                left -= take;
                if left == 0 {
                    break;
                }
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.ending.is_some() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.ending.is_some() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_only_hypers_bare_answers() {
        let bare = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 06:03:34 GMT\r\n\r\n";
        assert_eq!(bare_error_status(bare), Some(StatusCode::BAD_REQUEST));
        let big = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 06:03:34 GMT\r\n\r\n";
        assert_eq!(
            bare_error_status(big),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        for other in [
            &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 06:03:34 GMT\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\nx-request-id: a\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 06:03:34 GMT\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 06:03:34 GMT\r\n\r\nbody",
        ] {
            assert_eq!(bare_error_status(other), None);
        }
        let answer = problem_answer(StatusCode::BAD_REQUEST);
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("application/problem+json"), "{text}");
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }

    #[test]
    fn minor_versions_above_one_read_as_one() {
        let mut b = b"GET / HTTP/1.2\r\nHost: a\r\n\r\n".to_vec();
        lenient_version(&mut b);
        assert!(b.starts_with(b"GET / HTTP/1.1\r\n"));
        for kept in [
            &b"GET / HTTP/1.0\r\n"[..],
            b"GET / HTTP/2.2\r\n",
            b"some body bytes HTTP/1.2\r\n",
            b"GET / HTTP/1.2",
        ] {
            let mut b = kept.to_vec();
            lenient_version(&mut b);
            assert_eq!(b, kept);
        }
    }
}
