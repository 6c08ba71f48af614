//! The compiled route table: host buckets over path indexes, and the match entry point.

use crate::conditions::{Conditions, RequestView};
use crate::index::{Candidate, Entry, PathIndex};
use crate::key::{HostRank, PrecedenceKey};
use crate::path::parse_template;
use gatehouse_config::{PathKind, RouteMatch};
use std::collections::HashMap;

/// A route that matched, with its captured path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// Index of the route in the list given to [`Router::build`].
    pub route: usize,
    /// Template or named-regex captures.
    pub params: Vec<(String, String)>,
}

/// A route whose match block cannot be compiled.
#[derive(Debug, Clone, thiserror::Error)]
#[error("routes[{route}].{field}: {message}")]
pub struct BuildError {
    /// Route index.
    pub route: usize,
    /// Field under the route, such as `match.path.value`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// The compiled routing table.
#[derive(Debug, Default)]
pub struct Router {
    exact_hosts: HashMap<Box<str>, PathIndex>,
    /// Keyed by the suffix after `*.`.
    wildcard_hosts: HashMap<Box<str>, PathIndex>,
    any_host: PathIndex,
    conditions: Vec<Conditions>,
    has_wildcards: bool,
}

impl Router {
    /// Compiles the match blocks of `routes` (in file order).
    pub fn build(routes: &[RouteMatch]) -> Result<Self, BuildError> {
        Self::build_with_aliases(routes, &[])
    }

    /// Compiles `routes` plus `aliases`: further match blocks for a route (its index,
    /// another path, the same other conditions), as an API version's `/v1/...` path.
    /// An alias ranks as a route listed after all of them.
    pub fn build_with_aliases(
        routes: &[RouteMatch],
        aliases: &[(usize, RouteMatch)],
    ) -> Result<Self, BuildError> {
        let mut r = Router::default();
        let all = routes.iter().enumerate().map(|(i, m)| (i, i, m)).chain(
            aliases
                .iter()
                .enumerate()
                .map(|(k, (i, m))| (routes.len() + k, *i, m)),
        );
        for (order, i, m) in all {
            let err = |field: &str, message: String| BuildError {
                route: i,
                field: field.to_string(),
                message,
            };
            if order == i {
                r.conditions
                    .push(Conditions::build(m).map_err(|e| err("match", e))?);
            }
            let template = match &m.path {
                Some(p) if p.kind == PathKind::Template => {
                    Some(parse_template(&p.value).map_err(|e| err("match.path.value", e))?)
                }
                _ => None,
            };
            // Collect bucket keys first: the borrow checker cannot hand out two map slots at once.
            let mut exact = Vec::new();
            let mut wild = Vec::new();
            for h in &m.hosts {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix("*.") {
                    Some(suffix) => wild.push(suffix.to_string()),
                    None => exact.push(h),
                }
            }
            exact.sort();
            exact.dedup();
            wild.sort();
            wild.dedup();
            r.has_wildcards |= !wild.is_empty();
            let mut targets: Vec<(Box<str>, bool)> = exact
                .into_iter()
                .map(|h| (h.into_boxed_str(), false))
                .chain(wild.into_iter().map(|h| (h.into_boxed_str(), true)))
                .collect();
            for (host, is_wild) in targets.drain(..) {
                let len = host.len();
                let (map, rank) = if is_wild {
                    (&mut r.wildcard_hosts, HostRank::Wildcard(len))
                } else {
                    (&mut r.exact_hosts, HostRank::Exact)
                };
                let idx = map.entry(host).or_default();
                add(
                    idx,
                    m,
                    template.as_deref(),
                    Entry {
                        key: PrecedenceKey::new(m, order, rank),
                        route: i,
                    },
                );
            }
            if m.hosts.is_empty() {
                add(
                    &mut r.any_host,
                    m,
                    template.as_deref(),
                    Entry {
                        key: PrecedenceKey::new(m, order, HostRank::Any),
                        route: i,
                    },
                );
            }
        }
        let fin = |i: &mut PathIndex| {
            i.finish().map_err(|e| BuildError {
                route: 0,
                field: "match.path.value".into(),
                message: format!("invalid regex: {e}"),
            })
        };
        r.exact_hosts.values_mut().try_for_each(fin)?;
        r.wildcard_hosts.values_mut().try_for_each(fin)?;
        fin(&mut r.any_host)?;
        Ok(r)
    }

    /// The best route for the request, or `None` (a 404).
    pub fn match_route(&self, req: &RequestView<'_>) -> Option<Matched> {
        let accept = |route: usize| self.conditions.get(route).is_some_and(|c| c.is_match(req));
        let mut best: Option<Candidate> = None;
        let mut consider = |c: Option<Candidate>| {
            if let Some(c) = c
                && best.as_ref().is_none_or(|b| c.entry.key < b.entry.key)
            {
                best = Some(c);
            }
        };
        if !self.exact_hosts.is_empty()
            && let Some(idx) = self.exact_hosts.get(req.host)
        {
            consider(idx.lookup(req.path, &accept));
        }
        if self.has_wildcards {
            // `*.example.org` matches one or more labels before the suffix.
            let mut rest = req.host;
            while let Some((_, suffix)) = rest.split_once('.') {
                if let Some(idx) = self.wildcard_hosts.get(suffix) {
                    consider(idx.lookup(req.path, &accept));
                }
                rest = suffix;
            }
        }
        consider(self.any_host.lookup(req.path, &accept));
        best.map(|c| Matched {
            route: c.entry.route,
            params: c.params,
        })
    }
}

fn add(
    idx: &mut PathIndex,
    m: &RouteMatch,
    template: Option<&[crate::path::TemplateSegment]>,
    e: Entry,
) {
    match &m.path {
        None => idx.add_prefix("/", e),
        Some(p) => match p.kind {
            PathKind::Exact => idx.add_exact(&p.value, e),
            PathKind::Prefix => idx.add_prefix(&p.value, e),
            PathKind::Regex => idx.add_regex(&p.value, e),
            PathKind::Template => idx.add_template(template.unwrap_or_default(), e),
        },
    }
}
