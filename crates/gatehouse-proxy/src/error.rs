//! Proxy errors: where they came from, and the one place they become HTTP problems.

use crate::body::ClientFault;
use gatehouse_core::Problem;
use http::StatusCode;
use std::sync::Arc;

/// nginx's status for a request whose client went away before the response: it only
/// reaches the access log, since nobody is left to read it.
pub const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// Why the gateway could not get a response from an upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No target could be picked (no resolved address).
    #[error("upstream {upstream}: no target available")]
    NoTarget {
        /// Upstream name.
        upstream: Arc<str>,
    },
    /// TCP connect refused or failed.
    #[error("upstream {upstream} target {target}: connect failed: {source}")]
    Connect {
        /// Upstream name.
        upstream: Arc<str>,
        /// Target address.
        target: String,
        /// Cause.
        source: std::io::Error,
    },
    /// TCP connect did not finish in time.
    #[error("upstream {upstream} target {target}: connect timed out after {after:?}")]
    ConnectTimeout {
        /// Upstream name.
        upstream: Arc<str>,
        /// Target address.
        target: String,
        /// The configured timeout.
        after: std::time::Duration,
    },
    /// The upstream did not send a response head in time.
    #[error("upstream {upstream} target {target}: no response within {after:?}")]
    Timeout {
        /// Upstream name.
        upstream: Arc<str>,
        /// Target address.
        target: String,
        /// The configured timeout.
        after: std::time::Duration,
    },
    /// The exchange failed (reset, malformed response, closed early).
    #[error("upstream {upstream} target {target}: {source}")]
    Exchange {
        /// Upstream name.
        upstream: Arc<str>,
        /// Target address.
        target: String,
        /// Cause.
        source: hyper::Error,
    },
    /// No target is healthy, the breaker is open, or the in-flight cap is reached: the
    /// client should come back after `retry_after` seconds.
    #[error("upstream {upstream}: {reason}")]
    Unavailable {
        /// Upstream name.
        upstream: Arc<str>,
        /// What holds requests back.
        reason: &'static str,
        /// Seconds for the Retry-After header.
        retry_after: u64,
    },
    /// The client failed to deliver its body: aborted, malformed or over the limit.
    /// Never the upstream's fault: not counted against a target, the breaker or retries.
    #[error("{source}")]
    Client {
        /// What the client did.
        #[from]
        source: ClientFault,
    },
}

impl ProxyError {
    /// The status the client gets for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoTarget { .. } | Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect { .. } | Self::Exchange { .. } => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout { .. } | Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Client { source } => match source {
                ClientFault::Aborted(_) => CLIENT_CLOSED_REQUEST,
                ClientFault::Malformed(_) => StatusCode::BAD_REQUEST,
                ClientFault::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            },
        }
    }

    /// The problem sent to the client for this error.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        match self {
            // The client's own mistakes are safe to explain to it.
            Self::Client {
                source: source @ (ClientFault::Malformed(_) | ClientFault::TooLarge(_)),
            } => {
                let mut p = Problem::new(status, source.to_string());
                p.cause = Some(self.to_string());
                p
            }
            _ => Problem::internal(status, self.to_string()),
        }
    }

    /// Whether the client caused this failure (so no upstream is blamed for it).
    pub fn is_client_fault(&self) -> bool {
        matches!(self, Self::Client { .. })
    }

    /// An upstream exchange error, or the client's fault when the client's body is what
    /// broke the exchange.
    pub fn exchange(upstream: &Arc<str>, target: &str, source: hyper::Error) -> Self {
        // hyper owns the fault as its cause; the same kind is rebuilt around hyper's error.
        if let Some(kind) = ClientFault::find(&source).map(ClientFault::kind) {
            return ClientFault::with_cause(kind, source).into();
        }
        Self::Exchange {
            upstream: Arc::clone(upstream),
            target: target.to_string(),
            source,
        }
    }

    /// Seconds the client should wait before trying again, when the error says so.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// How this failure reads against `retries.on`.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            Self::Connect { .. } | Self::ConnectTimeout { .. } | Self::NoTarget { .. } => {
                RetryClass::ConnectFailure
            }
            Self::Timeout { .. } => RetryClass::Timeout,
            Self::Exchange { .. } => RetryClass::Reset,
            Self::Unavailable { .. } | Self::Client { .. } => RetryClass::Never,
        }
    }
}

/// A failed try, in the vocabulary of `retries.on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// Nothing reached the target.
    ConnectFailure,
    /// The connection broke before a response head.
    Reset,
    /// The try ran out of time.
    Timeout,
    /// Not retryable.
    Never,
}

/// Every target of `up` is unhealthy: come back when the first might be again.
pub fn no_healthy_target(up: &gatehouse_upstream::UpstreamState) -> ProxyError {
    ProxyError::Unavailable {
        upstream: up.name.clone(),
        reason: "no healthy target",
        retry_after: retry_after_secs(up.retry_after_ms()),
    }
}

/// Rounds milliseconds up to whole seconds, at least 1, for Retry-After.
pub fn retry_after_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}
