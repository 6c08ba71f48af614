//! `type: mtls_auth`: the caller is the consumer whose `mtls` credential names the TLS
//! client certificate of the connection, by subject or by subject alternative name. The
//! certificate itself was verified by the listener (`tls.client_auth`); this policy maps
//! it to a consumer. Authenticating (see `auth_mode`).

use crate::{Build, BuildResult, Kind};
use gatehouse_config::CredentialConfig;
use gatehouse_core::{
    CREDENTIALS_INVALID, CREDENTIALS_MISSING, Consumer, Credential, Flow, Policy, RequestCtx,
};
use http::HeaderValue;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

/// `type: mtls_auth`.
pub const KIND: Kind = Kind {
    name: "mtls_auth",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// The settings of `type: mtls_auth` (none yet: the consumers say which certificates).
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MtlsAuthPolicy")]
pub struct Config {}

/// Distinguished names compare without regard to ASCII case (RFC 4517 caseIgnoreMatch
/// for the usual attributes), spaces after separators, or the order of their parts:
/// `openssl x509 -subject` prints a name in certificate order, RFC 4514 in reverse, and a
/// consumer written either way must match.
fn normal_dn(s: &str) -> String {
    let mut parts: Vec<String> = s
        .split(',')
        .map(|rdn| rdn.trim().to_ascii_lowercase())
        .collect();
    parts.sort();
    parts.join(",")
}

fn build(b: &Build<'_>) -> BuildResult {
    let _: Config = b.settings()?;
    let mut subjects = HashMap::new();
    let mut sans = HashMap::new();
    for consumer in &b.config.consumers {
        let who = crate::consumer(consumer, Credential::ClientCertificate);
        for cred in &consumer.credentials {
            let CredentialConfig::Mtls { subject, san } = cred else {
                continue;
            };
            let (map, key) = match (subject, san) {
                (Some(s), _) => (&mut subjects, normal_dn(s)),
                (None, Some(s)) => (&mut sans, s.clone()),
                (None, None) => continue,
            };
            if let Some(other) = map.insert(key.clone(), who.clone())
                && other.name != who.name
            {
                return Err(vec![b.issue(
                    None,
                    format!(
                        "consumers {:?} and {:?} claim the same certificate ({key})",
                        other.name, who.name
                    ),
                )]);
            }
        }
    }
    Ok(Arc::new(MtlsAuth {
        name: b.name.to_string(),
        subjects,
        sans,
    }))
}

/// The compiled mtls_auth policy.
#[derive(Debug)]
pub struct MtlsAuth {
    name: String,
    subjects: HashMap<String, Arc<Consumer>>,
    sans: HashMap<String, Arc<Consumer>>,
}

impl MtlsAuth {
    fn refuse(ctx: &RequestCtx, reason: &'static str, detail: &str) -> Flow {
        // No HTTP scheme carries a certificate; the challenge names what is missing.
        let challenge = HeaderValue::from_static("ClientCertificate");
        Flow::respond(
            reason,
            crate::refusal::unauthorized(&ctx.request_id, detail, challenge),
        )
    }
}

impl Policy for MtlsAuth {
    fn name(&self) -> &str {
        &self.name
    }

    fn authenticates(&self) -> bool {
        true
    }

    fn on_request(&self, _req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        let Some(tls) = ctx.conn.tls.as_ref().filter(|t| !t.client_chain.is_empty()) else {
            return Self::refuse(
                ctx,
                CREDENTIALS_MISSING,
                "a TLS client certificate is required",
            );
        };
        let by_subject = tls
            .client_subject
            .as_deref()
            .and_then(|s| self.subjects.get(&normal_dn(s)));
        let found = by_subject.or_else(|| tls.client_sans.iter().find_map(|s| self.sans.get(s)));
        match found {
            Some(c) => {
                ctx.consumer = Some(c.clone());
                Flow::Continue
            }
            None => Self::refuse(
                ctx,
                CREDENTIALS_INVALID,
                "the client certificate belongs to no consumer",
            ),
        }
    }
}
