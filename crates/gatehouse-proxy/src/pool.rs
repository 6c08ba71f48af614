//! Per-worker upstream connection pools (DESIGN.md section 7): each worker thread keeps
//! its own idle HTTP/1 senders per target address, and one shared HTTP/2 sender per
//! target. No cross-thread locking on the request path.

use crate::body::RequestBody;
use gatehouse_observe::metrics;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

type H1 = http1::SendRequest<RequestBody>;
type H2 = http2::SendRequest<RequestBody>;

struct Idle {
    tx: H1,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<HashMap<SocketAddr, Vec<Idle>>> = RefCell::new(HashMap::new());
    static H2_CONNS: RefCell<HashMap<SocketAddr, H2>> = RefCell::new(HashMap::new());
}

/// A lease on a pooled HTTP/1 connection: give it back when the response body ended.
pub struct Return {
    addr: SocketAddr,
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
            let list = m.entry(self.addr).or_default();
            if list.len() < self.max_idle {
                metrics::pool_idle(self.addr, 1);
                list.push(Idle {
                    tx: self.tx,
                    since: Instant::now(),
                });
            }
        });
    }
}

/// Takes an idle, open connection to `addr` younger than `idle_timeout`.
pub async fn checkout(addr: SocketAddr, idle_timeout: Duration) -> Option<H1> {
    loop {
        let idle = IDLE.with(|m| m.borrow_mut().get_mut(&addr).and_then(|l| l.pop()))?;
        metrics::pool_idle(addr, -1);
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
pub fn lease(addr: SocketAddr, tx: H1, max_idle: usize) -> Return {
    Return { addr, tx, max_idle }
}

/// Why connecting failed.
#[derive(Debug)]
pub enum ConnectError {
    /// Did not finish within the connect timeout.
    Timeout,
    /// Refused, unreachable, or the handshake failed.
    Io(std::io::Error),
}

async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let s = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(ConnectError::Io)?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Opens a new HTTP/1 connection; `upgrades` keeps the socket usable after a 101.
pub async fn connect_h1(
    addr: SocketAddr,
    timeout: Duration,
    upgrades: bool,
) -> Result<H1, ConnectError> {
    let stream = tcp(addr, timeout).await?;
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
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

/// The worker's HTTP/2 connection to `addr`, opened on first use or after it closed.
pub async fn h2(addr: SocketAddr, timeout: Duration) -> Result<H2, ConnectError> {
    if let Some(tx) = H2_CONNS.with(|m| m.borrow().get(&addr).filter(|t| !t.is_closed()).cloned()) {
        return Ok(tx);
    }
    let stream = tcp(addr, timeout).await?;
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ConnectError::Io(std::io::Error::other(e)))?;
    metrics::pool_open(addr, 1);
    tokio::spawn(async move {
        let _ = conn.await;
        metrics::pool_open(addr, -1);
    });
    H2_CONNS.with(|m| m.borrow_mut().insert(addr, tx.clone()));
    Ok(tx)
}
