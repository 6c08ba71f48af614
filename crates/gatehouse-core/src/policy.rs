//! The policy contract. Policies run in config order on the request, in reverse order on
//! the response (only those whose request phase ran; response encoders last), and
//! `on_complete` runs on every exit. docs/policies.md shows the phases and a worked example.

use crate::{BodyNeeds, Flow, Problem, RequestCtx};
use http::StatusCode;

/// One compiled policy instance; built once per reload, shared by all requests.
pub trait Policy: Send + Sync + std::fmt::Debug {
    /// The configured name of this policy, for logs and short-circuit records.
    fn name(&self) -> &str;

    /// Whether this policy establishes who the caller is (sets `ctx.consumer`). A route's
    /// authenticating policies act as one step, where the first of them is listed: any
    /// one of them may admit the request (`auth_mode: any`) or all must (`all`).
    fn authenticates(&self) -> bool {
        false
    }

    /// Whether its refusals are security blocks (authentication, authorization, address
    /// and attack filters) rather than traffic shaping: they count in the quality score's
    /// security penalty and in the Top-N attackers. Authenticating policies are.
    fn guards(&self) -> bool {
        self.authenticates()
    }

    /// Removes from the request what only this policy may vouch for (headers it sets
    /// from a verified credential), before a route's authenticating step decides: run
    /// for every authenticating policy, so a client cannot pass such a header through a
    /// route where another policy admits it first.
    fn scrub(&self, _req: &mut http::request::Parts) {}

    /// Whether its response phase may change the response's `Content-Encoding`
    /// (compression): such a phase runs after every other policy's, wherever the policy
    /// is listed, so the others read, edit and filter the body as the upstream sent it.
    fn encodes_response(&self) -> bool {
        false
    }

    /// What this policy needs of the bodies; read once, when a route's chain compiles.
    fn body_needs(&self) -> BodyNeeds {
        BodyNeeds::NONE
    }

    /// Whether this request's body must be read whole for this policy; asked, before the
    /// request phase, only of policies whose `body_needs` buffer the request. A policy
    /// that edits JSON says no to an upload of another type, which then streams (and
    /// is not bound by its `max`).
    fn buffers_request(&self, _req: &http::request::Parts) -> bool {
        true
    }

    /// Whether this response's body must be read whole for this policy; asked, once the
    /// head is known, only of policies that buffer the response and whose request phase
    /// ran. A policy that edits JSON says no to a video, which then streams.
    fn buffers_response(&self, _resp: &http::response::Parts, _ctx: &RequestCtx) -> bool {
        true
    }

    /// Request phase: inspect or edit the request head (and the buffered body in
    /// `ctx.bodies().request`, when declared); `Respond` ends the chain early, `Wait`
    /// decides after an asynchronous step.
    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow;

    /// Response phase: edit the response head (also applied to local responses), the
    /// buffered body in `ctx.bodies().response`, or attach a filter to `ctx.bodies().filters`.
    fn on_response(&self, _resp: &mut http::response::Parts, _ctx: &mut RequestCtx) {}

    /// Finish phase: always runs once the response is decided, whatever happened.
    fn on_complete(&self, _ctx: &RequestCtx) {}

    /// The answer when a wait of this policy outlives its `timeout`.
    fn on_wait_timeout(&self, waited: std::time::Duration) -> Problem {
        Problem::internal(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "policy {}: no decision within {} ms",
                self.name(),
                waited.as_millis()
            ),
        )
    }
}
