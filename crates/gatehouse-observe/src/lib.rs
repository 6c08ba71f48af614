//! Observability: the JSON access log (one line per request, written off the request
//! path by a writer thread), metrics (per-worker counters, Prometheus exposition) and
//! process log setup (tracing to stderr, text or JSON), and the last requests kept for
//! search (transactions).

pub mod access_log;
pub mod device;
pub mod logging;
pub mod metrics;
pub mod otlp;
pub mod phases;
pub mod sampling;
pub mod space_saving;
pub mod spans;
pub mod stats;
pub mod top;
pub mod traffic;
pub mod transactions;

pub use access_log::{AccessLog, AccessRecord};
