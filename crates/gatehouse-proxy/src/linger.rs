//! Lingering close: a client's HTTP/1 body that the gateway stops reading before its end
//! (a refusal by its head or by a policy, a 413 partway through, an upstream that failed
//! or answered early) is still read and dropped, within bounds, after the answer.
//!
//! Closing a connection with request bytes unread makes the kernel reset it; a client
//! still writing its body then fails on the write, or loses the answer already in its
//! receive buffer, instead of reading why it was refused. nginx reads on for the same
//! reason (`lingering_close`, `lingering_time`, `lingering_timeout`). A body read to its
//! end this way also leaves the connection usable for the next request.
//!
//! Not for HTTP/2, where dropping a stream's body resets only that stream (`NO_ERROR`),
//! and not for a client that stalled or crawled (it gets no more time), nor for a body
//! the client is still waiting to be asked for (`Expect: 100-continue`, never polled):
//! reading it would send the `100 Continue` that invites the bytes.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

/// How much of an abandoned body is still read and dropped ...
const LINGER_LIMIT: u64 = 16 << 20;
/// ... and for how long (nginx's `lingering_time` and `lingering_timeout` together).
const LINGER_TIME: Duration = Duration::from_secs(5);

/// The client's request body as the connection hands it over: read like `Incoming`, and
/// when dropped before its end, read to it (within bounds) by a task of its own.
#[derive(Debug)]
pub struct LingeringBody {
    /// `None` once the body ended, failed or was given up.
    inner: Option<Incoming>,
    /// HTTP/1: dropping it unread lingers.
    h1: bool,
    /// `Expect: 100-continue` and not yet polled: the client is still waiting to be
    /// asked, and dropping it unread does not linger.
    awaits_continue: bool,
}

impl LingeringBody {
    /// The body of a request with this head.
    pub fn new(inner: Incoming, version: http::Version, headers: &http::HeaderMap) -> Self {
        // Looked up only for a request with a body: most have none.
        let awaits_continue = !inner.is_end_stream()
            && headers
                .get(http::header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        Self {
            inner: Some(inner),
            h1: version <= http::Version::HTTP_11,
            awaits_continue,
        }
    }

    /// Drops the rest unread: for a client that stalled or sent too slowly, which is
    /// given no more of the gateway's time.
    pub fn abandon(mut self) {
        self.inner = None;
    }
}

impl Body for LingeringBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // Polled once, hyper has sent the 100 Continue: the client sends.
        this.awaits_continue = false;
        let frame = ready!(Pin::new(inner).poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            this.inner = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

impl Drop for LingeringBody {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if !self.h1 || self.awaits_continue || body.is_end_stream() {
            return;
        }
        // No runtime (a shutdown under way): the connection goes with it anyway.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(read_and_drop(body));
        }
    }
}

/// Reads `body` until it ends, fails, passes `LINGER_LIMIT` or `LINGER_TIME` is up;
/// then drops it, which lets the connection close or serve its next request.
async fn read_and_drop(mut body: Incoming) {
    use http_body_util::BodyExt;
    let read = async {
        let mut seen = 0u64;
        while seen < LINGER_LIMIT
            && let Some(Ok(frame)) = body.frame().await
        {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, read).await;
}
