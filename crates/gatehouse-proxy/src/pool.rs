//! Per-worker upstream connection pools (DESIGN.md section 7): each worker thread keeps
//! its own idle HTTP/1 senders per target address, and one shared HTTP/2 sender per
//! target. No cross-thread locking on the request path. Connections are keyed by address
//! and TLS settings (`Key`), so upstreams that share an address but not their TLS never
//! share a connection.

use crate::body::RequestBody;
use crate::upstream_tls::ClientTls;
use ahash::AHashMap as HashMap;
use gatehouse_observe::metrics;
use gatehouse_upstream::TargetState;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

type H1 = http1::SendRequest<RequestBody>;
type H2 = http2::SendRequest<RequestBody>;

/// A pool key: the target's address and the id of the TLS settings (0 for cleartext).
pub type Key = (SocketAddr, u64);

struct Idle {
    tx: H1,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<HashMap<Key, Vec<Idle>>> = RefCell::new(HashMap::new());
    static H2_CONNS: RefCell<HashMap<Key, H2>> = RefCell::new(HashMap::new());
}

/// A lease on a pooled HTTP/1 connection: give it back when the response body ended.
pub struct Return {
    key: Key,
    tx: H1,
    max_idle: usize,
}

impl Return {
    /// Puts the connection back in this worker's idle list (if there is room).
    pub fn give_back(self) {
        if self.tx.is_closed() {
            return;
        }
        IDLE.with(|m| {
            let mut m = m.borrow_mut();
            let list = m.entry(self.key).or_default();
            if list.len() < self.max_idle {
                metrics::pool_idle(self.key.0, 1);
                list.push(Idle {
                    tx: self.tx,
                    since: Instant::now(),
                });
            }
        });
    }
}

/// Takes an idle, open connection for `key` younger than `idle_timeout`.
pub async fn checkout(key: Key, idle_timeout: Duration) -> Option<H1> {
    loop {
        let idle = IDLE.with(|m| m.borrow_mut().get_mut(&key).and_then(|l| l.pop()))?;
        metrics::pool_idle(key.0, -1);
        if idle.tx.is_closed() || idle.since.elapsed() > idle_timeout {
            continue;
        }
        let mut tx = idle.tx;
        // The previous exchange may still be wrapping up; ready() resolves at once otherwise.
        if tx.ready().await.is_ok() {
            return Some(tx);
        }
    }
}

/// Wraps a sender so it can be returned after the response body.
pub fn lease(key: Key, tx: H1, max_idle: usize) -> Return {
    Return { key, tx, max_idle }
}

/// Why connecting failed.
#[derive(Debug)]
pub enum ConnectError {
    /// Did not finish within the connect timeout.
    Timeout,
    /// Refused, unreachable, or the handshake failed.
    Io(std::io::Error),
}

/// Where to connect: the target, its resolved address, and the upstream's TLS if any.
#[derive(Clone, Copy)]
pub struct Dial<'a> {
    /// The target (its host names the TLS server without `tls.sni`).
    pub target: &'a TargetState,
    /// Its resolved address.
    pub addr: SocketAddr,
    /// The upstream's TLS.
    pub tls: Option<&'a ClientTls>,
}

impl Dial<'_> {
    /// The pool key of connections made this way.
    pub fn key(&self) -> Key {
        (self.addr, self.tls.map_or(0, |t| t.id))
    }
}

async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let s = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(ConnectError::Io)?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// TCP, then the TLS handshake when the upstream has TLS; each bounded by `timeout`.
async fn open(dial: Dial<'_>, timeout: Duration) -> Result<Stream, ConnectError> {
    let stream = tcp(dial.addr, timeout).await?;
    match dial.tls {
        None => Ok(Stream::Plain(stream)),
        Some(tls) => tokio::time::timeout(timeout, tls.connect(dial.target, stream))
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map(|s| Stream::Tls(Box::new(s)))
            .map_err(ConnectError::Io),
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Opens a new HTTP/1 connection; `upgrades` keeps the socket usable after a 101.
pub async fn connect_h1(
    dial: Dial<'_>,
    timeout: Duration,
    upgrades: bool,
) -> Result<H1, ConnectError> {
    match open(dial, timeout).await? {
        Stream::Plain(s) => h1_over(s, dial.addr, upgrades).await,
        Stream::Tls(s) => h1_over(s, dial.addr, upgrades).await,
    }
}

async fn h1_over<T>(io: T, addr: SocketAddr, upgrades: bool) -> Result<H1, ConnectError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| ConnectError::Io(std::io::Error::other(e)))?;
    metrics::pool_open(addr, 1);
    if upgrades {
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
            metrics::pool_open(addr, -1);
        });
    } else {
        tokio::spawn(async move {
            let _ = conn.await;
            metrics::pool_open(addr, -1);
        });
    }
    Ok(tx)
}

/// The worker's HTTP/2 connection for `dial`, opened on first use or after it closed.
pub async fn h2(dial: Dial<'_>, timeout: Duration) -> Result<H2, ConnectError> {
    let key = dial.key();
    if let Some(tx) = H2_CONNS.with(|m| m.borrow().get(&key).filter(|t| !t.is_closed()).cloned()) {
        return Ok(tx);
    }
    let tx = match open(dial, timeout).await? {
        Stream::Plain(s) => h2_over(s, dial.addr).await?,
        Stream::Tls(s) => h2_over(s, dial.addr).await?,
    };
    H2_CONNS.with(|m| m.borrow_mut().insert(key, tx.clone()));
    Ok(tx)
}

async fn h2_over<T>(io: T, addr: SocketAddr) -> Result<H2, ConnectError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| ConnectError::Io(std::io::Error::other(e)))?;
    metrics::pool_open(addr, 1);
    tokio::spawn(async move {
        let _ = conn.await;
        metrics::pool_open(addr, -1);
    });
    Ok(tx)
}
