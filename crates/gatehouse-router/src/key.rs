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

/// Route indexes in precedence order: each route ranked by its best host condition
/// (exact over wildcard over any), then by the keys above. This is the order in which
/// routes that all match a request are preferred.
pub fn precedence_order(routes: &[RouteMatch]) -> Vec<usize> {
    let mut keyed: Vec<(PrecedenceKey, usize)> = routes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let best = m
                .hosts
                .iter()
                .map(|h| match h.strip_prefix("*.") {
                    Some(suffix) => HostRank::Wildcard(suffix.len()),
                    None => HostRank::Exact,
                })
                .map(|rank| PrecedenceKey::new(m, i, rank))
                .min()
                .unwrap_or_else(|| PrecedenceKey::new(m, i, HostRank::Any));
            (best, i)
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// Pairs `(earlier, later)` of routes whose match blocks are identical: the later one can
/// never be selected, since the earlier wins every tie.
pub fn shadowed(routes: &[RouteMatch]) -> Vec<(usize, usize)> {
    let canonical = |m: &RouteMatch| {
        let mut hosts: Vec<String> = m.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        hosts.sort();
        hosts.dedup();
        let mut methods = m.methods.clone();
        methods.sort();
        methods.dedup();
        let path = m.path.as_ref().map(|p| match p.kind {
            PathKind::Prefix => (p.kind, crate::path::normalize_prefix(&p.value).to_string()),
            _ => (p.kind, p.value.clone()),
        });
        let path = path.unwrap_or((PathKind::Prefix, "/".into()));
        // Header names ignore case, query names do not.
        let fmt = |v: &[gatehouse_config::ValueMatch], fold: bool| {
            let mut v: Vec<String> = v
                .iter()
                .map(|c| {
                    let name = if fold {
                        c.name.to_ascii_lowercase()
                    } else {
                        c.name.clone()
                    };
                    format!("{:?}|{name}|{:?}", c.kind, c.value)
                })
                .collect();
            v.sort();
            v
        };
        (
            hosts,
            methods,
            path,
            fmt(&m.headers, true),
            fmt(&m.query, false),
        )
    };
    // One pass with the first route of each match block: linear in the route count, so
    // a 10,000-route config starts without a quadratic scan.
    let mut first = std::collections::HashMap::with_capacity(routes.len());
    let mut out = Vec::new();
    for (j, m) in routes.iter().enumerate() {
        match first.entry(canonical(m)) {
            std::collections::hash_map::Entry::Occupied(e) => out.push((*e.get(), j)),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(j);
            }
        }
    }
    out
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
