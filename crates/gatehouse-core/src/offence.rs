//! What a client did that counts toward an automatic ban (`protection.ban.triggers`,
//! docs/protection.md). The gateway marks its own refusals; a policy that refuses for
//! abuse (a rate limit, a bot filter, the WAF) marks the request's context, and the
//! finish phase hands the mark to the client table.

/// An offence, named as `protection.ban.triggers` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Offence {
    /// Blocked by a `waf` policy (never a detect-mode hit).
    Waf,
    /// 429 from the listener's `request_rate_per_ip` or a `rate_limit` policy.
    RateLimit,
    /// A connection over `max_connections_per_ip`.
    ConnectionLimit,
    /// Refused by a `bot_filter` policy.
    Bot,
    /// A slow head or body cut (header_read_timeout, body_read_timeout, min_body_rate).
    SlowClient,
    /// HTTP/2 abuse: resets, PING/SETTINGS/CONTINUATION floods.
    Http2Abuse,
    /// A malformed or ambiguous request (400, 431).
    BadRequest,
}

impl Offence {
    /// Every offence, in the order its [`Offence::index`] counts.
    pub const ALL: [Offence; 7] = [
        Offence::Waf,
        Offence::RateLimit,
        Offence::ConnectionLimit,
        Offence::Bot,
        Offence::SlowClient,
        Offence::Http2Abuse,
        Offence::BadRequest,
    ];

    /// Its name in the config, the admin API and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Waf => "waf",
            Self::RateLimit => "rate_limit",
            Self::ConnectionLimit => "connection_limit",
            Self::Bot => "bot",
            Self::SlowClient => "slow_client",
            Self::Http2Abuse => "http2_abuse",
            Self::BadRequest => "bad_request",
        }
    }

    /// The offence named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.name() == name)
    }

    /// Its position in [`Offence::ALL`], for tables indexed by offence.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_index_in_order() {
        for (i, o) in Offence::ALL.into_iter().enumerate() {
            assert_eq!(Offence::parse(o.name()), Some(o));
            assert_eq!(o.index(), i);
        }
        assert_eq!(Offence::parse("nope"), None);
    }
}
