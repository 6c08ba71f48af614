//! The precedence order between routes that all match a request (smaller wins).

use gatehouse_config::{PathKind, RouteMatch};
use std::cmp::Reverse;

/// Precedence of one route in one host index; the derived order is the precedence order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PrecedenceKey {
    path_rank: u8,
    path_len: Reverse<usize>,
    host_rank: u8,
    host_len: Reverse<usize>,
    headers: Reverse<usize>,
    query: Reverse<usize>,
    any_method: bool,
    order: usize,
}

/// How the host condition of a route matched: exact name, wildcard suffix, or any host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRank {
    /// `api.example.com`.
    Exact,
    /// `*.example.org`, with the suffix length.
    Wildcard(usize),
    /// No host condition.
    Any,
}

impl PrecedenceKey {
    /// The key of route number `order` (file order) when matched through `host`.
    pub fn new(m: &RouteMatch, order: usize, host: HostRank) -> Self {
        let (path_rank, path_len) = match &m.path {
            None => (2, 1),
            Some(p) => match p.kind {
                PathKind::Exact => (0, p.value.len()),
                PathKind::Template => (1, p.value.len()),
                PathKind::Prefix => (2, crate::path::normalize_prefix(&p.value).len()),
                PathKind::Regex => (3, p.value.len()),
            },
        };
        let (host_rank, host_len) = match host {
            HostRank::Exact => (0, 0),
            HostRank::Wildcard(n) => (1, n),
            HostRank::Any => (2, 0),
        };
        Self {
            path_rank,
            path_len: Reverse(path_len),
            host_rank,
            host_len: Reverse(host_len),
            headers: Reverse(m.headers.len()),
            query: Reverse(m.query.len()),
            any_method: m.methods.is_empty(),
            order,
        }
    }
}
