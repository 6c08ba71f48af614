//! Who may use the admin API (`admin.allow`, `admin.tokens`, docs/operations.md): every
//! request is checked before it reaches an endpoint, `GET /metrics` included. Tokens are
//! kept as SHA-256 digests and compared in constant time; the token itself is never
//! logged. Writes (anything but GET and HEAD) are audit-logged with who made them.

use bytes::Bytes;
use gatehouse_config::validate::sha256_from_hex;
use gatehouse_config::{Admin, AdminRole};
use gatehouse_policies::cidr::CidrSet;
use gatehouse_store::digest;
use http::{HeaderMap, Method, Response, StatusCode, header};
use http_body_util::Full;
use std::collections::BTreeMap;
use std::net::IpAddr;
use subtle::ConstantTimeEq;

/// The access rules of one config.
#[derive(Debug, Default)]
pub struct Access {
    allow: Option<CidrSet>,
    tokens: Option<Vec<Holder>>,
}

#[derive(Debug)]
struct Holder {
    digest: [u8; 32],
    role: AdminRole,
    name: String,
}

/// Who made a request, as the audit log names them.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name (`tokens[N]` without one), or `anonymous` without tokens.
    pub name: String,
    /// The client's address.
    pub peer: IpAddr,
}

impl Access {
    /// The rules of `admin` (validated with the config, so nothing fails here: an entry
    /// that does not parse cannot reach a running config).
    pub fn build(admin: Option<&Admin>, ip_groups: &BTreeMap<String, Vec<String>>) -> Self {
        let Some(admin) = admin else {
            return Self::default();
        };
        let allow = admin
            .allow
            .as_ref()
            .map(|a| CidrSet::build(a, ip_groups).unwrap_or_default());
        let tokens = admin.tokens.as_ref().map(|list| {
            list.iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    let digest = match (&t.token, &t.token_sha256) {
                        (Some(tok), _) => digest(tok.as_bytes()),
                        (None, Some(h)) => sha256_from_hex(h)?,
                        (None, None) => return None,
                    };
                    Some(Holder {
                        digest,
                        role: t.role,
                        name: t.name.clone().unwrap_or_else(|| format!("tokens[{i}]")),
                    })
                })
                .collect()
        });
        Self { allow, tokens }
    }

    /// Lets the request through as a caller, or answers 403 (address or role) or 401
    /// (no or unknown token).
    #[allow(clippy::result_large_err)]
    pub fn check(
        &self,
        peer: IpAddr,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Caller, Response<Full<Bytes>>> {
        if let Some(allow) = &self.allow
            && !allow.contains(peer)
        {
            return Err(crate::problem(
                StatusCode::FORBIDDEN,
                "this address may not use the admin API".into(),
                None,
            ));
        }
        let Some(tokens) = &self.tokens else {
            return Ok(Caller {
                name: "anonymous".into(),
                peer,
            });
        };
        let Some(presented) = presented_token(headers) else {
            return Err(unauthorized("a token is required"));
        };
        let d = digest(presented.as_bytes());
        // Every holder is compared, so the time taken does not tell which one matched.
        let mut found: Option<&Holder> = None;
        for h in tokens {
            if bool::from(h.digest.ct_eq(&d)) {
                found = Some(h);
            }
        }
        let Some(holder) = found else {
            return Err(unauthorized("the token is not valid"));
        };
        let reads = matches!(*method, Method::GET | Method::HEAD);
        if holder.role == AdminRole::Read && !reads {
            return Err(crate::problem(
                StatusCode::FORBIDDEN,
                "this token may only read".into(),
                None,
            ));
        }
        Ok(Caller {
            name: holder.name.clone(),
            peer,
        })
    }
}

/// The token of `Authorization: Bearer T`, or the password of `Basic` (browsers ask for
/// a user name too; it is ignored).
fn presented_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_string());
    }
    gatehouse_policies::basic_auth::credentials(headers).map(|(_, pass)| pass)
}

fn unauthorized(detail: &str) -> Response<Full<Bytes>> {
    let mut r = crate::problem(StatusCode::UNAUTHORIZED, detail.into(), None);
    let challenges = r.headers_mut();
    challenges.append(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer realm=\"gatehouse-admin\""),
    );
    challenges.append(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Basic realm=\"gatehouse-admin\", charset=\"UTF-8\""),
    );
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn hex_digests_parse_and_basic_passwords_are_the_token() {
        let d = digest(b"correct horse battery staple");
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(sha256_from_hex(&hex), Some(d));
        assert_eq!(sha256_from_hex("zz"), None);
        let mut h = HeaderMap::new();
        let basic = base64::engine::general_purpose::STANDARD.encode("ops:s3cret-token-value");
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        assert_eq!(presented_token(&h).as_deref(), Some("s3cret-token-value"));
        h.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(presented_token(&h).as_deref(), Some("abc"));
    }
}
