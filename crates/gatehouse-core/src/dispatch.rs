//! Requests a policy sends through the gateway on its own behalf, detached from the
//! request that asked: a cache refreshing a stale entry in the background after it
//! answered with it (stale-while-revalidate).

/// Sends bodiless requests through the gateway's pipeline, from routing on, in the
/// background; each one's response is read to its end and dropped. Set on the
/// connections clients open (`ctx.conn.dispatch`); requests sent this way run on a copy
/// of the connection without one, so they cannot send further ones.
pub trait Dispatch: Send + Sync + std::fmt::Debug {
    /// Sends `req` (its method, target, version, headers and extensions).
    fn dispatch(&self, req: http::request::Parts);
}
