//! Config to snapshot: builds routers, policy chains, upstream state (carried over from
//! the previous snapshot by name) and the access-log sink. All parsing happens here.

use crate::route::{Action, CompiledRoute, Step};
use crate::snapshot::Snapshot;
use bytes::Bytes;
use gatehouse_config::load::Loaded;
use gatehouse_config::validate::Issue;
use gatehouse_config::{ConfigErrors, PathKind};
use gatehouse_core::{BodyNeeds, Fingerprint, Stage};
use gatehouse_observe::AccessLog;
use gatehouse_policies::cidr::CidrSet;
use gatehouse_router::Router;
use gatehouse_upstream::Registry;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::collections::HashMap;

/// What outlives every config: the policy kinds the gateway knows and the state
/// registry that keeps upstream, limiter and policy state across reloads by name.
#[derive(Debug, Default)]
pub struct Platform {
    /// Policy kinds by `type`.
    pub kinds: gatehouse_policies::Kinds,
    /// State kept across reloads.
    pub state: gatehouse_core::StateRegistry,
}

/// What a config does once it serves (its state committed; never for `validate`):
/// connects what it shares with other gateways (its Redis link), so the first requests
/// find the connection made, sizes the transactions kept for search, and starts the
/// traffic sampler.
pub fn on_serving(state: &gatehouse_core::StateRegistry, config: &gatehouse_config::Config) {
    // First: the tallies the traffic sampler starts reading are made with these bounds.
    if !gatehouse_observe::metrics::set_buckets(&config.metrics.buckets) {
        tracing::warn!("metrics.buckets changed: the new bounds apply after a restart");
    }
    let kept = if config.analytics.enabled {
        config.analytics.transactions
    } else {
        0
    };
    gatehouse_observe::transactions::set_capacity(kept);
    gatehouse_observe::stats::set_consumer_capacity(config.analytics.top_capacity);
    gatehouse_observe::top::set_capacity(config.analytics.top_capacity);
    gatehouse_observe::traffic::start();
    let (kind, name) = gatehouse_cluster::STATE;
    if let Some(opened) = state.get::<gatehouse_cluster::Opened>(kind, name)
        && let Ok(cluster) = &opened.0
    {
        cluster.start();
    }
}

/// Stages an in-memory store where `loaded` names a store file, so [`compile`] builds
/// everything that uses the store without creating or opening the file (`validate`).
pub fn stand_in_store(loaded: &Loaded, stage: &Stage<'_>) {
    if let Some(s) = &loaded.config.store {
        let (kind, name) = gatehouse_store::STATE;
        let path = loaded.dir().join(&s.path);
        stage.get_or_build(kind, name, Fingerprint::of(&path), |_| {
            gatehouse_store::Opened(
                gatehouse_store::Store::open(std::path::Path::new(":memory:"))
                    .map(std::sync::Arc::new),
            )
        });
    }
}

/// Compiles a loaded config, taking state from `stage` (committed by the caller once the
/// snapshot serves). `previous` lends the access-log sink when its target did not change.
pub fn compile(
    loaded: &Loaded,
    previous: Option<&Snapshot>,
    kinds: &gatehouse_policies::Kinds,
    stage: &Stage<'_>,
) -> Result<Snapshot, ConfigErrors> {
    let c = &loaded.config;
    let mut issues = Vec::new();

    let matches: Vec<_> = c.routes.iter().map(|r| r.matches.clone()).collect();
    let aliases = crate::api_versions::path_aliases(&c.routes);
    let router = match Router::build_with_aliases(&matches, &aliases) {
        Ok(r) => Some(r),
        Err(e) => {
            issues.push(Issue {
                path: format!("routes[{}].{}", e.route, e.field),
                message: e.message,
            });
            None
        }
    };
    // The store opens before the policies build, which use it when it is there.
    let base = loaded.dir();
    let store = c.store.as_ref().and_then(|s| {
        let (kind, name) = gatehouse_store::STATE;
        let path = base.join(&s.path);
        let opened = stage.get_or_build(kind, name, Fingerprint::of(&path), |_| {
            gatehouse_store::Opened(gatehouse_store::Store::open(&path).map(std::sync::Arc::new))
        });
        match &opened.0 {
            Ok(store) => Some(store.clone()),
            Err(e) => {
                issues.push(Issue {
                    path: "store.path".into(),
                    message: format!("cannot open the store: {e}"),
                });
                None
            }
        }
    });
    // So is the link to Redis, which cluster-scope limits use.
    if let Some(redis) = &c.cluster.redis {
        let opened = gatehouse_cluster::Cluster::staged(stage, redis, base);
        // It connects once the config serves (`on_serving`; `validate` never does).
        if let Err((field, message)) = &opened.0 {
            issues.push(Issue {
                path: format!("cluster.redis.{field}"),
                message: message.clone(),
            });
        }
    }
    let upstreams = Registry::build(&c.upstreams, stage);
    let mut policies = HashMap::new();
    for (name, cfg) in &c.policies {
        match kinds.build(name, cfg, c, base, stage) {
            Ok(p) => {
                let step = Step {
                    name: name.as_str().into(),
                    policy: p,
                    timeout: cfg.timeout.get(),
                };
                policies.insert(name.as_str(), step);
            }
            Err(found) => issues.extend(found),
        }
    }
    let mut issue = |path: String, message: String| issues.push(Issue { path, message });
    let trusted = CidrSet::build(&c.trusted_proxies, &c.ip_groups).unwrap_or_else(|e| {
        issue("trusted_proxies".into(), e);
        CidrSet::default()
    });
    let mut cidrs = |field: &str, list: &[String]| {
        CidrSet::build(list, &c.ip_groups).unwrap_or_else(|e| {
            issue(format!("protection.{field}"), e);
            CidrSet::default()
        })
    };
    let exempt = cidrs("exempt", &c.protection.exempt);
    let deny = cidrs("deny", &c.protection.deny);
    let protection = crate::protection::Protection::compile(&c.protection, exempt, deny, stage);

    let mut routes = Vec::with_capacity(c.routes.len());
    for (i, r) in c.routes.iter().enumerate() {
        let chain = chain_of(c, &r.policies, &[], &policies);
        let action = if let Some(v) = &r.versions {
            let mut list = Vec::new();
            for (name, a) in &v.available {
                let spec = ActionSpec {
                    upstream: a.upstream.as_deref(),
                    split: a.split.as_deref(),
                    split_fallback: a.split_fallback,
                    split_hash_on: a.split_hash_on.as_deref(),
                    redirect: a.redirect.as_ref(),
                    respond: a.respond.as_ref(),
                };
                let Some(action) = spec.compile(&upstreams) else {
                    issue(
                        format!("routes[{i}].versions.available.{name}"),
                        "version has no usable action".into(),
                    );
                    continue;
                };
                let chain = chain_of(c, &r.policies, &a.policies, &policies);
                let rewrite = a.rewrite.clone().or_else(|| r.rewrite.clone());
                let route = compiled_route(c, r, chain, action, rewrite);
                list.push(crate::api_versions::VersionRoute::new(name, a, route));
            }
            Action::Versions(Box::new(crate::api_versions::VersionTable::new(v, list)))
        } else if let Some(a) = &r.aggregate {
            let plan = crate::aggregate::AggregatePlan::new(a, |n| upstreams.get(n).cloned());
            let Some(plan) = plan else {
                issue(
                    format!("routes[{i}].aggregate"),
                    "a call names no usable upstream".into(),
                );
                continue;
            };
            Action::Aggregate(Box::new(plan))
        } else {
            let spec = ActionSpec {
                upstream: r.upstream.as_deref(),
                split: r.split.as_deref(),
                split_fallback: r.split_fallback,
                split_hash_on: r.split_hash_on.as_deref(),
                redirect: r.redirect.as_ref(),
                respond: r.respond.as_ref(),
            };
            let Some(action) = spec.compile(&upstreams) else {
                issue(format!("routes[{i}]"), "route has no usable action".into());
                continue;
            };
            action
        };
        routes.push(compiled_route(c, r, chain, action, r.rewrite.clone()));
    }

    let access_log = match previous {
        Some(p) if p.config.access_log.output == c.access_log.output => p.access_log.clone(),
        _ => AccessLog::open(&c.access_log.output).unwrap_or_else(|e| {
            issue(
                "access_log".into(),
                format!("cannot open {:?}: {e}", c.access_log.output),
            );
            AccessLog::off()
        }),
    };
    // TLS material is read on every compile, so a reload picks up renewed certificates.
    let mut tls = HashMap::new();
    for (i, l) in c.listeners.iter().enumerate() {
        let Some(t) = &l.tls else { continue };
        match crate::tls::server_tls(t, &l.protocols, base) {
            Ok(server) => {
                tls.insert(l.name.clone(), server);
            }
            Err(e) => issue(format!("listeners[{i}].tls.{}", e.field), e.message),
        }
    }
    let mut admin_tls = None;
    if let Some(admin) = &c.admin {
        if let Some(allow) = &admin.allow
            && let Err(e) = CidrSet::build(allow, &c.ip_groups)
        {
            issue("admin.allow".into(), e);
        }
        if let Some(t) = &admin.tls {
            let as_listener = gatehouse_config::ListenerTls {
                certificates: vec![gatehouse_config::CertificateFiles {
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                    ocsp: None,
                }],
                min_version: gatehouse_config::TlsVersion::default(),
                client_auth: t.client_auth.clone(),
            };
            let http1 = [gatehouse_config::Protocol::Http1];
            match crate::tls::server_tls(&as_listener, &http1, base) {
                Ok(server) => admin_tls = Some(server),
                Err(e) => {
                    let field = e.field.replace("certificates[0].", "");
                    issue(format!("admin.tls.{field}"), e.message);
                }
            }
        }
    }
    let mut upstream_tls = HashMap::new();
    for (name, up) in &c.upstreams {
        match crate::upstream_tls::client_tls(up, base) {
            Ok(Some(t)) => {
                upstream_tls.insert(name.clone(), std::sync::Arc::new(t));
            }
            Ok(None) => {}
            Err(e) => issue(format!("upstreams.{name}.tls.{}", e.field), e.message),
        }
    }
    if !issues.is_empty() {
        return Err(loaded.errors(issues));
    }
    Ok(Snapshot {
        store,
        tls,
        admin_tls,
        upstream_tls,
        config: c.clone(),
        source: loaded.text().to_string(),
        router: router.unwrap_or_default(),
        precedence: gatehouse_router::precedence_order(&matches),
        routes,
        upstreams,
        trusted_proxies: trusted,
        protection,
        access_log,
        log_sampling: gatehouse_observe::sampling::Sampling::of(&c.access_log),
        // The same tracing block keeps its exporter (and its queue) across reloads.
        tracer: c
            .tracing
            .as_ref()
            .map(|t| match previous.and_then(|p| p.tracer.as_ref()) {
                Some(old) if old.config() == t => std::sync::Arc::clone(old),
                _ => gatehouse_observe::spans::Tracer::new(t),
            }),
        problem_style: gatehouse_core::ProblemStyle {
            verbose: c.errors.verbose,
            type_base: c.errors.type_base.clone(),
        },
        generation: previous.map(|p| p.generation + 1).unwrap_or(1),
    })
}

/// What is valid but almost certainly a mistake: a route that can never be selected
/// because an earlier route has the identical match block.
pub fn warnings(loaded: &Loaded) -> Vec<gatehouse_config::ConfigError> {
    let routes = &loaded.config.routes;
    let matches: Vec<_> = routes.iter().map(|r| r.matches.clone()).collect();
    gatehouse_router::shadowed(&matches)
        .into_iter()
        .map(|(first, later)| {
            let path = if loaded.locations().find_key(&format!("routes[{later}].match")).is_some() {
                format!("routes[{later}].match")
            } else {
                format!("routes[{later}]")
            };
            loaded.error(
                &path,
                format!(
                    "route {:?} is never selected: route {:?} (routes[{first}]) has the same match and comes first",
                    routes[later].name, routes[first].name
                ),
            )
        })
        .collect()
}

/// default_policies, then a route's own, then (for an API version) the version's.
fn chain_of(
    c: &gatehouse_config::Config,
    route: &[String],
    version: &[String],
    policies: &HashMap<&str, Step>,
) -> Vec<Step> {
    c.default_policies
        .iter()
        .chain(route)
        .chain(version)
        .filter_map(|n| policies.get(n.as_str()).cloned())
        .collect()
}

/// The action fields of a route or of an API version.
struct ActionSpec<'a> {
    upstream: Option<&'a str>,
    split: Option<&'a [gatehouse_config::SplitEntry]>,
    split_fallback: bool,
    split_hash_on: Option<&'a str>,
    redirect: Option<&'a gatehouse_config::Redirect>,
    respond: Option<&'a gatehouse_config::Respond>,
}

impl ActionSpec<'_> {
    /// The compiled action, or `None` when none is usable (validation said why).
    fn compile(&self, upstreams: &Registry) -> Option<Action> {
        let up = |n: &str| upstreams.get(n).cloned();
        if let Some(u) = self.upstream.and_then(up) {
            return Some(Action::Upstream(u));
        }
        if let Some(split) = self.split {
            let branches: Vec<_> = split
                .iter()
                .filter(|s| s.weight > 0)
                .filter_map(|s| up(&s.upstream).map(|u| (u, s.weight)))
                .collect();
            let total = branches.iter().map(|b| b.1).sum();
            let hash_on = self
                .split_hash_on
                .and_then(|h| gatehouse_config::validate::parse_hash_on(h).ok());
            return Some(Action::Split(crate::route::Split {
                branches,
                total,
                fallback: self.split_fallback,
                hash_on,
            }));
        }
        if let Some(rd) = self.redirect {
            return Some(Action::Redirect(rd.clone()));
        }
        let rs = self.respond?;
        let mut headers = HeaderMap::new();
        for (k, v) in &rs.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.insert(k, v);
            }
        }
        Some(Action::Respond {
            status: StatusCode::from_u16(rs.status).unwrap_or(StatusCode::OK),
            headers,
            body: Bytes::from(rs.body.clone()),
        })
    }
}

/// Route `r` of `c` with this chain, action and rewrite.
fn compiled_route(
    c: &gatehouse_config::Config,
    r: &gatehouse_config::Route,
    chain: Vec<Step>,
    action: Action,
    rewrite: Option<gatehouse_config::Rewrite>,
) -> CompiledRoute {
    let needs = chain
        .iter()
        .fold(BodyNeeds::NONE, |n, s| n.fold(s.policy.body_needs()));
    let prefix = r
        .matches
        .path
        .as_ref()
        .filter(|p| p.kind == PathKind::Prefix)
        .map(|p| p.value.clone());
    CompiledRoute {
        name: r.name.as_str().into(),
        policies: chain,
        auth_mode: r.auth_mode,
        needs,
        rewrite,
        prefix,
        max_body_size: r.max_body_size.map(|s| s.0),
        action,
        upgrades: r
            .upgrades
            .iter()
            .map(|u| u.to_ascii_lowercase().into_boxed_str())
            .collect(),
        allows_trace: r.matches.methods.iter().any(|m| m == "TRACE"),
        latency_target: r
            .analytics
            .latency_target
            .unwrap_or(c.analytics.latency_target)
            .get(),
        default_host: r
            .matches
            .hosts
            .iter()
            .find(|h| !h.starts_with("*."))
            .and_then(|h| HeaderValue::from_str(h).ok()),
    }
}
