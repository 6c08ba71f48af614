//! The gateway's [`Dispatch`]: a request a policy sends on its own behalf runs through
//! the pipeline on a task of its own, on a copy of the client's connection that cannot
//! send further requests, and its response is read to the end (so the response phase's
//! filters, a cache's store among them, see all of it) and dropped.

use crate::pipeline::{self, ConnInfo, Inbound};
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use gatehouse_core::Dispatch;
use std::sync::Arc;

/// Sends requests through the gateway for the policies of one connection's requests.
#[derive(Debug)]
pub struct Dispatcher {
    live: Arc<ArcSwap<Snapshot>>,
    /// The connection, without a dispatcher of its own.
    info: Arc<ConnInfo>,
}

impl Dispatcher {
    /// `info` with a dispatcher set on its connection, sending through `live`.
    pub fn attach(live: &Arc<ArcSwap<Snapshot>>, info: ConnInfo) -> ConnInfo {
        let dispatcher = Arc::new(Self {
            live: Arc::clone(live),
            info: Arc::new(info.clone()),
        });
        let mut conn = (*info.conn).clone();
        conn.dispatch = Some(dispatcher);
        ConnInfo {
            conn: Arc::new(conn),
            ..info
        }
    }
}

impl Dispatch for Dispatcher {
    fn dispatch(&self, req: http::request::Parts) {
        let live = Arc::clone(&self.live);
        let info = Arc::clone(&self.info);
        tokio::spawn(async move {
            let req = http::Request::from_parts(req, Inbound::Internal);
            let resp = pipeline::handle_contained(&live, &info, req).await;
            use http_body_util::BodyExt;
            let _ = resp.into_body().collect().await;
        });
    }
}
