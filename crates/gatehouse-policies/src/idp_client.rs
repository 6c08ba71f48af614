//! The HTTPS client through which policies reach an identity provider: key sets, OpenID
//! discovery documents, token introspection. It trusts the system's store, or only the
//! CA a policy names (`ca`), reaches the provider directly (no proxy from the
//! environment: what the gateway contacts is what its config says), and reads at most
//! [`MAX_BODY`] of an answer, so a broken provider cannot fill the gateway's memory.

use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The largest answer read from a provider.
pub const MAX_BODY: usize = 1 << 20;

/// A client for one provider's endpoints.
#[derive(Debug, Clone)]
pub struct IdpClient {
    client: reqwest::Client,
}

impl IdpClient {
    /// A client trusting the CA certificates in the PEM file `ca` (instead of the
    /// system's), whose every exchange ends within `timeout`. The error says what is
    /// wrong with the file, for the config error.
    pub fn new(ca: Option<&Path>, timeout: Duration) -> Result<Self, String> {
        let mut b = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| format!("{path:?} holds no PEM certificate"))?;
            b = b.tls_built_in_root_certs(false);
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b
            .build()
            .map_err(|e| format!("cannot make the HTTPS client: {e}"))?;
        Ok(Self { client })
    }

    /// The JSON document at `url` (a 2xx answer), or why there is none (for the log).
    pub async fn get_json(&self, url: &str) -> Result<Value, String> {
        let resp = self
            .client
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await;
        json_of(url, resp).await
    }

    /// The JSON answer to a form POST to `url` (RFC 7662 introspection), authenticated
    /// with HTTP Basic as `user` when given.
    pub async fn post_form(
        &self,
        url: &str,
        user: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> Result<Value, String> {
        let mut body = String::new();
        for (k, v) in form {
            if !body.is_empty() {
                body.push('&');
            }
            body.push_str(&form_encode(k));
            body.push('=');
            body.push_str(&form_encode(v));
        }
        let mut req = self
            .client
            .post(url)
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        if let Some((id, secret)) = user {
            // RFC 6749 section 2.3.1: the client id and secret are form-encoded first.
            req = req.basic_auth(form_encode(id), Some(form_encode(secret)));
        }
        json_of(url, req.send().await).await
    }
}

/// `s` encoded as `application/x-www-form-urlencoded` encodes a value.
fn form_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'*')
        .remove(b'-')
        .remove(b'.')
        .remove(b'_');
    percent_encoding::utf8_percent_encode(s, SET)
        .to_string()
        .replace("%20", "+")
}

async fn json_of(
    url: &str,
    resp: Result<reqwest::Response, reqwest::Error>,
) -> Result<Value, String> {
    let mut resp = resp.map_err(|e| format!("{url}: {}", error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: answered {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("{url}: {}", error_chain(&e)))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("{url}: answer larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))
}

/// An error with its causes (reqwest's own text omits the TLS or connect reason).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_encoded_as_forms_are() {
        assert_eq!(form_encode("a b+c/d*é"), "a+b%2Bc%2Fd*%C3%A9");
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate").unwrap_or_else(|e| panic!("{e}"));
        let e = IdpClient::new(Some(&p), Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let e =
            IdpClient::new(Some(&dir.path().join("none.pem")), Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }
}
