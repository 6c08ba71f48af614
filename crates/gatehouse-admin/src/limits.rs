//! `/admin/limits/{policy}?key=...`: one key's budget under a `rate_limit` policy (`GET`:
//! limit, remaining, seconds until whole again) and resetting it (`DELETE`, 204: the key
//! starts afresh). The key is written as the parts' values joined by commas, in the
//! key's order (docs/traffic.md). A cluster-scope limit is read and reset in Redis, so
//! every gateway sees the change (503 while Redis does not answer).

use crate::{json, problem};
use bytes::Bytes;
use gatehouse_policies::rate_limit::LimitState;
use gatehouse_proxy::Gateway;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use std::sync::Arc;

/// Serves `method /admin/limits/{policy}` with `query`.
pub async fn endpoint(
    gw: &Arc<Gateway>,
    method: &Method,
    policy: &str,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let Some(state) = gw.platform.state.get::<LimitState>("rate_limit", policy) else {
        return problem(
            StatusCode::NOT_FOUND,
            format!("no rate_limit policy named {policy:?}"),
            None,
        );
    };
    let text = query.and_then(|q| gatehouse_policies::query_param::value(q, "key"));
    let Some(text) = text.and_then(|t| String::from_utf8(t).ok()) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "name the key: ?key=VALUE (several parts joined by commas)".into(),
            None,
        );
    };
    let key = match state.key_of(&text) {
        Ok(k) => k,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e, None),
    };
    let unreachable = || {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Redis does not answer; cluster-scope counters cannot be read or reset now".into(),
            None,
        )
    };
    match *method {
        Method::GET => {
            let rate = state.limiter.rate();
            let d = match &state.shared {
                None => state.limiter.peek(key, gatehouse_policies::limiter::now()),
                Some(shared) => match shared.inspect(key).await {
                    Ok(d) => d,
                    Err(_) => return unreachable(),
                },
            };
            json(
                StatusCode::OK,
                serde_json::json!({
                    "policy": policy,
                    "key": text,
                    "limit": rate.limit,
                    "per_seconds": rate.per_ns as f64 / 1e9,
                    "remaining": d.remaining,
                    "reset_seconds": d.reset_ns.div_ceil(1_000_000_000),
                }),
            )
        }
        Method::DELETE => {
            match &state.shared {
                None => state.limiter.reset(key),
                Some(shared) => {
                    if shared.reset(key).await.is_err() {
                        return unreachable();
                    }
                }
            }
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        ref m => problem(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{m} is not allowed here"),
            None,
        ),
    }
}
