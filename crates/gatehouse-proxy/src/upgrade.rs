//! Protocol upgrades (WebSocket): the handshake goes to the target on a fresh connection;
//! after a 101 both sides are spliced with a byte copy in their own task, independent of
//! the downstream connection's HTTP state, so reloads never touch a live tunnel.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Whether the request asks for a protocol upgrade.
pub fn is_upgrade(req: &http::request::Parts) -> bool {
    req.headers.contains_key(http::header::UPGRADE)
        && req
            .headers
            .get(http::header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Splices the client and upstream sockets once both upgrades complete.
pub fn splice(client: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (c, u) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
        if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
}
