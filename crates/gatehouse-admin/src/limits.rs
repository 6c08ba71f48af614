//! `/admin/limits/{policy}?key=...`: one key's budget under a `rate_limit` or `quota` policy (`GET`:
//! limit, remaining, seconds until whole again) and resetting it (`DELETE`, 204: the key
//! starts afresh). The key is written as the parts' values joined by commas, in the
//! key's order (docs/traffic.md). A cluster-scope limit is read and reset in Redis, so
//! every gateway sees the change (503 while Redis does not answer).

use crate::{json, problem};
use bytes::Bytes;
use gatehouse_policies::quota::Counts;
use gatehouse_policies::rate_limit::LimitState;
use gatehouse_proxy::Gateway;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use std::sync::Arc;

fn no_key() -> Response<Full<Bytes>> {
    problem(
        StatusCode::BAD_REQUEST,
        "name the key: ?key=VALUE (several parts joined by commas)".into(),
        None,
    )
}

fn no_content() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

fn not_allowed(m: &Method) -> Response<Full<Bytes>> {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{m} is not allowed here"),
        None,
    )
}

/// A quota's key: what it used in its current period, of which plan (`GET`), or starting
/// it afresh (`DELETE`, in the store too).
async fn quota(
    counts: &Counts,
    method: &Method,
    policy: &str,
    key: Option<String>,
) -> Response<Full<Bytes>> {
    let Some(key) = key else {
        return no_key();
    };
    match *method {
        Method::GET => {
            // Cluster scope: the count as Redis holds it, with its period's start.
            if let Some(found) = counts.shared_usage(&key).await {
                return match found {
                    Ok((used, start)) => json(
                        StatusCode::OK,
                        serde_json::json!({
                            "policy": policy, "key": key, "used": used, "period_start": start,
                        }),
                    ),
                    Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, e, None),
                };
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let (used, plan) = counts.usage(&key, now);
            let mut body = serde_json::json!({ "policy": policy, "key": key, "used": used });
            if let Some((plan, reset)) = plan {
                body["limit"] = plan.limit.into();
                body["period"] = plan.period.name().into();
                body["remaining"] = plan.limit.saturating_sub(used).into();
                body["reset_seconds"] = reset.into();
            }
            json(StatusCode::OK, body)
        }
        Method::DELETE => match counts.reset(&key).await {
            Ok(()) => no_content(),
            Err(e) => {
                tracing::error!(policy, error = %e, "cannot reset a quota key");
                problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the key's usage could not be forgotten now; retry later".into(),
                    None,
                )
            }
        },
        ref m => not_allowed(m),
    }
}

/// Serves `method /admin/limits/{policy}` with `query`.
pub async fn endpoint(
    gw: &Arc<Gateway>,
    method: &Method,
    policy: &str,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let text = query.and_then(|q| gatehouse_policies::query_param::value(q, "key"));
    let text = text.and_then(|t| String::from_utf8(t).ok());
    if let Some(counts) = gw.platform.state.get::<Counts>("quota", policy) {
        return quota(&counts, method, policy, text).await;
    }
    let Some(state) = gw.platform.state.get::<LimitState>("rate_limit", policy) else {
        return problem(
            StatusCode::NOT_FOUND,
            format!("no rate_limit or quota policy named {policy:?}"),
            None,
        );
    };
    let Some(text) = text else {
        return no_key();
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
            no_content()
        }
        ref m => not_allowed(m),
    }
}
