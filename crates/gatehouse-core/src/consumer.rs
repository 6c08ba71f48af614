//! The authenticated consumer of a request: set by an authentication policy, read by
//! every later policy (ACLs, per-consumer limits), the access log and the metrics.

use std::collections::BTreeMap;

/// The short-circuit reason of an authenticating policy that found no credential of its
/// kind in the request, as opposed to one it refused (`credentials_invalid`): with
/// `auth_mode: any`, a refusal is the better answer to give than a missing credential.
pub const CREDENTIALS_MISSING: &str = "credentials_missing";

/// The short-circuit reason of an authenticating policy that refused the credential
/// presented.
pub const CREDENTIALS_INVALID: &str = "credentials_invalid";

/// How a consumer proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// An API key.
    ApiKey,
    /// HTTP Basic.
    Basic,
    /// A JSON Web Token.
    Jwt,
    /// An OAuth2 token checked by introspection.
    OAuth2,
    /// A signed request (HMAC).
    Signature,
    /// A TLS client certificate.
    ClientCertificate,
}

impl Credential {
    /// The name used in logs: `api_key`, `basic`, `jwt`, `oauth2`, `signature`, `mtls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Basic => "basic",
            Self::Jwt => "jwt",
            Self::OAuth2 => "oauth2",
            Self::Signature => "signature",
            Self::ClientCertificate => "mtls",
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq)]
pub struct Consumer {
    /// The consumer's configured name.
    pub name: String,
    /// Groups, for ACLs.
    pub groups: Vec<String>,
    /// The credential it presented.
    pub credential: Credential,
    /// Claims carried by the credential (JWT claims, introspection fields).
    pub claims: BTreeMap<String, serde_json::Value>,
}
