//! Running a route's policy chain: the request phase (with bounded waits), the buffered
//! bodies the chain declared, and the response phase with its body filters. The
//! pipeline calls these in order; a chain that needs nothing costs a loop over
//! synchronous calls and nothing else.

use crate::body::{BodyMeter, ClientFault, ProxyBody, RequestBody};
use crate::linger::LingeringBody;
use crate::route::Step;
use bytes::Bytes;
use gatehouse_config::AuthMode;
use gatehouse_core::{
    CREDENTIALS_MISSING, Flow, LocalResponse, Problem, RequestBodyNeed, RequestCtx,
    ResponseBodyNeed, ShortCircuit, problem_response,
};
use http::{HeaderValue, Method, Response, StatusCode, header};
use std::time::Instant;

/// What the request phase came to.
pub struct RequestPhase {
    /// How many policies ran their request phase (their response phases run in reverse).
    pub ran: usize,
    /// The answer of the policy that stopped the chain, if one did.
    pub answered: Option<LocalResponse>,
}

/// Runs the request phase of `steps` in order; the first answer ends it and is recorded
/// (policy, reason, status) whatever the policy remembered to do. The authenticating
/// policies run as one step where the first of them is listed, combined by `auth`.
pub async fn request_phase(
    steps: &[Step],
    auth: AuthMode,
    parts: &mut http::request::Parts,
    ctx: &mut RequestCtx,
) -> RequestPhase {
    let mut ran = 0;
    let mut authenticated = false;
    for step in steps {
        ran += 1;
        let stopped = if step.policy.authenticates() {
            if authenticated {
                continue;
            }
            authenticated = true;
            authenticate(steps, auth, parts, ctx).await
        } else {
            run(step, parts, ctx)
                .await
                .map(|(response, reason)| (step, response, reason))
        };
        if let Some((by, response, reason)) = stopped {
            ctx.short_circuit = Some(ShortCircuit {
                policy: by.policy.name().to_string(),
                reason,
                status: response.status().as_u16(),
            });
            return RequestPhase {
                ran,
                answered: Some(response),
            };
        }
    }
    RequestPhase {
        ran,
        answered: None,
    }
}

/// One policy's request phase, waits included; `Some` is its answer.
async fn run(
    step: &Step,
    parts: &mut http::request::Parts,
    ctx: &mut RequestCtx,
) -> Option<(LocalResponse, &'static str)> {
    // A clock read only for a request whose spans are recorded.
    let start = ctx.spans.is_some().then(Instant::now);
    let mut flow = step.policy.on_request(parts, ctx);
    if let Flow::Wait(_) = flow {
        // Boxed: the waiting path pays for its own state, the request future does not.
        flow = Box::pin(wait(step, flow, parts, ctx)).await;
    }
    let answer = match flow {
        Flow::Respond { response, reason } => Some((response, reason)),
        _ => None,
    };
    if let Some(start) = start {
        let reason = answer.as_ref().map(|(_, r)| *r);
        policy_span(ctx, step, "request", start, reason);
    }
    answer
}

/// Records one policy run as an INTERNAL span of the request.
fn policy_span(
    ctx: &mut RequestCtx,
    step: &Step,
    phase: &'static str,
    start: Instant,
    answered: Option<&'static str>,
) {
    use gatehouse_core::trace::{AttributeValue as V, SpanKind, SpanRecord, new_span_id};
    let Some(spans) = ctx.spans.as_mut() else {
        return;
    };
    let mut attributes = vec![
        ("gatehouse.policy", V::Str(step.name.clone())),
        ("gatehouse.phase", V::Str(phase.into())),
    ];
    if let Some(reason) = answered {
        attributes.push(("gatehouse.short_circuit.reason", V::Str(reason.into())));
    }
    spans.push(SpanRecord {
        span_id: new_span_id(),
        kind: SpanKind::Internal,
        name: step.name.clone(),
        start,
        end: Instant::now(),
        attributes,
        error: None,
    });
}

/// The route's authenticating policies as one step: each first scrubs what only it may
/// set, then `any`: in config order until one admits; when none does, the answer is the
/// first one about a credential that was presented and refused, else the first (no
/// credential at all). `all`: each must admit; the first refusal answers.
async fn authenticate<'s>(
    steps: &'s [Step],
    auth: AuthMode,
    parts: &mut http::request::Parts,
    ctx: &mut RequestCtx,
) -> Option<(&'s Step, LocalResponse, &'static str)> {
    let mut refused: Option<(&Step, LocalResponse, &'static str)> = None;
    for step in steps.iter().filter(|s| s.policy.authenticates()) {
        step.policy.scrub(parts);
    }
    for step in steps.iter().filter(|s| s.policy.authenticates()) {
        match (run(step, parts, ctx).await, auth) {
            (None, AuthMode::Any) => return None,
            (None, AuthMode::All) => {}
            (Some((response, reason)), AuthMode::All) => return Some((step, response, reason)),
            (Some((response, reason)), AuthMode::Any) => {
                let better = match &refused {
                    None => true,
                    Some((_, _, r)) => *r == CREDENTIALS_MISSING && reason != CREDENTIALS_MISSING,
                };
                if better {
                    refused = Some((step, response, reason));
                }
            }
        }
    }
    refused
}

/// Awaits a policy's waits (it may wait again after resuming) until it decides, all
/// within its `timeout`. A failed or timed-out wait becomes its problem answer.
async fn wait(
    step: &Step,
    mut flow: Flow,
    parts: &mut http::request::Parts,
    ctx: &mut RequestCtx,
) -> Flow {
    let deadline = tokio::time::Instant::now() + step.timeout;
    let name = step.policy.name();
    while let Flow::Wait(w) = flow {
        let (reason, problem) = match tokio::time::timeout_at(deadline, w.into_future()).await {
            Ok(Ok(resume)) => {
                flow = resume(parts, ctx);
                continue;
            }
            Ok(Err(p)) => ("wait_failed", p),
            Err(_) => ("wait_timeout", step.policy.on_wait_timeout(step.timeout)),
        };
        tracing::warn!(request_id = %ctx.request_id, policy = name, reason, cause = problem.log_text(), "policy wait ended without a decision");
        return Flow::respond(reason, problem_response(&problem, &ctx.request_id));
    }
    flow
}

/// How much of this request's body the chain reads before its request phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRead {
    /// All of it, within the smallest limit of the policies that want it whole.
    Whole(u64),
    /// The largest prefix the inspecting policies asked for; the rest streams.
    Prefix(u64),
}

/// What the chain's policies want read of this request's body: whole (the smallest of
/// their limits) if any wants it whole, else the largest prefix asked, or `None` when
/// none wants it and it streams.
pub fn request_body_read(steps: &[Step], req: &http::request::Parts) -> Option<BodyRead> {
    let mut whole: Option<u64> = None;
    let mut prefix: Option<u64> = None;
    for s in steps {
        match s.policy.body_needs().request {
            RequestBodyNeed::Buffered { max } if s.policy.buffers_request(req) => {
                whole = Some(whole.map_or(max, |w| w.min(max)));
            }
            RequestBodyNeed::Prefix { max } if s.policy.buffers_request(req) => {
                prefix = Some(prefix.map_or(max, |p| p.max(max)));
            }
            _ => {}
        }
    }
    whole.map(BodyRead::Whole).or(prefix.map(BodyRead::Prefix))
}

/// The response-body limit of the policies that ran and want this response's body
/// whole (the smallest of their limits), or `None` when none does and it streams.
pub fn response_buffer_limit(
    steps: &[Step],
    resp: &http::response::Parts,
    ctx: &RequestCtx,
) -> Option<u64> {
    steps
        .iter()
        .filter_map(|s| match s.policy.body_needs().response {
            ResponseBodyNeed::Buffered { max } => {
                s.policy.buffers_response(resp, ctx).then_some(max)
            }
            _ => None,
        })
        .min()
}

/// Reads the whole client body for a chain that declared it, refusing more than `limit`
/// bytes (413) before any upstream is contacted.
pub async fn buffer_request(
    body: LingeringBody,
    limit: u64,
    meter: &std::sync::Arc<BodyMeter>,
    pace: crate::body::BodyPace,
) -> Result<Bytes, ClientFault> {
    use http_body::Body as _;
    if body.size_hint().lower() > limit {
        return Err(ClientFault::TooLarge(limit));
    }
    RequestBody::new(body, Some(limit), meter.clone(), pace)
        .read_all()
        .await
}

/// Reads at least the first `prefix` bytes of the client's body (all of a shorter one;
/// `limit` bounds the whole body as it streams on). The bytes read, and the body that
/// still has the rest when they are not all of it.
pub async fn read_request_prefix(
    body: LingeringBody,
    prefix: u64,
    limit: Option<u64>,
    meter: &std::sync::Arc<BodyMeter>,
    pace: crate::body::BodyPace,
) -> Result<(Bytes, Option<RequestBody>), ClientFault> {
    let mut b = RequestBody::new(body, limit, meter.clone(), pace);
    let (head, ended) = b.read_prefix(prefix).await?;
    if ended {
        return Ok((head, None));
    }
    b.put_back(head.clone());
    Ok((head, Some(b)))
}

/// Makes the request head describe the buffered body the chain leaves (a policy may have
/// replaced it): an exact Content-Length, no chunked framing.
pub fn settle_request_body(parts: &mut http::request::Parts, body: &Bytes) {
    parts.headers.remove(header::TRANSFER_ENCODING);
    // An empty body stays without a length unless the client announced one.
    if body.is_empty() && !parts.headers.contains_key(header::CONTENT_LENGTH) {
        return;
    }
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
}

/// Reads the whole response body for a chain that declared it. A body larger than `max`
/// cannot be shown to the policies that asked for all of it, nor passed on unseen: 502.
pub async fn buffer_response(
    parts: http::response::Parts,
    body: ProxyBody,
    max: u64,
    request_id: &str,
) -> Result<(http::response::Parts, Bytes), LocalResponse> {
    use http_body_util::BodyExt;
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok((parts, c.to_bytes())),
        Err(e) => {
            let p = Problem::internal(
                StatusCode::BAD_GATEWAY,
                format!("response body could not be buffered (limit {max} bytes): {e}"),
            );
            Err(problem_response(&p, request_id))
        }
    }
}

/// Runs the response phase of the policies that ran, in reverse (response encoders last),
/// then puts the chain's buffered body and filters in place with a truthful
/// Content-Length.
pub fn response_phase(
    steps: &[Step],
    method: &Method,
    mut parts: http::response::Parts,
    mut body: ProxyBody,
    ctx: &mut RequestCtx,
) -> Response<ProxyBody> {
    let t = Instant::now();
    let recorded = ctx.spans.is_some();
    // Reverse order, encoders (compression) after everything else: the others must see
    // the body as the upstream sent it.
    let order = steps
        .iter()
        .rev()
        .filter(|s| !s.policy.encodes_response())
        .chain(steps.iter().rev().filter(|s| s.policy.encodes_response()));
    for s in order {
        let start = recorded.then(Instant::now);
        s.policy.on_response(&mut parts, ctx);
        if let Some(start) = start {
            policy_span(ctx, s, "response", start, None);
        }
    }
    let bodiless = *method == Method::HEAD
        || parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let (buffered, filters) = match ctx.bodies_if_any() {
        Some(b) => (b.response.take(), std::mem::take(&mut b.filters)),
        None => (None, Vec::new()),
    };
    if let Some(b) = buffered {
        if !bodiless {
            parts.headers.remove(header::TRANSFER_ENCODING);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
        }
        body = ProxyBody::full(b);
    }
    if !filters.is_empty() && !bodiless {
        // The length is known only at the end; chunked (or h2 framing) tells the truth.
        parts.headers.remove(header::CONTENT_LENGTH);
        body = body.filtered(filters);
    }
    ctx.timings.policies += t.elapsed();
    Response::from_parts(parts, body)
}
