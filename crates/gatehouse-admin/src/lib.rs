//! The admin API (JSON over HTTP/1.1 on its own listener): health, reload, upstream state,
//! and `GET /metrics`. It reads the same live snapshot the workers serve; it never sits
//! on the request path.

pub mod access;
mod caches;
mod consumers;
mod dashboard;
mod keys;
mod latency;
mod limits;
mod protection;
pub mod quality;
mod query;
mod report_thread;
pub mod scrape;
mod top;
mod traffic;
mod transactions;
mod waf;

use bytes::Bytes;
use gatehouse_core::{Problem, problem_response};
use gatehouse_proxy::Gateway;
use gatehouse_proxy::transport::Transport;
use gatehouse_upstream::health::Verdict;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Serves the admin API on `first` (if any), moving to each socket a reload sends
/// (`None` stops it), until shutdown. Connections already open finish on the old socket.
pub async fn run(
    gw: Arc<Gateway>,
    first: Option<std::net::TcpListener>,
    mut moves: mpsc::UnboundedReceiver<Option<std::net::TcpListener>>,
) {
    let mut stop = gw.shutdown_signal();
    let mut current = first;
    loop {
        let socket = current.take();
        let gw2 = gw.clone();
        let serving = async move {
            match socket.map(tokio::net::TcpListener::from_std) {
                Some(Ok(l)) => {
                    if let Ok(a) = l.local_addr() {
                        tracing::info!(address = %a, "admin API listening");
                        let open = gw2
                            .live
                            .load()
                            .config
                            .admin
                            .as_ref()
                            .is_some_and(|c| c.tokens.is_none() && c.allow.is_none());
                        if open && !a.ip().is_loopback() {
                            tracing::warn!(address = %a, "the admin API is reachable beyond loopback with neither admin.tokens nor admin.allow set");
                        }
                    }
                    serve(gw2, l).await;
                }
                Some(Err(e)) => tracing::error!(error = %e, "cannot register the admin socket"),
                None => {}
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = serving => {}
            next = moves.recv() => match next {
                Some(next) => current = next,
                None => std::future::pending::<()>().await,
            },
            _ = stop.changed() => return,
        }
    }
}

/// The access rules of the live config, rebuilt when the generation changes.
#[derive(Default)]
struct Rules(std::sync::Mutex<Option<(u64, Arc<access::Access>)>>);

impl Rules {
    fn current(&self, gw: &Gateway) -> Arc<access::Access> {
        let snap = gw.live.load();
        let mut cached = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match &*cached {
            Some((generation, a)) if *generation == snap.generation => a.clone(),
            _ => {
                let a = Arc::new(access::Access::build(
                    snap.config.admin.as_ref(),
                    &snap.config.ip_groups,
                ));
                *cached = Some((snap.generation, a.clone()));
                a
            }
        }
    }
}

/// How long a client has to finish the TLS handshake on the admin listener.
const ADMIN_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the admin API on `listener` until shutdown: TLS when `admin.tls` says so, and
/// every request checked against `admin.allow` and `admin.tokens` first.
pub async fn serve(gw: Arc<Gateway>, listener: tokio::net::TcpListener) {
    let mut stop = gw.shutdown_signal();
    let rules = Arc::new(Rules::default());
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let gw = gw.clone();
        let rules = rules.clone();
        tokio::spawn(async move {
            let tls = gw.live.load().admin_tls.as_ref().map(|t| t.config.clone());
            let (transport, subject) = match tls {
                None => (Transport::Plain(stream), None),
                Some(config) => {
                    let accept = gatehouse_proxy::tls::accept(config, stream);
                    match tokio::time::timeout(ADMIN_HANDSHAKE, accept).await {
                        Ok(Ok(s)) => {
                            let subject = gatehouse_proxy::tls::session_info(&s).client_subject;
                            (Transport::Tls(Box::new(s)), subject)
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "admin TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            let svc = service_fn(move |req: Request<Incoming>| {
                let gw = gw.clone();
                let rules = rules.current(&gw);
                let subject = subject.clone();
                async move {
                    let caller = match rules.check(peer.ip(), req.method(), req.headers()) {
                        Ok(c) => c,
                        Err(denied) => {
                            tracing::info!(target: "gatehouse::audit", %peer, method = %req.method(), path = req.uri().path(), status = denied.status().as_u16(), "admin request denied");
                            return Ok::<_, Infallible>(denied);
                        }
                    };
                    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
                    let (method, path) = (req.method().clone(), req.uri().path().to_string());
                    let resp = route(&gw, req).await;
                    if write {
                        tracing::info!(
                            target: "gatehouse::audit",
                            who = %caller.name,
                            client_certificate = subject.as_deref().unwrap_or("-"),
                            peer = %caller.peer,
                            %method,
                            path,
                            status = resp.status().as_u16(),
                            "admin write"
                        );
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(transport), svc)
                .await;
        });
    }
}

/// A write request's JSON body, at most `max` bytes; 413 problem beyond.
pub(crate) async fn json_body(
    req: Request<Incoming>,
    max: usize,
) -> Result<Bytes, Box<Response<Full<Bytes>>>> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(req.into_body(), max)
        .collect()
        .await
    {
        Ok(b) => Ok(b.to_bytes()),
        Err(_) => Err(Box::new(problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body must be JSON of at most {max} bytes"),
            None,
        ))),
    }
}

pub(crate) fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

pub(crate) fn problem(
    status: StatusCode,
    detail: String,
    extra: Option<serde_json::Value>,
) -> Response<Full<Bytes>> {
    let request_id = gatehouse_proxy::forwarded::new_request_id();
    let mut p = problem_response(&Problem::new(status, detail), &request_id);
    if let Ok(v) = http::HeaderValue::from_str(&request_id) {
        p.headers_mut().insert("x-request-id", v);
    }
    let (parts, body) = p.into_parts();
    let body = match extra {
        Some(extra) => {
            let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            v["errors"] = extra;
            Bytes::from(v.to_string())
        }
        None => body,
    };
    Response::from_parts(parts, Full::new(body))
}

/// Field names whose values are secrets: credentials, keys, tokens, and header values
/// that carry them (a `headers` policy setting `authorization`).
fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "secret",
        "password",
        "passwd",
        "token",
        "credential",
        "authorization",
        "api-key",
        "api_key",
        "apikey",
        "cookie",
        "private",
    ]
    .iter()
    .any(|s| n.contains(s))
        // An api_key credential's `key` (but not `key_id`, `public_key`: names, paths).
        || n == "key"
}

/// Replaces the value of every secret-named field with `"[redacted]"`.
fn redact(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            // `{name: authorization, value: ...}` (header conditions) names its secret.
            let named_secret = map
                .get("name")
                .and_then(|n| n.as_str())
                .is_some_and(is_secret_name);
            if named_secret && let Some(v) = map.get_mut("value") {
                *v = serde_json::Value::String("[redacted]".into());
            }
            for (k, val) in map.iter_mut() {
                if is_secret_name(k) && !val.is_object() && !val.is_array() {
                    *val = serde_json::Value::String("[redacted]".into());
                } else {
                    redact(val);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// `GET /admin/config`: the live config (after `${VAR}` interpolation, secrets redacted)
/// and the SHA-256 of its text, which changes whenever any value does.
fn config_view(gw: &Gateway) -> Response<Full<Bytes>> {
    let snap = gw.live.load();
    let hex = config_hash(&snap.source);
    let mut doc = match gatehouse_config::load::document_json(&snap.source) {
        Ok(d) => d,
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, e, None),
    };
    redact(&mut doc);
    json(
        StatusCode::OK,
        serde_json::json!({
            "generation": snap.generation,
            "hash": format!("sha256:{hex}"),
            "config": doc,
        }),
    )
}

/// The SHA-256 of a config text, lower-case hex.
pub fn config_hash(source: &str) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(source.as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /admin/routes`: routes in precedence order, the order in which routes that all
/// match a request are preferred.
fn routes_view(gw: &Gateway) -> Response<Full<Bytes>> {
    let snap = gw.live.load();
    let doc = gatehouse_config::load::document_json(&snap.source).unwrap_or_default();
    let list: Vec<_> = snap
        .precedence
        .iter()
        .filter_map(|&i| {
            let r = snap.config.routes.get(i)?;
            let action = match (&r.upstream, &r.split, &r.redirect, &r.respond) {
                (Some(u), ..) => serde_json::json!({"upstream": u}),
                (_, Some(s), ..) => serde_json::json!({"split": s
                    .iter()
                    .map(|e| serde_json::json!({"upstream": e.upstream, "weight": e.weight}))
                    .collect::<Vec<_>>()}),
                (_, _, Some(_), _) => serde_json::json!({"redirect": doc["routes"][i]["redirect"]}),
                _ => serde_json::json!({"respond": r.respond.as_ref().map(|x| x.status)}),
            };
            let mut m = doc["routes"][i]["match"].clone();
            if m.is_null() {
                m = serde_json::json!({});
            }
            Some(serde_json::json!({
                "name": r.name,
                "index": i,
                "match": m,
                "policies": snap.config.default_policies.iter().chain(&r.policies).collect::<Vec<_>>(),
                "action": action,
            }))
        })
        .collect();
    json(StatusCode::OK, serde_json::Value::Array(list))
}

/// Builds an analytics view from the request's query on the report thread (see
/// [`report_thread`]): these walk every route's history and must not take a worker's core.
async fn report<F>(req: Request<Incoming>, view: F) -> Response<Full<Bytes>>
where
    F: FnOnce(Option<&str>) -> Response<Full<Bytes>> + Send + 'static,
{
    let query = req.uri().query().map(str::to_owned);
    report_thread::build(move || view(query.as_deref()))
        .await
        .unwrap_or_else(report_refused)
}

/// The answer when the report thread did not build a view.
fn report_refused(refused: report_thread::Refused) -> Response<Full<Bytes>> {
    match refused {
        report_thread::Refused::Busy => {
            let mut r = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{} reports are already waiting to be built; retry shortly",
                    report_thread::QUEUE
                ),
                None,
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
            r
        }
        report_thread::Refused::Failed => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the report could not be built".into(),
            None,
        ),
    }
}

async fn route(gw: &Arc<Gateway>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/admin/health") => {
            let generation = gw.live.load().generation;
            // Still serving, but on an older config than the file asks for.
            let body = match gw.last_rejected() {
                Some(errors) => serde_json::json!({
                    "status": "degraded",
                    "generation": generation,
                    "reason": "the last reload was rejected; the previous config keeps serving",
                    "reload_errors": errors,
                }),
                None => serde_json::json!({"status": "ok", "generation": generation}),
            };
            json(StatusCode::OK, body)
        }
        (&Method::GET, "/admin/config") => config_view(gw),
        (&Method::GET, "/metrics") => {
            let g = gw.clone();
            let om = scrape::wants_open_metrics(req.headers().get(header::ACCEPT));
            let gz = scrape::accepts_gzip(req.headers().get(header::ACCEPT_ENCODING));
            // Reading /proc and summing shards is blocking work, and at 1,000 routes
            // about 20 ms of CPU: built on the low-priority report thread.
            let made = report_thread::build(move || scrape::body(&g, om, gz));
            match made.await {
                Ok((body, zipped)) => {
                    let mut r = Response::new(Full::new(body));
                    let h = r.headers_mut();
                    h.insert(
                        header::CONTENT_TYPE,
                        http::HeaderValue::from_static(if om {
                            "application/openmetrics-text; version=1.0.0; charset=utf-8"
                        } else {
                            "text/plain; version=0.0.4; charset=utf-8"
                        }),
                    );
                    h.insert(
                        header::VARY,
                        http::HeaderValue::from_static("accept, accept-encoding"),
                    );
                    if zipped {
                        h.insert(
                            header::CONTENT_ENCODING,
                            http::HeaderValue::from_static("gzip"),
                        );
                    }
                    r
                }
                Err(refused) => report_refused(refused),
            }
        }
        (&Method::GET, "/admin/listeners") => {
            let list: Vec<_> = gw
                .listeners()
                .into_iter()
                .map(|l| {
                    serde_json::json!({
                        "name": l.name,
                        "address": l.address,
                        "bound": l.bound.map(|b| b.to_string()),
                        "open_connections": l.open_connections,
                    })
                })
                .collect();
            json(StatusCode::OK, serde_json::Value::Array(list))
        }
        (&Method::GET, "/admin/routes") => routes_view(gw),
        (&Method::GET, "/admin/transactions") => report(req, transactions::endpoint).await,
        (&Method::GET, "/admin/traffic") => report(req, traffic::endpoint).await,
        (&Method::GET, "/admin/quality") => {
            let g = gw.clone();
            report(req, move |q| quality::endpoint(&g, q)).await
        }
        (&Method::GET, "/admin/latency") => report(req, latency::endpoint).await,
        (&Method::GET, path) if path == "/dashboard" || path.starts_with("/dashboard/") => {
            dashboard::asset(path).unwrap_or_else(|| {
                problem(
                    StatusCode::NOT_FOUND,
                    format!("no dashboard file {path}"),
                    None,
                )
            })
        }
        (&Method::GET, "/admin/protection") => protection::overview(gw),
        (&Method::GET, "/admin/protection/waf") => waf::overview(gw),
        (&Method::GET, path) if path.starts_with("/admin/protection/incidents/") => {
            waf::incident(gw, &path["/admin/protection/incidents/".len()..])
        }
        (_, path)
            if path == "/admin/protection/bans" || path.starts_with("/admin/protection/bans/") =>
        {
            protection::bans(gw, req).await
        }
        (&Method::GET, "/admin/top/clients") => report(req, top::clients).await,
        (&Method::GET, "/admin/top/attackers") => {
            let snap = gw.live.load_full();
            report(req, move |q| top::attackers(&snap.protection, q)).await
        }
        (&Method::POST, "/admin/reload") => {
            let g = gw.clone();
            match tokio::task::spawn_blocking(move || g.reload()).await {
                Ok(Ok(generation)) => json(
                    StatusCode::OK,
                    serde_json::json!({"status": "reloaded", "generation": generation}),
                ),
                Ok(Err(errors)) => {
                    let list: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                    tracing::error!(
                        count = list.len(),
                        "config rejected by POST /admin/reload; the previous config keeps serving"
                    );
                    problem(
                        StatusCode::BAD_REQUEST,
                        "config rejected; the previous config keeps serving".into(),
                        Some(serde_json::json!(list)),
                    )
                }
                Err(e) => problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("reload task failed: {e}"),
                    None,
                ),
            }
        }
        (&Method::GET, "/admin/upstreams") => {
            let snap = gw.live.load();
            let now = gatehouse_upstream::clock::now_ms();
            let mut ups = serde_json::Map::new();
            for (name, u) in snap.upstreams.iter() {
                let targets: Vec<_> = u
                    .targets
                    .iter()
                    .map(|t| {
                        let (health, ejected_for_ms) = match t.health.verdict(now) {
                            Verdict::Healthy => ("healthy", None),
                            Verdict::ActiveDown => ("unhealthy", None),
                            Verdict::Ejected(until) => ("ejected", Some(until - now)),
                        };
                        serde_json::json!({
                            "address": &*t.address,
                            "resolved": t.socket_addr().map(|a| a.to_string()),
                            "health": health,
                            "ejected_for_ms": ejected_for_ms,
                            "slow_start_share": t.health.ramp(u.config.slow_start.map(|d| d.get()), now),
                            "health_transitions": t.health.transitions(),
                            "in_flight": t.in_flight(),
                            "ewma_latency_ms": t.ewma_ns() as f64 / 1e6,
                        })
                    })
                    .collect();
                let breaker = u.breaker.as_ref().map(|b| {
                    serde_json::json!({
                        "state": b.state(now).as_str(),
                        "times_opened": b.times_opened(),
                    })
                });
                let retries = serde_json::json!({
                    "attempts": u.retries.attempts,
                    "sent": u.budget.retries(),
                    "denied_by_budget": u.budget.denied(),
                });
                ups.insert(
                    name.clone(),
                    serde_json::json!({
                        "balancer": format!("{:?}", u.config.balancer),
                        "targets": targets,
                        "circuit_breaker": breaker,
                        "retries": retries,
                        "in_flight": u.in_flight(),
                    }),
                );
            }
            json(StatusCode::OK, serde_json::Value::Object(ups))
        }
        (_, "/admin/consumers") => consumers::collection(gw, req).await,
        (_, path) if path.starts_with("/admin/caches/") => {
            let path = path.trim_start_matches("/admin/caches/").to_string();
            caches::endpoint(gw, req, &path).await
        }
        (method, path) if path.starts_with("/admin/limits/") => {
            let policy = path.trim_start_matches("/admin/limits/");
            limits::endpoint(gw, method, policy, req.uri().query()).await
        }
        (method, path) if path.starts_with("/admin/consumers/") => {
            let method = method.clone();
            let path = path.to_string();
            match path.trim_start_matches("/admin/consumers/").split_once('/') {
                None => {
                    consumers::one(gw, &method, path.trim_start_matches("/admin/consumers/")).await
                }
                Some(_) => keys::endpoint(gw, &method, &path).await,
            }
        }
        (_, path) => problem(
            StatusCode::NOT_FOUND,
            format!("no admin endpoint {} {path}", req.method()),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_policy_secrets_are_redacted_and_names_are_not() {
        let mut v = serde_json::json!({
            "consumers": [{"name": "a", "credentials": [
                {"type": "api_key", "key": "k-123"},
                {"type": "basic", "username": "u", "password_hash": "$argon2id$x"},
                {"type": "http_signature", "key_id": "k1", "secret": "hmac-1"},
                {"type": "http_signature", "key_id": "k2", "public_key": "keys/k2.pem"}]}],
            "policies": {"j": {"type": "jwt", "secret": "jwt-1"},
                         "i": {"type": "oauth2_introspection", "client_id": "gw", "client_secret": "cs-1"}},
        });
        redact(&mut v);
        let text = v.to_string();
        for secret in ["k-123", "$argon2id$x", "hmac-1", "jwt-1", "cs-1"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        for name in ["k1", "keys/k2.pem", "gw"] {
            assert!(text.contains(name), "{name} redacted in {text}");
        }
    }
}
