//! The Gatehouse engine. The only crate that knows hyper: it compiles a config into a
//! [`snapshot::Snapshot`], serves listeners on one current_thread runtime per worker, and
//! runs each request through [`pipeline`] top to bottom: route, request policies, action,
//! response policies, finish.

pub mod aggregate;
pub mod api_versions;
pub mod attempts;
pub mod body;
pub mod chain;
pub mod client_rate;
pub mod client_table;
pub mod compile;
pub mod dispatch;
pub mod downstream;
pub mod error;
pub mod finish;
pub mod forward;
pub mod forwarded;
pub mod gateway;
pub mod head;
pub mod health_check;
pub mod housekeeping;
pub mod http2_guard;
pub mod linger;
pub mod listener;
pub mod listener_set;
pub mod outbound;
pub mod peer_connections;
pub mod pipeline;
pub mod pool;
pub mod protection;
pub mod reload;
pub mod route;
pub mod snapshot;
pub mod tls;
pub mod transport;
pub mod upgrade;
pub mod upstream_tls;

pub use gateway::Gateway;
pub use snapshot::Snapshot;
