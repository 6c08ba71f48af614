//! Proxy errors: where they came from, and the one place they become HTTP problems.

use gatehouse_core::Problem;
use http::StatusCode;

/// Why the gateway could not get a response from an upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No target could be picked (no resolved address).
    #[error("upstream {upstream}: no target available")]
    NoTarget {
        /// Upstream name.
        upstream: String,
    },
    /// TCP connect refused or failed.
    #[error("upstream {upstream} target {target}: connect failed: {source}")]
    Connect {
        /// Upstream name.
        upstream: String,
        /// Target address.
        target: String,
        /// Cause.
        source: std::io::Error,
    },
    /// TCP connect did not finish in time.
    #[error("upstream {upstream} target {target}: connect timed out after {after:?}")]
    ConnectTimeout {
        /// Upstream name.
        upstream: String,
        /// Target address.
        target: String,
        /// The configured timeout.
        after: std::time::Duration,
    },
    /// The upstream did not send a response head in time.
    #[error("upstream {upstream} target {target}: no response within {after:?}")]
    Timeout {
        /// Upstream name.
        upstream: String,
        /// Target address.
        target: String,
        /// The configured timeout.
        after: std::time::Duration,
    },
    /// The exchange failed (reset, malformed response, closed early).
    #[error("upstream {upstream} target {target}: {source}")]
    Exchange {
        /// Upstream name.
        upstream: String,
        /// Target address.
        target: String,
        /// Cause.
        source: hyper::Error,
    },
    /// The client's body went over the route's limit while streaming.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: u64,
    },
}

impl ProxyError {
    /// The problem sent to the client for this error.
    pub fn problem(&self) -> Problem {
        let status = match self {
            Self::NoTarget { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect { .. } | Self::Exchange { .. } => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout { .. } | Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        };
        Problem::new(status, self.to_string())
    }
}
