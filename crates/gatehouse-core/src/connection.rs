//! What a request knows about the downstream connection it arrived on. Built once per
//! connection and shared by its requests; policies read it (an mTLS check, a per-listener
//! rule) and the forwarding headers follow it.

use std::net::SocketAddr;
use std::sync::Arc;

/// The scheme the client used to reach the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    /// Cleartext HTTP/1.1 or h2c.
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `http` or `https`, as in `X-Forwarded-Proto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// Facts of a TLS session, read once after the handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// Server name the client asked for (SNI).
    pub sni: Option<String>,
    /// Protocol agreed by ALPN (`h2`, `http/1.1`).
    pub alpn: Option<Vec<u8>>,
    /// The client's certificate chain (DER, leaf first), when it presented one.
    pub client_chain: Vec<Vec<u8>>,
    /// Subject of the client's leaf certificate, RFC 4514 text (`CN=mobile-app,O=Example`).
    pub client_subject: Option<String>,
    /// Subject alternative names of the client's leaf certificate: DNS names, URIs
    /// (`spiffe://...`), e-mail addresses and IPs, as text.
    pub client_sans: Vec<String>,
}

/// One downstream connection.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The peer's address (the client, or the proxy in front of the gateway).
    pub peer: SocketAddr,
    /// The local address the connection was accepted on.
    pub local: SocketAddr,
    /// The listener's configured name.
    pub listener: Arc<str>,
    /// How the client reached the gateway.
    pub scheme: Scheme,
    /// The TLS session, on a TLS listener.
    pub tls: Option<TlsInfo>,
    /// The peer's IP as header text (`X-Forwarded-For`), made once per connection rather
    /// than once per request.
    pub peer_ip: http::HeaderValue,
    /// Sends requests through the gateway on a policy's behalf (docs/policies.md);
    /// `None` on requests that were themselves sent that way.
    pub dispatch: Option<Arc<dyn crate::Dispatch>>,
}

impl Connection {
    /// A cleartext connection from `peer` accepted on `local` by `listener`.
    pub fn plain(peer: SocketAddr, local: SocketAddr, listener: Arc<str>) -> Self {
        // An IP's text is always a valid header value.
        let peer_ip = http::HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| http::HeaderValue::from_static("unknown"));
        Self {
            peer,
            local,
            listener,
            scheme: Scheme::Http,
            tls: None,
            peer_ip,
            dispatch: None,
        }
    }

    /// A TLS connection from `peer` accepted on `local` by `listener`.
    pub fn secure(peer: SocketAddr, local: SocketAddr, listener: Arc<str>, tls: TlsInfo) -> Self {
        Self {
            scheme: Scheme::Https,
            tls: Some(tls),
            ..Self::plain(peer, local, listener)
        }
    }
}
