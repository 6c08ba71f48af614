//! An OTLP/HTTP trace receiver on 127.0.0.1: decodes each export (protobuf, gzip or
//! not) into spans a test can read, and answers as told (200 by default; a scripted
//! status with `Retry-After` to exercise the exporter's retries).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One received span, flattened for assertions.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of its resource.
    pub service: String,
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// Parent span id, hex ("" for a root).
    pub parent_id: String,
    /// Name.
    pub name: String,
    /// OTLP kind: 1 internal, 2 server, 3 client.
    pub kind: i32,
    /// Attributes, values as text.
    pub attributes: HashMap<String, String>,
    /// Status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
    /// Start and end, Unix nanoseconds.
    pub start: u64,
    /// End, Unix nanoseconds.
    pub end: u64,
    /// W3C flags and remote-parent bits.
    pub flags: u32,
}

impl ReceivedSpan {
    /// An attribute's value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// One export request as it arrived.
#[derive(Debug, Clone)]
pub struct Export {
    /// Its headers.
    pub headers: http::HeaderMap,
    /// Spans it carried.
    pub spans: usize,
}

#[derive(Default)]
struct Shared {
    spans: Vec<ReceivedSpan>,
    exports: Vec<Export>,
    /// Answers to give next, before falling back to 200.
    script: VecDeque<(u16, Option<String>)>,
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    /// Its address.
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OtlpReceiver {
    /// Starts one on an ephemeral port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(s.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, shared, task }
    }

    /// The traces URL to configure.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Answers the next export requests with `status` (and `Retry-After`), in order.
    pub fn script(&self, status: u16, retry_after: Option<&str>) {
        let mut g = self.shared.lock().unwrap();
        g.script
            .push_back((status, retry_after.map(str::to_string)));
    }

    /// Spans received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.lock().unwrap().spans.clone()
    }

    /// Export requests received so far (refused ones included).
    pub fn exports(&self) -> Vec<Export> {
        self.shared.lock().unwrap().exports.clone()
    }

    /// Waits until at least `n` spans arrived (or `within` passed); returns them.
    pub async fn wait_spans(&self, n: usize, within: Duration) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let spans = self.spans();
            if spans.len() >= n || tokio::time::Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn answer(
    shared: Arc<Mutex<Shared>>,
    req: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let raw = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let gz = parts
        .headers
        .get("content-encoding")
        .is_some_and(|v| v == "gzip");
    let data = if gz {
        use std::io::Read;
        let mut out = Vec::new();
        let _ = flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out);
        out
    } else {
        raw.to_vec()
    };
    let reply = |status: u16, retry: Option<String>| {
        let mut r = http::Response::new(Full::new(Bytes::new()));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        if let Some(v) = retry {
            r.headers_mut().insert("retry-after", v.parse().unwrap());
        }
        r
    };
    let Ok(export) = ExportTraceServiceRequest::decode(&data[..]) else {
        return Ok(reply(400, None));
    };
    let mut g = shared.lock().unwrap();
    let mut spans = Vec::new();
    for rs in &export.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                let attributes = s
                    .attributes
                    .iter()
                    .filter_map(|kv| {
                        Some((kv.key.clone(), text(kv.value.as_ref()?.value.as_ref()?)?))
                    })
                    .collect();
                spans.push(ReceivedSpan {
                    service: service.clone(),
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_id: hex(&s.parent_span_id),
                    name: s.name.clone(),
                    kind: s.kind,
                    attributes,
                    status: s.status.as_ref().map_or(0, |st| st.code),
                    start: s.start_time_unix_nano,
                    end: s.end_time_unix_nano,
                    flags: s.flags,
                });
            }
        }
    }
    g.exports.push(Export {
        headers: parts.headers.clone(),
        spans: spans.len(),
    });
    if let Some((status, retry)) = g.script.pop_front() {
        return Ok(reply(status, retry));
    }
    g.spans.extend(spans);
    Ok(reply(200, None))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}
