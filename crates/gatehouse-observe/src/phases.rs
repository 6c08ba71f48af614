//! Where the time of one request went (docs/operations.md, "Where the time goes"): the
//! total split into what the client, the gateway and the upstream each took.

use std::time::Duration;

/// The phases, in the order of [`Breakdown::as_array`] and of metric labels.
pub const NAMES: [&str; 4] = ["client", "gateway", "upstream_network", "upstream_app"];

/// One request's total, split four ways; the parts add up to the total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Breakdown {
    /// Waiting for the request body to arrive and for the client to take the response
    /// (write back-pressure).
    pub client: Duration,
    /// Routing, policies and the gateway's own work: what the others leave.
    pub gateway: Duration,
    /// Connecting upstream (TCP, TLS), picking targets and backing off between retries.
    pub upstream_network: Duration,
    /// From the request sent to the response head, and waiting on the upstream's body.
    pub upstream_app: Duration,
}

/// What was measured on the way, from which [`Breakdown::of`] derives the phases.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured {
    /// Head received to the end of the response.
    pub total: Duration,
    /// Waits for request body bytes, all of them.
    pub request_body_wait: Duration,
    /// The part of those waits that happened while the body streamed upstream (inside
    /// an upstream exchange, so not the upstream's time).
    pub request_body_wait_streaming: Duration,
    /// From the response head handed to the server to the end of the response.
    pub response_transfer: Duration,
    /// The part of that spent waiting on the upstream's body.
    pub upstream_body_wait: Duration,
    /// Upstream tries: connects, picks and backoff.
    pub upstream_network: Duration,
    /// Upstream tries: sent to response head (or failure).
    pub upstream_exchange: Duration,
}

impl Breakdown {
    /// The phases of what was measured; the gateway gets what the others leave.
    pub fn of(m: &Measured) -> Self {
        let client = m.request_body_wait + m.response_transfer.saturating_sub(m.upstream_body_wait);
        let upstream_app = m
            .upstream_exchange
            .saturating_sub(m.request_body_wait_streaming)
            + m.upstream_body_wait;
        let upstream_network = m.upstream_network;
        let gateway = m
            .total
            .saturating_sub(client + upstream_app + upstream_network);
        Self {
            client,
            gateway,
            upstream_network,
            upstream_app,
        }
    }

    /// The phases in [`NAMES`] order.
    pub fn as_array(&self) -> [Duration; 4] {
        [
            self.client,
            self.gateway,
            self.upstream_network,
            self.upstream_app,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_gateway_gets_what_the_others_leave() {
        let b = Breakdown::of(&Measured {
            total: ms(100),
            request_body_wait: ms(10),
            request_body_wait_streaming: ms(4),
            response_transfer: ms(30),
            upstream_body_wait: ms(20),
            upstream_network: ms(5),
            upstream_exchange: ms(44),
        });
        assert_eq!(b.client, ms(20));
        assert_eq!(b.upstream_app, ms(60));
        assert_eq!(b.upstream_network, ms(5));
        assert_eq!(b.gateway, ms(15));
        assert_eq!(b.as_array().iter().sum::<Duration>(), ms(100));
        // A local answer: no upstream, the write is the client's.
        let local = Breakdown::of(&Measured {
            total: ms(3),
            response_transfer: ms(1),
            ..Measured::default()
        });
        assert_eq!((local.client, local.gateway), (ms(1), ms(2)));
    }
}
