//! The three outcomes of a request policy: carry on, answer now, or wait for something
//! (a key set, an introspection call, a Redis round trip) and then decide.

use crate::{Problem, RequestCtx};
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;

/// A response produced by the gateway itself (policy rejections, errors, fixed answers).
pub type LocalResponse = http::Response<Bytes>;

/// What a waiting policy does once its wait is over: it gets the request and its context
/// back and decides (and may wait again, within the same timeout).
pub type Resume = Box<dyn FnOnce(&mut http::request::Parts, &mut RequestCtx) -> Flow + Send>;

/// A policy's pending wait: a future that owns what it needs (the request is not
/// borrowed across it) and ends in the decision to apply, or in a problem to answer.
pub struct Wait(Pin<Box<dyn Future<Output = Result<Resume, Problem>> + Send>>);

impl Wait {
    /// The future behind this wait, for the chain runner.
    pub fn into_future(self) -> Pin<Box<dyn Future<Output = Result<Resume, Problem>> + Send>> {
        self.0
    }
}

impl std::fmt::Debug for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wait")
    }
}

/// What a request policy decided.
#[derive(Debug)]
pub enum Flow {
    /// Run the next policy, then the route's action.
    Continue,
    /// Stop here and send this response; response policies still run on it. The chain
    /// runner records the policy's name, `reason` and the status for the access log and
    /// the metrics, so no policy can forget to.
    Respond {
        /// The answer.
        response: LocalResponse,
        /// Short machine-readable reason (`ip_denied`, `rate_limited`, ...).
        reason: &'static str,
    },
    /// Decide later: the chain runner awaits the future, bounded by the policy's
    /// `timeout`, then calls what it yields. Only this path allocates.
    Wait(Wait),
}

impl Flow {
    /// Answer now with `response`, for `reason`.
    pub fn respond(reason: &'static str, response: LocalResponse) -> Self {
        Self::Respond { response, reason }
    }

    /// Wait for `fut`, then apply the decision it yields. A failed wait answers with its
    /// problem (a policy picks the status; 503 is the usual one).
    pub fn wait<F>(fut: F) -> Self
    where
        F: Future<Output = Result<Resume, Problem>> + Send + 'static,
    {
        Self::Wait(Wait(Box::pin(fut)))
    }
}
