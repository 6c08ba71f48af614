//! Backends: an echo server (JSON of what it received), with optional delay; a server that
//! resets connections; a WebSocket echo; an h2c server that answers with trailers.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

/// What kind of backend to run.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Echoes the request as JSON; `/delay/MS[/...]` waits first; `/status/N` answers N;
    /// `/bytes/N` streams N bytes; `/drain` reads and counts the body.
    Echo,
    /// Accepts and closes immediately (a reset upstream).
    Reset,
    /// Accepts and never answers.
    Hang,
    /// HTTP/1.1 WebSocket echo.
    WebSocket,
    /// HTTP/2 cleartext echo with a `grpc-status: 0` trailer.
    H2c,
    /// Echo that answers every other request with 503 (a flapping backend).
    Flap,
}

/// A running backend; stops when dropped.
pub struct Backend {
    /// Its address.
    pub addr: SocketAddr,
    /// Requests served.
    pub hits: Arc<AtomicUsize>,
    /// When non-zero, echo backends answer every request with this status.
    pub forced_status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

/// Dropping a backend kills it: the listener and every open connection close.
impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Makes an echo backend answer every request with `status` (0 restores echo).
    pub fn force_status(&self, status: u16) {
        self.forced_status.store(status, Ordering::SeqCst);
    }

    /// Starts a backend named `name` (echoed in `x-backend`) on an ephemeral port.
    pub async fn start(name: &str, kind: Kind) -> Backend {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(name, kind, l)
    }

    /// Starts a backend on a given address (to restart one on the same port). A
    /// just-dropped backend on that address may take a moment to release it.
    pub async fn start_on(name: &str, kind: Kind, addr: SocketAddr) -> Backend {
        let until = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => return Self::serve(name, kind, l),
                Err(_) if std::time::Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot bind {addr}: {e}"),
            }
        }
    }

    fn serve(name: &str, kind: Kind, l: tokio::net::TcpListener) -> Backend {
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let forced_status = Arc::new(AtomicU16::new(0));
        let name: Arc<str> = name.into();
        let (h, f) = (hits.clone(), forced_status.clone());
        let task = tokio::spawn(async move {
            // Connections live in this set, so aborting the backend closes them all.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                while conns.try_join_next().is_some() {}
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let (name, hits, forced) = (name.clone(), h.clone(), f.clone());
                conns.spawn(async move {
                    match kind {
                        Kind::Reset => {
                            let _ = s.set_zero_linger();
                            drop(s);
                        }
                        Kind::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            drop(s);
                        }
                        Kind::Echo | Kind::Flap => {
                            let flap = matches!(kind, Kind::Flap);
                            let svc = service_fn(move |req| {
                                let n = hits.load(Ordering::SeqCst);
                                if flap && n % 2 == 0 {
                                    forced.store(503, Ordering::SeqCst);
                                } else if flap {
                                    forced.store(0, Ordering::SeqCst);
                                }
                                echo(name.clone(), hits.clone(), forced.clone(), req)
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(s), svc)
                                .await;
                        }
                        Kind::H2c => {
                            let svc = service_fn(move |req| grpc_like(hits.clone(), req));
                            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(s), svc)
                                .await;
                        }
                        Kind::WebSocket => {
                            hits.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut ws) = tokio_tungstenite::accept_async(s).await {
                                use futures_util::{SinkExt, StreamExt};
                                while let Some(Ok(msg)) = ws.next().await {
                                    if (msg.is_text() || msg.is_binary())
                                        && ws.send(msg).await.is_err()
                                    {
                                        break;
                                    }
                                }
                            }
                        }
                    }
                });
            }
        });
        Backend {
            addr,
            hits,
            forced_status,
            task,
        }
    }
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn echo(
    name: Arc<str>,
    hits: Arc<AtomicUsize>,
    forced: Arc<AtomicU16>,
    req: http::Request<Incoming>,
) -> Result<http::Response<EchoBody>, Infallible> {
    hits.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    let mut status = 200u16;
    let forced = forced.load(Ordering::SeqCst);
    if forced != 0 {
        let mut r = http::Response::new(BodyExt::boxed(Full::new(Bytes::from_static(
            b"forced status",
        ))));
        *r.status_mut() = http::StatusCode::from_u16(forced).unwrap();
        r.headers_mut().insert("x-backend", name.parse().unwrap());
        return Ok(r);
    }
    // `/delay/MS` or `/delay/MS/anything` (distinct paths with the same delay).
    if let Some(ms) = path
        .strip_prefix("/delay/")
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(n) = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
    {
        status = n;
    }
    if let Some(n) = path
        .strip_prefix("/bytes/")
        .and_then(|s| s.parse::<usize>().ok())
    {
        // Stream in 64 KiB chunks so large bodies never sit in memory at once.
        let chunks = (0..n.div_ceil(65536)).map(move |i| {
            let len = (n - i * 65536).min(65536);
            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; len])))
        });
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        let mut r = http::Response::new(BodyExt::boxed(body));
        r.headers_mut().insert("x-backend", name.parse().unwrap());
        return Ok(r);
    }
    // `x-echo-response-header: name: value` asks for that header on the response.
    let extra: Vec<(String, String)> = req
        .headers()
        .get_all("x-echo-response-header")
        .iter()
        .filter_map(|v| {
            v.to_str()
                .ok()?
                .split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                serde_json::Value::from(v.to_str().unwrap_or("")),
            )
        })
        .collect();
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let version = format!("{:?}", req.version());
    // Count the body without keeping it: uploads of any size stay cheap.
    let mut body = req.into_body();
    let mut body_len = 0usize;
    let mut sample = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(d) = frame.data_ref() {
            body_len += d.len();
            if sample.len() < 1024 {
                sample.extend_from_slice(&d[..d.len().min(1024 - sample.len())]);
            }
        }
    }
    let v = serde_json::json!({
        "backend": &*name,
        "method": method,
        "uri": uri,
        "version": version,
        "headers": headers,
        "body_len": body_len,
        "body": String::from_utf8_lossy(&sample),
    });
    let mut r = http::Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert("x-backend", name.parse().unwrap());
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r.headers_mut().insert("server", "testkit".parse().unwrap());
    r.headers_mut()
        .insert("keep-alive", "timeout=5".parse().unwrap());
    for (k, v) in extra {
        r.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    Ok(r)
}

async fn grpc_like(
    hits: Arc<AtomicUsize>,
    req: http::Request<Incoming>,
) -> Result<http::Response<EchoBody>, Infallible> {
    hits.fetch_add(1, Ordering::Relaxed);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    trailers.insert("grpc-message", "echoed".parse().unwrap());
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(body)),
        Ok(Frame::trailers(trailers)),
    ];
    let mut r = http::Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
        frames,
    ))));
    r.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    Ok(r)
}
