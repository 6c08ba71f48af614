//! TLS listeners through real handshakes: certificates picked by SNI, ALPN (HTTP/2 and
//! HTTP/1.1), the minimum version, client certificates (required and optional) against a
//! private CA, certificates renewed on disk while connections stay open, config errors at
//! their field, and curl as a client. Every certificate comes from a CA made per test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;

/// A private CA that signs leaf certificates into a directory.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        valid_for_90_days(&mut p);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A leaf for `names` (DNS SANs) with `cn`, written as `stem.pem` and `stem.key`.
    fn leaf(&self, dir: &Path, stem: &str, cn: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        // What a public CA issues today, so Mozilla's profile judges the server and not
        // the test certificate.
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        valid_for_90_days(&mut p);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    /// A client certificate with subject `CN=cn,O=Example` and a URI SAN, as PEM texts
    /// (certificate, key).
    fn client_pem(&self, cn: &str, uri: &str) -> (String, String) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::OrganizationName, "Example");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names
            .push(SanType::URI(uri.try_into().unwrap()));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        valid_for_90_days(&mut p);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// The same, parsed for a rustls client.
    fn client(
        &self,
        cn: &str,
        uri: &str,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let (cert, key) = self.client_pem(cn, uri);
        (
            vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let f = dir.join(name);
        std::fs::write(&f, &self.pem).unwrap();
        f
    }

    fn roots(&self) -> RootCertStore {
        let mut r = RootCertStore::empty();
        let der = CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap();
        r.add(der).unwrap();
        r
    }
}

use rustls::pki_types::pem::PemObject;

fn valid_for_90_days(p: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(90);
}

/// How a test client connects.
struct Dial {
    sni: &'static str,
    roots: RootCertStore,
    alpn: Vec<&'static [u8]>,
    tls12_only: bool,
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

impl Dial {
    fn new(ca: &Ca, sni: &'static str) -> Self {
        Self {
            sni,
            roots: ca.roots(),
            alpn: vec![b"http/1.1"],
            tls12_only: false,
            client_cert: None,
        }
    }

    fn config(self) -> ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&'static rustls::SupportedProtocolVersion] = if self.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let b = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(self.roots);
        let mut c = match self.client_cert {
            Some((chain, key)) => b.with_client_auth_cert(chain, key).unwrap(),
            None => b.with_no_client_auth(),
        };
        c.alpn_protocols = self.alpn.iter().map(|p| p.to_vec()).collect();
        c
    }
}

/// What one request over a fresh TLS connection saw.
struct Seen {
    status: u16,
    version: http::Version,
    body: serde_json::Value,
    /// The server certificate's DNS names.
    server_names: Vec<String>,
}

/// Connects to `addr`, handshakes as `dial` says and sends `GET path`; the error is the
/// handshake's or the first exchange's.
async fn get(addr: &str, dial: Dial, path: &str) -> Result<Seen, String> {
    let host = dial.sni;
    let sni = ServerName::try_from(host).unwrap();
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(dial.config()));
    let tls = connector
        .connect(sni, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    let server_names = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|leaf| names_of(leaf))
        .unwrap_or_default();
    let h2 = session.alpn_protocol() == Some(b"h2");
    let io = hyper_util::rt::TokioIo::new(tls);
    let req = http::Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = if h2 {
        let (mut tx, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = {
            let (mut parts, body) = req.into_parts();
            parts.uri = format!("https://{host}{path}").parse().unwrap();
            parts.headers.remove("host");
            http::Request::from_parts(parts, body)
        };
        tx.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        tx.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = resp.status().as_u16();
    let version = resp.version();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(Seen {
        status,
        version,
        body: serde_json::from_slice(&bytes.to_bytes()).unwrap_or_default(),
        server_names,
    })
}

fn names_of(der: &CertificateDer<'_>) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// An embedded gateway with one TLS listener (`tls` is its YAML block body) in front of
/// an echo backend; returns it, the listener address and the admin URL.
async fn tls_gateway(
    tls: &str,
    extra: &str,
) -> (gatehouse::embed::Embedded, String, String, Backend) {
    let a = Backend::start("a", Kind::Echo).await;
    let yaml = format!(
        r#"
listeners:
  - name: secure
    address: "127.0.0.1:0"
    tls:
{tls}
admin:
  address: "127.0.0.1:0"
upstreams:
  u:
    targets: [{{ address: "{}" }}]
routes:
  - name: all
    upstream: u
access_log: "off"
{extra}
"#,
        a.addr
    );
    let g = gatehouse::embed::Embedded::builder()
        .threads(2)
        .start(&yaml)
        .unwrap_or_else(|e| panic!("gateway did not start:\n{e}\n{yaml}"));
    let addr = g.listener("secure").unwrap().to_string();
    let admin = format!("http://{}", g.admin().unwrap());
    (g, addr, admin, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_by_its_names_and_alpn_picks_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Test CA");
    let (c1, k1) = ca.leaf(dir.path(), "api", "api.test", &["api.test", "default.test"]);
    let (c2, k2) = ca.leaf(dir.path(), "admin", "admin", &["*.admin.test"]);
    let tls = format!(
        "      certificates:\n        - {{ cert: {}, key: {} }}\n        - {{ cert: {}, key: {} }}",
        c1.display(),
        k1.display(),
        c2.display(),
        k2.display()
    );
    let (_g, addr, _admin, _a) = tls_gateway(&tls, "").await;

    let api = get(&addr, Dial::new(&ca, "api.test"), "/x").await.unwrap();
    assert_eq!(api.status, 200);
    assert_eq!(api.server_names, ["api.test", "default.test"]);
    // The request went upstream marked as HTTPS.
    assert_eq!(api.body["headers"]["x-forwarded-proto"], "https");
    assert_eq!(api.version, http::Version::HTTP_11);

    let admin = get(&addr, Dial::new(&ca, "ops.admin.test"), "/x")
        .await
        .unwrap();
    assert_eq!(admin.server_names, ["*.admin.test"]);

    // HTTP/2 by ALPN on the same port.
    let mut d = Dial::new(&ca, "api.test");
    d.alpn = vec![b"h2", b"http/1.1"];
    let h2 = get(&addr, d, "/x").await.unwrap();
    assert_eq!((h2.status, h2.version), (200, http::Version::HTTP_2));

    // A name no certificate has gets the first one, which this client then refuses.
    let err = get(&addr, Dial::new(&ca, "other.test"), "/x")
        .await
        .err()
        .expect("a certificate for other names must not verify");
    assert!(
        err.contains("certificate") || err.contains("NotValidForName"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_1_3_refuses_a_tls_1_2_only_client() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Test CA");
    let (c, k) = ca.leaf(dir.path(), "api", "api.test", &["api.test"]);
    let tls = format!(
        "      certificates: [{{ cert: {}, key: {} }}]\n      min_version: \"1.3\"",
        c.display(),
        k.display()
    );
    let (_g, addr, admin, _a) = tls_gateway(&tls, "").await;
    let mut old = Dial::new(&ca, "api.test");
    old.tls12_only = true;
    assert!(get(&addr, old, "/").await.is_err());
    assert_eq!(
        get(&addr, Dial::new(&ca, "api.test"), "/")
            .await
            .unwrap()
            .status,
        200
    );
    // The refused handshake is counted as a rejection of the listener.
    let m = Client::new().get(&format!("{admin}/metrics")).await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.lines()
            .any(|l| l.starts_with("gatehouse_request_rejections_total{")
                && l.contains("reason=\"tls_handshake\"")
                && !l.ends_with(" 0")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_required_and_optional() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Test CA");
    let clients = Ca::new("Clients CA");
    let stranger = Ca::new("Other CA");
    let (c, k) = ca.leaf(dir.path(), "api", "api.test", &["api.test"]);
    let clients_pem = clients.write(dir.path(), "clients-ca.pem");
    let block = |mode: &str| {
        format!(
            "      certificates: [{{ cert: {}, key: {} }}]\n      client_auth: {{ mode: {mode}, ca: {} }}",
            c.display(),
            k.display(),
            clients_pem.display()
        )
    };

    let (_g, addr, _admin, _a) = tls_gateway(&block("required"), "").await;
    // No certificate: TLS 1.3 reports the refusal on the first exchange.
    assert!(get(&addr, Dial::new(&ca, "api.test"), "/").await.is_err());
    let mut wrong = Dial::new(&ca, "api.test");
    wrong.client_cert = Some(stranger.client("mallory", "spiffe://other/mallory"));
    assert!(get(&addr, wrong, "/").await.is_err());
    let mut good = Dial::new(&ca, "api.test");
    good.client_cert = Some(clients.client("mobile-app", "spiffe://example/mobile"));
    assert_eq!(get(&addr, good, "/").await.unwrap().status, 200);

    let (_g2, addr2, _admin2, _a2) = tls_gateway(&block("optional"), "").await;
    assert_eq!(
        get(&addr2, Dial::new(&ca, "api.test"), "/")
            .await
            .unwrap()
            .status,
        200
    );
    let mut good = Dial::new(&ca, "api.test");
    good.client_cert = Some(clients.client("mobile-app", "spiffe://example/mobile"));
    assert_eq!(get(&addr2, good, "/").await.unwrap().status, 200);
    let mut wrong = Dial::new(&ca, "api.test");
    wrong.client_cert = Some(stranger.client("mallory", "spiffe://other/mallory"));
    assert!(
        get(&addr2, wrong, "/").await.is_err(),
        "a certificate that is sent is verified even when optional"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificate_files_serve_new_handshakes_while_open_connections_stay() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Test CA");
    let (c, k) = ca.leaf(dir.path(), "api", "api.test", &["api.test", "v1.test"]);
    let tls = format!(
        "      certificates: [{{ cert: {}, key: {} }}]",
        c.display(),
        k.display()
    );
    let (_g, addr, _admin, _a) = tls_gateway(&tls, "reload: { watch: true }").await;

    // An open HTTP/1.1 connection from before the renewal.
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let tls_conn = tokio_rustls::TlsConnector::from(Arc::new(Dial::new(&ca, "api.test").config()))
        .connect(ServerName::try_from("api.test").unwrap(), tcp)
        .await
        .unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls_conn))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = || {
        http::Request::get("/one")
            .header("host", "api.test")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    assert_eq!(tx.send_request(req()).await.unwrap().status(), 200);

    // Renewal: new names, written over the same files (certificate, then key).
    let renewed = tempfile::tempdir().unwrap();
    let (c2, k2) = ca.leaf(renewed.path(), "api", "api.test", &["api.test", "v2.test"]);
    std::fs::copy(&c2, &c).unwrap();
    std::fs::copy(&k2, &k).unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = get(&addr, Dial::new(&ca, "api.test"), "/").await.unwrap();
        if seen.server_names.contains(&"v2.test".to_string()) {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "renewed certificate not served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The connection from before keeps working.
    tx.ready().await.unwrap();
    assert_eq!(tx.send_request(req()).await.unwrap().status(), 200);
}

#[test]
fn tls_config_errors_name_their_field_and_relative_paths_follow_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Test CA");
    let (_c, _k) = ca.leaf(dir.path(), "api", "api.test", &["api.test"]);
    let (_c2, _k2) = ca.leaf(dir.path(), "other", "other.test", &["other.test"]);
    let validate = |name: &str, yaml: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, yaml).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["validate", "-c", f.to_str().unwrap()])
            .current_dir("/")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            f.display().to_string(),
        )
    };
    let listener = |tls: &str| {
        format!(
            "listeners:\n  - name: s\n    address: 127.0.0.1:0\n    tls:\n{tls}\nroutes:\n  - name: r\n    respond: {{ status: 200 }}\n"
        )
    };
    // Relative to the config file's directory, not the working directory.
    let (code, err, _) = validate(
        "ok.yaml",
        &listener("      certificates: [{ cert: api.pem, key: api.key }]"),
    );
    assert_eq!(code, Some(0), "{err}");

    let (code, err, f) = validate(
        "missing.yaml",
        &listener("      certificates: [{ cert: nope.pem, key: api.key }]"),
    );
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with(&format!(
            "{f}:5:30: listeners[0].tls.certificates[0].cert: "
        )) && err.contains("nope.pem: cannot read"),
        "{err}"
    );

    let (code, err, f) = validate(
        "mismatch.yaml",
        &listener("      certificates: [{ cert: api.pem, key: other.key }]"),
    );
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with(&format!("{f}:5:44: listeners[0].tls.certificates[0].key: "))
            && err.contains("does not match the certificate"),
        "{err}"
    );

    let (code, err, f) = validate(
        "noca.yaml",
        &listener(
            "      certificates: [{ cert: api.pem, key: api.key }]\n      client_auth: { mode: required }",
        ),
    );
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with(&format!("{f}:6:20: listeners[0].tls.client_auth")),
        "{err}"
    );
    let (code, err, _) = validate("empty.yaml", &listener("      certificates: []"));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("listeners[0].tls.certificates: must list at least one"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_http1_and_http2_to_a_tls_listener() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Test CA");
    let (c, k) = ca.leaf(dir.path(), "api", "api.test", &["api.test"]);
    let ca_file = ca.write(dir.path(), "ca.pem");
    let tls = format!(
        "      certificates: [{{ cert: {}, key: {} }}]",
        c.display(),
        k.display()
    );
    let (_g, addr, _admin, _a) = tls_gateway(&tls, "").await;
    let port = addr.rsplit(':').next().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    for flag in ["--http1.1", "--http2"] {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                flag,
                "--cacert",
                ca_file.to_str().unwrap(),
                "--resolve",
                &format!("api.test:{port}:127.0.0.1"),
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                &format!("https://api.test:{port}/curl"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        seen.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    assert_eq!(*seen.lock().unwrap(), ["200 1.1", "200 2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslyze_finds_the_listener_compliant_with_mozilla_intermediate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Test CA");
    let (c, k) = ca.leaf(dir.path(), "api", "localhost", &["localhost"]);
    let ca_file = ca.write(dir.path(), "ca.pem");
    let tls = format!(
        "      certificates: [{{ cert: {}, key: {} }}]",
        c.display(),
        k.display()
    );
    let (_g, addr, _admin, _a) = tls_gateway(&tls, "").await;
    let port = addr.rsplit(':').next().unwrap();
    // scripts/test.sh installs sslyze (PyPI) into target/test-tools and puts it on PATH.
    let out = std::process::Command::new("sslyze")
        .args([
            "--mozilla_config=intermediate",
            "--certinfo_ca_file",
            ca_file.to_str().unwrap(),
            &format!("localhost:{port}{{127.0.0.1}}"),
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("sslyze not found ({e}); run scripts/test.sh, which installs it")
        });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("OK - Compliant"), "{text}");
}

/// A TLS echo backend: answers JSON with the SNI it was asked for, the ALPN protocol, the
/// HTTP version and the client certificate's subject; counts the connections it accepted.
struct TlsBackend {
    addr: std::net::SocketAddr,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsBackend {
    /// Serves with `cert`/`key`; with `clients`, a client certificate from that CA is required.
    async fn start(cert: &Path, key: &Path, clients: Option<&Ca>) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let b = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let b = match clients {
            Some(ca) => b.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(ca.roots()),
                    provider,
                )
                .build()
                .unwrap(),
            ),
            None => b.with_no_client_auth(),
        };
        let mut config = b.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (_, session) = tls.get_ref();
                    let facts = serde_json::json!({
                        "sni": session.server_name(),
                        "alpn": session.alpn_protocol().map(|a| String::from_utf8_lossy(a).into_owned()),
                        "client": session.peer_certificates().and_then(|c| c.first()).map(|leaf| {
                            let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
                            cert.subject().to_string()
                        }),
                    });
                    let h2 = session.alpn_protocol() == Some(b"h2");
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let mut body = facts.clone();
                            body["version"] = format!("{:?}", req.version()).into();
                            body["path"] = req.uri().path().into();
                            async move {
                                Ok::<_, std::convert::Infallible>(http::Response::new(
                                    http_body_util::Full::new(Bytes::from(body.to_string())),
                                ))
                            }
                        },
                    );
                    let io = hyper_util::rt::TokioIo::new(tls);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(io, svc)
                        .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                    }
                });
            }
        });
        Self {
            addr,
            connections,
            task,
        }
    }
}

/// An embedded gateway on a cleartext listener whose one route goes to upstream `u`,
/// given as YAML (the body of `upstreams.u`).
fn gateway_to(upstream: &str) -> (gatehouse::embed::Embedded, String) {
    let (g, url, _admin) = embedded(&format!(
        "upstreams:\n  u:\n{upstream}\nroutes:\n  - name: all\n    upstream: u\naccess_log: \"off\"\n"
    ));
    (g, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_over_tls_verify_their_ca_send_sni_and_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let internal = Ca::new("Internal CA");
    let ops = Ca::new("Gateway clients CA");
    let (sc, sk) = internal.leaf(dir.path(), "users", "users.test", &["users.test"]);
    let ca_file = internal.write(dir.path(), "internal-ca.pem");
    let (gc, gk) = {
        let (cert, key) = ops.client_pem("gw", "spiffe://example/gw");
        let (c, k) = (dir.path().join("gw.pem"), dir.path().join("gw.key"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    };
    let backend = TlsBackend::start(&sc, &sk, Some(&ops)).await;
    let tls = |extra: &str| {
        format!(
            "    targets: [{{ address: \"https://{}\" }}]\n    tls: {{ ca: {}, sni: users.test{extra} }}",
            backend.addr,
            ca_file.display()
        )
    };
    let with_cert = format!(", cert: {}, key: {}", gc.display(), gk.display());

    let (_g, url) = gateway_to(&tls(&with_cert));
    let c = Client::new();
    let r = c.get(&format!("{url}/one")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let v = r.json();
    assert_eq!(v["sni"], "users.test");
    assert_eq!(v["alpn"], "http/1.1");
    assert_eq!(v["client"], "CN=gw, O=Example");
    assert_eq!(v["path"], "/one");
    // The connection is pooled like a cleartext one: each of the gateway's two workers
    // opens at most one for these sequential requests.
    for _ in 0..10 {
        assert_eq!(c.get(&format!("{url}/again")).await.status, 200);
    }
    let opened = backend
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        opened <= 2,
        "{opened} TLS connections for 11 sequential requests"
    );

    // HTTP/2 to the upstream by ALPN.
    let h2 = format!("{}\n    protocol: h2", tls(&with_cert));
    let (_g2, url2) = gateway_to(&h2);
    let v = c.get(&format!("{url2}/h2")).await.json();
    assert_eq!(
        (v["alpn"].as_str(), v["version"].as_str()),
        (Some("h2"), Some("HTTP/2.0"))
    );

    // The target refuses a gateway without its client certificate: 502, the upstream's fault.
    let (_g3, url3) = gateway_to(&tls(""));
    assert_problem(&c.get(&format!("{url3}/x")).await, 502);

    // A target whose certificate does not chain to `ca` is never talked to.
    let other = Ca::new("Someone else");
    let other_file = other.write(dir.path(), "other-ca.pem");
    let wrong = format!(
        "    targets: [{{ address: \"https://{}\" }}]\n    tls: {{ ca: {}, sni: users.test{with_cert} }}",
        backend.addr,
        other_file.display()
    );
    let (_g4, url4) = gateway_to(&wrong);
    assert_problem(&c.get(&format!("{url4}/x")).await, 502);

    // The name checked is the SNI: another name fails verification.
    let misnamed = format!(
        "    targets: [{{ address: \"https://{}\" }}]\n    tls: {{ ca: {}, sni: orders.test{with_cert} }}",
        backend.addr,
        ca_file.display()
    );
    let (_g5, url5) = gateway_to(&misnamed);
    assert_problem(&c.get(&format!("{url5}/x")).await, 502);
}

#[test]
fn upstream_tls_config_errors_name_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let validate = |yaml: &str| {
        let f = dir.path().join("gw.yaml");
        std::fs::write(&f, yaml).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["validate", "-c", f.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let up =
        |body: &str| format!("upstreams:\n  u:\n{body}\nroutes:\n  - name: r\n    upstream: u\n");
    let (code, err) = validate(&up(
        "    targets: [{ address: \"https://127.0.0.1:1\" }]\n    tls: { ca: nope.pem }",
    ));
    assert_eq!(code, Some(1));
    assert!(
        err.contains(":4:16: upstreams.u.tls.ca: ") && err.contains("nope.pem: cannot read"),
        "{err}"
    );
    let (code, err) = validate(&up(
        "    targets: [{ address: \"127.0.0.1:1\" }]\n    tls: { cert: gw.pem }",
    ));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("upstreams.u.tls.key: cert and key go together"),
        "{err}"
    );
    let (code, err) = validate(&up(
        "    targets: [{ address: \"https://127.0.0.1:1\" }, { address: \"http://127.0.0.1:2\" }]",
    ));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("upstreams.u.targets[1].address") && err.contains("speaks TLS"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_over_tls_can_require_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Test CA");
    let ops = Ca::new("Ops CA");
    let (c, k) = ca.leaf(dir.path(), "admin", "admin.test", &["admin.test"]);
    let ops_file = ops.write(dir.path(), "ops-ca.pem");
    let yaml = format!(
        r#"
admin:
  address: "127.0.0.1:0"
  tls: {{ cert: {}, key: {}, client_auth: {{ mode: required, ca: {} }} }}
routes:
  - name: r
    respond: {{ status: 200 }}
access_log: "off"
"#,
        c.display(),
        k.display(),
        ops_file.display()
    );
    let g = gatehouse::embed::Embedded::builder()
        .threads(1)
        .start(&yaml)
        .unwrap_or_else(|e| panic!("gateway did not start:\n{e}"));
    let addr = g.admin().unwrap().to_string();
    assert!(
        get(&addr, Dial::new(&ca, "admin.test"), "/admin/health")
            .await
            .is_err()
    );
    let mut operator = Dial::new(&ca, "admin.test");
    operator.client_cert = Some(ops.client("alice", "spiffe://example/alice"));
    let seen = get(&addr, operator, "/admin/health").await.unwrap();
    assert_eq!(
        (seen.status, seen.body["status"].as_str()),
        (200, Some("ok"))
    );
    // Cleartext on the same port gets nothing.
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        Client::new().send(
            http::Request::get(format!("http://{addr}/admin/health"))
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        ),
    )
    .await
    .expect("a cleartext request is not left hanging");
    assert!(
        r.is_err(),
        "cleartext must not be served: {:?}",
        r.map(|r| r.status)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_auth_maps_client_certificates_to_consumers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Test CA");
    let clients = Ca::new("Clients CA");
    let (c, k) = ca.leaf(dir.path(), "api", "api.test", &["api.test"]);
    let clients_pem = clients.write(dir.path(), "clients-ca.pem");
    let tls = format!(
        "      certificates: [{{ cert: {}, key: {} }}]\n      client_auth: {{ mode: optional, ca: {} }}",
        c.display(),
        k.display(),
        clients_pem.display()
    );
    let extra = r#"
consumers:
  - name: mobile-app
    groups: [gold]
    credentials: [{ type: mtls, subject: "CN=mobile-app, O=Example" }]
  - name: mesh-service
    credentials: [{ type: mtls, san: "spiffe://example/orders" }]
policies:
  mtls: { type: mtls_auth }
default_policies: [mtls]
"#;
    let (_g, addr, _admin, _a) = tls_gateway(&tls, extra).await;

    // By subject (compared without regard to case and spaces after commas).
    let mut d = Dial::new(&ca, "api.test");
    d.client_cert = Some(clients.client("mobile-app", "spiffe://example/mobile"));
    let seen = get(&addr, d, "/").await.unwrap();
    assert_eq!(seen.status, 200);
    assert_eq!(seen.body["headers"]["x-consumer"], "mobile-app");
    assert_eq!(seen.body["headers"]["x-consumer-groups"], "gold");

    // By subject alternative name.
    let mut d = Dial::new(&ca, "api.test");
    d.client_cert = Some(clients.client("orders-7f9c", "spiffe://example/orders"));
    let seen = get(&addr, d, "/").await.unwrap();
    assert_eq!(seen.body["headers"]["x-consumer"], "mesh-service");

    // A valid certificate of nobody, and no certificate at all: 401.
    let mut d = Dial::new(&ca, "api.test");
    d.client_cert = Some(clients.client("stranger", "spiffe://example/stranger"));
    let seen = get(&addr, d, "/").await.unwrap();
    assert_eq!(seen.status, 401);
    assert_eq!(
        seen.body["detail"],
        "the client certificate belongs to no consumer"
    );
    let seen = get(&addr, Dial::new(&ca, "api.test"), "/").await.unwrap();
    assert_eq!(seen.status, 401);
    assert_eq!(seen.body["detail"], "a TLS client certificate is required");
}

/// Runs `openssl args`, asserting it succeeds; returns its stdout.
fn openssl(args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stapled_ocsp_response_reaches_clients_that_ask_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Test CA");
    let (c, k) = ca.leaf(dir.path(), "api", "localhost", &["localhost"]);
    let ca_file = ca.write(dir.path(), "ca.pem");
    let ca_key = dir.path().join("ca.key");
    std::fs::write(&ca_key, &ca.key_pem).unwrap();
    // The CA's own OCSP answer for the leaf ("good"), made by openssl's responder.
    let serial = openssl(&["x509", "-noout", "-serial", "-in", c.to_str().unwrap()]);
    let serial = serial.trim().trim_start_matches("serial=");
    let index = dir.path().join("index.txt");
    std::fs::write(
        &index,
        format!("V\t301231235959Z\t\t{serial}\tunknown\t/CN=localhost\n"),
    )
    .unwrap();
    let resp = dir.path().join("api.ocsp.der");
    let p = |x: &PathBuf| x.to_str().unwrap().to_string();
    openssl(&[
        "ocsp",
        "-index",
        &p(&index),
        "-rsigner",
        &p(&ca_file),
        "-rkey",
        &p(&ca_key),
        "-CA",
        &p(&ca_file),
        "-issuer",
        &p(&ca_file),
        "-cert",
        &p(&c),
        "-respout",
        &p(&resp),
        "-ndays",
        "7",
    ]);
    let tls = format!(
        "      certificates: [{{ cert: {}, key: {}, ocsp: {} }}]",
        c.display(),
        k.display(),
        resp.display()
    );
    let (_g, addr, _admin, _a) = tls_gateway(&tls, "").await;
    let out = tokio::task::spawn_blocking(move || {
        openssl(&[
            "s_client",
            "-connect",
            &addr,
            "-servername",
            "localhost",
            "-status",
        ])
    })
    .await
    .unwrap();
    assert!(out.contains("OCSP Response Status: successful"), "{out}");
    assert!(out.contains("Cert Status: good"), "{out}");

    // A file that is no OCSP response is a config error at its field.
    std::fs::write(&resp, "not der").unwrap();
    let yaml = format!(
        "listeners:\n  - name: s\n    address: 127.0.0.1:0\n    tls:\n{tls}\nroutes:\n  - {{ name: r, respond: {{ status: 200 }} }}\n"
    );
    let e = gatehouse::embed::Embedded::builder()
        .start(&yaml)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("listeners[0].tls.certificates[0].ocsp")
            && e.contains("not a DER OCSP response"),
        "{e}"
    );
}
