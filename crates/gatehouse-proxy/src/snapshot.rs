//! The snapshot: everything compiled from one config. Immutable; a request holds one
//! for its whole life, so a reload never changes a request mid-flight.

use crate::route::CompiledRoute;
use gatehouse_config::Config;
use gatehouse_observe::AccessLog;
use gatehouse_policies::cidr::CidrSet;
use gatehouse_router::Router;
use gatehouse_upstream::Registry;

/// A compiled config.
#[derive(Debug)]
pub struct Snapshot {
    /// The config it came from.
    pub config: Config,
    /// Its text after interpolation, for `GET /admin/config`.
    pub source: String,
    /// Route table.
    pub router: Router,
    /// Routes, in config order (the router yields indexes into this).
    pub routes: Vec<CompiledRoute>,
    /// Route indexes in precedence order (docs/routing.md), for the admin API.
    pub precedence: Vec<usize>,
    /// Upstream state by name.
    pub upstreams: Registry,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: CidrSet,
    /// `protection`: exempt and denied addresses, bans and the client table.
    pub protection: crate::protection::Protection,
    /// Access-log sink.
    pub access_log: AccessLog,
    /// Which requests the access log writes.
    pub log_sampling: gatehouse_observe::sampling::Sampling,
    /// Span export (`tracing`), when configured.
    pub tracer: Option<std::sync::Arc<gatehouse_observe::spans::Tracer>>,
    /// How problem bodies are rendered.
    pub problem_style: gatehouse_core::ProblemStyle,
    /// TLS of each upstream that speaks it, by upstream name.
    pub upstream_tls:
        std::collections::HashMap<String, std::sync::Arc<crate::upstream_tls::ClientTls>>,
    /// The open store (`store.path`), when the config has one.
    pub store: Option<std::sync::Arc<gatehouse_store::Store>>,
    /// TLS of the admin listener, when it has some.
    pub admin_tls: Option<crate::tls::ServerTls>,
    /// TLS of each TLS listener, by listener name.
    pub tls: std::collections::HashMap<String, crate::tls::ServerTls>,
    /// Snapshot generation, bumped by every successful reload.
    pub generation: u64,
}
