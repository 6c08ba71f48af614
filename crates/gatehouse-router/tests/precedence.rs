//! Route precedence: table-driven cases and a property test against a linear reference.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use gatehouse_config::{PathKind, PathMatch, RouteMatch, ValueKind, ValueMatch};
use gatehouse_router::{HostRank, PrecedenceKey, RequestView, Router};
use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;

fn route(hosts: &[&str], kind: PathKind, value: &str) -> RouteMatch {
    RouteMatch {
        hosts: hosts.iter().map(|s| s.to_string()).collect(),
        path: Some(PathMatch {
            kind,
            value: value.into(),
        }),
        ..Default::default()
    }
}

fn hit(router: &Router, host: &str, path: &str) -> Option<usize> {
    hit_full(router, host, path, &Method::GET, &HeaderMap::new(), None)
}

fn hit_full(
    router: &Router,
    host: &str,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<usize> {
    router
        .match_route(&RequestView {
            host,
            path,
            method,
            headers,
            query,
        })
        .map(|m| m.route)
}

#[test]
fn path_kinds_rank_exact_template_prefix_regex() {
    use PathKind::*;
    let routes = vec![
        route(&[], Regex, "/users/.*"),
        route(&[], Prefix, "/users"),
        route(&[], Template, "/users/{id}"),
        route(&[], Exact, "/users/me"),
        route(&[], Prefix, "/users/me/deep"),
    ];
    let r = Router::build(&routes).unwrap();
    assert_eq!(hit(&r, "x", "/users/me"), Some(3));
    assert_eq!(hit(&r, "x", "/users/42"), Some(2));
    assert_eq!(hit(&r, "x", "/users/42/x"), Some(1));
    assert_eq!(hit(&r, "x", "/users/me/deep/er"), Some(4));
    assert_eq!(hit(&r, "x", "/usersx"), None);
    assert_eq!(hit(&r, "x", "/users"), Some(1));
    assert_eq!(hit(&r, "x", "/users/"), Some(1));
}

#[test]
fn prefix_matches_whole_segments_and_longest_wins() {
    use PathKind::*;
    let routes = vec![
        route(&[], Prefix, "/"),
        route(&[], Prefix, "/api"),
        route(&[], Prefix, "/api/v1/"),
    ];
    let r = Router::build(&routes).unwrap();
    assert_eq!(hit(&r, "x", "/api"), Some(1));
    assert_eq!(hit(&r, "x", "/api/"), Some(1));
    assert_eq!(hit(&r, "x", "/apix"), Some(0));
    assert_eq!(hit(&r, "x", "/api/v1"), Some(2));
    assert_eq!(hit(&r, "x", "/api/v1/users"), Some(2));
    assert_eq!(hit(&r, "x", "/api/v10"), Some(1));
}

#[test]
fn hosts_exact_over_wildcard_over_any() {
    use PathKind::*;
    let routes = vec![
        route(&[], Prefix, "/"),
        route(&["*.example.org"], Prefix, "/"),
        route(&["api.example.org"], Prefix, "/"),
        route(&["*.b.example.org"], Prefix, "/"),
    ];
    let r = Router::build(&routes).unwrap();
    assert_eq!(hit(&r, "api.example.org", "/"), Some(2));
    assert_eq!(hit(&r, "web.example.org", "/"), Some(1));
    assert_eq!(hit(&r, "a.b.example.org", "/"), Some(3));
    assert_eq!(hit(&r, "x.y.example.org", "/"), Some(1));
    // A wildcard needs at least one label before the suffix.
    assert_eq!(hit(&r, "example.org", "/"), Some(0));
    assert_eq!(hit(&r, "other.net", "/"), Some(0));
}

#[test]
fn longer_path_beats_better_host() {
    use PathKind::*;
    let routes = vec![
        route(&["api.example.com"], Prefix, "/"),
        route(&[], Prefix, "/orders"),
    ];
    let r = Router::build(&routes).unwrap();
    assert_eq!(hit(&r, "api.example.com", "/orders/1"), Some(1));
    assert_eq!(hit(&r, "api.example.com", "/other"), Some(0));
}

#[test]
fn headers_query_and_methods_break_ties() {
    let base = || route(&[], PathKind::Prefix, "/api");
    let mut with_header = base();
    with_header.headers = vec![ValueMatch {
        name: "x-version".into(),
        value: Some("2".into()),
        kind: ValueKind::Exact,
    }];
    let mut with_query = base();
    with_query.query = vec![ValueMatch {
        name: "beta".into(),
        value: None,
        kind: ValueKind::Present,
    }];
    let mut with_method = base();
    with_method.methods = vec!["POST".into()];
    let mut with_regex_header = base();
    with_regex_header.headers = vec![ValueMatch {
        name: "x-version".into(),
        value: Some("3|4".into()),
        kind: ValueKind::Regex,
    }];
    let routes = vec![
        base(),
        with_method,
        with_query,
        with_header,
        with_regex_header,
    ];
    let r = Router::build(&routes).unwrap();
    let mut h = HeaderMap::new();
    assert_eq!(hit_full(&r, "x", "/api", &Method::GET, &h, None), Some(0));
    assert_eq!(hit_full(&r, "x", "/api", &Method::POST, &h, None), Some(1));
    assert_eq!(
        hit_full(&r, "x", "/api", &Method::POST, &h, Some("beta")),
        Some(2)
    );
    h.insert("x-version", HeaderValue::from_static("2"));
    assert_eq!(
        hit_full(&r, "x", "/api", &Method::POST, &h, Some("beta=1")),
        Some(3)
    );
    h.insert("x-version", HeaderValue::from_static("4"));
    assert_eq!(hit_full(&r, "x", "/api", &Method::GET, &h, None), Some(4));
    h.insert("x-version", HeaderValue::from_static("34"));
    assert_eq!(hit_full(&r, "x", "/api", &Method::GET, &h, None), Some(0));
}

#[test]
fn file_order_breaks_full_ties() {
    let routes = vec![
        route(&[], PathKind::Prefix, "/a"),
        route(&[], PathKind::Prefix, "/a/"),
    ];
    let r = Router::build(&routes).unwrap();
    assert_eq!(hit(&r, "x", "/a/b"), Some(0));
}

#[test]
fn template_params_and_catch_all() {
    let routes = vec![
        route(&[], PathKind::Template, "/users/{id}/files/{*rest}"),
        route(&[], PathKind::Template, "/users/{id}"),
        route(&[], PathKind::Regex, "/orders/(?P<order>[0-9]+)"),
    ];
    let r = Router::build(&routes).unwrap();
    let h = HeaderMap::new();
    let m = |p: &str| {
        r.match_route(&RequestView {
            host: "x",
            path: p,
            method: &Method::GET,
            headers: &h,
            query: None,
        })
    };
    let a = m("/users/7/files/a/b.txt").unwrap();
    assert_eq!(a.route, 0);
    assert_eq!(
        a.params,
        vec![("id".into(), "7".into()), ("rest".into(), "a/b.txt".into())]
    );
    let b = m("/users/9").unwrap();
    assert_eq!((b.route, b.params), (1, vec![("id".into(), "9".into())]));
    assert!(m("/users/").is_none());
    assert!(m("/users/9/x").is_none());
    let c = m("/orders/12").unwrap();
    assert_eq!(c.params, vec![("order".into(), "12".into())]);
    assert!(m("/orders/12x").is_none());
}

#[test]
fn bad_template_is_a_build_error() {
    let e = Router::build(&[route(&[], PathKind::Template, "/a/{*r}/b")]).unwrap_err();
    assert_eq!(e.route, 0);
    assert_eq!(e.field, "match.path.value");
}

// ---- property test: the index agrees with a linear scan over the precedence key ----

fn host_rank(hosts: &[String], host: &str) -> Option<HostRank> {
    if hosts.is_empty() {
        return Some(HostRank::Any);
    }
    let mut best: Option<HostRank> = None;
    for h in hosts {
        let rank = if let Some(suffix) = h.strip_prefix("*.") {
            let ok = host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}"));
            ok.then_some(HostRank::Wildcard(suffix.len()))
        } else {
            (h == host).then_some(HostRank::Exact)
        };
        let better = |a: HostRank, b: HostRank| -> bool {
            let k = |r: HostRank| match r {
                HostRank::Exact => (0, 0),
                HostRank::Wildcard(n) => (1, usize::MAX - n),
                HostRank::Any => (2, 0),
            };
            k(a) < k(b)
        };
        if let Some(r) = rank
            && best.is_none_or(|b| better(r, b))
        {
            best = Some(r);
        }
    }
    best
}

fn path_ok(m: &RouteMatch, path: &str) -> bool {
    let Some(p) = &m.path else { return true };
    match p.kind {
        PathKind::Exact => path == p.value,
        PathKind::Prefix => {
            let pre = p.value.trim_end_matches('/');
            pre.is_empty()
                || path == pre
                || (path.starts_with(pre) && path.as_bytes().get(pre.len()) == Some(&b'/'))
        }
        PathKind::Regex => regex::Regex::new(&format!("^(?:{})$", p.value))
            .unwrap()
            .is_match(path),
        PathKind::Template => {
            let t: Vec<&str> = p.value.split('/').collect();
            let s: Vec<&str> = path.split('/').collect();
            t.len() == s.len()
                && t.iter().zip(&s).all(|(a, b)| {
                    if a.starts_with('{') {
                        !b.is_empty()
                    } else {
                        a == b
                    }
                })
        }
    }
}

fn reference(routes: &[RouteMatch], host: &str, path: &str, method: &Method) -> Option<usize> {
    routes
        .iter()
        .enumerate()
        .filter(|(_, m)| m.methods.is_empty() || m.methods.iter().any(|x| x == method.as_str()))
        .filter(|(_, m)| path_ok(m, path))
        .filter_map(|(i, m)| host_rank(&m.hosts, host).map(|r| (PrecedenceKey::new(m, i, r), i)))
        .min()
        .map(|(_, i)| i)
}

fn arb_route() -> impl Strategy<Value = RouteMatch> {
    let seg = prop::sample::select(vec!["a", "b", "c"]);
    let segs = prop::collection::vec(seg, 0..3);
    let kind = prop::sample::select(vec![
        PathKind::Exact,
        PathKind::Prefix,
        PathKind::Regex,
        PathKind::Template,
    ]);
    let hosts = prop::collection::vec(
        prop::sample::select(vec!["x.io", "y.x.io", "*.x.io", "*.io"]),
        0..2,
    );
    let methods = prop::collection::vec(prop::sample::select(vec!["GET", "POST"]), 0..2);
    (segs, kind, hosts, methods, any::<bool>()).prop_map(|(segs, kind, hosts, methods, param)| {
        let mut parts: Vec<String> = segs.iter().map(|s| s.to_string()).collect();
        let value = match kind {
            PathKind::Template => {
                parts.push(if param { "{p}".into() } else { "a".into() });
                format!("/{}", parts.join("/"))
            }
            PathKind::Regex => format!("/{}(/.*)?", parts.join("/")),
            _ => format!("/{}", parts.join("/")),
        };
        RouteMatch {
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            path: Some(PathMatch { kind, value }),
            methods: methods.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn index_agrees_with_linear_reference(
        routes in prop::collection::vec(arb_route(), 1..12),
        segs in prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "", "d"]), 0..4),
        host in prop::sample::select(vec!["x.io", "y.x.io", "z.y.x.io", "io", "q.io"]),
        post in any::<bool>(),
    ) {
        let path = format!("/{}", segs.join("/"));
        let method = if post { Method::POST } else { Method::GET };
        let router = Router::build(&routes).unwrap();
        let got = hit_full(&router, host, &path, &method, &HeaderMap::new(), None);
        prop_assert_eq!(got, reference(&routes, host, &path, &method), "path {}", path);
    }
}
