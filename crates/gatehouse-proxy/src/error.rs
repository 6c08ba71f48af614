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
    /// No target is healthy, the breaker is open, or the in-flight cap is reached: the
    /// client should come back after `retry_after` seconds.
    #[error("upstream {upstream}: {reason}")]
    Unavailable {
        /// Upstream name.
        upstream: String,
        /// What holds requests back.
        reason: &'static str,
        /// Seconds for the Retry-After header.
        retry_after: u64,
    },
    /// Reading the client's body failed (it closed or sent malformed chunks).
    #[error("reading the request body failed: {source}")]
    ClientBody {
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
            Self::NoTarget { .. } | Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect { .. } | Self::Exchange { .. } => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout { .. } | Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ClientBody { .. } => StatusCode::BAD_REQUEST,
        };
        Problem::new(status, self.to_string())
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
            Self::Unavailable { .. } | Self::BodyTooLarge { .. } | Self::ClientBody { .. } => {
                RetryClass::Never
            }
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
