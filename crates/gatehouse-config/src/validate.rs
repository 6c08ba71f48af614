//! Semantic validation: references, duplicates, syntax of CIDRs, regexes, header names,
//! and conflicting actions. Returns every issue found, not just the first.

use crate::schema::*;
use std::collections::HashSet;
use std::net::SocketAddr;

/// One semantic problem at a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Field path such as `routes[2].upstream`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Issues found so far.
pub(crate) struct Issues(Vec<Issue>);

impl Issues {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Issue {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Validates everything that can be checked without building runtime structures.
pub fn validate(c: &Config) -> Vec<Issue> {
    let mut out = Issues(Vec::new());
    listeners(c, &mut out);
    if let Some(base) = &c.errors.type_base
        && !(base.starts_with("https://") || base.starts_with("http://"))
    {
        out.push(
            "errors.type_base",
            format!("invalid URL {base:?}: expected an absolute http(s) URL such as https://errors.example.com/problems"),
        );
    }
    if let Some(admin) = &c.admin {
        admin_access(admin, &mut out);
    }
    consumers(&c.consumers, &mut out);
    if let Some(admin) = &c.admin
        && admin.address.parse::<SocketAddr>().is_err()
    {
        out.push(
            "admin.address",
            format!("invalid address {:?}: expected ip:port", admin.address),
        );
    }
    for (name, cidrs) in &c.ip_groups {
        for (i, cidr) in cidrs.iter().enumerate() {
            if parse_cidr(cidr).is_none() {
                out.push(
                    format!("ip_groups.{name}[{i}]"),
                    format!("invalid CIDR or IP {cidr:?}"),
                );
            }
        }
    }
    for (field, list) in [
        ("protection.exempt", &c.protection.exempt),
        ("protection.deny", &c.protection.deny),
    ] {
        for (i, entry) in list.iter().enumerate() {
            check_cidr_or_group(c, entry, &format!("{field}[{i}]"), &mut out);
        }
    }
    protection(&c.protection, &mut out);
    for (i, entry) in c.trusted_proxies.iter().enumerate() {
        check_cidr_or_group(c, entry, &format!("trusted_proxies[{i}]"), &mut out);
    }
    for (name, up) in &c.upstreams {
        upstream(name, up, &mut out);
    }
    for (i, name) in c.default_policies.iter().enumerate() {
        if !c.policies.contains_key(name) {
            out.push(
                format!("default_policies[{i}]"),
                format!("no policy named {name:?}"),
            );
        }
    }
    let mut route_names = HashSet::new();
    for (i, r) in c.routes.iter().enumerate() {
        if !route_names.insert(r.name.as_str()) {
            out.push(
                format!("routes[{i}].name"),
                format!("duplicate route name {:?}", r.name),
            );
        }
        route(c, i, r, &mut out);
    }
    if c.access_log.output.trim().is_empty() {
        out.push("access_log", "must be stdout, stderr, off or a file path");
    }
    let b = &c.metrics.buckets;
    if b.is_empty() || b.len() > 30 {
        out.push("metrics.buckets", "give 1 to 30 bounds");
    } else if b.iter().any(|x| !x.is_finite() || *x <= 0.0) || b.windows(2).any(|w| w[0] >= w[1]) {
        out.push(
            "metrics.buckets",
            "bounds must be positive seconds in ascending order",
        );
    }
    if !(0.0..=1.0).contains(&c.access_log.sample) {
        out.push("access_log.sample", "must be between 0 and 1");
    }
    if c.metrics.consumers.max == 0 {
        out.push("metrics.consumers.max", "must be at least 1");
    }
    if c.analytics.latency_target.get().is_zero() {
        out.push("analytics.latency_target", "must be more than 0s");
    }
    if c.analytics.top_capacity == 0 || c.analytics.top_capacity > 100_000 {
        out.push("analytics.top_capacity", "must be 1 to 100000");
    }
    if let Some(t) = &c.tracing {
        tracing(t, &mut out);
    }
    out.0
}

/// The `tracing` block: a collector URL the exporter can reach, a ratio, a sane queue.
fn tracing(t: &crate::observability::TracingConfig, out: &mut Issues) {
    let e = t.otlp.endpoint.trim();
    let scheme_ok = e.starts_with("http://") || e.starts_with("https://");
    if !scheme_ok || e.parse::<http::Uri>().map_or(true, |u| u.host().is_none()) {
        out.push(
            "tracing.otlp.endpoint",
            "must be an http:// or https:// URL, e.g. http://127.0.0.1:4318/v1/traces",
        );
    }
    for (name, value) in &t.otlp.headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || http::HeaderValue::from_str(value).is_err()
        {
            out.push(
                format!("tracing.otlp.headers.{name}"),
                "must be a valid header name and value",
            );
        }
    }
    if t.otlp.timeout.get().is_zero() {
        out.push("tracing.otlp.timeout", "must be more than 0s");
    }
    if t.service_name.trim().is_empty() {
        out.push("tracing.service_name", "must not be empty");
    }
    if !(0.0..=1.0).contains(&t.sampling.ratio) {
        out.push("tracing.sampling.ratio", "must be between 0 and 1");
    }
    let b = &t.batch;
    if b.max_queue == 0 || b.max_queue > 1_000_000 {
        out.push("tracing.batch.max_queue", "must be 1 to 1000000");
    }
    if b.max_batch == 0 || b.max_batch > b.max_queue {
        out.push(
            "tracing.batch.max_batch",
            "must be at least 1 and at most max_queue",
        );
    }
    if b.interval.get().is_zero() {
        out.push("tracing.batch.interval", "must be more than 0s");
    }
}

/// Two sockets of one config that the kernel would not let both bind: the same port on
/// the same address, or on any address when one of them is the wildcard.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn listeners(c: &Config, out: &mut Issues) {
    let mut names = HashSet::new();
    let mut taken: Vec<(SocketAddr, String)> = Vec::new();
    if let Some(a) = &c.admin
        && let Ok(addr) = a.address.parse::<SocketAddr>()
    {
        taken.push((addr, "the admin API".into()));
    }
    for (i, l) in c.listeners.iter().enumerate() {
        if l.name.is_empty() {
            out.push(format!("listeners[{i}].name"), "must not be empty");
        } else if !names.insert(l.name.as_str()) {
            out.push(
                format!("listeners[{i}].name"),
                format!("duplicate listener name {:?}", l.name),
            );
        }
        match l.address.parse::<SocketAddr>() {
            Ok(a) => {
                if let Some((_, who)) = taken.iter().find(|(b, _)| overlaps(a, *b)) {
                    out.push(
                        format!("listeners[{i}].address"),
                        format!("address {a} is also used by {who}"),
                    );
                }
                taken.push((a, format!("listener {:?}", l.name)));
            }
            Err(_) => out.push(
                format!("listeners[{i}].address"),
                format!(
                    "invalid address {:?}: expected ip:port such as 127.0.0.1:8080",
                    l.address
                ),
            ),
        }
        if l.protocols.is_empty() {
            out.push(format!("listeners[{i}].protocols"), "must not be empty");
        }
        if l.max_header_size.0 < 1024 {
            out.push(
                format!("listeners[{i}].max_header_size"),
                "must be at least 1KiB",
            );
        }
        for (field, zero) in [
            ("max_connections", l.max_connections == 0),
            (
                "max_connections_per_ip",
                l.max_connections_per_ip == Some(0),
            ),
            ("max_header_count", l.max_header_count == 0),
            (
                "request_rate_per_ip.limit",
                l.request_rate_per_ip.as_ref().is_some_and(|r| r.limit == 0),
            ),
            (
                "request_rate_per_ip.burst",
                l.request_rate_per_ip
                    .as_ref()
                    .is_some_and(|r| r.burst == Some(0)),
            ),
            (
                "http2_max_concurrent_streams",
                l.http2_max_concurrent_streams == 0,
            ),
            ("http2_max_resets.limit", l.http2_max_resets.limit == 0),
        ] {
            if zero {
                out.push(format!("listeners[{i}].{field}"), "must be at least 1");
            }
        }
        if l.body_read_timeout.get().is_zero() {
            out.push(
                format!("listeners[{i}].body_read_timeout"),
                "must be longer than 0s",
            );
        }
        if l.min_body_rate.is_some_and(|r| r.0 == 0) {
            out.push(
                format!("listeners[{i}].min_body_rate"),
                "must be at least 1 byte",
            );
        }
        if l.http2_max_resets.per.get().is_zero() {
            out.push(
                format!("listeners[{i}].http2_max_resets.per"),
                "must be longer than 0s",
            );
        }
        if l.request_rate_per_ip
            .as_ref()
            .is_some_and(|r| r.per.get().is_zero())
        {
            out.push(
                format!("listeners[{i}].request_rate_per_ip.per"),
                "must be longer than 0s",
            );
        }
        if let Some(tls) = &l.tls {
            if tls.certificates.is_empty() {
                out.push(
                    format!("listeners[{i}].tls.certificates"),
                    "must list at least one certificate",
                );
            }
            if tls.client_auth.mode != crate::schema::ClientAuthMode::None
                && tls.client_auth.ca.is_none()
            {
                out.push(
                    format!("listeners[{i}].tls.client_auth.ca"),
                    "is required when mode is optional or required",
                );
            }
        }
    }
}

fn upstream(name: &str, up: &Upstream, out: &mut Issues) {
    let base = format!("upstreams.{name}");
    if up.targets.is_empty() {
        out.push(
            format!("{base}.targets"),
            "an upstream needs at least one target",
        );
    }
    for (i, t) in up.targets.iter().enumerate() {
        if let Err(msg) = parse_target(&t.address) {
            out.push(format!("{base}.targets[{i}].address"), msg);
        } else if up.uses_tls() && t.address.starts_with("http://") {
            out.push(
                format!("{base}.targets[{i}].address"),
                format!(
                    "{:?}: this upstream speaks TLS (a `tls` block or an https:// target), so no target may say http://",
                    t.address
                ),
            );
        }
    }
    if let Some(tls) = &up.tls
        && tls.cert.is_some() != tls.key.is_some()
    {
        let missing = if tls.cert.is_some() { "key" } else { "cert" };
        out.push(
            format!("{base}.tls.{missing}"),
            "cert and key go together: give both or neither",
        );
    }
    if !up.targets.is_empty() && up.targets.iter().all(|t| t.weight == 0) {
        out.push(
            format!("{base}.targets"),
            "at least one target needs a weight above 0",
        );
    }
    match (&up.balancer, &up.hash_on) {
        (BalancerKind::ConsistentHash, None) => out.push(
            format!("{base}.hash_on"),
            "consistent_hash needs hash_on (ip | header:NAME | cookie:NAME | query:NAME | path)",
        ),
        (_, Some(h)) => {
            if let Err(msg) = parse_hash_on(h) {
                out.push(format!("{base}.hash_on"), msg);
            }
        }
        _ => {}
    }
    if up.balancer == BalancerKind::Sticky && !is_token(&up.sticky.cookie) {
        out.push(format!("{base}.sticky.cookie"), "invalid cookie name");
    }
    if up.timeouts.connect.get().is_zero() || up.timeouts.request.get().is_zero() {
        out.push(format!("{base}.timeouts"), "timeouts must be above zero");
    }
    for (path, message) in crate::resilience::check(
        &base,
        &up.health_check,
        up.retries.as_ref(),
        up.circuit_breaker.as_ref(),
    ) {
        out.push(path, message);
    }
}

/// A target address split into host and port (schemes `http://` and `https://` accepted
/// and dropped; whether an upstream speaks TLS is [`Upstream::uses_tls`]).
pub fn parse_target(address: &str) -> Result<(String, u16), String> {
    let rest = if let Some(r) = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
    {
        r
    } else if address.contains("://") {
        return Err(format!(
            "{address:?}: unsupported scheme (use http://, https:// or host:port)"
        ));
    } else {
        address
    };
    let rest = rest.trim_end_matches('/');
    if let Ok(sa) = rest.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{address:?}: expected host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{address:?}: invalid port {port:?}"))?;
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    {
        return Err(format!("{address:?}: invalid host name {host:?}"));
    }
    Ok((host.to_string(), port))
}

/// A parsed `hash_on` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// Client IP.
    Ip,
    /// A request header.
    Header(String),
    /// A cookie.
    Cookie(String),
    /// A query parameter.
    Query(String),
    /// The request path.
    Path,
}

/// Parses `ip | header:NAME | cookie:NAME | query:NAME | path`.
pub fn parse_hash_on(s: &str) -> Result<HashOn, String> {
    let bad = || {
        format!(
            "invalid hash_on {s:?}: expected ip | header:NAME | cookie:NAME | query:NAME | path"
        )
    };
    match s.split_once(':') {
        None if s == "ip" => Ok(HashOn::Ip),
        None if s == "path" => Ok(HashOn::Path),
        Some(("header", n)) if http::HeaderName::from_bytes(n.as_bytes()).is_ok() => {
            Ok(HashOn::Header(n.to_ascii_lowercase()))
        }
        Some(("cookie", n)) if is_token(n) => Ok(HashOn::Cookie(n.to_string())),
        Some(("query", n)) if !n.is_empty() => Ok(HashOn::Query(n.to_string())),
        _ => Err(bad()),
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses a CIDR or a bare IP (as a /32 or /128).
pub fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

fn check_cidr_or_group(c: &Config, entry: &str, path: &str, out: &mut Issues) {
    if parse_cidr(entry).is_none() && !c.ip_groups.contains_key(entry) {
        out.push(
            path,
            format!("{entry:?} is neither a CIDR, an IP nor an ip_groups name"),
        );
    }
}

fn route(c: &Config, i: usize, r: &Route, out: &mut Issues) {
    let base = format!("routes[{i}]");
    if r.name.is_empty() {
        out.push(format!("{base}.name"), "must not be empty");
    }
    if r.analytics
        .latency_target
        .is_some_and(|t| t.get().is_zero())
    {
        out.push(
            format!("{base}.analytics.latency_target"),
            "must be more than 0s",
        );
    }
    action(
        c,
        &base,
        ActionFields {
            upstream: &r.upstream,
            split: &r.split,
            split_hash_on: &r.split_hash_on,
            redirect: &r.redirect,
            respond: &r.respond,
            versions: Some(r.versions.is_some()),
            aggregate: r.aggregate.is_some(),
        },
        out,
    );
    if let Some(v) = &r.versions {
        crate::versions::check(c, &base, r, v, out);
    }
    if let Some(a) = &r.aggregate {
        crate::aggregate::check(c, &base, r, a, out);
    }
    for (j, p) in r.policies.iter().enumerate() {
        if !c.policies.contains_key(p) {
            out.push(
                format!("{base}.policies[{j}]"),
                format!("no policy named {p:?}"),
            );
        }
    }
    route_match(&base, &r.matches, out);
    for (j, u) in r.upgrades.iter().enumerate() {
        let p = format!("{base}.upgrades[{j}]");
        if u.eq_ignore_ascii_case("h2c") {
            out.push(
                p,
                "h2c upgrades are never forwarded: after the switch the client's next requests would bypass routing",
            );
        } else if !is_token(u) {
            out.push(p, format!("invalid upgrade protocol {u:?}"));
        }
    }
    if let Some(rw) = &r.rewrite {
        rewrite(&format!("{base}.rewrite"), rw, &r.matches, out);
    }
}

/// Checks a path rewrite at `base` for a route matching `m`.
pub(crate) fn rewrite(base: &str, rw: &crate::schema::Rewrite, m: &RouteMatch, out: &mut Issues) {
    let set = [&rw.strip_prefix, &rw.replace_prefix, &rw.replace_path]
        .iter()
        .filter(|o| o.is_some())
        .count();
    if set != 1 {
        out.push(
            base.to_string(),
            "give exactly one of strip_prefix, replace_prefix, replace_path",
        );
    }
    if rw.replace_prefix.is_some()
        && !matches!(m.path.as_ref().map(|p| p.kind), Some(PathKind::Prefix))
    {
        out.push(
            format!("{base}.replace_prefix"),
            "replace_prefix needs a prefix path match",
        );
    }
    for (field, v) in [
        ("strip_prefix", &rw.strip_prefix),
        ("replace_prefix", &rw.replace_prefix),
        ("replace_path", &rw.replace_path),
    ] {
        if let Some(v) = v
            && !v.starts_with('/')
        {
            out.push(format!("{base}.{field}"), "must start with /");
        }
    }
}

/// The action fields of a route or of one of its API versions.
pub(crate) struct ActionFields<'a> {
    pub(crate) upstream: &'a Option<String>,
    pub(crate) split: &'a Option<Vec<crate::schema::SplitEntry>>,
    pub(crate) split_hash_on: &'a Option<String>,
    pub(crate) redirect: &'a Option<crate::schema::Redirect>,
    pub(crate) respond: &'a Option<crate::schema::Respond>,
    /// A route's: whether `versions` is set; `None` for a version (which has none).
    pub(crate) versions: Option<bool>,
    /// Whether `aggregate` is set (a route's only).
    pub(crate) aggregate: bool,
}

/// Checks that exactly one action is set and that it is well formed.
pub(crate) fn action(c: &Config, base: &str, a: ActionFields<'_>, out: &mut Issues) {
    let actions: Vec<&str> = [
        ("upstream", a.upstream.is_some()),
        ("split", a.split.is_some()),
        ("redirect", a.redirect.is_some()),
        ("respond", a.respond.is_some()),
        ("versions", a.versions == Some(true)),
        ("aggregate", a.aggregate),
    ]
    .into_iter()
    .filter_map(|(n, on)| on.then_some(n))
    .collect();
    match actions.len() {
        0 => out.push(
            base.to_string(),
            if a.versions.is_some() {
                "a route needs exactly one action: upstream, split, redirect, respond, versions or aggregate"
            } else {
                "a version needs exactly one action: upstream, split, redirect or respond"
            },
        ),
        1 => {}
        _ => out.push(
            format!("{base}.{}", actions[1]),
            format!(
                "conflicting actions: {} (exactly one is taken)",
                actions.join(" and ")
            ),
        ),
    }
    if let Some(u) = &a.upstream
        && !c.upstreams.contains_key(u)
    {
        out.push(
            format!("{base}.upstream"),
            format!("no upstream named {u:?}"),
        );
    }
    if let Some(split) = &a.split {
        if split.is_empty() || split.iter().all(|s| s.weight == 0) {
            out.push(
                format!("{base}.split"),
                "a split needs at least one entry with weight above 0",
            );
        }
        for (j, s) in split.iter().enumerate() {
            if !c.upstreams.contains_key(&s.upstream) {
                out.push(
                    format!("{base}.split[{j}].upstream"),
                    format!("no upstream named {:?}", s.upstream),
                );
            }
        }
    }
    if let Some(h) = &a.split_hash_on {
        if a.split.is_none() {
            out.push(
                format!("{base}.split_hash_on"),
                "split_hash_on needs a split action",
            );
        }
        if let Err(e) = parse_hash_on(h) {
            out.push(format!("{base}.split_hash_on"), e);
        }
    }
    if let Some(rd) = &a.redirect {
        if ![301, 302, 303, 307, 308].contains(&rd.status) {
            out.push(
                format!("{base}.redirect.status"),
                "must be 301, 302, 303, 307 or 308",
            );
        }
        if let Some(s) = &rd.scheme
            && s != "http"
            && s != "https"
        {
            out.push(format!("{base}.redirect.scheme"), "must be http or https");
        }
        if rd.to.is_some()
            && (rd.scheme.is_some() || rd.host.is_some() || rd.path.is_some() || rd.port.is_some())
        {
            out.push(
                format!("{base}.redirect.to"),
                "`to` replaces the whole target: do not combine it with scheme, host, port or path",
            );
        }
    }
    if let Some(rs) = &a.respond {
        if !(100..=599).contains(&rs.status) {
            out.push(
                format!("{base}.respond.status"),
                "must be a status between 100 and 599",
            );
        }
        for (k, v) in &rs.headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || http::HeaderValue::from_str(v).is_err()
            {
                out.push(format!("{base}.respond.headers.{k}"), "invalid header");
            }
        }
    }
}

fn route_match(base: &str, m: &RouteMatch, out: &mut Issues) {
    for (j, h) in m.hosts.iter().enumerate() {
        let name = h.strip_prefix("*.").unwrap_or(h);
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && !name.starts_with('.')
            && !name.ends_with('.');
        if !valid {
            out.push(
                format!("{base}.match.hosts[{j}]"),
                format!(
                    "invalid host {h:?}: expected a name such as api.example.com or *.example.org"
                ),
            );
        }
    }
    if let Some(p) = &m.path {
        let path = format!("{base}.match.path.value");
        match p.kind {
            PathKind::Regex => {
                if let Err(e) = regex::Regex::new(&p.value) {
                    out.push(path, format!("invalid regex: {}", one_line(&e.to_string())));
                }
            }
            _ => {
                if !p.value.starts_with('/') {
                    out.push(path, "must start with /");
                }
            }
        }
    }
    for (j, mth) in m.methods.iter().enumerate() {
        if http::Method::from_bytes(mth.as_bytes()).is_err()
            || mth.chars().any(|c| c.is_ascii_lowercase())
        {
            out.push(
                format!("{base}.match.methods[{j}]"),
                format!("invalid method {mth:?} (methods are upper case, like GET)"),
            );
        } else if mth == "CONNECT" {
            out.push(
                format!("{base}.match.methods[{j}]"),
                "CONNECT is not supported: the gateway does not tunnel, and answers CONNECT with 405",
            );
        }
    }
    for (kind, list) in [("headers", &m.headers), ("query", &m.query)] {
        for (j, vm) in list.iter().enumerate() {
            let p = format!("{base}.match.{kind}[{j}]");
            if kind == "headers" && http::HeaderName::from_bytes(vm.name.as_bytes()).is_err() {
                out.push(
                    format!("{p}.name"),
                    format!("invalid header name {:?}", vm.name),
                );
            }
            if vm.name.is_empty() {
                out.push(format!("{p}.name"), "must not be empty");
            }
            match (vm.kind, &vm.value) {
                (ValueKind::Present, Some(_)) => {
                    out.push(format!("{p}.value"), "type present takes no value")
                }
                (ValueKind::Exact | ValueKind::Regex, None) => out.push(
                    format!("{p}.value"),
                    "a value is required (or use type: present)",
                ),
                (ValueKind::Regex, Some(v)) => {
                    if let Err(e) = regex::Regex::new(v) {
                        out.push(
                            format!("{p}.value"),
                            format!("invalid regex: {}", one_line(&e.to_string())),
                        );
                    }
                }
                _ => {}
            }
        }
    }
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn admin_access(admin: &Admin, out: &mut Issues) {
    for (i, t) in admin.tokens.iter().flatten().enumerate() {
        let at = format!("admin.tokens[{i}]");
        match (&t.token, &t.token_sha256) {
            (Some(_), Some(_)) => out.push(at, "give token or token_sha256, not both"),
            (None, None) => out.push(at, "needs token or token_sha256"),
            (Some(tok), None) if tok.len() < 16 => out.push(
                format!("{at}.token"),
                "must be at least 16 characters (use a random value)",
            ),
            (None, Some(h))
                if h.len() != 64
                    || !h
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                out.push(
                    format!("{at}.token_sha256"),
                    "must be 64 lower-case hex digits (the SHA-256 of the token)",
                );
            }
            _ => {}
        }
    }
    if let Some(tls) = &admin.tls
        && tls.client_auth.mode != ClientAuthMode::None
        && tls.client_auth.ca.is_none()
    {
        out.push(
            "admin.tls.client_auth.ca",
            "is required when mode is optional or required",
        );
    }
}

/// Whether `s` is a SHA-256 in lower-case hex.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The 32 bytes of a SHA-256 written in hex (`token_sha256`, `key_sha256`).
pub fn sha256_from_hex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn consumers(list: &[ConsumerConfig], out: &mut Issues) {
    let mut names = HashSet::new();
    let mut keys: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut users: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut subjects: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut key_ids: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, c) in list.iter().enumerate() {
        let at = format!("consumers[{i}]");
        if c.name.is_empty() {
            out.push(format!("{at}.name"), "must not be empty");
        } else if !names.insert(c.name.as_str()) {
            out.push(
                format!("{at}.name"),
                format!("duplicate consumer name {:?}", c.name),
            );
        }
        for (j, cred) in c.credentials.iter().enumerate() {
            let cat = format!("{at}.credentials[{j}]");
            match cred {
                CredentialConfig::ApiKey { key, key_sha256 } => match (key, key_sha256) {
                    (Some(_), Some(_)) => out.push(cat, "give key or key_sha256, not both"),
                    (None, None) => out.push(cat, "an api_key credential needs key or key_sha256"),
                    (Some(k), None) if k.is_empty() => {
                        out.push(format!("{cat}.key"), "must not be empty")
                    }
                    (None, Some(h)) if !is_sha256_hex(h) => out.push(
                        format!("{cat}.key_sha256"),
                        "must be 64 lower-case hex digits (the SHA-256 of the key)",
                    ),
                    (Some(k), None) => {
                        // Two consumers with one key would make the caller ambiguous.
                        if let Some(first) = keys.insert(k.as_str(), i)
                            && first != i
                        {
                            out.push(
                                format!("{cat}.key"),
                                format!("the same key is also a credential of consumers[{first}]"),
                            );
                        }
                    }
                    _ => {}
                },
                CredentialConfig::Basic {
                    username,
                    password_hash,
                } => {
                    if username.is_empty() || username.contains(':') {
                        out.push(
                            format!("{cat}.username"),
                            "must be non-empty and without ':'",
                        );
                    } else if let Some(first) = users.insert(username.as_str(), i)
                        && first != i
                    {
                        out.push(
                            format!("{cat}.username"),
                            format!("user {username:?} is also a credential of consumers[{first}]"),
                        );
                    }
                    let argon = password_hash::PasswordHash::new(password_hash)
                        .ok()
                        .filter(|h| h.algorithm.as_str().starts_with("argon2"));
                    if argon.is_none() {
                        out.push(
                            format!("{cat}.password_hash"),
                            "must be an Argon2 PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$hash)",
                        );
                    }
                }
                CredentialConfig::Jwt { subject } => {
                    if subject.is_empty() {
                        out.push(format!("{cat}.subject"), "must not be empty");
                    } else if let Some(first) = subjects.insert(subject.as_str(), i)
                        && first != i
                    {
                        out.push(
                            format!("{cat}.subject"),
                            format!(
                                "subject {subject:?} is also a credential of consumers[{first}]"
                            ),
                        );
                    }
                }
                CredentialConfig::HttpSignature {
                    key_id,
                    secret,
                    public_key,
                } => {
                    if key_id.is_empty() {
                        out.push(format!("{cat}.key_id"), "must not be empty");
                    } else if let Some(first) = key_ids.insert(key_id.as_str(), i)
                        && first != i
                    {
                        out.push(
                            format!("{cat}.key_id"),
                            format!("key id {key_id:?} is also a credential of consumers[{first}]"),
                        );
                    }
                    match (secret, public_key) {
                        (Some(_), Some(_)) => out.push(cat, "give secret or public_key, not both"),
                        (None, None) => out.push(
                            cat,
                            "an http_signature credential needs secret or public_key",
                        ),
                        (Some(s), None) if s.is_empty() => {
                            out.push(format!("{cat}.secret"), "must not be empty")
                        }
                        _ => {}
                    }
                }
                CredentialConfig::Mtls { subject, san } => match (subject, san) {
                    (Some(_), Some(_)) => out.push(cat, "give subject or san, not both"),
                    (None, None) => out.push(cat, "an mtls credential needs subject or san"),
                    (Some(s), None) if s.is_empty() => {
                        out.push(format!("{cat}.subject"), "must not be empty");
                    }
                    (None, Some(s)) if s.is_empty() => {
                        out.push(format!("{cat}.san"), "must not be empty");
                    }
                    _ => {}
                },
            }
        }
    }
}

/// `protection`: table sizes, the IPv6 prefix and the ban settings.
fn protection(p: &crate::schema::ProtectionConfig, out: &mut Issues) {
    if p.client_table_size == 0 || p.client_table_size > 10_000_000 {
        out.push("protection.client_table_size", "must be 1 to 10000000");
    }
    if p.max_bans == 0 || p.max_bans > 10_000_000 {
        out.push("protection.max_bans", "must be 1 to 10000000");
    }
    if !(1..=128).contains(&p.ipv6_prefix) {
        out.push("protection.ipv6_prefix", "must be 1 to 128");
    }
    let Some(b) = &p.ban else { return };
    if b.after == 0 {
        out.push("protection.ban.after", "must be at least 1");
    }
    for (field, d) in [
        ("within", &b.within),
        ("duration", &b.duration),
        ("max_duration", &b.max_duration),
    ] {
        if d.get().is_zero() {
            out.push(format!("protection.ban.{field}"), "must be more than 0s");
        }
    }
    if b.max_duration.get() < b.duration.get() {
        out.push(
            "protection.ban.max_duration",
            "must be at least protection.ban.duration",
        );
    }
    for (i, t) in b.triggers.iter().enumerate() {
        if gatehouse_core::Offence::parse(t).is_none() {
            let names: Vec<_> = gatehouse_core::Offence::ALL
                .iter()
                .map(|o| o.name())
                .collect();
            out.push(
                format!("protection.ban.triggers[{i}]"),
                format!(
                    "unknown trigger {t:?}: expected one of {}",
                    names.join(", ")
                ),
            );
        }
    }
}
