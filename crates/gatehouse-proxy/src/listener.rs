//! Listeners and workers (DESIGN.md section 7): every worker thread runs its own
//! current_thread runtime with its own SO_REUSEPORT socket per listener, and serves the
//! connections it accepts to the end, speaking the listener's `protocols` (HTTP/1.1 and
//! h2c share a port when both are listed).

use crate::downstream::{Activity, DownstreamStream};
use crate::gateway::Gateway;
use crate::http2_guard::Http2Guard;
use crate::listener_set::Started;
use crate::pipeline::{self, ConnInfo};
use crate::transport::Transport;
use arc_swap::ArcSwap;
use gatehouse_config::{Listener, Protocol};
use gatehouse_core::Offence;
use gatehouse_observe::metrics;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Starts one thread per worker; each returns once shutdown began and its connections drained.
/// Each worker serves the sockets its receiver hands it: the initial listeners, then
/// those a reload adds.
pub fn spawn_workers(
    gw: &Arc<Gateway>,
    receivers: Vec<mpsc::UnboundedReceiver<Started>>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    receivers
        .into_iter()
        .enumerate()
        .map(|(i, rx)| {
            let gw = gw.clone();
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || run_worker(gw, rx))
        })
        .collect()
}

fn run_worker(gw: Arc<Gateway>, mut listeners: mpsc::UnboundedReceiver<Started>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "worker runtime failed to start");
            return;
        }
    };
    rt.block_on(async move {
        crate::housekeeping::spawn();
        let mut stop = gw.shutdown_signal();
        loop {
            tokio::select! {
                started = listeners.recv() => {
                    let Some(started) = started else { break };
                    match tokio::net::TcpListener::from_std(started.socket) {
                        Ok(sock) => {
                            tokio::spawn(accept_loop(gw.clone(), sock, started.spec, started.open, started.per_peer, started.rates, started.stop));
                        }
                        Err(e) => tracing::error!(error = %e, "cannot register listener"),
                    }
                }
                r = stop.changed() => if r.is_err() || *stop.borrow() { break },
            }
        }
        let deadline = gw.live.load().config.shutdown.drain_timeout.get();
        gw.drained(deadline).await;
    });
}

async fn accept_loop(
    gw: Arc<Gateway>,
    sock: tokio::net::TcpListener,
    spec: Arc<ArcSwap<Listener>>,
    open: Arc<AtomicUsize>,
    per_peer: Arc<crate::peer_connections::PeerConnections>,
    rates: Arc<crate::client_rate::ClientRates>,
    mut removed: watch::Receiver<bool>,
) {
    // The hyper builder follows the listener's settings; rebuilt only when they change.
    let mut current = spec.load_full();
    let mut builder = Arc::new(server_builder(&current));
    // Shared by every connection's context; rebuilt only when the settings change.
    let mut name: Arc<str> = current.name.as_str().into();
    let mut request_rate = rates.limiter(current.request_rate_per_ip.as_ref());
    let mut stop = gw.shutdown_signal();
    if *removed.borrow_and_update() {
        return;
    }
    loop {
        let (stream, peer) = tokio::select! {
            r = sock.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = %current.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
            // Removed from the config (or the set that owns it is gone).
            _ = removed.changed() => break,
        };
        let latest = spec.load_full();
        if !Arc::ptr_eq(&latest, &current) {
            builder = Arc::new(server_builder(&latest));
            name = latest.name.as_str().into();
            request_rate = rates.limiter(latest.request_rate_per_ip.as_ref());
            current = latest;
        }
        if open.load(Ordering::Relaxed) >= current.max_connections {
            tracing::warn!(listener = %current.name, %peer, "max_connections reached; closing new connection");
            metrics::connection(&name, false);
            drop(stream);
            continue;
        }
        let (denied, exempt, key) = {
            let snap = gw.live.load();
            let p = &snap.protection;
            let ip = peer.ip();
            (p.denies(ip), p.exempt.contains(ip), p.key(ip))
        };
        if denied {
            tracing::debug!(listener = %current.name, %peer, "peer in protection.deny; closing new connection");
            metrics::connection(&name, false);
            drop(stream);
            continue;
        }
        let peer_slot = match current.max_connections_per_ip {
            Some(cap) if !exempt => match per_peer.admit(key, cap) {
                Some(slot) => Some(slot),
                None => {
                    gw.live
                        .load()
                        .protection
                        .offend(peer.ip(), Offence::ConnectionLimit);
                    // Debug only: one address opening connections in a loop must not
                    // flood the log.
                    tracing::debug!(listener = %current.name, %peer, "max_connections_per_ip reached; closing new connection");
                    metrics::connection(&name, false);
                    drop(stream);
                    continue;
                }
            },
            _ => None,
        };
        metrics::connection(&name, true);
        let _ = stream.set_nodelay(true);
        // The handshake runs in the connection's task, on the certificates live now. The
        // snapshot alone decides whether the listener speaks TLS: during a reload the
        // settings are swapped a moment before the snapshot, and a listener must never
        // serve cleartext under a config that says TLS, nor the reverse.
        let tls = gw
            .live
            .load()
            .tls
            .get(&current.name)
            .map(|t| (t.config.clone(), current.header_read_timeout.get()));
        let guard = ConnGuard::new(&open, &gw.connections, peer_slot);
        let info = ConnInfo {
            conn: Arc::new(gatehouse_core::Connection::plain(
                peer,
                stream.local_addr().unwrap_or(peer),
                Arc::clone(&name),
            )),
            max_header_size: current.max_header_size.0,
            max_header_count: current.max_header_count,
            request_rate: request_rate.clone(),
            body_pace: crate::body::BodyPace {
                read_timeout: current.body_read_timeout.get(),
                min_rate: current.min_body_rate.map(|r| r.0),
            },
            normalization: normalization(&current.path_normalization),
        };
        tokio::spawn(serve_connection(
            gw.clone(),
            builder.clone(),
            stream,
            tls,
            info,
            guard,
            Lasting {
                idle: current.idle_timeout.get(),
                resets: current.http2_max_resets,
                header_list: header_buffer(&current).1,
            },
        ));
    }
}

/// The connection server a listener's `protocols` call for: hyper's own HTTP/1 and
/// HTTP/2 servers. A listener with both tells them apart once per connection by peeking
/// at its first bytes (the HTTP/2 preface or not), then runs the plain server: hyper-util's
/// auto server does the same detection but keeps a rewinding wrapper on every read of
/// the connection's life. An `[http1]` listener never speaks h2c and an `[h2c]` one
/// answers anything but the preface with GOAWAY.
#[derive(Clone)]
enum Server {
    /// HTTP/1.1 and h2c on one port, told apart by the preface.
    Both(http1::Builder, http2::Builder<TokioExecutor>, Duration),
    /// HTTP/1 only.
    Http1(http1::Builder),
    /// h2c only.
    H2(http2::Builder<TokioExecutor>),
}

/// The HTTP/1 read buffer and the HTTP/2 header list limit of a listener: twice
/// `max_header_size` (see [`server_builder`]).
fn header_buffer(spec: &Listener) -> (usize, u32) {
    let buf = usize::try_from(spec.max_header_size.0.saturating_mul(2))
        .unwrap_or(usize::MAX)
        .max(8192);
    (buf, u32::try_from(buf).unwrap_or(u32::MAX))
}

fn server_builder(spec: &Listener) -> Server {
    // Below the buffer the pipeline answers an oversized head with a precise 431; beyond
    // it hyper's parser answers itself (downstream.rs gives that the problem+json body),
    // so the buffer gets twice the configured limit.
    let (buf, h2_headers) = header_buffer(spec);
    // As with the buffer: up to twice the limit reaches the pipeline, which answers a
    // precise 431; beyond, hyper's parser refuses the head itself.
    let h1_headers = spec.max_header_count.saturating_mul(2).max(100);
    let h1 = spec.protocols.contains(&Protocol::Http1);
    let h2 = spec
        .protocols
        .iter()
        .any(|p| matches!(p, Protocol::H2c | Protocol::H2));
    if h1 && !h2 {
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(spec.header_read_timeout.get())
            .max_buf_size(buf)
            .max_headers(h1_headers)
            .keep_alive(true);
        return Server::Http1(b);
    }
    if h2 && !h1 {
        let mut b = http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_header_list_size(h2_headers)
            .max_concurrent_streams(spec.http2_max_concurrent_streams);
        return Server::H2(b);
    }
    let mut b1 = http1::Builder::new();
    b1.timer(TokioTimer::new())
        .header_read_timeout(spec.header_read_timeout.get())
        .max_buf_size(buf)
        .max_headers(h1_headers)
        .keep_alive(true);
    let mut b2 = http2::Builder::new(TokioExecutor::new());
    b2.timer(TokioTimer::new())
        .max_header_list_size(h2_headers)
        .max_concurrent_streams(spec.http2_max_concurrent_streams);
    Server::Both(b1, b2, spec.header_read_timeout.get())
}

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the connection starts with the HTTP/2 preface, found by peeking (nothing is
/// consumed). Decided at the first byte that differs, so an HTTP/1 request is known at
/// once; a client that sends nothing within `within` is treated as HTTP/1, whose own
/// header-read timeout then closes it.
async fn starts_with_preface(stream: &tokio::net::TcpStream, within: Duration) -> bool {
    let peek = async {
        let mut buf = [0u8; 24];
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if buf[..n] != H2_PREFACE[..n] {
                return false;
            }
            if n == H2_PREFACE.len() {
                return true;
            }
            // A preface split across packets (rare): peek again shortly, since the
            // socket stays readable with the bytes already there.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(within, peek).await.unwrap_or(false)
}

/// The listener settings a connection keeps for its whole life.
struct Lasting {
    /// `idle_timeout`.
    idle: Duration,
    /// `http2_max_resets`.
    resets: gatehouse_config::FrameRate,
    /// The HTTP/2 header list limit (from `max_header_size`).
    header_list: u32,
}

/// Serves one accepted connection to its end: the TLS handshake first on a TLS listener
/// (`tls`: its config and how long a client may take), then HTTP/1 or HTTP/2.
async fn serve_connection(
    gw: Arc<Gateway>,
    server: Arc<Server>,
    stream: tokio::net::TcpStream,
    tls: Option<(Arc<rustls::ServerConfig>, Duration)>,
    mut info: ConnInfo,
    _guard: ConnGuard,
    lasting: Lasting,
) {
    let Lasting {
        idle,
        resets,
        header_list,
    } = lasting;
    let listener = Arc::clone(&info.conn.listener);
    let (transport, alpn_h2) = match tls {
        None => (Transport::Plain(stream), None),
        Some((config, within)) => {
            // Boxed: the handshake's state is large and would otherwise size every
            // connection's task, cleartext ones included.
            let handshake = Box::pin(crate::tls::accept(config, stream));
            match tokio::time::timeout(within, handshake).await {
                Ok(Ok(s)) => {
                    let facts = crate::tls::session_info(&s);
                    let h2 = facts.alpn.as_deref() == Some(b"h2");
                    let c = &info.conn;
                    info.conn = Arc::new(gatehouse_core::Connection::secure(
                        c.peer,
                        c.local,
                        Arc::clone(&c.listener),
                        facts,
                    ));
                    (Transport::Tls(Box::new(s)), Some(h2))
                }
                Ok(Err(e)) => {
                    tracing::debug!(listener = %listener, peer = %info.conn.peer, error = %e, "TLS handshake failed");
                    metrics::rejection(&listener, metrics::Rejection::TlsHandshake);
                    return;
                }
                Err(_) => {
                    tracing::debug!(listener = %listener, peer = %info.conn.peer, "TLS handshake timed out");
                    metrics::rejection(&listener, metrics::Rejection::TlsHandshake);
                    offend_as_peer(&gw, info.conn.peer.ip(), Offence::SlowClient);
                    return;
                }
            }
        }
    };
    let live = gw.live.clone();
    let client = Arc::clone(&info.conn);
    // Policies may send requests of their own through the gateway on this connection.
    let info = Arc::new(crate::dispatch::Dispatcher::attach(&live, info));
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let live = live.clone();
        let info = info.clone();
        let (parts, body) = req.into_parts();
        let body = crate::linger::LingeringBody::new(body, parts.version, &parts.headers);
        let req = http::Request::from_parts(parts, pipeline::Inbound::Client(body));
        async move { Ok::<_, Infallible>(pipeline::handle_contained(&live, &info, req).await) }
    });
    // The protocol, decided once per connection: by ALPN under TLS, else by the preface.
    let h2 = match (&*server, alpn_h2, &transport) {
        (Server::H2(b2), ..) => Some(b2),
        (Server::Both(_, b2, _), Some(alpn), _) => alpn.then_some(b2),
        (Server::Both(_, b2, within), None, Transport::Plain(s)) => {
            starts_with_preface(s, *within).await.then_some(b2)
        }
        _ => None,
    };
    let activity = Arc::new(Activity::default());
    let mut stream = DownstreamStream::new(transport, activity.clone(), listener.clone());
    if h2.is_some() {
        let (gw, peer, listener) = (gw.clone(), client.peer.ip(), listener.clone());
        let on_abuse = Box::new(move || {
            metrics::rejection(&listener, metrics::Rejection::Http2Abuse);
            offend_as_peer(&gw, peer, Offence::Http2Abuse);
        });
        let guard = Http2Guard::new(resets.limit, resets.per.get(), header_list);
        stream = stream.guard_http2(guard, on_abuse);
    }
    let io = TokioIo::new(stream);
    let stop = gw.shutdown_signal();
    if let Some(b) = h2 {
        let conn = b.serve_connection(io, svc);
        // Boxed: an HTTP/2 connection's state is about twice an HTTP/1 one's, and the
        // connection task is sized for the largest branch, so every HTTP/1 connection
        // would carry the difference for its whole life.
        let end = Box::pin(drive(
            conn,
            |c| c.graceful_shutdown(),
            stop,
            &activity,
            idle,
        ))
        .await;
        ended(&gw, &client, &activity, end.err().as_ref().map(|e| e as _));
    } else if let Server::Both(b, ..) | Server::Http1(b) = &*server {
        let conn = b.serve_connection(io, svc).with_upgrades();
        let end = drive(conn, |c| c.graceful_shutdown(), stop, &activity, idle).await;
        ended(&gw, &client, &activity, end.err().as_ref().map(|e| e as _));
    }
}
/// A connection ended: one that timed out waiting for a request head counts as a
/// rejected request (hyper closes it without an answer, as nginx does with 408), and,
/// when a request had started arriving, as a slow client's offence; a head hyper could
/// not parse is a bad request. Never held against a trusted proxy, whose connection
/// carries everyone's requests.
fn ended(
    gw: &Gateway,
    conn: &gatehouse_core::Connection,
    activity: &Activity,
    error: Option<&(dyn std::error::Error + Send + Sync + 'static)>,
) {
    let listener = &conn.listener;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = error.map(|e| e as _);
    let offence = loop {
        let Some(e) = cur else { return };
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                metrics::rejection(listener, metrics::Rejection::Timeout);
                if !activity.mid_request() {
                    return;
                }
                break Offence::SlowClient;
            }
            if h.is_parse() || h.is_parse_too_large() {
                break Offence::BadRequest;
            }
        }
        cur = e.source();
    };
    offend_as_peer(gw, conn.peer.ip(), offence);
}

/// Counts offence `o` against the connection's peer, unless it is a trusted proxy.
fn offend_as_peer(gw: &Gateway, peer: std::net::IpAddr, o: Offence) {
    let snap = gw.live.load();
    if !snap.trusted_proxies.contains(peer) {
        snap.protection.offend(peer, o);
    }
}

/// What woke a connection's driver.
enum Woke<T> {
    /// The connection ended.
    Done(T),
    /// Shutdown began.
    Stop,
    /// The idle check is due.
    Tick,
}

/// Runs a connection to its end, shutting it down gracefully when the gateway stops or
/// the connection has been idle for `idle`.
///
/// Written as one hand-rolled poll rather than a `select!`: the connection wakes its task
/// at least twice per request, and a `select!` would poll the idle timer every time. The
/// timer is polled once after each reset (which registers the task's waker with it) and
/// then only once it reports elapsed.
async fn drive<C: Future>(
    conn: C,
    graceful: fn(std::pin::Pin<&mut C>),
    mut stop: watch::Receiver<bool>,
    activity: &Activity,
    idle: Duration,
) -> C::Output {
    let mut conn = std::pin::pin!(conn);
    // A connection accepted just as shutdown began has missed the change: close it after
    // the request it may carry, like every other connection.
    if *stop.borrow_and_update() {
        graceful(conn.as_mut());
    }
    // Idle when no byte moved for `idle`: checked every quarter of it, so the connection
    // closes between `idle` and 1.25 x `idle` after its last activity.
    let period = idle.max(Duration::from_millis(100)) / 4;
    let mut seen = activity.events();
    let mut quiet_since = tokio::time::Instant::now();
    let mut draining = *stop.borrow();
    let mut tick = std::pin::pin!(tokio::time::sleep(period));
    let mut armed = false;
    loop {
        let mut changed = std::pin::pin!(stop.changed());
        let woke = std::future::poll_fn(|cx| {
            if let Poll::Ready(end) = conn.as_mut().poll(cx) {
                return Poll::Ready(Woke::Done(end));
            }
            if draining {
                return Poll::Pending;
            }
            if changed.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Woke::Stop);
            }
            if !armed || tick.is_elapsed() {
                armed = true;
                if tick.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woke::Tick);
                }
            }
            Poll::Pending
        })
        .await;
        match woke {
            Woke::Done(end) => return end,
            Woke::Stop => {
                draining = true;
                graceful(conn.as_mut());
            }
            Woke::Tick => {
                let now = tokio::time::Instant::now();
                let events = activity.events();
                if events != seen {
                    seen = events;
                    quiet_since = now;
                } else if now.duration_since(quiet_since) >= idle {
                    draining = true;
                    graceful(conn.as_mut());
                }
                tick.as_mut().reset(now + period);
                armed = false;
            }
        }
    }
}

/// The router's form of a listener's path settings.
fn normalization(p: &gatehouse_config::PathNormalization) -> gatehouse_router::Normalization {
    use gatehouse_config::EscapedSlashes as C;
    use gatehouse_router::EscapedSlashes as R;
    gatehouse_router::Normalization {
        merge_slashes: p.merge_slashes,
        escaped_slashes: match p.escaped_slashes {
            C::Keep => R::Keep,
            C::Reject => R::Reject,
            C::Decode => R::Decode,
        },
    }
}

/// Counts a connection on its listener and on the gateway for as long as it lives.
struct ConnGuard {
    listener: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    /// The peer's slot under `max_connections_per_ip`, freed with the guard.
    _peer: Option<crate::peer_connections::PeerSlot>,
}

impl ConnGuard {
    fn new(
        listener: &Arc<AtomicUsize>,
        total: &Arc<AtomicUsize>,
        peer: Option<crate::peer_connections::PeerSlot>,
    ) -> Self {
        listener.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(1, Ordering::Relaxed);
        Self {
            listener: listener.clone(),
            total: total.clone(),
            _peer: peer,
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.listener.fetch_sub(1, Ordering::Relaxed);
        self.total.fetch_sub(1, Ordering::Relaxed);
    }
}
