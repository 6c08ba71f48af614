//! `/admin/caches/{policy}`: a `cache` policy's counters (`GET`: entries, bytes, memory,
//! hits, misses, evictions), purges (`POST .../purge` with `{"path", "host"}`,
//! `{"prefix", "host"}` or `{"tags": [..]}`, optionally `"soft": true` to mark stale
//! instead of removing) and emptying it (`DELETE`). Both answer `{"purged": N}`; with
//! `cluster.redis` the purge is also handed to every other gateway (within a second).

use crate::{json, problem};
use bytes::Bytes;
use gatehouse_policies::cache_store::{CacheStore, Purge};
use gatehouse_proxy::Gateway;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Deserialize;
use std::sync::Arc;

const MAX_BODY: usize = 64 * 1024;

/// A purge request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    soft: bool,
}

impl PurgeRequest {
    fn purge(self) -> Result<(Purge, bool), &'static str> {
        let purge = match (self.path, self.prefix, self.tags) {
            (Some(path), None, None) if path.starts_with('/') => Purge::Path {
                path,
                host: self.host,
            },
            (None, Some(prefix), None) if prefix.starts_with('/') => Purge::Prefix {
                prefix,
                host: self.host,
            },
            (None, None, Some(tags)) if !tags.is_empty() && self.host.is_none() => {
                Purge::Tags(tags)
            }
            _ => {
                return Err(
                    "give one of {\"path\": \"/p?q\"}, {\"prefix\": \"/p/\"} (each with an optional \"host\") or {\"tags\": [..]}, and optionally \"soft\": true",
                );
            }
        };
        Ok((purge, self.soft))
    }
}

/// Serves `path` (after `/admin/caches/`).
pub async fn endpoint(
    gw: &Arc<Gateway>,
    req: http::Request<Incoming>,
    path: &str,
) -> Response<Full<Bytes>> {
    let (policy, action) = match path.split_once('/') {
        Some((p, a)) => (p.to_string(), Some(a.to_string())),
        None => (path.to_string(), None),
    };
    let Some(store) = gw.platform.state.get::<CacheStore>("cache", &policy) else {
        return problem(
            StatusCode::NOT_FOUND,
            format!("no cache policy named {policy:?}"),
            None,
        );
    };
    match (req.method().clone(), action.as_deref()) {
        (Method::GET, None) => json(
            StatusCode::OK,
            serde_json::to_value(store.stats()).unwrap_or_default(),
        ),
        (Method::DELETE, None) => {
            let n = store.purge(&Purge::All, false);
            shared(&store, &Purge::All, false, n).await
        }
        (Method::POST, Some("purge")) => {
            let body = match crate::json_body(req, MAX_BODY).await {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let asked = serde_json::from_slice::<PurgeRequest>(&body)
                .map_err(|_| "the body is not a purge request")
                .and_then(PurgeRequest::purge);
            match asked {
                Ok((purge, soft)) => {
                    let n = store.purge(&purge, soft);
                    shared(&store, &purge, soft, n).await
                }
                Err(e) => problem(StatusCode::BAD_REQUEST, e.to_string(), None),
            }
        }
        (m, _) => problem(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{m} is not allowed here"),
            None,
        ),
    }
}

/// `{"purged": N}` (on this gateway), after handing the purge to the other gateways
/// when the cache shares purges through Redis: `"cluster": "sent"`, or `"unreachable"`
/// (this gateway is purged; the others are not told).
async fn shared(store: &CacheStore, purge: &Purge, soft: bool, n: u64) -> Response<Full<Bytes>> {
    let Some(relay) = store.relay() else {
        return json(StatusCode::OK, serde_json::json!({ "purged": n }));
    };
    let cluster = match relay.publish(purge, soft).await {
        Ok(()) => "sent",
        Err(_) => {
            tracing::warn!("Redis does not answer: a cache purge reached this gateway only");
            "unreachable"
        }
    };
    json(
        StatusCode::OK,
        serde_json::json!({ "purged": n, "cluster": cluster }),
    )
}
