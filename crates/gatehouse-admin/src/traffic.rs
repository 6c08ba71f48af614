//! `GET /admin/traffic?window=5m`: requests per route in 5 s buckets over the window (5s
//! to 1h, default 5m), read from the traffic sampler (docs/operations.md#live-traffic).

use crate::{json, problem};
use bytes::Bytes;
use gatehouse_observe::traffic;
use http::{Response, StatusCode};
use http_body_util::Full;
use std::collections::BTreeMap;
use std::time::Duration;

/// Serves `GET /admin/traffic?window=...`.
pub fn endpoint(query: Option<&str>) -> Response<Full<Bytes>> {
    let window = match window(query) {
        Ok(w) => w,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e, None),
    };
    let buckets = traffic::recent(window);
    let ends: Vec<u64> = buckets.iter().map(|b| b.end).collect();
    let mut names: Vec<&String> = buckets.iter().flat_map(|b| b.routes.keys()).collect();
    names.sort();
    names.dedup();
    let mut routes = BTreeMap::new();
    for name in names {
        let series = |i: usize| -> Vec<u64> {
            buckets
                .iter()
                .map(|b| b.routes.get(name).map_or(0, |c| c[i]))
                .collect()
        };
        let (requests, client_errors, errors) = (series(0), series(1), series(2));
        let total = |v: &[u64]| v.iter().sum::<u64>();
        let n = total(&requests);
        routes.insert(
            name.clone(),
            serde_json::json!({
                "requests": requests,
                "client_errors": client_errors,
                "errors": errors,
                "total": {"requests": n, "client_errors": total(&client_errors), "errors": total(&errors)},
                "rate_per_second": n as f64 / window.as_secs_f64(),
            }),
        );
    }
    json(
        StatusCode::OK,
        serde_json::json!({
            "interval_seconds": traffic::INTERVAL.as_secs(),
            "window_seconds": window.as_secs(),
            "bucket_ends": ends,
            "routes": routes,
        }),
    )
}

fn window(query: Option<&str>) -> Result<Duration, String> {
    let p = crate::query::params(query, &["window"])?;
    crate::query::window(&p, traffic::INTERVAL * traffic::KEPT as u32)
}
