//! `/admin/consumers` and `/admin/consumers/{name}`: consumers created through the admin
//! API, kept in the store (`store.path`) beside the read-only ones of the config.
//! `POST /admin/consumers` with `{"name": ..., "groups": [...]}` creates one (201; 409
//! when the name is taken, by the config or the store); `GET` lists all of them with
//! their `source` (`config` or `store`); `GET .../{name}` shows one; `DELETE .../{name}`
//! removes a stored one and its keys (204; 409 for a consumer of the config, which only
//! the config can change). Stored consumers authenticate with keys created under
//! `/admin/consumers/{name}/keys`. Database work runs off the async thread.

use crate::{json, problem};
use bytes::Bytes;
use gatehouse_proxy::Gateway;
use gatehouse_store::{ConsumerInfo, Store};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Deserialize;
use std::sync::Arc;

/// The largest body `POST /admin/consumers` reads.
const MAX_BODY: usize = 64 * 1024;

/// What `POST /admin/consumers` accepts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewConsumer {
    name: String,
    #[serde(default)]
    groups: Vec<String>,
}

fn stored(c: &ConsumerInfo) -> serde_json::Value {
    serde_json::json!({"name": c.name, "groups": c.groups, "source": "store", "created": c.created})
}

fn declared(c: &gatehouse_config::ConsumerConfig) -> serde_json::Value {
    serde_json::json!({"name": c.name, "groups": c.groups, "source": "config"})
}

fn no_store() -> Response<Full<Bytes>> {
    problem(
        StatusCode::CONFLICT,
        "no store is configured (store.path), so consumers cannot be created here".into(),
        None,
    )
}

/// Runs `work` on the blocking pool; a store failure is a 503 (logged, not shown).
pub(crate) async fn blocking(
    work: impl FnOnce() -> Result<Response<Full<Bytes>>, String> + Send + 'static,
) -> Response<Full<Bytes>> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "store operation failed");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store could not complete the operation".into(),
                None,
            )
        }
        Err(e) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("store task failed: {e}"),
            None,
        ),
    }
}

/// `GET` and `POST /admin/consumers`.
pub async fn collection(gw: &Arc<Gateway>, req: http::Request<Incoming>) -> Response<Full<Bytes>> {
    let snap = gw.live.load_full();
    let store: Option<Arc<Store>> = snap.store.clone();
    match *req.method() {
        Method::GET => {
            let mut list: Vec<_> = snap.config.consumers.iter().map(declared).collect();
            let Some(store) = store else {
                return json(StatusCode::OK, serde_json::Value::Array(list));
            };
            let shadowed: Vec<String> = snap
                .config
                .consumers
                .iter()
                .map(|c| c.name.clone())
                .collect();
            blocking(move || {
                let more = store.consumers()?;
                list.extend(
                    more.iter()
                        .filter(|c| !shadowed.contains(&c.name))
                        .map(stored),
                );
                Ok(json(StatusCode::OK, serde_json::Value::Array(list)))
            })
            .await
        }
        Method::POST => {
            let Some(store) = store else {
                return no_store();
            };
            let body = match crate::json_body(req, MAX_BODY).await {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let new: NewConsumer = match serde_json::from_slice(&body) {
                Ok(n) => n,
                Err(e) => {
                    return problem(
                        StatusCode::BAD_REQUEST,
                        format!("expected {{\"name\": ..., \"groups\": [...]}}: {e}"),
                        None,
                    );
                }
            };
            if let Some(bad) = std::iter::once(&new.name)
                .chain(&new.groups)
                .find(|n| !gatehouse_store::valid_name(n))
            {
                return problem(
                    StatusCode::BAD_REQUEST,
                    format!("{bad:?} is not a valid name: 1 to 128 letters, digits or ._@-"),
                    None,
                );
            }
            if snap.config.consumers.iter().any(|c| c.name == new.name) {
                return problem(
                    StatusCode::CONFLICT,
                    format!("consumer {:?} is declared in the config", new.name),
                    None,
                );
            }
            blocking(move || {
                Ok(match store.create_consumer(&new.name, &new.groups)? {
                    Some(c) => json(StatusCode::CREATED, stored(&c)),
                    None => problem(
                        StatusCode::CONFLICT,
                        format!("consumer {:?} already exists", new.name),
                        None,
                    ),
                })
            })
            .await
        }
        ref m => problem(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{m} is not allowed here"),
            None,
        ),
    }
}

/// `GET` and `DELETE /admin/consumers/{name}`.
pub async fn one(gw: &Arc<Gateway>, method: &Method, name: &str) -> Response<Full<Bytes>> {
    let snap = gw.live.load_full();
    if let Some(c) = snap.config.consumers.iter().find(|c| c.name == name) {
        return match *method {
            Method::GET => json(StatusCode::OK, declared(c)),
            Method::DELETE => problem(
                StatusCode::CONFLICT,
                format!(
                    "consumer {name:?} is declared in the config; change the config to remove it"
                ),
                None,
            ),
            ref m => problem(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{m} is not allowed here"),
                None,
            ),
        };
    }
    let Some(store) = snap.store.clone() else {
        return problem(
            StatusCode::NOT_FOUND,
            format!("no consumer named {name:?}"),
            None,
        );
    };
    let (method, name) = (method.clone(), name.to_string());
    blocking(move || {
        let missing = || {
            problem(
                StatusCode::NOT_FOUND,
                format!("no consumer named {name:?}"),
                None,
            )
        };
        Ok(match method {
            Method::GET => match store.consumers()?.iter().find(|c| c.name == name) {
                Some(c) => json(StatusCode::OK, stored(c)),
                None => missing(),
            },
            Method::DELETE => {
                if store.delete_consumer(&name)? {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = StatusCode::NO_CONTENT;
                    r
                } else {
                    missing()
                }
            }
            m => problem(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{m} is not allowed here"),
                None,
            ),
        })
    })
    .await
}
