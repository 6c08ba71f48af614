//! W3C Trace Context (https://www.w3.org/TR/trace-context/) of one request: a valid
//! `traceparent` from the client continues its trace (the client's span becomes the
//! parent, its sampled flag is kept); an absent or invalid one starts a new trace. Every
//! try sent upstream carries a `traceparent` whose parent-id is a span of the gateway's
//! own, so the upstream's spans hang under the gateway's.

use http::{HeaderMap, HeaderName, HeaderValue};

/// `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`, vendor data that travels unchanged with a continued trace.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The trace a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id (never all zeros).
    pub trace_id: [u8; 16],
    /// The caller's span, when the request came with a valid `traceparent`.
    pub parent_id: Option<[u8; 8]>,
    /// The gateway's own (server) span.
    pub span_id: [u8; 8],
    /// Whether the trace is sampled (the `01` flag).
    pub sampled: bool,
}

fn hex_to<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        let d = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None, // upper case is invalid in traceparent
        };
        *o = d(s[2 * i])? << 4 | d(s[2 * i + 1])?;
    }
    Some(out)
}

fn nonzero<const N: usize>(id: [u8; N]) -> Option<[u8; N]> {
    id.iter().any(|b| *b != 0).then_some(id)
}

/// A random span id (never zero).
pub fn new_span_id() -> [u8; 8] {
    loop {
        let id = fastrand::u64(..).to_be_bytes();
        if let Some(id) = nonzero(id) {
            return id;
        }
    }
}

fn new_trace_id() -> [u8; 16] {
    loop {
        let id = fastrand::u128(..).to_be_bytes();
        if let Some(id) = nonzero(id) {
            return id;
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_into(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Writes `bytes` in lower-case hex into `out`, which holds exactly twice as many.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const D: &[u8; 16] = b"0123456789abcdef";
    for (b, o) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        o[0] = D[usize::from(b >> 4)];
        o[1] = D[usize::from(b & 15)];
    }
}

impl TraceContext {
    /// A new trace, not sampled.
    pub fn start() -> Self {
        Self {
            trace_id: new_trace_id(),
            parent_id: None,
            span_id: new_span_id(),
            sampled: false,
        }
    }

    /// The caller's trace when `value` is a valid `traceparent`, else `None`.
    pub fn parse(value: &[u8]) -> Option<Self> {
        // version "-" trace-id "-" parent-id "-" flags; a later version may add fields
        // after another "-", which version 00 readers ignore.
        if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let version = hex_to::<1>(&value[..2])?[0];
        if version == 0xff || (version == 0 && value.len() != 55) {
            return None;
        }
        if version > 0 && value.len() > 55 && value[55] != b'-' {
            return None;
        }
        let trace_id = nonzero(hex_to::<16>(&value[3..35])?)?;
        let parent = nonzero(hex_to::<8>(&value[36..52])?)?;
        let flags = hex_to::<1>(&value[53..55])?[0];
        Some(Self {
            trace_id,
            parent_id: Some(parent),
            span_id: new_span_id(),
            sampled: flags & 1 == 1,
        })
    }

    /// The request's trace: the caller's when its `traceparent` is valid, else a new one
    /// (and then its `tracestate`, which belonged to the other trace, is removed).
    pub fn of_request(headers: &mut HeaderMap) -> Self {
        let mut values = headers.get_all(&TRACEPARENT).iter();
        let found = match (values.next(), values.next()) {
            // Two traceparent fields are ambiguous: start afresh.
            (Some(v), None) => Self::parse(v.as_bytes()),
            _ => None,
        };
        match found {
            Some(t) => t,
            None => {
                headers.remove(&TRACESTATE);
                Self::start()
            }
        }
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The `traceparent` that names `span` (one of the gateway's) as the parent.
    pub fn traceparent(&self, span: [u8; 8]) -> HeaderValue {
        // Written in place: it goes on every upstream request, and `format!` with two
        // hex strings cost ~2,300 instructions of the ~53,000 a proxied request takes.
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&self.trace_id, &mut text[3..35]);
        hex_into(&span, &mut text[36..52]);
        if self.sampled {
            text[54] = b'1';
        }
        HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// What a span of the gateway's own did, as OpenTelemetry names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// The request as the gateway served it (the parent of the others).
    Server,
    /// Work inside the gateway (one policy run).
    Internal,
    /// One try sent upstream.
    Client,
}

/// A span attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    /// A string.
    Str(std::sync::Arc<str>),
    /// An integer.
    Int(i64),
}

/// One finished span of the gateway's own inside a request (a policy run, an upstream
/// try), a child of the request's server span. Recorded only for a sampled request when
/// spans are exported: [`crate::RequestCtx::spans`] is `None` otherwise.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// The span's id (for a try: the parent-id its `traceparent` carried upstream).
    pub span_id: [u8; 8],
    /// Internal or client.
    pub kind: SpanKind,
    /// The span's name.
    pub name: std::sync::Arc<str>,
    /// When it started.
    pub start: std::time::Instant,
    /// When it ended.
    pub end: std::time::Instant,
    /// OpenTelemetry semantic-convention attributes.
    pub attributes: Vec<(&'static str, AttributeValue)>,
    /// `error.type` when the span failed (its status is then ERROR).
    pub error: Option<std::sync::Arc<str>>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued_and_anything_else_starts_anew() {
        let t = TraceContext::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&t.parent_id.unwrap()), "00f067aa0ba902b7");
        assert!(t.sampled);
        assert_ne!(t.span_id, t.parent_id.unwrap());
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for b in bad {
            assert!(TraceContext::parse(b.as_bytes()).is_none(), "{b:?}");
        }
        // A later version may carry more fields.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        assert!(!TraceContext::parse(future.as_bytes()).unwrap().sampled);
    }

    #[test]
    fn the_traceparent_sent_names_the_trace_the_span_and_the_sampling() {
        let mut t = TraceContext::parse(GOOD.as_bytes()).unwrap();
        let span = [0xde, 0xad, 0xbe, 0xef, 0x01, 0x23, 0x45, 0x67];
        assert_eq!(
            t.traceparent(span),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-deadbeef01234567-01"
        );
        t.sampled = false;
        let sent = t.traceparent(span);
        assert_eq!(
            sent,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-deadbeef01234567-00"
        );
        // What the gateway sends, it reads back as the same trace.
        let back = TraceContext::parse(sent.as_bytes()).unwrap();
        assert_eq!((back.trace_id, back.parent_id), (t.trace_id, Some(span)));
    }

    #[test]
    fn a_new_trace_drops_the_old_tracestate_and_a_continued_one_keeps_it() {
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_static(GOOD));
        h.insert(&TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        let t = TraceContext::of_request(&mut h);
        assert!(h.contains_key(&TRACESTATE));
        let sent = t.traceparent(new_span_id());
        assert!(
            sent.to_str()
                .unwrap()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
        assert!(sent.to_str().unwrap().ends_with("-01"));

        h.insert(&TRACEPARENT, HeaderValue::from_static("garbage"));
        let t2 = TraceContext::of_request(&mut h);
        assert!(!h.contains_key(&TRACESTATE));
        assert!(t2.parent_id.is_none());
        assert_ne!(t2.trace_id, t.trace_id);
    }
}
