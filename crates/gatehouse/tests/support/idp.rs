//! A real identity provider on loopback for the token policies' tests: an OpenID
//! discovery document, a key set the test can rotate, and an RFC 7662 introspection
//! endpoint, over HTTP or HTTPS with a private CA; it counts what it is asked.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What the provider serves, changeable while it runs.
#[derive(Default)]
pub struct IdpState {
    /// The key set's `keys`.
    pub keys: Mutex<Value>,
    /// Introspection answers by token; unknown tokens are inactive.
    pub tokens: Mutex<HashMap<String, Value>>,
    /// Key-set fetches.
    pub jwks_hits: AtomicUsize,
    /// Discovery fetches.
    pub discovery_hits: AtomicUsize,
    /// Introspection calls.
    pub introspections: AtomicUsize,
    /// Delay before each answer, in milliseconds.
    pub delay_ms: AtomicUsize,
}

/// A running provider; stops when dropped.
pub struct Idp {
    /// Its address.
    pub addr: SocketAddr,
    /// Its base URL (`http://127.0.0.1:PORT` or `https://...`).
    pub url: String,
    /// What it serves.
    pub state: Arc<IdpState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The client id and secret introspection accepts.
pub const CLIENT: (&str, &str) = ("gw", "s3cret&pass");

impl Idp {
    /// A provider over HTTP, or over HTTPS with `tls` (certificate chain PEM, key PEM).
    pub async fn start(tls: Option<(String, String)>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{}", addr.port());
        let state = Arc::new(IdpState::default());
        *state.keys.lock().unwrap() = json!([]);
        let acceptor = tls.map(|(cert, key)| {
            use rustls::pki_types::pem::PemObject;
            let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
                .map(|c| c.unwrap())
                .collect();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let (st, base) = (state.clone(), url.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (st, base, acceptor) = (st.clone(), base.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (st, base) = (st.clone(), base.clone());
                        async move { Ok::<_, std::convert::Infallible>(answer(req, &st, &base).await) }
                    });
                    let http1 = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                let io = hyper_util::rt::TokioIo::new(tls);
                                let _ = http1.serve_connection(io, svc).await;
                            }
                        }
                        None => {
                            let io = hyper_util::rt::TokioIo::new(tcp);
                            let _ = http1.serve_connection(io, svc).await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            url,
            state,
            task,
        }
    }

    /// Serves `keys` as the key set from now on.
    pub fn set_keys(&self, keys: Value) {
        *self.state.keys.lock().unwrap() = keys;
    }

    /// Key-set fetches so far.
    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    /// Introspection calls so far.
    pub fn introspections(&self) -> usize {
        self.state.introspections.load(Ordering::SeqCst)
    }
}

fn json_response(status: u16, v: &Value) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

async fn answer(
    req: http::Request<hyper::body::Incoming>,
    st: &IdpState,
    base: &str,
) -> http::Response<Full<Bytes>> {
    let delay = st.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay as u64)).await;
    }
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/.well-known/openid-configuration") => {
            st.discovery_hits.fetch_add(1, Ordering::SeqCst);
            json_response(
                200,
                &json!({"issuer": format!("{base}/"), "jwks_uri": format!("{base}/jwks.json"),
                        "introspection_endpoint": format!("{base}/introspect")}),
            )
        }
        ("GET", "/jwks.json") => {
            st.jwks_hits.fetch_add(1, Ordering::SeqCst);
            json_response(200, &json!({"keys": st.keys.lock().unwrap().clone()}))
        }
        ("POST", "/introspect") => {
            st.introspections.fetch_add(1, Ordering::SeqCst);
            use base64::Engine;
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", CLIENT.0, "s3cret%26pass"))
            );
            let authorized = req
                .headers()
                .get("authorization")
                .is_some_and(|v| v.as_bytes() == want.as_bytes());
            let form = req.into_body().collect().await.unwrap().to_bytes();
            if !authorized {
                return json_response(401, &json!({"error": "invalid_client"}));
            }
            let form = String::from_utf8_lossy(&form).to_string();
            let token = form
                .split('&')
                .find_map(|p| p.strip_prefix("token="))
                .unwrap_or_default()
                .to_string();
            let found = st.tokens.lock().unwrap().get(&token).cloned();
            json_response(200, &found.unwrap_or_else(|| json!({"active": false})))
        }
        _ => json_response(404, &json!({})),
    }
}
