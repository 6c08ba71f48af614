//! TLS from the gateway to an upstream (docs/tls.md): the rustls client config an
//! upstream's `tls` block (or its `https://` targets) compiles to, and the handshake on a
//! fresh connection. Targets are verified against `tls.ca`, or the system's trust store
//! without one; there is no switch to skip verification.

use crate::tls::{TlsError, read_certs, read_key};
use gatehouse_config::{Upstream, UpstreamProtocol};
use gatehouse_upstream::TargetState;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// An upstream's compiled TLS.
#[derive(Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// `tls.sni`, when set; else each target's host.
    sni: Option<ServerName<'static>>,
    /// Tells apart pooled connections made with different settings (or file contents),
    /// so two upstreams on one address never share a connection they would not make.
    pub id: u64,
    /// Files read, for the change watch.
    pub files: Vec<PathBuf>,
}

fn err(field: &str, message: impl Into<String>) -> TlsError {
    TlsError {
        field: field.into(),
        message: message.into(),
    }
}

/// Compiles the TLS of an upstream that uses it; `None` for a cleartext one.
pub fn client_tls(up: &Upstream, base: &Path) -> Result<Option<ClientTls>, TlsError> {
    if !up.uses_tls() {
        return Ok(None);
    }
    let settings = up.tls.clone().unwrap_or_default();
    let mut files = Vec::new();
    let mut id = std::collections::hash_map::DefaultHasher::new();
    settings.hash(&mut id);
    up.protocol.hash(&mut id);

    let mut roots = RootCertStore::empty();
    match &settings.ca {
        Some(ca) => {
            let path = base.join(ca);
            let (pem, certs) = read_certs(&path).map_err(|m| err("ca", m))?;
            pem.hash(&mut id);
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| err("ca", format!("{}: {e}", path.display())))?;
            }
            files.push(path);
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(err(
                    "ca",
                    "the system has no CA certificates to verify targets against: set tls.ca",
                ));
            }
        }
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("ca", e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&settings.cert, &settings.key) {
        (Some(cert), Some(key)) => {
            let (cert_path, key_path) = (base.join(cert), base.join(key));
            let (chain_pem, chain) = read_certs(&cert_path).map_err(|m| err("cert", m))?;
            let (key_pem, key) = read_key(&key_path).map_err(|m| err("key", m))?;
            chain_pem.hash(&mut id);
            key_pem.hash(&mut id);
            files.push(cert_path);
            files.push(key_path.clone());
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                err(
                    "key",
                    format!(
                        "{}: does not match the certificate or is not a usable key ({e})",
                        key_path.display()
                    ),
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match up.protocol {
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => vec![b"h2".to_vec()],
    };
    let sni = match &settings.sni {
        Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
            err(
                "sni",
                format!("{name:?} is not a DNS name or an IP address"),
            )
        })?),
        None => None,
    };
    Ok(Some(ClientTls {
        config: Arc::new(config),
        sni,
        id: id.finish() | 1,
        files,
    }))
}

impl ClientTls {
    /// Runs the client side of a handshake with `target` on `stream`.
    pub async fn connect(
        &self,
        target: &TargetState,
        stream: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = match &self.sni {
            Some(n) => n.clone(),
            None => ServerName::try_from(target.host.clone()).map_err(|_| {
                std::io::Error::other(format!("{:?} is not a valid TLS server name", target.host))
            })?,
        };
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
    }
}
