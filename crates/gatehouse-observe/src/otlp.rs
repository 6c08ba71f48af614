//! The OTLP/protobuf encoding of span batches (opentelemetry-proto's
//! `ExportTraceServiceRequest`), written straight from the gateway's span records with
//! prost's wire primitives: building the generated message structs first cost a string
//! allocation per attribute and prost's nested length passes, more than the rest of the
//! export together. Tests decode the output with the generated structs.

use gatehouse_core::TraceContext;
use gatehouse_core::trace::{AttributeValue, SpanKind, SpanRecord};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// W3C flags in the low byte; bit 8: whether the parent is remote is known; bit 9: it is.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;
/// OTLP `Status.code` for an error.
const STATUS_ERROR: u64 = 2;

fn bytes_field(tag: u32, v: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(v.len() as u64, out);
    out.extend_from_slice(v);
}

fn varint_field(tag: u32, v: u64, out: &mut Vec<u8>) {
    encode_key(tag, WireType::Varint, out);
    encode_varint(v, out);
}

fn fixed64_field(tag: u32, v: u64, out: &mut Vec<u8>) {
    encode_key(tag, WireType::SixtyFourBit, out);
    out.extend_from_slice(&v.to_le_bytes());
}

/// A `KeyValue` with a string or integer `AnyValue`, as field `tag` of its parent.
fn attribute(tag: u32, key: &str, value: &AttributeValue, out: &mut Vec<u8>) {
    let any_len = match value {
        AttributeValue::Str(s) => 1 + encoded_len_varint(s.len() as u64) + s.len(),
        AttributeValue::Int(i) => 1 + encoded_len_varint(*i as u64),
    };
    let kv_len = 1
        + encoded_len_varint(key.len() as u64)
        + key.len()
        + 1
        + encoded_len_varint(any_len as u64)
        + any_len;
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(kv_len as u64, out);
    bytes_field(1, key.as_bytes(), out);
    encode_key(2, WireType::LengthDelimited, out);
    encode_varint(any_len as u64, out);
    match value {
        AttributeValue::Str(s) => bytes_field(1, s.as_bytes(), out),
        AttributeValue::Int(i) => varint_field(3, *i as u64, out),
    }
}

/// Unix nanoseconds of `at`, placed by `anchor` (a Unix time and the instant it was read).
pub fn unix_nanos((wall, mono): (SystemTime, Instant), at: Instant) -> u64 {
    let wall = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let t = match mono.checked_duration_since(at) {
        Some(before) => wall.saturating_sub(before),
        None => wall + at.duration_since(mono),
    };
    u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
}

/// Spans being gathered into one export: each already encoded as a `ScopeSpans.spans`
/// entry.
#[derive(Debug, Default)]
pub struct Batch {
    spans: Vec<u8>,
    count: usize,
    scratch: Vec<u8>,
}

impl Batch {
    /// Spans in it.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds one span of `trace`: a server span hangs under the caller's (remote) span,
    /// the others under the server span.
    pub fn push(&mut self, trace: &TraceContext, s: &SpanRecord, anchor: (SystemTime, Instant)) {
        let sampled = u32::from(trace.sampled);
        let (kind, parent, flags) = match s.kind {
            SpanKind::Server => (
                2,
                trace.parent_id,
                sampled
                    | HAS_IS_REMOTE
                    | if trace.parent_id.is_some() {
                        IS_REMOTE
                    } else {
                        0
                    },
            ),
            SpanKind::Internal => (1, Some(trace.span_id), sampled | HAS_IS_REMOTE),
            SpanKind::Client => (3, Some(trace.span_id), sampled | HAS_IS_REMOTE),
        };
        let out = &mut self.scratch;
        out.clear();
        bytes_field(1, &trace.trace_id, out);
        bytes_field(2, &s.span_id, out);
        if let Some(p) = parent {
            bytes_field(4, &p, out);
        }
        bytes_field(5, s.name.as_bytes(), out);
        varint_field(6, kind, out);
        fixed64_field(7, unix_nanos(anchor, s.start), out);
        fixed64_field(8, unix_nanos(anchor, s.end), out);
        for (k, v) in &s.attributes {
            attribute(9, k, v, out);
        }
        if s.error.is_some() {
            // Status { code: ERROR }: one varint field, 2 bytes.
            encode_key(15, WireType::LengthDelimited, out);
            encode_varint(2, out);
            varint_field(3, STATUS_ERROR, out);
        }
        encode_key(16, WireType::ThirtyTwoBit, out);
        out.extend_from_slice(&flags.to_le_bytes());
        bytes_field(2, &self.scratch, &mut self.spans);
        self.count += 1;
    }

    /// The `ExportTraceServiceRequest` of these spans under `resource` (an encoded
    /// `Resource`) and `scope` (an encoded `InstrumentationScope`); empties the batch.
    pub fn finish(&mut self, resource: &[u8], scope: &[u8]) -> Vec<u8> {
        let field_len = |n: usize| 1 + encoded_len_varint(n as u64) + n;
        let scope_spans = field_len(scope.len()) + self.spans.len();
        let resource_spans = field_len(resource.len()) + field_len(scope_spans);
        let mut out = Vec::with_capacity(field_len(resource_spans));
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(resource_spans as u64, &mut out);
        bytes_field(1, resource, &mut out);
        encode_key(2, WireType::LengthDelimited, &mut out);
        encode_varint(scope_spans as u64, &mut out);
        bytes_field(1, scope, &mut out);
        out.extend_from_slice(&self.spans);
        self.spans.clear();
        self.count = 0;
        out
    }
}

/// An encoded `Resource` with `service.name` and `service.version`.
pub fn resource(service_name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    attribute(
        1,
        "service.name",
        &AttributeValue::Str(service_name.into()),
        &mut out,
    );
    let version = AttributeValue::Str(env!("CARGO_PKG_VERSION").into());
    attribute(1, "service.version", &version, &mut out);
    out
}

/// The encoded `InstrumentationScope` of the gateway's spans.
pub fn scope() -> Vec<u8> {
    let mut out = Vec::new();
    bytes_field(1, b"gatehouse", &mut out);
    bytes_field(2, env!("CARGO_PKG_VERSION").as_bytes(), &mut out);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn batches_decode_as_otlp_with_every_field_in_place() {
        let trace = TraceContext {
            trace_id: [7; 16],
            parent_id: Some([9; 8]),
            span_id: [3; 8],
            sampled: true,
        };
        let now = Instant::now();
        let anchor = (UNIX_EPOCH + Duration::from_secs(1_000), now);
        let server = SpanRecord {
            span_id: trace.span_id,
            kind: SpanKind::Server,
            name: "GET checkout".into(),
            start: now.checked_sub(Duration::from_millis(5)).unwrap(),
            end: now,
            attributes: vec![
                ("http.request.method", AttributeValue::Str("GET".into())),
                ("http.response.status_code", AttributeValue::Int(503)),
                ("big", AttributeValue::Str(Arc::from("x".repeat(300)))),
            ],
            error: Some("503".into()),
        };
        let client = SpanRecord {
            span_id: [4; 8],
            kind: SpanKind::Client,
            name: "GET".into(),
            start: now,
            end: now,
            attributes: vec![("server.port", AttributeValue::Int(8080))],
            error: None,
        };
        let mut b = Batch::default();
        b.push(&trace, &server, anchor);
        b.push(&trace, &client, anchor);
        assert_eq!(b.len(), 2);
        let bytes = b.finish(&resource("edge"), &scope());
        assert!(b.is_empty());
        let req = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
        let rs = &req.resource_spans[0];
        let res = rs.resource.as_ref().unwrap();
        assert_eq!(res.attributes[0].key, "service.name");
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "gatehouse");
        let (s, c) = (&ss.spans[0], &ss.spans[1]);
        assert_eq!(s.trace_id, vec![7; 16]);
        assert_eq!(s.span_id, vec![3; 8]);
        assert_eq!(s.parent_span_id, vec![9; 8]);
        assert_eq!(s.name, "GET checkout");
        assert_eq!(s.kind, 2);
        assert_eq!(s.end_time_unix_nano, 1_000_000_000_000);
        assert_eq!(s.start_time_unix_nano, 999_995_000_000);
        assert_eq!(s.flags, 0x301);
        assert_eq!(s.status.as_ref().unwrap().code, 2);
        let value = |i: usize| {
            s.attributes[i]
                .value
                .as_ref()
                .unwrap()
                .value
                .clone()
                .unwrap()
        };
        assert_eq!(value(0), Value::StringValue("GET".into()));
        assert_eq!(value(1), Value::IntValue(503));
        assert_eq!(value(2), Value::StringValue("x".repeat(300)));
        assert_eq!(c.parent_span_id, vec![3; 8]);
        assert_eq!(c.kind, 3);
        assert!(c.status.is_none());
        assert_eq!(c.flags, 0x101);
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
