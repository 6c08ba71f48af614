//! Route matching with Kubernetes Gateway API semantics and the precedence of
//! docs/routing.md. The table is compiled once per reload into per-host indexes (a hash
//! map for exact paths, segment tries for prefixes and templates, one RegexSet for
//! regexes), so a match never scans every route. Knows nothing about HTTP engines.

mod conditions;
mod index;
mod key;
pub mod normalize;
mod path;
mod router;

pub use conditions::RequestView;
pub use key::{HostRank, PrecedenceKey, precedence_order, shadowed};
pub use normalize::{EscapedSlashes, Normalization, PathError};
pub use router::{BuildError, Matched, Router};
