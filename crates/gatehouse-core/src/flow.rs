//! The two outcomes of a request policy: carry on, or answer now.

use bytes::Bytes;

/// A response produced by the gateway itself (policy rejections, errors, fixed answers).
pub type LocalResponse = http::Response<Bytes>;

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
}

impl Flow {
    /// Answer now with `response`, for `reason`.
    pub fn respond(reason: &'static str, response: LocalResponse) -> Self {
        Self::Respond { response, reason }
    }
}
