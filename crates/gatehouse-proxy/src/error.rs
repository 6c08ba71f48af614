//! Proxy errors: where they came from, and [`answer`], the one place an error becomes an
//! HTTP answer (status, problem body, Retry-After, the attempts header).

use crate::body::ClientFault;
use gatehouse_core::{LocalResponse, Problem, problem_response};
use http::{HeaderValue, StatusCode, header};
use std::sync::Arc;

/// The answer to a request that failed with `e`: the first error of ours found walking
/// its source chain decides the status, the problem (client-safe detail, logged cause)
/// and the headers; anything else is a 500 whose cause is only logged. `attempts` is
/// the number of upstream tries sent (0 = none, no header).
pub fn answer(
    e: &(dyn std::error::Error + 'static),
    request_id: &str,
    attempts: u32,
) -> LocalResponse {
    let mut cur = Some(e);
    let (problem, retry_after) = loop {
        let Some(err) = cur else {
            break (
                Problem::internal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                None,
            );
        };
        if let Some(p) = err.downcast_ref::<ProxyError>() {
            break (p.problem(), p.retry_after());
        }
        if let Some(f) = err.downcast_ref::<ClientFault>() {
            break (fault_problem(f, &e.to_string()), None);
        }
        cur = err.source();
    };
    let mut r = problem_response(&problem, request_id);
    if let Some(secs) = retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if attempts > 0 {
        r.headers_mut().insert(
            crate::outbound::X_GATEHOUSE_ATTEMPTS.clone(),
            crate::outbound::attempts_value(attempts),
        );
    }
    r
}

/// The status of a client fault: 499 (gone), 400 (malformed), 413 (too large), 408
/// (too slow).
fn fault_status(f: &ClientFault) -> StatusCode {
    match f {
        ClientFault::Aborted(_) => CLIENT_CLOSED_REQUEST,
        ClientFault::Malformed(_) => StatusCode::BAD_REQUEST,
        ClientFault::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ClientFault::Stalled(_) | ClientFault::TooSlow(_) => StatusCode::REQUEST_TIMEOUT,
    }
}

/// A client fault as a problem: its own mistakes are safe to explain to the client.
fn fault_problem(f: &ClientFault, cause: &str) -> Problem {
    let status = fault_status(f);
    match f {
        ClientFault::Malformed(_)
        | ClientFault::TooLarge(_)
        | ClientFault::Stalled(_)
        | ClientFault::TooSlow(_) => {
            let mut p = Problem::new(status, f.to_string());
            p.cause = Some(cause.to_string());
            p
        }
        ClientFault::Aborted(_) => Problem::internal(status, cause.to_string()),
    }
}

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
            Self::Client { source } => fault_status(source),
        }
    }

    /// The problem sent to the client for this error.
    pub fn problem(&self) -> Problem {
        match self {
            Self::Client { source } => fault_problem(source, &self.to_string()),
            _ => Problem::internal(self.status(), self.to_string()),
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

    /// A short name for the failure (a span's `error.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoTarget { .. } => "no_target",
            Self::Connect { .. } => "connect_failure",
            Self::ConnectTimeout { .. } => "connect_timeout",
            Self::Timeout { .. } => "timeout",
            Self::Exchange { .. } => "reset",
            Self::Unavailable { .. } => "unavailable",
            Self::Client { .. } => "client_fault",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_comes_from_the_first_known_error_in_the_chain() {
        let inner = ProxyError::Unavailable {
            upstream: "billing".into(),
            reason: "no healthy target",
            retry_after: 7,
        };
        // Wrapped by a layer that knows nothing of it, as a body or a library would.
        #[derive(Debug, thiserror::Error)]
        #[error("body failed")]
        struct Wrap(#[source] ProxyError);
        let wrapped = Wrap(inner);
        let r = answer(&wrapped, "rid", 2);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        assert_eq!(r.headers()["x-gatehouse-attempts"], "2");
        let p = r.extensions().get::<Problem>().unwrap();
        assert!(
            !p.detail.contains("billing"),
            "no upstream name for the client: {}",
            p.detail
        );
        assert!(p.log_text().contains("billing"), "the log has it");

        let r = answer(&ClientFault::TooLarge(10), "rid", 0);
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(r.headers().get("x-gatehouse-attempts").is_none());

        let r = answer(&std::io::Error::other("something else"), "rid", 0);
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
