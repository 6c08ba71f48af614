//! Sending one request to one target: take or open a connection, send, wait for the
//! response head within the request timeout.

use crate::body::{ProxyBody, RequestBody};
use crate::error::ProxyError;
use crate::pool::{self, ConnectError};
use gatehouse_config::UpstreamProtocol;
use gatehouse_upstream::{TargetState, UpstreamState};
use http::{Request, Response};
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

/// Sends `req` to `target` of `up`.
pub async fn send(
    up: &UpstreamState,
    target: &TargetState,
    req: Request<RequestBody>,
) -> Result<Forwarded, ProxyError> {
    let addr = target.socket_addr().ok_or_else(|| ProxyError::NoTarget {
        upstream: up.name.clone(),
    })?;
    let timeouts = &up.config.timeouts;
    let started = Instant::now();
    let exchange = |source| ProxyError::Exchange {
        upstream: up.name.clone(),
        target: target.address.to_string(),
        source,
    };
    let timeout = || ProxyError::Timeout {
        upstream: up.name.clone(),
        target: target.address.to_string(),
        after: timeouts.request.get(),
    };
    match up.config.protocol {
        UpstreamProtocol::Http1 => {
            let mut tx = match pool::checkout(addr, timeouts.idle.get()).await {
                Some(tx) => tx,
                None => pool::connect_h1(addr, timeouts.connect.get(), false)
                    .await
                    .map_err(|e| connect_error(up, target, e))?,
            };
            let sent = Instant::now();
            let connect = sent - started;
            let resp = tokio::time::timeout(timeouts.request.get(), tx.send_request(req))
                .await
                .map_err(|_| timeout())?
                .map_err(exchange)?;
            let first_byte = sent.elapsed();
            let reusable = !resp
                .headers()
                .get(http::header::CONNECTION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
            let ret = reusable.then(|| pool::lease(addr, tx, up.config.pool.max_idle_per_target));
            Ok(Forwarded {
                response: resp.map(|b| ProxyBody::upstream(b, ret)),
                connect,
                first_byte,
            })
        }
        UpstreamProtocol::H2c => {
            let mut tx = pool::h2(addr, timeouts.connect.get())
                .await
                .map_err(|e| connect_error(up, target, e))?;
            let connect = started.elapsed();
            let sent = Instant::now();
            tx.ready().await.map_err(exchange)?;
            let resp = tokio::time::timeout(timeouts.request.get(), tx.send_request(req))
                .await
                .map_err(|_| timeout())?
                .map_err(exchange)?;
            Ok(Forwarded {
                response: resp.map(|b| ProxyBody::upstream(b, None)),
                connect,
                first_byte: sent.elapsed(),
            })
        }
    }
}

/// Sends an upgrade handshake on a fresh, unpooled connection that stays usable after a 101.
pub async fn send_upgrade(
    up: &UpstreamState,
    target: &TargetState,
    req: Request<RequestBody>,
) -> Result<Forwarded, ProxyError> {
    let addr = target.socket_addr().ok_or_else(|| ProxyError::NoTarget {
        upstream: up.name.clone(),
    })?;
    let timeouts = &up.config.timeouts;
    let started = Instant::now();
    let mut tx = pool::connect_h1(addr, timeouts.connect.get(), true)
        .await
        .map_err(|e| connect_error(up, target, e))?;
    let connect = started.elapsed();
    let sent = Instant::now();
    let resp = tokio::time::timeout(timeouts.request.get(), tx.send_request(req))
        .await
        .map_err(|_| ProxyError::Timeout {
            upstream: up.name.clone(),
            target: target.address.to_string(),
            after: timeouts.request.get(),
        })?
        .map_err(|source| ProxyError::Exchange {
            upstream: up.name.clone(),
            target: target.address.to_string(),
            source,
        })?;
    Ok(Forwarded {
        response: resp.map(|b| ProxyBody::upstream(b, None)),
        connect,
        first_byte: sent.elapsed(),
    })
}
