//! The policy contract. Policies run in config order on the request, in reverse order on
//! the response (only those whose request phase ran), and `on_complete` runs on every exit.

use crate::{Flow, RequestCtx};

/// One compiled policy instance; built once per reload, shared by all requests.
pub trait Policy: Send + Sync + std::fmt::Debug {
    /// The configured name of this policy, for logs and short-circuit records.
    fn name(&self) -> &str;

    /// Request phase: inspect or edit the request head; `Respond` ends the chain early.
    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow;

    /// Response phase: edit the response head (also applied to local responses).
    fn on_response(&self, _resp: &mut http::response::Parts, _ctx: &mut RequestCtx) {}

    /// Finish phase: always runs once the response is decided, whatever happened.
    fn on_complete(&self, _ctx: &RequestCtx) {}
}
