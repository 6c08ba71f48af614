//! The gateway's integration tests, one module per area, linked into one test binary:
//! each of them links the whole gateway, and ~40 separate binaries took ~40 links and
//! several GiB of disk for the same code. nextest still runs every test in a process
//! of its own, which the in-process gateways rely on (metrics and analytics are
//! process-wide), so run them with nextest (`scripts/test.sh` does); one area:
//! `cargo nextest run -E 'test(/^waf::/)'`.

mod support;

mod admin;
mod admin_access;
mod aggregate;
mod analytics;
mod cache;
mod client_faults;
mod cluster_limits;
mod compress;
mod dashboard;
mod demo;
mod error_bodies;
mod http_signature;
mod identity;
mod introspection;
mod json_schema;
mod jwt;
mod lifecycle;
mod limits;
mod metrics;
mod monitoring;
mod packaging;
mod paths;
mod platform;
mod protection;
mod protocols;
mod proxy;
mod quality;
mod quota;
mod request_heads;
mod resilience;
mod store;
mod tls;
mod top;
mod trace_context;
mod tracing;
mod transform;
mod versions;
mod waf;
mod waf_differential;
