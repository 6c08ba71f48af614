//! The request lifecycle, top to bottom (docs/request-lifecycle.md):
//! limits -> route -> request policies -> action -> response policies -> finish.

use crate::api_versions::Pick;
use crate::attempts;
use crate::body::{BodyMeter, ClientFault, ProxyBody, RequestBody};
use crate::chain;
use crate::error::ProxyError;
use crate::finish::Finish;
use crate::forwarded::{self, X_REQUEST_ID};
use crate::head;
use crate::linger::LingeringBody;
use crate::outbound;
use crate::route::{Action, CompiledRoute, redirect_response};
use crate::snapshot::Snapshot;
use crate::upgrade;
use arc_swap::ArcSwap;
use gatehouse_core::problem::render;
use gatehouse_core::{
    Connection, LocalResponse, Offence, Problem, ProblemStyle, RequestBodyNeed, RequestCtx,
    ResponseBodyNeed, problem_response,
};
use gatehouse_router::RequestView;
use gatehouse_router::{Normalization, normalize};
use gatehouse_upstream::PickInput;
use gatehouse_upstream::upstream::cookie;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

/// Facts about the downstream connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The connection as requests and policies see it.
    pub conn: Arc<Connection>,
    /// Largest request head accepted.
    pub max_header_size: u64,
    /// Most header fields a request may carry.
    pub max_header_count: usize,
    /// The listener's `request_rate_per_ip`, if set.
    pub request_rate: Option<Arc<crate::client_rate::ClientRate>>,
    /// How fast request bodies must arrive.
    pub body_pace: crate::body::BodyPace,
    /// How the listener normalizes request paths.
    pub normalization: Normalization,
}

/// A request's body as it arrives: a client's stream, or none for a request a policy
/// sent through the gateway itself (`Dispatch`).
pub enum Inbound {
    /// From a client.
    Client(LingeringBody),
    /// Sent by a policy; bodiless.
    Internal,
}

/// Serves one request; a panic anywhere in its pipeline is contained to it (a 500
/// problem, logged) instead of tearing down the connection and its other streams.
pub async fn handle_contained(
    live: &ArcSwap<Snapshot>,
    conn: &ConnInfo,
    req: Request<Inbound>,
) -> Response<ProxyBody> {
    contain(handle(live, conn, req)).await
}

/// Runs `fut`, turning a panic into a 500 problem response. A plain combinator rather
/// than an `async fn`, which would hold `fut` twice in its state.
fn contain<F: Future<Output = Response<ProxyBody>>>(
    fut: F,
) -> impl Future<Output = Response<ProxyBody>> {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(fut)
        .catch_unwind()
        .map(|r| r.unwrap_or_else(panic_response))
}

fn panic_response(panic: Box<dyn std::any::Any + Send>) -> Response<ProxyBody> {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    let id = forwarded::new_request_id();
    tracing::error!(request_id = %id, panic = %what, "request handler panicked; answered 500");
    let p = Problem::internal(StatusCode::INTERNAL_SERVER_ERROR, format!("panic: {what}"));
    problem_response(&p, &id).map(ProxyBody::full)
}

/// Serves one request on the snapshot that is live when it starts.
pub async fn handle(
    live: &ArcSwap<Snapshot>,
    conn: &ConnInfo,
    req: Request<Inbound>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let snap = live.load_full();
    // Paired with the decrement in the finish phase, which runs on every exit.
    gatehouse_observe::metrics::active_requests(1);
    let (mut parts, body) = req.into_parts();
    let peer = conn.conn.peer.ip();
    let (request_id, request_id_value) = forwarded::request_id(&parts.headers);
    let mut ctx = RequestCtx::new(request_id, Arc::clone(&conn.conn), started);
    ctx.client_ip = forwarded::client_ip(&parts.headers, peer, &snap.trusted_proxies);
    ctx.trace = gatehouse_core::TraceContext::of_request(&mut parts.headers);
    if let Some(tracer) = &snap.tracer
        && tracer.sample(&mut ctx.trace)
    {
        ctx.spans = Some(Vec::new());
    }
    let wants_agent =
        snap.access_log.is_on() || gatehouse_observe::transactions::is_on() || ctx.spans.is_some();
    // Boxed from the start: the record rides on the response body in the end, and a
    // pointer is all the request future and its moves carry meanwhile.
    let mut finish = Box::new(Finish {
        snapshot: snap.clone(),
        route: None,
        ctx,
        method: parts.method.clone(),
        host: String::new(),
        uri: parts.uri.clone(),
        version: parts.version,
        // Only the access log, transactions and spans read it: no lookup when all are off.
        user_agent: wants_agent
            .then(|| parts.headers.get(header::USER_AGENT).cloned())
            .flatten(),
        status: 0,
        bytes_in: Arc::new(BodyMeter::default()),
        bytes_out: 0,
        error: None,
        inflight: None,
        slot: None,
        request_id_value,
        upstream_network: std::time::Duration::ZERO,
        upstream_exchange: std::time::Duration::ZERO,
        body_wait_before_send: std::time::Duration::ZERO,
        head_at: None,
        upstream_body_wait: std::time::Duration::ZERO,
        api_version: None,
    });

    // Limits and head checks that apply before routing.
    let (authority, port) = match check_head(&mut parts, conn, &mut finish) {
        Ok(settled) => settled,
        Err(answer) => {
            if answer.status() != StatusCode::METHOD_NOT_ALLOWED {
                finish.ctx.offence = Some(Offence::BadRequest);
            }
            return local(*answer, finish);
        }
    };
    let protection = &snap.protection;
    let client_ip = finish.ctx.client_ip;
    if protection.denies(client_ip) {
        return local(denied(&mut finish, client_ip == peer), finish);
    }
    if let Some(left_ms) = protection.banned(client_ip) {
        return local(banned(&mut finish, left_ms, client_ip == peer), finish);
    }
    if let Some(rate) = &conn.request_rate
        && !protection.exempt.contains(client_ip)
    {
        let key = protection.key(client_ip);
        let d = rate.check(key, gatehouse_policies::limiter::at(started));
        if !d.allowed {
            finish.ctx.offence = Some(Offence::RateLimit);
            return local(too_many_requests(&mut finish, d.retry_ns), finish);
        }
    }

    // Route, on the normalized path without path parameters.
    let routing_path = normalize::routing_path(parts.uri.path(), conn.normalization.merge_slashes);
    let view = RequestView {
        host: &finish.host,
        path: &routing_path,
        method: &parts.method,
        headers: &parts.headers,
        query: parts.uri.query(),
    };
    let matched = if head::is_guarded_method(&parts.method) {
        // TRACE reaches only a route that lists it; anything else is 405, routed or not.
        snap.router
            .match_route(&view)
            .filter(|m| snap.routes.get(m.route).is_some_and(|r| r.allows_trace))
            .ok_or(StatusCode::METHOD_NOT_ALLOWED)
    } else {
        snap.router.match_route(&view).ok_or(StatusCode::NOT_FOUND)
    };
    drop(routing_path);
    let matched = match matched {
        Ok(m) => m,
        Err(StatusCode::METHOD_NOT_ALLOWED) => {
            return local(method_not_allowed(&mut finish), finish);
        }
        Err(_) => {
            let detail = format!(
                "no route for {} {}{}",
                parts.method,
                finish.host,
                parts.uri.path()
            );
            return local(
                problem(
                    &mut finish,
                    Problem::internal(StatusCode::NOT_FOUND, detail),
                ),
                finish,
            );
        }
    };
    let Some(route) = snap.routes.get(matched.route) else {
        return local(
            problem(
                &mut finish,
                Problem::internal(StatusCode::NOT_FOUND, "route vanished"),
            ),
            finish,
        );
    };
    finish.route = Some(matched.route);
    finish.ctx.route = Some(Arc::clone(&route.name));
    finish.ctx.params = matched.params;

    // A versioned route hands the request to the version it names (that version's
    // policies, action and rewrite), or answers it (unknown, missing, retired).
    let route = match &route.action {
        Action::Versions(table) => match table.pick(&mut parts, &finish.ctx.request_id) {
            Pick::Serve(i, v) => {
                finish.api_version = Some(i);
                &v.route
            }
            Pick::Answer(r) => return local(r, finish),
        },
        _ => route,
    };

    // The one Host the upstream sees: the winning authority, or the route's own for a
    // request that named none; only allowed upgrades travel on.
    let host_header = match authority {
        // It came from the Host header, which is already in place.
        Some(_) if parts.uri.authority().is_none() => None,
        Some(raw) => Some(raw),
        None => route
            .default_host
            .clone()
            .or_else(|| HeaderValue::from_str(&conn.conn.local.to_string()).ok()),
    };
    if let Some(h) = host_header {
        parts.headers.insert(header::HOST, h);
    }
    route.filter_upgrade(&mut parts.headers);

    if let Some(limit) = route.max_body_size
        && content_length(&parts).is_some_and(|n| n > limit)
    {
        let detail = format!("request body is larger than the limit of {limit} bytes");
        return local(
            problem(
                &mut finish,
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, detail),
            ),
            finish,
        );
    }

    // The body, when the chain declared it needs it whole: read now, before any policy
    // or upstream, so an oversized one is refused before anything is contacted.
    // Only the policies that want this request's body (by its head) bound it.
    let wanted = match route.needs.request {
        RequestBodyNeed::Untouched => None,
        RequestBodyNeed::Buffered { .. } | RequestBodyNeed::Prefix { .. } => {
            chain::request_body_read(&route.policies, &parts)
        }
    };
    let body = match (body, wanted) {
        // Nothing to read: an empty body, as buffered.
        (Inbound::Internal, _) => {
            finish.ctx.bodies().request = Some(bytes::Bytes::new());
            ClientBody::Buffered
        }
        (Inbound::Client(body), None) => ClientBody::Stream(body, conn.body_pace),
        (Inbound::Client(body), Some(chain::BodyRead::Prefix(n))) => {
            let read = chain::read_request_prefix(
                body,
                n,
                route.max_body_size,
                &finish.bytes_in,
                conn.body_pace,
            )
            .await;
            match read {
                Ok((head, rest)) => {
                    let bodies = finish.ctx.bodies();
                    bodies.request = Some(head);
                    bodies.request_partial = rest.is_some();
                    match rest {
                        Some(rest) => ClientBody::Prefixed(rest),
                        None => ClientBody::Buffered,
                    }
                }
                Err(fault) => {
                    finish.ctx.offence = fault.offence();
                    let r = crate::error::answer(&fault, &finish.ctx.request_id, 0);
                    return local(r, finish);
                }
            }
        }
        (Inbound::Client(body), Some(chain::BodyRead::Whole(max))) => {
            let limit = route.max_body_size.map_or(max, |m| m.min(max));
            match chain::buffer_request(body, limit, &finish.bytes_in, conn.body_pace).await {
                Ok(b) => finish.ctx.bodies().request = Some(b),
                Err(fault) => {
                    finish.ctx.offence = fault.offence();
                    let r = crate::error::answer(&fault, &finish.ctx.request_id, 0);
                    return local(r, finish);
                }
            }
            ClientBody::Buffered
        }
    };

    // Request policies, in config order; the first answer ends the chain. Timing is only
    // taken when there is a chain, since clock reads show up in the per-request CPU.
    let phase = if route.policies.is_empty() {
        chain::RequestPhase {
            ran: 0,
            answered: None,
        }
    } else {
        let t = Instant::now();
        let phase = chain::request_phase(
            &route.policies,
            route.auth_mode,
            &mut parts,
            &mut finish.ctx,
        )
        .await;
        finish.ctx.timings.policies = t.elapsed();
        phase
    };

    // The action, unless a policy already answered.
    let resp = match phase.answered {
        Some(r) => r.map(ProxyBody::full),
        None => run_action(route, parts, body, port, &mut finish).await,
    };

    // Response policies, in reverse, over the policies whose request phase ran.
    if phase.ran == 0 {
        return respond(resp, finish);
    }
    let steps = &route.policies[..phase.ran];
    let (rparts, rbody) = resp.into_parts();
    let wanted = match route.needs.response {
        ResponseBodyNeed::Buffered { .. } => {
            chain::response_buffer_limit(steps, &rparts, &finish.ctx)
        }
        _ => None,
    };
    let (rparts, rbody) = match wanted {
        Some(max) => {
            match chain::buffer_response(rparts, rbody, max, &finish.ctx.request_id).await {
                Ok((rparts, b)) => {
                    finish.ctx.bodies().response = Some(b);
                    (rparts, ProxyBody::full(bytes::Bytes::new()))
                }
                // The policies that must see the whole body cannot: answered as is.
                Err(answer) => return local(answer, finish),
            }
        }
        None => (rparts, rbody),
    };
    let resp = chain::response_phase(steps, &finish.method, rparts, rbody, &mut finish.ctx);
    respond(resp, finish)
}

/// The client's body as the action gets it: still streaming, or already read into
/// `ctx.bodies.request` for a chain that declared it.
enum ClientBody {
    Stream(LingeringBody, crate::body::BodyPace),
    Buffered,
    /// Its first bytes read for the policies (and kept in front), the rest unread.
    Prefixed(RequestBody),
}

async fn run_action(
    route: &CompiledRoute,
    parts: http::request::Parts,
    body: ClientBody,
    port: Option<u16>,
    finish: &mut Finish,
) -> Response<ProxyBody> {
    match &route.action {
        Action::Respond {
            status,
            headers,
            body,
        } => {
            let mut r = Response::new(ProxyBody::full(body.clone()));
            *r.status_mut() = *status;
            *r.headers_mut() = headers.clone();
            r
        }
        Action::Redirect(rd) => redirect_response(
            rd,
            &finish.host,
            port,
            parts.uri.path(),
            parts.uri.query(),
            &finish.ctx.params,
        )
        .map(ProxyBody::full),
        Action::Aggregate(plan) => plan.run(route, &parts, finish).await.map(ProxyBody::full),
        // Resolved to the version's own route before the policies ran.
        Action::Versions(_) => problem(
            finish,
            Problem::internal(StatusCode::INTERNAL_SERVER_ERROR, "unresolved API version"),
        )
        .map(ProxyBody::full),
        Action::Upstream(_) | Action::Split(..) => match proxy(route, parts, body, finish).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(request_id = %finish.ctx.request_id, error = %e, "upstream request failed");
                finish.ctx.offence = ClientFault::find(&e).and_then(ClientFault::offence);
                crate::error::answer(&e, &finish.ctx.request_id, finish.ctx.attempts)
                    .map(ProxyBody::full)
            }
        },
    }
}

/// Forwards to a target of the route's upstream (with retries, see attempts.rs).
async fn proxy(
    route: &CompiledRoute,
    mut parts: http::request::Parts,
    body: ClientBody,
    finish: &mut Finish,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Some(up) = route.upstream(&parts, finish.ctx.client_ip) else {
        return Err(ProxyError::NoTarget {
            upstream: Arc::clone(&route.name),
        });
    };
    finish.slot = Some(up.begin_request().ok_or_else(|| ProxyError::Unavailable {
        upstream: up.name.clone(),
        reason: "max_concurrent_requests reached",
        retry_after: 1,
    })?);
    let ctx = &mut finish.ctx;
    ctx.upstream = Some(Arc::clone(&up.name));
    // Owned: the headers are rewritten before the target is picked.
    let sticky = up
        .sticky_cookie()
        .and_then(|n| cookie(&parts.headers, n))
        .map(str::to_owned);
    let input = PickInput {
        client_ip: ctx.client_ip,
        hash_key: up.hash_key(&parts, ctx.client_ip),
        sticky: sticky.as_deref(),
    };

    let is_upgrade = upgrade::is_upgrade(&parts);
    let client_upgrade = is_upgrade
        .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    let trusted = &finish.snapshot.trusted_proxies;
    let id = &finish.request_id_value;
    outbound::rewrite_request(&mut parts, route, up, ctx, trusted, id)?;
    // Looked up only when some upstream speaks TLS: a config without any pays one check.
    let upstream_tls = &finish.snapshot.upstream_tls;
    let tls = (!upstream_tls.is_empty())
        .then(|| upstream_tls.get(&*up.name).cloned())
        .flatten();
    let tls = tls.as_deref();

    let served = if is_upgrade {
        // Rare and large: kept out of the request future's size.
        let span = gatehouse_core::trace::new_span_id();
        parts.headers.insert(
            gatehouse_core::trace::TRACEPARENT.clone(),
            finish.ctx.trace.traceparent(span),
        );
        let start = finish.ctx.spans.is_some().then(Instant::now);
        let method = parts.method.clone();
        let mut outcome = Box::pin(attempts::upgrade(up, tls, &input, parts)).await;
        if let (Some(start), Some(target)) = (start, &outcome.tried.target) {
            let ended = match &outcome.result {
                Ok(s) => Ok(s.forwarded.response.status().as_u16()),
                Err(e) => Err(e),
            };
            let s = attempts::try_span(&method, target, 0, (span, start), ended);
            outcome.tried.spans.push(s);
        }
        record(finish, outcome)?
    } else {
        let admission = attempts::admit(up)?;
        let payload = match body {
            ClientBody::Stream(b, pace) => {
                payload(
                    up,
                    &parts.method,
                    b,
                    route.max_body_size,
                    &finish.bytes_in,
                    pace,
                )
                .await?
            }
            ClientBody::Buffered => {
                let b = finish.ctx.bodies().request.take().unwrap_or_default();
                chain::settle_request_body(&mut parts, &b);
                attempts::Payload::Replay(b)
            }
            ClientBody::Prefixed(rest) => {
                finish.ctx.bodies().request = None;
                attempts::Payload::Stream(rest)
            }
        };
        finish.body_wait_before_send = finish.bytes_in.wait();
        let head = attempts::Head {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            trace: finish.ctx.trace,
            record: finish.ctx.spans.is_some(),
        };
        let outcome = attempts::run(up, tls, &input, head, payload, admission).await;
        record(finish, outcome)?
    };
    let attempts::Served {
        forwarded: mut fwd,
        target,
        pick,
    } = served;
    let ctx = &mut finish.ctx;
    target.record_latency(fwd.first_byte);
    ctx.timings.upstream_connect = Some(fwd.connect);
    ctx.timings.upstream_first_byte = Some(fwd.first_byte);

    let resp = &mut fwd.response;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client) = client_upgrade
    {
        upgrade::splice(client, hyper::upgrade::on(&mut *resp));
    }
    outbound::rewrite_response(resp, up, &target, pick, ctx.attempts);
    Ok(fwd.response)
}

/// Decides how the client's body travels: bodiless requests and small bodies of
/// retryable requests are buffered so a retry can resend them; the rest streams.
async fn payload(
    up: &gatehouse_upstream::UpstreamState,
    method: &http::Method,
    body: LingeringBody,
    max_body_size: Option<u64>,
    meter: &Arc<BodyMeter>,
    pace: crate::body::BodyPace,
) -> Result<attempts::Payload, ProxyError> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok(attempts::Payload::Replay(bytes::Bytes::new()));
    }
    // Only a body that a later try may resend is buffered; a connect failure can move on
    // without it, since an unsent stream is still unread.
    let small = body
        .size_hint()
        .exact()
        .is_some_and(|n| n <= up.retries.replay_buffer.0);
    if small && up.resends_after_send(method.as_str()) {
        // Nothing healthy: answer before reading a body that could only be thrown away.
        if !up.any_healthy() {
            return Err(crate::error::no_healthy_target(up));
        }
        // Content-Length is known and was checked against max_body_size already.
        return crate::body::read_for_replay(body, meter, pace)
            .await
            .map(attempts::Payload::Replay)
            .map_err(ProxyError::from);
    }
    Ok(attempts::Payload::Stream(RequestBody::new(
        body,
        max_body_size,
        meter.clone(),
        pace,
    )))
}

/// Writes what the tries came to into the request's record; yields their result.
fn record(finish: &mut Finish, o: attempts::Outcome) -> Result<attempts::Served, ProxyError> {
    if let Some(spans) = finish.ctx.spans.as_mut() {
        spans.extend(o.tried.spans);
    }
    finish.upstream_network += o.tried.network;
    finish.upstream_exchange += o.tried.exchange;
    finish.ctx.attempts = o.tried.attempts;
    finish.ctx.upstream_target = o.tried.target;
    finish.inflight = o.tried.inflight;
    o.result
}

/// The checks made before routing, in order: head size, CONNECT, framing, the one
/// authority, path normalization (which rewrites `parts.uri`). Returns the authority to
/// send upstream (as written, port included) and the port asked for, or the answer.
fn check_head(
    parts: &mut http::request::Parts,
    conn: &ConnInfo,
    finish: &mut Finish,
) -> Result<(Option<HeaderValue>, Option<u16>), Box<LocalResponse>> {
    if head_size(parts) > conn.max_header_size {
        let detail = format!("request head is larger than {} bytes", conn.max_header_size);
        let p = Problem::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, detail);
        return Err(Box::new(problem(finish, p)));
    }
    if parts.headers.len() > conn.max_header_count {
        let detail = format!(
            "request has more than {} header fields",
            conn.max_header_count
        );
        let p = Problem::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, detail);
        return Err(Box::new(problem(finish, p)));
    }
    if parts.method == Method::CONNECT {
        // An authority-form target names a tunnel, not a host: refused before it is read,
        // and the connection closed, since tunnel bytes may follow.
        let mut r = method_not_allowed(finish);
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Err(Box::new(r));
    }
    head::check_transfer_encoding(&parts.headers).map_err(|e| Box::new(head_error(finish, &e)))?;
    let authority = head::authority(&parts.uri, &parts.headers, parts.version)
        .map_err(|e| Box::new(head_error(finish, &e)))?;
    // The lower-cased host moves into the record; the raw value is what goes upstream.
    let settled = match authority {
        Some(a) => {
            finish.host = a.host;
            (Some(a.raw), a.port)
        }
        None => (None, None),
    };
    match normalize::normalize(parts.uri.path(), conn.normalization) {
        Ok(Cow::Borrowed(_)) => {}
        Ok(Cow::Owned(path)) => {
            parts.uri = with_path(&parts.uri, &path).ok_or_else(|| {
                let p = Problem::new(
                    StatusCode::BAD_REQUEST,
                    "the request target is not a valid URI",
                );
                Box::new(problem(finish, p))
            })?;
        }
        Err(e) => {
            let p = Problem::new(StatusCode::BAD_REQUEST, e.to_string());
            return Err(Box::new(problem(finish, p)));
        }
    }
    Ok(settled)
}

/// `uri` with its path replaced by `path` (the query, scheme and authority kept).
fn with_path(uri: &http::Uri, path: &str) -> Option<http::Uri> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

/// A refused request head, answered and then the connection closed (as nginx does): a
/// client that sends an ambiguous head cannot be trusted to frame what follows it.
fn head_error(finish: &mut Finish, e: &head::HeadError) -> LocalResponse {
    let mut r = problem(finish, Problem::new(e.status(), e.to_string()));
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// 405 for CONNECT and for TRACE without a route that lists it.
fn method_not_allowed(finish: &mut Finish) -> LocalResponse {
    let detail = format!("{} is not allowed here", finish.method);
    let mut r = problem(finish, Problem::new(StatusCode::METHOD_NOT_ALLOWED, detail));
    r.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"),
    );
    r
}

/// Approximate size of the request head on the wire.
fn head_size(parts: &http::request::Parts) -> u64 {
    let target = parts.uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + parts.uri.authority().map_or(0, |a| a.as_str().len() + 7);
    let line = parts.method.as_str().len() + target + 12;
    let headers: usize = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    (line + headers) as u64
}

fn content_length(parts: &http::request::Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// 403 for a client IP in `protection.deny`; its own connection (not a trusted proxy's,
/// which carries others' requests) is closed after it.
fn denied(finish: &mut Finish, close: bool) -> LocalResponse {
    let p = Problem::new(StatusCode::FORBIDDEN, "Access to this resource is denied.");
    let mut r = problem(finish, p);
    if close {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// 403 for a banned client, with `Retry-After` (the ban's end); its own connection (not
/// a trusted proxy's) is closed after it.
fn banned(finish: &mut Finish, left_ms: u64, close: bool) -> LocalResponse {
    let mut r = denied(finish, close);
    let secs = left_ms.div_ceil(1000).max(1);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// 429 for a client over its listener's `request_rate_per_ip`, with `Retry-After`.
fn too_many_requests(finish: &mut Finish, retry_ns: u64) -> LocalResponse {
    let p = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too many requests from this address; retry later",
    );
    let mut r = problem(finish, p);
    let secs = retry_ns.div_ceil(1_000_000_000).max(1);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// Builds the problem response of a gateway-made error (its cause is logged by `respond`).
fn problem(finish: &mut Finish, p: Problem) -> LocalResponse {
    problem_response(&p, &finish.ctx.request_id)
}

/// Sends a local response that bypassed the policy chain.
fn local(resp: LocalResponse, finish: Box<Finish>) -> Response<ProxyBody> {
    respond(resp.map(ProxyBody::full), finish)
}

/// Stamps the request id and attaches the finish phase to the body. Every problem the
/// gateway or a policy made passes here: its cause goes to the log, and its body is
/// rendered again when the config asks for another style than the default.
fn respond(mut resp: Response<ProxyBody>, mut finish: Box<Finish>) -> Response<ProxyBody> {
    if let Some(p) = resp.extensions_mut().remove::<Problem>() {
        if finish.error.is_none() {
            finish.error = Some(p.log_text().to_string());
        }
        let style = &finish.snapshot.problem_style;
        if *style != ProblemStyle::default() {
            *resp.body_mut() = ProxyBody::full(render(&p, &finish.ctx.request_id, style));
        }
    }
    resp.headers_mut()
        .insert(X_REQUEST_ID.clone(), finish.request_id_value.clone());
    if let Some(i) = finish.api_version
        && let Some(Action::Versions(t)) = finish
            .route
            .and_then(|r| finish.snapshot.routes.get(r))
            .map(|r| &r.action)
        && let Some(v) = t.get(i)
    {
        v.stamp(resp.headers_mut());
    }
    finish.status = resp.status().as_u16();
    finish.head_at = Some(Instant::now());
    resp.map(|b| b.with_finish(finish))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_becomes_a_500_problem() {
        fn explode() -> Response<ProxyBody> {
            panic!("boom")
        }
        let resp = contain(async { explode() }).await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            resp.headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        let ok = contain(async { Response::new(ProxyBody::full(bytes::Bytes::new())) }).await;
        assert_eq!(ok.status(), StatusCode::OK);
    }
}
