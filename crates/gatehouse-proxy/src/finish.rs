//! The finish phase: runs once when the response body is done or dropped, on every exit
//! path: writes the access-log line and calls each policy's `on_complete`.

use crate::snapshot::Snapshot;
use gatehouse_core::RequestCtx;
use gatehouse_core::trace::{AttributeValue as V, SpanKind, SpanRecord};
use gatehouse_observe::metrics;
use gatehouse_observe::phases::{Breakdown, Measured};
use gatehouse_observe::stats;
use gatehouse_observe::transactions::{self, Transaction};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Everything the finish phase needs, carried by the response body.
pub struct Finish {
    /// The snapshot the request ran on.
    pub snapshot: Arc<Snapshot>,
    /// Matched route index.
    pub route: Option<usize>,
    /// The request context.
    pub ctx: RequestCtx,
    /// Method.
    pub method: http::Method,
    /// Host.
    pub host: String,
    /// Request target as received (cheap to clone; the path is read when logging).
    pub uri: http::Uri,
    /// Protocol version of the request.
    pub version: http::Version,
    /// The client's User-Agent (a cheap reference-counted copy).
    pub user_agent: Option<http::HeaderValue>,
    /// Response status.
    pub status: u16,
    /// Request body bytes.
    pub bytes_in: Arc<crate::body::BodyMeter>,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Error detail when the gateway produced the response.
    pub error: Option<String>,
    /// Keeps the target's in-flight count up until the response body ends.
    pub inflight: Option<gatehouse_upstream::InFlight>,
    /// Holds the upstream's `max_concurrent_requests` slot until the response body ends.
    pub slot: Option<gatehouse_upstream::Slot>,
    /// `ctx.request_id` as a header value, for the upstream request and the response.
    pub request_id_value: http::HeaderValue,
    /// Upstream tries: picks, connects and backoff.
    pub upstream_network: std::time::Duration,
    /// Upstream tries: sent to the response head (or failure).
    pub upstream_exchange: std::time::Duration,
    /// Client body waits before the body went upstream (the rest overlapped a try).
    pub body_wait_before_send: std::time::Duration,
    /// When the response head was handed to the server.
    pub head_at: Option<std::time::Instant>,
    /// Waits for the upstream's response body while the client was ready for it.
    pub upstream_body_wait: std::time::Duration,
    /// The API version that served a versioned route (its index in the route's table).
    pub api_version: Option<usize>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        if self.status == 0 {
            // Dropped before a response existed: the client went away (nginx's 499).
            self.status = crate::error::CLIENT_CLOSED_REQUEST.as_u16();
            self.error.get_or_insert_with(|| {
                "the client closed the connection before the response".into()
            });
        }
        let snap = &self.snapshot;
        if let Some(o) = self.ctx.offence {
            snap.protection.offend(self.ctx.client_ip, o);
        }
        let route = self.route.and_then(|i| snap.routes.get(i));
        if let Some(r) = route {
            for s in &r.policies {
                s.policy.on_complete(&self.ctx);
            }
        }
        if let Some(children) = self.ctx.spans.take()
            && let Some(tracer) = &snap.tracer
        {
            let spans = self.spans(route, children);
            tracer.export(self.ctx.trace, spans);
        }
        let metered = metrics::enabled();
        let kept = transactions::is_on();
        let analyzed = stats::enabled();
        if !metered && !kept && !analyzed && !snap.access_log.is_on() {
            return;
        }
        let ctx = &self.ctx;
        let total = ctx.started.elapsed();
        let breakdown = self.breakdown(total);
        if metered {
            self.meter(route, total);
        }
        if analyzed {
            self.tally(route, total, &breakdown);
        }
        let logged = if snap.access_log.is_on() {
            snap.log_sampling.decide(
                self.status,
                total,
                ctx.short_circuit.is_some() || !ctx.log.is_empty(),
            )
        } else {
            None
        };
        if logged.is_none() && !kept {
            return;
        }
        let ctx = &mut self.ctx;
        let tx = Transaction {
            started: SystemTime::now().checked_sub(total).unwrap_or(UNIX_EPOCH),
            request_id: std::mem::take(&mut ctx.request_id),
            trace_id: ctx.trace.trace_id,
            client_ip: ctx.client_ip,
            listener: ctx.conn.listener.clone(),
            consumer: ctx.consumer.take(),
            method: std::mem::replace(&mut self.method, http::Method::GET),
            host: std::mem::take(&mut self.host),
            uri: std::mem::take(&mut self.uri),
            version: self.version,
            user_agent: self.user_agent.take(),
            status: self.status,
            bytes_in: self
                .bytes_in
                .bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            bytes_out: self.bytes_out,
            route: ctx.route.take(),
            upstream: ctx.upstream.take(),
            upstream_target: ctx.upstream_target.take(),
            attempts: ctx.attempts,
            policies: ctx.timings.policies,
            upstream_connect: ctx.timings.upstream_connect,
            upstream_first_byte: ctx.timings.upstream_first_byte,
            total,
            breakdown,
            short_circuit: ctx.short_circuit.take().map(|s| (s.policy, s.reason)),
            error: self.error.take(),
            annotations: std::mem::take(&mut ctx.log),
        };
        if logged.is_some() {
            snap.access_log.write(&tx.record(logged));
        }
        if kept {
            transactions::keep(tx);
        }
    }
}

impl Finish {
    /// Adds the request to its route's, upstream's and consumer's tallies (quality
    /// score, latency breakdown) and to its client's Top-N counts.
    fn tally(
        &self,
        route: Option<&crate::route::CompiledRoute>,
        total: std::time::Duration,
        breakdown: &Breakdown,
    ) {
        let ctx = &self.ctx;
        let blocked = ctx.short_circuit.as_ref().is_some_and(|sc| {
            sc.status >= 400
                && route.is_some_and(|r| {
                    r.policies
                        .iter()
                        .any(|s| *s.name == *sc.policy && s.policy.guards())
                })
        });
        let consumer = ctx.consumer.as_ref().map(|c| c.name.as_str());
        gatehouse_observe::top::record(&gatehouse_observe::top::Hit {
            client_ip: ctx.client_ip,
            consumer,
            status: self.status,
            refused: ctx
                .short_circuit
                .as_ref()
                .filter(|sc| sc.status >= 400)
                .map(|sc| (sc.policy.as_str(), sc.reason)),
            bytes: self.bytes_out,
            attack: ctx.attack.as_deref(),
        });
        stats::record(&stats::Outcome {
            route: ctx.route.as_ref(),
            upstream: ctx.upstream.as_ref(),
            consumer,
            status: self.status,
            total,
            target: route.map_or_else(
                || self.snapshot.config.analytics.latency_target.get(),
                |r| r.latency_target,
            ),
            blocked,
            breakdown,
        });
    }

    /// Where the `total` went: client, gateway, upstream network and application.
    fn breakdown(&self, total: std::time::Duration) -> Breakdown {
        let body_wait = self.bytes_in.wait();
        let end = self.ctx.started + total;
        Breakdown::of(&Measured {
            total,
            request_body_wait: body_wait,
            request_body_wait_streaming: body_wait.saturating_sub(self.body_wait_before_send),
            response_transfer: self
                .head_at
                .map_or_else(Default::default, |h| end.saturating_duration_since(h)),
            upstream_body_wait: self.upstream_body_wait,
            upstream_network: self.upstream_network,
            upstream_exchange: self.upstream_exchange,
        })
    }

    /// The request's spans: its SERVER span (OpenTelemetry HTTP server conventions, plus
    /// the route, request id and short circuit) followed by the `children` recorded on
    /// the way.
    fn spans(
        &self,
        route: Option<&crate::route::CompiledRoute>,
        mut children: Vec<SpanRecord>,
    ) -> Vec<SpanRecord> {
        let ctx = &self.ctx;
        let method = self.method.as_str();
        let mut attributes = vec![
            ("http.request.method", V::Str(method.into())),
            ("url.path", V::Str(self.uri.path().into())),
            ("http.response.status_code", V::Int(i64::from(self.status))),
            ("client.address", V::Str(ctx.client_ip.to_string().into())),
            (
                "gatehouse.request_id",
                V::Str(ctx.request_id.as_str().into()),
            ),
        ];
        let name = match (route, &ctx.route) {
            (Some(r), Some(n)) => {
                attributes.push(("gatehouse.route", V::Str(Arc::clone(n))));
                let template = self.route.and_then(|i| self.snapshot.config.routes.get(i));
                if let Some(p) = template.and_then(|t| t.matches.path.as_ref()) {
                    attributes.push(("http.route", V::Str(p.value.as_str().into())));
                }
                format!("{method} {}", r.name)
            }
            _ => method.to_string(),
        };
        if let Some(ua) = self.user_agent.as_ref().and_then(|v| v.to_str().ok()) {
            attributes.push(("user_agent.original", V::Str(ua.into())));
        }
        if let Some(sc) = &ctx.short_circuit {
            attributes.push((
                "gatehouse.short_circuit.policy",
                V::Str(sc.policy.as_str().into()),
            ));
            attributes.push(("gatehouse.short_circuit.reason", V::Str(sc.reason.into())));
        }
        let error: Option<Arc<str>> = (self.status >= 500).then(|| self.status.to_string().into());
        if let Some(e) = &error {
            attributes.push(("error.type", V::Str(Arc::clone(e))));
        }
        let server = SpanRecord {
            span_id: ctx.trace.span_id,
            kind: SpanKind::Server,
            name: name.into(),
            start: ctx.started,
            end: std::time::Instant::now(),
            attributes,
            error,
        };
        children.insert(0, server);
        children
    }

    /// Counts the request in the metrics: the request and its duration, the policy that
    /// answered it, or the reason the gateway refused it.
    fn meter(&self, route: Option<&crate::route::CompiledRoute>, total: std::time::Duration) {
        let ctx = &self.ctx;
        let listener = &ctx.conn.listener;
        metrics::active_requests(-1);
        metrics::request(
            listener,
            ctx.route.as_ref(),
            &self.method,
            self.status,
            total,
            ctx.trace.sampled.then_some(ctx.trace.trace_id),
        );
        match &ctx.short_circuit {
            Some(sc) => {
                let step = route.and_then(|r| r.policies.iter().find(|s| *s.name == *sc.policy));
                if let Some(step) = step {
                    metrics::short_circuit(ctx.route.as_ref(), &step.name, sc.reason);
                }
            }
            // A problem the gateway made itself for the client's request.
            None if self.error.is_some() => {
                if let Some(why) = metrics::Rejection::of_status(self.status) {
                    metrics::rejection(listener, why);
                }
            }
            None => {}
        }
    }
}
