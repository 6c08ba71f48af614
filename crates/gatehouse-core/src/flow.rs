//! The two outcomes of a request policy: carry on, or answer now.

use bytes::Bytes;

/// A response produced by the gateway itself (policy rejections, errors, fixed answers).
pub type LocalResponse = http::Response<Bytes>;

/// What a request policy decided.
#[derive(Debug)]
pub enum Flow {
    /// Run the next policy, then the route's action.
    Continue,
    /// Stop here and send this response; response policies still run on it.
    Respond(LocalResponse),
}
