//! One try against one target, in two steps: get a connection (pooled or new), then send
//! the request and wait for the response head within the try's time limit. Split so a
//! failed connect can move on to another target before the request (and its body) is
//! spent.

use crate::body::{ProxyBody, RequestBody};
use crate::error::ProxyError;
use crate::pool::{self, ConnectError};
use crate::upstream_tls::ClientTls;
use gatehouse_config::UpstreamProtocol;
use gatehouse_upstream::{TargetState, UpstreamState};
use http::{Request, Response};
use hyper::client::conn::{http1, http2};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A response head from upstream, its body wired to return the connection, and timings.
pub struct Forwarded {
    /// The response, body streaming.
    pub response: Response<ProxyBody>,
    /// Time spent connecting (zero when a pooled connection was used).
    pub connect: Duration,
    /// Time from sending to the response head.
    pub first_byte: Duration,
}

/// A connection ready to carry one request.
pub struct Conn {
    key: pool::Key,
    sender: Sender,
    /// Whether it goes back to the pool after the response (not for upgrades).
    pooled: bool,
    /// Time it took to get it.
    pub connect: Duration,
}

enum Sender {
    H1(http1::SendRequest<RequestBody>),
    H2(http2::SendRequest<RequestBody>),
}

fn connect_error(up: &UpstreamState, t: &TargetState, e: ConnectError) -> ProxyError {
    match e {
        ConnectError::Timeout => ProxyError::ConnectTimeout {
            upstream: up.name.clone(),
            target: t.address.to_string(),
            after: up.config.timeouts.connect.get(),
        },
        ConnectError::Io(source) => ProxyError::Connect {
            upstream: up.name.clone(),
            target: t.address.to_string(),
            source,
        },
    }
}

fn address(up: &UpstreamState, target: &TargetState) -> Result<SocketAddr, ProxyError> {
    target.socket_addr().ok_or_else(|| ProxyError::NoTarget {
        upstream: up.name.clone(),
    })
}

/// Takes a pooled connection to `target` or opens one (over the upstream's `tls`, if any).
pub async fn connect(
    up: &UpstreamState,
    target: &TargetState,
    tls: Option<&ClientTls>,
) -> Result<Conn, ProxyError> {
    let dial = pool::Dial {
        target,
        addr: address(up, target)?,
        tls,
    };
    let key = dial.key();
    let timeouts = &up.config.timeouts;
    let started = Instant::now();
    let sender = match up.config.protocol {
        UpstreamProtocol::Http1 => match pool::checkout(key, timeouts.idle.get()).await {
            Some(tx) => Sender::H1(tx),
            // New connections are rare under steady load; boxing keeps their large
            // futures out of every request's state.
            None => Sender::H1(
                Box::pin(pool::connect_h1(dial, timeouts.connect.get(), false))
                    .await
                    .map_err(|e| connect_error(up, target, e))?,
            ),
        },
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => Sender::H2(
            Box::pin(pool::h2(dial, timeouts.connect.get()))
                .await
                .map_err(|e| connect_error(up, target, e))?,
        ),
    };
    Ok(Conn {
        key,
        sender,
        pooled: true,
        connect: started.elapsed(),
    })
}

/// Sends `req` on `conn` and waits at most `limit` for the response head.
pub async fn exchange(
    up: &UpstreamState,
    target: &TargetState,
    conn: Conn,
    req: Request<RequestBody>,
    limit: Duration,
) -> Result<Forwarded, ProxyError> {
    let sent = Instant::now();
    let exchange = |source| ProxyError::exchange(&up.name, &target.address, source);
    let timeout = || ProxyError::Timeout {
        upstream: up.name.clone(),
        target: target.address.to_string(),
        after: limit,
    };
    let response = match conn.sender {
        Sender::H1(mut tx) => {
            let resp = tokio::time::timeout(limit, tx.send_request(req))
                .await
                .map_err(|_| timeout())?
                .map_err(exchange)?;
            let reusable = conn.pooled
                && !resp
                    .headers()
                    .get(http::header::CONNECTION)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"));
            let ret =
                reusable.then(|| pool::lease(conn.key, tx, up.config.pool.max_idle_per_target));
            resp.map(|b| ProxyBody::upstream(b, ret))
        }
        Sender::H2(mut tx) => {
            tx.ready().await.map_err(exchange)?;
            tokio::time::timeout(limit, tx.send_request(req))
                .await
                .map_err(|_| timeout())?
                .map_err(exchange)?
                .map(|b| ProxyBody::upstream(b, None))
        }
    };
    Ok(Forwarded {
        response,
        connect: conn.connect,
        first_byte: sent.elapsed(),
    })
}

/// Sends an upgrade handshake on a fresh, unpooled connection that stays usable after a 101.
pub async fn send_upgrade(
    up: &UpstreamState,
    target: &TargetState,
    tls: Option<&ClientTls>,
    req: Request<RequestBody>,
) -> Result<Forwarded, ProxyError> {
    let dial = pool::Dial {
        target,
        addr: address(up, target)?,
        tls,
    };
    let timeouts = &up.config.timeouts;
    let started = Instant::now();
    let tx = pool::connect_h1(dial, timeouts.connect.get(), true)
        .await
        .map_err(|e| connect_error(up, target, e))?;
    let conn = Conn {
        key: dial.key(),
        sender: Sender::H1(tx),
        // After a 101 the connection belongs to the upgrade.
        pooled: false,
        connect: started.elapsed(),
    };
    exchange(up, target, conn, req, timeouts.request.get()).await
}
