//! What a policy needs of the bodies, declared up front so a route's compiled chain knows
//! before the first byte whether it buffers, filters, or streams untouched (and pays
//! nothing).

use bytes::Bytes;

/// Error a body filter may fail with; it ends the response stream.
pub type FilterError = Box<dyn std::error::Error + Send + Sync>;

/// What a policy needs of the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequestBodyNeed {
    /// The body streams to the upstream; policies never see it.
    #[default]
    Untouched,
    /// The whole body is read before the request phase, up to `max` bytes (413 beyond,
    /// before any upstream is contacted), and is what goes upstream (retries included).
    Buffered {
        /// Largest body accepted.
        max: u64,
    },
    /// The first `max` bytes (all of a shorter body) are read before the request phase
    /// and shown in `ctx.bodies().request`, with `request_partial` set when more
    /// follows; the client's body then goes upstream as sent, the rest streaming (an
    /// inspector of any size of body, as a WAF, which must not refuse large uploads).
    Prefix {
        /// Bytes read ahead.
        max: u64,
    },
}

/// What a policy needs of the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseBodyNeed {
    /// The body streams to the client as it came.
    #[default]
    Untouched,
    /// The policy may attach a [`BodyFilter`] in its response phase, which sees every
    /// frame and the end of the stream.
    Filtered,
    /// The whole body is read before the response phase, up to `max` bytes (a larger
    /// one is answered 502: a policy that must see all of it cannot pass it unseen).
    Buffered {
        /// Largest body accepted.
        max: u64,
    },
}

/// A policy's body declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BodyNeeds {
    /// Of the request body.
    pub request: RequestBodyNeed,
    /// Of the response body.
    pub response: ResponseBodyNeed,
}

impl BodyNeeds {
    /// Needs nothing: the default, and the free path.
    pub const NONE: Self = Self {
        request: RequestBodyNeed::Untouched,
        response: ResponseBodyNeed::Untouched,
    };

    /// The needs of a chain holding both `self` and `other`: buffering wins over a
    /// prefix, over filtering, over nothing; the smaller buffering limit holds (every
    /// policy must be able to take what it is given), the larger prefix (every
    /// inspector sees at least what it asked for).
    pub fn fold(self, other: Self) -> Self {
        use RequestBodyNeed as Rq;
        use ResponseBodyNeed as Rs;
        let request = match (self.request, other.request) {
            (Rq::Buffered { max: a }, Rq::Buffered { max: b }) => Rq::Buffered { max: a.min(b) },
            (b @ Rq::Buffered { .. }, _) | (_, b @ Rq::Buffered { .. }) => b,
            (Rq::Prefix { max: a }, Rq::Prefix { max: b }) => Rq::Prefix { max: a.max(b) },
            (p @ Rq::Prefix { .. }, _) | (_, p @ Rq::Prefix { .. }) => p,
            _ => Rq::Untouched,
        };
        let response = match (self.response, other.response) {
            (Rs::Buffered { max: a }, Rs::Buffered { max: b }) => Rs::Buffered { max: a.min(b) },
            (b @ Rs::Buffered { .. }, _) | (_, b @ Rs::Buffered { .. }) => b,
            (Rs::Filtered, _) | (_, Rs::Filtered) => Rs::Filtered,
            _ => Rs::Untouched,
        };
        Self { request, response }
    }
}

/// A per-request filter over the response body, attached by a policy in its response
/// phase. The gateway drops `Content-Length` from a filtered response (the length is
/// unknown until the end); a filter that changes the encoding sets `Content-Encoding`
/// in the same response phase that attaches it.
pub trait BodyFilter: Send {
    /// One data frame in; what goes on (possibly empty, when the filter holds it back).
    fn on_data(&mut self, data: Bytes) -> Result<Bytes, FilterError>;

    /// The stream ended; anything the filter still holds goes out now.
    fn on_end(&mut self) -> Result<Bytes, FilterError> {
        Ok(Bytes::new())
    }
}

/// The bodies of one request as its policies see them.
#[derive(Default)]
pub struct Bodies {
    /// The buffered request body, when the chain declared it; a policy may replace it,
    /// and what is here when the request phase ends goes upstream.
    pub request: Option<Bytes>,
    /// `request` holds only the first bytes of the body (a [`RequestBodyNeed::Prefix`]
    /// chain, the body longer than the prefix): the client's whole body goes upstream,
    /// whatever is put in `request`.
    pub request_partial: bool,
    /// The buffered response body, when the chain declared it; a policy may replace it,
    /// and what is here when the response phase ends goes to the client.
    pub response: Option<Bytes>,
    /// Filters attached in the response phase, in the order data flows through them.
    pub filters: Vec<Box<dyn BodyFilter>>,
}

impl std::fmt::Debug for Bodies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bodies")
            .field("request", &self.request.as_ref().map(Bytes::len))
            .field("response", &self.response.as_ref().map(Bytes::len))
            .field("filters", &self.filters.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_keeps_the_strictest_need() {
        let buf = |max| BodyNeeds {
            request: RequestBodyNeed::Buffered { max },
            response: ResponseBodyNeed::Untouched,
        };
        let filt = BodyNeeds {
            request: RequestBodyNeed::Untouched,
            response: ResponseBodyNeed::Filtered,
        };
        assert_eq!(BodyNeeds::NONE.fold(BodyNeeds::NONE), BodyNeeds::NONE);
        let f = buf(100).fold(buf(10)).fold(filt);
        assert_eq!(f.request, RequestBodyNeed::Buffered { max: 10 });
        assert_eq!(f.response, ResponseBodyNeed::Filtered);
        let rb = BodyNeeds {
            request: RequestBodyNeed::Untouched,
            response: ResponseBodyNeed::Buffered { max: 5 },
        };
        assert_eq!(
            filt.fold(rb).response,
            ResponseBodyNeed::Buffered { max: 5 }
        );
        let pre = |max| BodyNeeds {
            request: RequestBodyNeed::Prefix { max },
            response: ResponseBodyNeed::Untouched,
        };
        assert_eq!(
            pre(8).fold(pre(64)).fold(filt).request,
            RequestBodyNeed::Prefix { max: 64 }
        );
        assert_eq!(
            pre(64).fold(buf(10)).request,
            RequestBodyNeed::Buffered { max: 10 }
        );
    }
}
