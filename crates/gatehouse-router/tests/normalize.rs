//! Property: a path and its normalized form select the same route, under every listener
//! setting; normalizing twice changes nothing.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use gatehouse_config::{PathKind, PathMatch, RouteMatch};
use gatehouse_router::normalize::{normalize, routing_path};
use gatehouse_router::{EscapedSlashes, Normalization, RequestView, Router};
use http::{HeaderMap, Method};
use proptest::prelude::*;

fn router() -> Router {
    let r = |kind, value: &str| RouteMatch {
        path: Some(PathMatch {
            kind,
            value: value.into(),
        }),
        ..Default::default()
    };
    Router::build(&[
        r(PathKind::Prefix, "/v1/admin"),
        r(PathKind::Prefix, "/v1"),
        r(PathKind::Exact, "/a/b"),
        r(PathKind::Template, "/u/{id}/x"),
        r(PathKind::Regex, "/r/[a-z]+"),
        r(PathKind::Prefix, "/a%2Fb"),
    ])
    .unwrap()
}

/// The route a request for `path` reaches, as the pipeline computes it.
fn route_of(r: &Router, path: &str, how: Normalization) -> Option<Option<usize>> {
    let n = normalize(path, how).ok()?;
    let rp = routing_path(&n, how.merge_slashes);
    let headers = HeaderMap::new();
    Some(
        r.match_route(&RequestView {
            host: "h",
            path: &rp,
            method: &Method::GET,
            headers: &headers,
            query: None,
        })
        .map(|m| m.route),
    )
}

fn fragment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "/", "//", "/.", "/..", "/./", "/../", "v1", "admin", "a", "b", "u", "x", "r", "%61",
        "%2e", "%2E%2e", "%2f", "%2F", "%5c", "\\", ";", ";x=1", "..;", "%7E", "%41", "~", "-",
        "%20", "%zz", "%",
    ])
}

fn how() -> impl Strategy<Value = Normalization> {
    (
        any::<bool>(),
        prop::sample::select(vec![
            EscapedSlashes::Keep,
            EscapedSlashes::Reject,
            EscapedSlashes::Decode,
        ]),
    )
        .prop_map(|(merge_slashes, escaped_slashes)| Normalization {
            merge_slashes,
            escaped_slashes,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn a_path_and_its_normal_form_route_alike(parts in prop::collection::vec(fragment(), 0..12), how in how()) {
        let path = format!("/{}", parts.concat());
        let r = router();
        if let Ok(n) = normalize(&path, how) {
            let n = n.into_owned();
            prop_assert_eq!(normalize(&n, how).unwrap(), n.as_str(), "normalizing twice changed {}", path);
            prop_assert_eq!(route_of(&r, &path, how), route_of(&r, &n, how), "{} vs {}", path, n);
            prop_assert!(!n.contains("/./") && !n.contains("/../"), "{}", n);
        }
    }
}
