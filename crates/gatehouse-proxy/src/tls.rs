//! TLS on a listener (docs/tls.md): the rustls server config a listener's `tls` settings
//! compile to (certificates picked by SNI, minimum version, client certificates, ALPN),
//! the handshake, and the facts of the session a request can read.
//!
//! Compiled with the rest of the config, so a missing file or a key that does not match
//! its certificate is a config error at its field, and a reload (or a change of the files,
//! see reload.rs) serves the new certificates to the next handshakes while open
//! connections keep theirs.

use gatehouse_config::{ClientAuthMode, ListenerTls, Protocol, TlsVersion};
use gatehouse_core::TlsInfo;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A listener's compiled TLS: the server config and the files it was read from.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// What the handshakes use.
    pub config: Arc<ServerConfig>,
    /// Every certificate, key and CA file, for the change watch.
    pub files: Vec<PathBuf>,
}

/// A problem with one field of a listener's `tls`, relative to it (`certificates[0].key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    /// Field under `listeners[i].tls`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> TlsError {
    TlsError {
        field: field.into(),
        message: message.into(),
    }
}

/// The crypto provider every TLS config uses: ring, with rustls's default (modern)
/// cipher suites and key exchange groups.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A stapled OCSP response: the DER file as it is (an OCSPResponse is a DER SEQUENCE;
/// the client checks its signature and freshness, as it would a responder's answer).
fn read_ocsp(path: &Path) -> Result<Vec<u8>, String> {
    let der = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if der.first() != Some(&0x30) || der.len() < 8 {
        return Err(format!("{}: not a DER OCSP response", path.display()));
    }
    Ok(der)
}

/// Compiles a listener's `tls`; relative paths are resolved against `base`.
pub fn server_tls(
    tls: &ListenerTls,
    protocols: &[Protocol],
    base: &Path,
) -> Result<ServerTls, TlsError> {
    let provider = provider();
    let mut files = Vec::new();
    let mut keys = Vec::with_capacity(tls.certificates.len());
    for (i, pair) in tls.certificates.iter().enumerate() {
        let cert_path = base.join(&pair.cert);
        let key_path = base.join(&pair.key);
        let (_, chain) =
            read_certs(&cert_path).map_err(|m| err(format!("certificates[{i}].cert"), m))?;
        let (_, key) = read_key(&key_path).map_err(|m| err(format!("certificates[{i}].key"), m))?;
        let names = leaf_names(&chain[0]).map_err(|m| err(format!("certificates[{i}].cert"), m))?;
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
            err(
                format!("certificates[{i}].key"),
                format!(
                    "{}: does not match the certificate or is not a usable key ({e})",
                    key_path.display()
                ),
            )
        })?;
        let mut certified = certified;
        if let Some(ocsp) = &pair.ocsp {
            let path = base.join(ocsp);
            certified.ocsp =
                Some(read_ocsp(&path).map_err(|m| err(format!("certificates[{i}].ocsp"), m))?);
            files.push(path);
        }
        keys.push((names, Arc::new(certified)));
        files.push(cert_path);
        files.push(key_path);
    }
    let resolver = ByName::new(keys)
        .ok_or_else(|| err("certificates", "must list at least one certificate"))?;

    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| err("min_version", e.to_string()))?;
    let builder = match (tls.client_auth.mode, &tls.client_auth.ca) {
        (ClientAuthMode::None, _) | (_, None) => builder.with_no_client_auth(),
        (mode, Some(ca)) => {
            let ca_path = base.join(ca);
            let mut roots = RootCertStore::empty();
            for c in read_certs(&ca_path)
                .map_err(|m| err("client_auth.ca", m))?
                .1
            {
                roots
                    .add(c)
                    .map_err(|e| err("client_auth.ca", format!("{}: {e}", ca_path.display())))?;
            }
            files.push(ca_path);
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if mode == ClientAuthMode::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| err("client_auth.ca", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    // ALPN: HTTP/2 first when the listener speaks it, as browsers and curl expect.
    if protocols
        .iter()
        .any(|p| matches!(p, Protocol::H2 | Protocol::H2c))
    {
        config.alpn_protocols.push(b"h2".to_vec());
    }
    if protocols.contains(&Protocol::Http1) {
        config.alpn_protocols.push(b"http/1.1".to_vec());
    }
    Ok(ServerTls {
        config: Arc::new(config),
        files,
    })
}

/// Every certificate in a PEM file, at least one.
/// The file's bytes (a caller may fingerprint them) and every certificate in it, at
/// least one. Shared with upstream TLS (upstream_tls.rs).
pub(crate) fn read_certs(path: &Path) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), String> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_message(path, &e, "certificate"))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok((pem, certs))
}

/// The file's bytes and the private key in it (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub(crate) fn read_key(path: &Path) -> Result<(Vec<u8>, PrivateKeyDer<'static>), String> {
    let pem = read(path)?;
    let key =
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| pem_message(path, &e, "private key"))?;
    Ok((pem, key))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

fn pem_message(path: &Path, e: &rustls::pki_types::pem::Error, what: &str) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) => format!("{}: cannot read: {io}", path.display()),
        E::NoItemsFound => format!("{}: no PEM {what} in the file", path.display()),
        other => format!("{}: not a valid PEM {what}: {other:?}", path.display()),
    }
}

/// The DNS names a certificate is for: its DNS SANs, or its CN when it has none.
fn leaf_names(der: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok(names)
}

/// Picks a certificate by the SNI name: an exact name first, then a `*.` wildcard for the
/// name's parent domain, else the first certificate (clients without SNI, unknown names).
#[derive(Debug)]
struct ByName {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ByName {
    fn new(keys: Vec<(Vec<String>, Arc<CertifiedKey>)>) -> Option<Self> {
        let default = keys.first()?.1.clone();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (names, key) in keys {
            for n in names {
                // The first certificate listed for a name keeps it.
                match n.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()),
                    None => exact.entry(n),
                }
                .or_insert_with(|| key.clone());
            }
        }
        Some(Self {
            exact,
            wildcard,
            default,
        })
    }

    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni.map(str::to_ascii_lowercase) else {
            return self.default.clone();
        };
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
            .clone()
    }
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// Runs the server side of a handshake on `stream`.
pub async fn accept(
    config: Arc<ServerConfig>,
    stream: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    tokio_rustls::TlsAcceptor::from(config).accept(stream).await
}

/// What a request may read of the session: SNI, ALPN and the client's certificate.
pub fn session_info(stream: &TlsStream<TcpStream>) -> TlsInfo {
    let (_, conn) = stream.get_ref();
    let client_chain: Vec<Vec<u8>> = conn
        .peer_certificates()
        .map(|c| c.iter().map(|d| d.as_ref().to_vec()).collect())
        .unwrap_or_default();
    let (client_subject, client_sans) = client_chain
        .first()
        .map(|leaf| identity(leaf))
        .unwrap_or_default();
    TlsInfo {
        sni: conn.server_name().map(str::to_owned),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        client_chain,
        client_subject,
        client_sans,
    }
}

/// The subject (RFC 4514 text) and subject alternative names of a client certificate.
fn identity(der: &[u8]) -> (Option<String>, Vec<String>) {
    use x509_parser::extensions::GeneralName as G;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return (None, Vec::new());
    };
    let subject = Some(rfc4514(cert.subject()));
    let mut sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                G::DNSName(s) | G::URI(s) | G::RFC822Name(s) => sans.push((*s).to_string()),
                G::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        sans.push(std::net::Ipv4Addr::from(a).to_string());
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        sans.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    (subject, sans)
}

/// A distinguished name as RFC 4514 text: the last RDN first, `,` between RDNs, `+`
/// inside one, short attribute names (`CN=mobile-app,O=Example`), `,+"\\<>;` escaped.
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let key = x509_parser::objects::oid2abbrev(atv.attr_type(), registry)
                        .map_or_else(|_| atv.attr_type().to_id_string(), str::to_owned);
                    let value = atv.as_str().unwrap_or_default();
                    let mut escaped = String::with_capacity(value.len());
                    for (i, ch) in value.chars().enumerate() {
                        let edge = (i == 0 && (ch == ' ' || ch == '#'))
                            || (i + 1 == value.chars().count() && ch == ' ');
                        if edge || matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
                            escaped.push('\\');
                        }
                        escaped.push(ch);
                    }
                    format!("{key}={escaped}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}
