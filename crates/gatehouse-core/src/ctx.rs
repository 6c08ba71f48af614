//! Per-request context: what every phase of the pipeline may read or record.

use crate::{Bodies, Connection, Consumer};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a policy answered a request itself; reaches the access log.
#[derive(Debug, Clone)]
pub struct ShortCircuit {
    /// Name of the policy that answered.
    pub policy: String,
    /// Short machine-readable reason (`ip_denied`, ...).
    pub reason: &'static str,
    /// Status of the local response.
    pub status: u16,
}

/// Where the time of one request went, for the access log.
#[derive(Debug, Clone, Default)]
pub struct PhaseTimings {
    /// Time spent in request and response policies.
    pub policies: Duration,
    /// Time to obtain an upstream connection (zero when a pooled one was reused).
    pub upstream_connect: Option<Duration>,
    /// Time from sending the request upstream to the response head.
    pub upstream_first_byte: Option<Duration>,
}

/// State carried by one request through the pipeline.
#[derive(Debug)]
pub struct RequestCtx {
    /// The request id (kept from the client when well formed, generated otherwise).
    pub request_id: String,
    /// The downstream connection (shared by the requests it carries).
    pub conn: Arc<Connection>,
    /// The authenticated consumer, once an authentication policy set it (shared: consumers
    /// are long-lived records, and a pointer keeps the context small).
    pub consumer: Option<Arc<Consumer>>,
    /// Typed per-request state a policy keeps from its request phase to its response
    /// phase (one value per type; use a private type as the key).
    pub extensions: http::Extensions,
    /// Buffered bodies and response filters ([`RequestCtx::bodies`]); boxed and made on
    /// first use, so a request whose chain needs no body carries one pointer for them.
    bodies: Option<Box<Bodies>>,
    /// The client IP after applying trusted proxies.
    pub client_ip: IpAddr,
    /// When the request head was received.
    pub started: Instant,
    /// Name of the matched route, if any.
    pub route: Option<Arc<str>>,
    /// Path parameters captured by a template match.
    pub params: Vec<(String, String)>,
    /// Set when a policy or the gateway answered locally.
    pub short_circuit: Option<ShortCircuit>,
    /// Set when the answer refuses abuse (a rate limit, the WAF, a bot filter...): the
    /// finish phase counts it against the client (`protection.ban`).
    pub offence: Option<crate::Offence>,
    /// Objects policies add to the request's access-log line, each under its own key
    /// (`waf`); a request with any is logged whatever the sampling. Keys never replace
    /// the line's own fields.
    pub log: Vec<(&'static str, serde_json::Value)>,
    /// What an attack-detecting policy found (blocked or only detected): counted for
    /// the client in the Top-N attackers.
    pub attack: Option<Box<crate::Attack>>,
    /// Name of the upstream the request was sent to (the split side, for a split).
    pub upstream: Option<Arc<str>>,
    /// Upstream target address that served the request.
    pub upstream_target: Option<Arc<str>>,
    /// Tries sent upstream, retries included.
    pub attempts: u32,
    /// Per-phase timings.
    pub timings: PhaseTimings,
    /// The W3C trace the request belongs to (continued from the client or new).
    pub trace: crate::TraceContext,
    /// The gateway's finished child spans (policy runs, upstream tries) when the request
    /// is sampled and spans are exported; `None` otherwise, so unrecorded requests read
    /// no clock for them.
    pub spans: Option<Vec<crate::trace::SpanRecord>>,
}

impl RequestCtx {
    /// Starts a context for a request on `conn` at `started`.
    pub fn new(request_id: String, conn: Arc<Connection>, started: Instant) -> Self {
        Self {
            request_id,
            client_ip: conn.peer.ip(),
            conn,
            consumer: None,
            extensions: http::Extensions::new(),
            bodies: None,
            started,
            route: None,
            params: Vec::new(),
            short_circuit: None,
            offence: None,
            log: Vec::new(),
            attack: None,
            upstream: None,
            upstream_target: None,
            attempts: 0,
            timings: PhaseTimings::default(),
            trace: crate::TraceContext::start(),
            spans: None,
        }
    }

    /// A context for a request from `peer` on a cleartext listener named `test`, for
    /// socket-free policy tests.
    pub fn detached(request_id: &str, peer: std::net::SocketAddr) -> Self {
        let conn = Connection::plain(peer, peer, "test".into());
        Self::new(request_id.to_string(), Arc::new(conn), Instant::now())
    }

    /// The request's buffered bodies and response filters, as the route's chain declared
    /// them (docs/policies.md).
    pub fn bodies(&mut self) -> &mut Bodies {
        self.bodies.get_or_insert_with(Box::default)
    }

    /// The bodies, if any policy or the pipeline touched them.
    pub fn bodies_if_any(&mut self) -> Option<&mut Bodies> {
        self.bodies.as_deref_mut()
    }

    /// The value of a captured path parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Flow, Policy};

    /// Keeps the request's method in its own extension and stamps it on the response.
    #[derive(Debug)]
    struct Echo;

    #[derive(Clone)]
    struct SeenMethod(http::Method);

    impl Policy for Echo {
        fn name(&self) -> &str {
            "echo"
        }
        fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
            ctx.extensions.insert(SeenMethod(req.method.clone()));
            Flow::Continue
        }
        fn on_response(&self, resp: &mut http::response::Parts, ctx: &mut RequestCtx) {
            if let Some(SeenMethod(m)) = ctx.extensions.get::<SeenMethod>()
                && let Ok(v) = http::HeaderValue::from_str(m.as_str())
            {
                resp.headers.insert("x-seen-method", v);
            }
        }
    }

    #[test]
    fn extensions_carry_policy_state_from_request_to_response() {
        let mut ctx = RequestCtx::detached("id", "192.0.2.7:4000".parse().unwrap());
        assert_eq!(ctx.conn.listener.as_ref(), "test");
        assert_eq!(ctx.client_ip.to_string(), "192.0.2.7");
        assert!(ctx.consumer.is_none());
        let (mut req, ()) = http::Request::post("/x").body(()).unwrap().into_parts();
        let (mut resp, ()) = http::Response::new(()).into_parts();
        assert!(matches!(
            Echo.on_request(&mut req, &mut ctx),
            Flow::Continue
        ));
        Echo.on_response(&mut resp, &mut ctx);
        assert_eq!(resp.headers["x-seen-method"], "POST");
    }
}
