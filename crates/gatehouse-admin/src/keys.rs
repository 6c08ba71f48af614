//! `/admin/consumers/{name}/keys`: API keys of a consumer (of the config, or one created
//! through the admin API), kept in the store (`store.path`). `POST` creates one and answers it once (201); `GET` lists ids and
//! creation times, never key material; `DELETE .../keys/{id}` revokes it for the very next
//! request (204). Database work runs off the async thread.

use crate::{json, problem};
use bytes::Bytes;
use gatehouse_proxy::Gateway;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use std::sync::Arc;

fn record(k: &gatehouse_store::KeyInfo) -> serde_json::Value {
    serde_json::json!({"id": k.id, "consumer": k.consumer, "created": k.created})
}

/// Serves `method path` under `/admin/consumers/`.
pub async fn endpoint(gw: &Arc<Gateway>, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let rest = path.trim_start_matches("/admin/consumers/");
    let parts: Vec<&str> = rest.split('/').collect();
    let (consumer, id) = match parts.as_slice() {
        [c, "keys"] => (c.to_string(), None),
        [c, "keys", id] if !id.is_empty() => (c.to_string(), Some(id.to_string())),
        _ => {
            return problem(
                StatusCode::NOT_FOUND,
                format!("no admin endpoint {method} {path}"),
                None,
            );
        }
    };
    let snap = gw.live.load_full();
    let Some(store) = snap.store.clone() else {
        return problem(
            StatusCode::CONFLICT,
            "no store is configured (store.path), so keys cannot be created here".into(),
            None,
        );
    };
    let declared = snap.config.consumers.iter().any(|c| c.name == consumer);
    if !declared && store.consumer(&consumer).is_none() {
        return problem(
            StatusCode::NOT_FOUND,
            format!("no consumer named {consumer:?}"),
            None,
        );
    }
    let method = method.clone();
    crate::consumers::blocking(move || match (method, id) {
        (Method::POST, None) => store.create_key(&consumer).map(|(info, key)| {
            let mut v = record(&info);
            v["key"] = key.into();
            json(StatusCode::CREATED, v)
        }),
        (Method::GET, None) => store.keys(&consumer).map(|list| {
            json(
                StatusCode::OK,
                serde_json::Value::Array(list.iter().map(record).collect()),
            )
        }),
        (Method::DELETE, Some(id)) => store.revoke(&consumer, &id).map(|gone| {
            if gone {
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            } else {
                problem(
                    StatusCode::NOT_FOUND,
                    format!("consumer {consumer:?} has no key {id:?}"),
                    None,
                )
            }
        }),
        (m, _) => Ok(problem(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{m} is not allowed here"),
            None,
        )),
    })
    .await
}
