//! Observability: the JSON access log (one line per request, written off the request
//! path by a writer thread) and process log setup (tracing to stderr, text or JSON).

pub mod access_log;
pub mod logging;

pub use access_log::{AccessLog, AccessRecord};
