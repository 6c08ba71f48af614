//! `GET /admin/latency?window=5m`: where the time of each route's requests went
//! (docs/operations.md, "Where the time goes"): the mean and 95th percentile of each
//! phase, and the phase that takes the most on average.

use crate::{json, problem};
use bytes::Bytes;
use gatehouse_observe::phases::NAMES;
use gatehouse_observe::stats::{self, Subject};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Map, json};
use std::collections::BTreeMap;

/// Serves `GET /admin/latency?window=...`.
pub fn endpoint(query: Option<&str>) -> Response<Full<Bytes>> {
    let window = match crate::query::params(query, &["window"])
        .and_then(|p| crate::query::window(&p, stats::MAX_WINDOW))
    {
        Ok(w) => w,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e, None),
    };
    let bounds = gatehouse_observe::metrics::bucket_bounds();
    let ms = |nanos: f64| (nanos / 1e4).round() / 100.0;
    let mut routes = BTreeMap::new();
    for ((kind, name), t) in stats::window(window) {
        let n = t.counts[stats::REQUESTS];
        if kind != Subject::Route || n == 0 {
            continue;
        }
        let mut mean = Map::new();
        let mut p95 = Map::new();
        let mut bottleneck = (NAMES[0], -1.0);
        for (i, phase) in NAMES.iter().enumerate() {
            let m = t.phase_nanos[i] as f64 / n as f64;
            if m > bottleneck.1 {
                bottleneck = (phase, m);
            }
            mean.insert((*phase).into(), json!(ms(m)));
            let q = stats::quantile(t.phase_histogram(i), bounds, 0.95)
                .map(|d| ms(d.as_nanos() as f64));
            p95.insert((*phase).into(), json!(q));
        }
        routes.insert(
            name.to_string(),
            json!({
                "requests": n,
                "mean_ms": mean,
                "p95_ms": p95,
                "bottleneck": bottleneck.0,
            }),
        );
    }
    json(
        StatusCode::OK,
        json!({"window_seconds": window.as_secs(), "routes": routes}),
    )
}
