//! `type: http_signature`: requests signed with HTTP Message Signatures (RFC 9421) by a
//! consumer's `http_signature` key (HMAC-SHA256 or Ed25519), with the body bound by
//! `Content-Digest` (RFC 9530). Authenticating (see `auth_mode`).
//!
//! A signature admits when its `keyid` is a consumer's key, it covers every component of
//! `required_components`, its `created` is within `clock_skew` of the gateway's clock,
//! it has not `expires`d, its `alg` (when given) is the key's, the signature verifies
//! over the signature base rebuilt from the request, a `Content-Digest` matches the
//! body, and its `nonce` was not seen in the last `nonce_ttl` (a replay is refused).
//! Nonces are remembered after the signature verifies, so forged requests cannot fill
//! the memory; it is bounded by `nonce_cache_size`.

use crate::{Build, BuildResult, Kind};
use base64::Engine;
use gatehouse_config::CredentialConfig;
use gatehouse_core::{
    BodyNeeds, CREDENTIALS_INVALID, CREDENTIALS_MISSING, Consumer, Credential, Fingerprint, Flow,
    Policy, RequestBodyNeed, RequestCtx,
};
use http::HeaderValue;
use jsonwebtoken::{Algorithm, DecodingKey};
use schemars::JsonSchema;
use serde::Deserialize;
use sfv::{BareItem, Dictionary, FieldType, InnerList, Item, ListEntry, Parser};
use sha2::Digest;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `type: http_signature`.
pub const KIND: Kind = Kind {
    name: "http_signature",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// The settings of `type: http_signature`.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HttpSignaturePolicy")]
pub struct Config {
    /// How far `created` may be from the gateway's clock, either way; default 300s.
    #[serde(default = "default_skew")]
    pub clock_skew: gatehouse_config::Duration,
    /// How long a nonce is remembered (a request reusing it is a replay); default 600s.
    #[serde(default = "default_nonce_ttl")]
    pub nonce_ttl: gatehouse_config::Duration,
    /// Refuse signatures without a `nonce`; default false.
    #[serde(default)]
    pub require_nonce: bool,
    /// Components every signature must cover; default
    /// `["@method", "@authority", "@path", "@query"]`.
    #[serde(default = "default_required")]
    pub required_components: Vec<String>,
    /// Largest request body read to check its digest; default 1MiB (413 beyond).
    #[serde(default = "default_max_body")]
    pub max_body_size: gatehouse_config::Size,
    /// Nonces remembered at most; default 100000.
    #[serde(default = "default_nonce_cache_size")]
    pub nonce_cache_size: usize,
}

fn default_skew() -> gatehouse_config::Duration {
    gatehouse_config::Duration::from_millis(300_000)
}
fn default_nonce_ttl() -> gatehouse_config::Duration {
    gatehouse_config::Duration::from_millis(600_000)
}
fn default_required() -> Vec<String> {
    ["@method", "@authority", "@path", "@query"]
        .map(String::from)
        .to_vec()
}
fn default_max_body() -> gatehouse_config::Size {
    gatehouse_config::Size(1 << 20)
}
fn default_nonce_cache_size() -> usize {
    100_000
}

/// The derived components this policy can rebuild from a request (RFC 9421 section 2.2).
const DERIVED: &[&str] = &[
    "@method",
    "@target-uri",
    "@authority",
    "@scheme",
    "@request-target",
    "@path",
    "@query",
];

/// A consumer's verification key.
struct Key {
    /// `hmac-sha256` or `ed25519`.
    alg: &'static str,
    verify_as: Algorithm,
    key: DecodingKey,
    consumer: Arc<Consumer>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({}, {})", self.alg, self.consumer.name)
    }
}

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    let issue = |field: &str, m: String| vec![b.issue(Some(field), m)];
    for (i, comp) in c.required_components.iter().enumerate() {
        let derived = comp.starts_with('@');
        let known = DERIVED.contains(&comp.as_str());
        let header_name = http::HeaderName::from_bytes(comp.as_bytes()).is_ok()
            && comp.bytes().all(|b| !b.is_ascii_uppercase());
        if (derived && !known) || (!derived && !header_name) {
            return Err(issue(
                &format!("required_components[{i}]"),
                format!(
                    "{comp:?} is neither a lower-case header name nor one of {}",
                    DERIVED.join(", ")
                ),
            ));
        }
    }
    if c.nonce_cache_size == 0 {
        return Err(issue("nonce_cache_size", "must be at least 1".into()));
    }
    let mut keys = HashMap::new();
    for (i, consumer) in b.config.consumers.iter().enumerate() {
        let who = crate::consumer(consumer, Credential::Signature);
        for (j, cred) in consumer.credentials.iter().enumerate() {
            let CredentialConfig::HttpSignature {
                key_id,
                secret,
                public_key,
            } = cred
            else {
                continue;
            };
            let key = match (secret, public_key) {
                (Some(s), _) => Key {
                    alg: "hmac-sha256",
                    verify_as: Algorithm::HS256,
                    key: DecodingKey::from_secret(s.as_bytes()),
                    consumer: who.clone(),
                },
                (None, Some(path)) => {
                    let field = format!("consumers[{i}].credentials[{j}].public_key");
                    let bad = |m: String| {
                        vec![gatehouse_config::validate::Issue {
                            path: field.clone(),
                            message: m,
                        }]
                    };
                    let pem = std::fs::read(b.dir.join(path))
                        .map_err(|e| bad(format!("cannot read {path:?}: {e}")))?;
                    let key = DecodingKey::from_ed_pem(&pem)
                        .map_err(|_| bad(format!("{path:?} is not a PEM Ed25519 public key")))?;
                    Key {
                        alg: "ed25519",
                        verify_as: Algorithm::EdDSA,
                        key,
                        consumer: who.clone(),
                    }
                }
                (None, None) => continue,
            };
            keys.insert(key_id.clone(), key);
        }
    }
    let mut accept = String::from("sig1=(");
    for (i, comp) in c.required_components.iter().enumerate() {
        if i > 0 {
            accept.push(' ');
        }
        accept.push('"');
        accept.push_str(comp);
        accept.push('"');
    }
    accept.push_str(");created");
    if c.require_nonce {
        accept.push_str(";nonce");
    }
    let accept = HeaderValue::from_str(&accept)
        .map_err(|_| issue("required_components", "cannot be sent in a header".into()))?;
    let nonce_ttl = c.nonce_ttl.get();
    let fp = Fingerprint::of(&(nonce_ttl, c.nonce_cache_size));
    let nonces = b.state.get_or_build("http_signature", b.name, fp, |_| {
        quick_cache::sync::Cache::new(c.nonce_cache_size)
    });
    Ok(Arc::new(HttpSignature {
        name: b.name.to_string(),
        keys,
        required: c.required_components,
        skew: c.clock_skew.get().as_secs(),
        nonce_ttl,
        require_nonce: c.require_nonce,
        max_body: c.max_body_size.0,
        nonces,
        accept,
    }))
}

/// The compiled http_signature policy.
#[derive(Debug)]
pub struct HttpSignature {
    name: String,
    keys: HashMap<String, Key>,
    required: Vec<String>,
    skew: u64,
    nonce_ttl: Duration,
    require_nonce: bool,
    max_body: u64,
    /// `keyid` NUL `nonce` -> when first seen.
    nonces: Arc<quick_cache::sync::Cache<String, Instant>>,
    /// The `Accept-Signature` sent with a refusal (RFC 9421 section 5.1).
    accept: HeaderValue,
}

/// A header's field lines as one value (RFC 9421 section 2.1: trimmed, joined by ", ").
fn combined(headers: &http::HeaderMap, name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let v = v.to_str().ok()?.trim();
        match &mut out {
            Some(s) => {
                s.push_str(", ");
                s.push_str(v);
            }
            None => out = Some(v.to_string()),
        }
    }
    out
}

fn dictionary(headers: &http::HeaderMap, name: &str) -> Result<Option<Dictionary>, &'static str> {
    match combined(headers, name) {
        None => Ok(None),
        Some(v) => Parser::new(&v)
            .parse::<Dictionary>()
            .map(Some)
            .map_err(|_| "the signature headers are not valid structured fields"),
    }
}

fn param<'a>(params: &'a sfv::Parameters, name: &str) -> Option<&'a BareItem> {
    params
        .iter()
        .find(|(k, _)| k.as_str() == name)
        .map(|(_, v)| v)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl HttpSignature {
    /// The value of one covered component of the request (RFC 9421 section 2).
    fn component(
        &self,
        item: &Item,
        req: &http::request::Parts,
        ctx: &RequestCtx,
    ) -> Result<String, &'static str> {
        let BareItem::String(id) = &item.bare_item else {
            return Err("a covered component is not a string");
        };
        if !item.params.is_empty() {
            return Err("component parameters are not supported");
        }
        let id = id.as_str();
        let path = || {
            let p = req.uri.path();
            if p.is_empty() { "/" } else { p }
        };
        let scheme = ctx.conn.scheme.as_str();
        // Lower case, without the scheme's default port (RFC 9421 section 2.2.3).
        let authority = || {
            let a = req
                .uri
                .authority()
                .map(|a| a.as_str().to_string())
                .or_else(|| combined(&req.headers, "host"))
                .map(|a| a.to_ascii_lowercase())
                .ok_or("the request has no authority")?;
            let default = if scheme == "https" { ":443" } else { ":80" };
            Ok::<_, &'static str>(a.strip_suffix(default).map_or(a.clone(), str::to_string))
        };
        let query = || req.uri.query().map_or("?".to_string(), |q| format!("?{q}"));
        Ok(match id {
            "@method" => req.method.as_str().to_string(),
            "@authority" => authority()?,
            "@scheme" => scheme.to_string(),
            "@path" => path().to_string(),
            "@query" => query(),
            "@request-target" => match req.uri.query() {
                Some(q) => format!("{}?{q}", path()),
                None => path().to_string(),
            },
            "@target-uri" => {
                let q = req.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
                format!("{scheme}://{}{}{q}", authority()?, path())
            }
            d if d.starts_with('@') => return Err("a covered component is not supported"),
            name => {
                if name.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err("covered header names must be lower case");
                }
                combined(&req.headers, name)
                    .ok_or("the signature covers a header the request does not have")?
            }
        })
    }

    /// Checks the request's `Content-Digest` (RFC 9530) against its body, when sent.
    fn digest_matches(&self, req: &http::request::Parts, body: &[u8]) -> Result<(), &'static str> {
        let Some(digests) = dictionary(&req.headers, "content-digest")
            .map_err(|_| "the content digest is not a valid structured field")?
        else {
            return Ok(());
        };
        let mut known = false;
        for (alg, entry) in &digests {
            let ListEntry::Item(Item {
                bare_item: BareItem::ByteSequence(want),
                ..
            }) = entry
            else {
                continue;
            };
            let got: Vec<u8> = match alg.as_str() {
                "sha-256" => sha2::Sha256::digest(body).to_vec(),
                "sha-512" => sha2::Sha512::digest(body).to_vec(),
                _ => continue,
            };
            known = true;
            if got != *want {
                return Err("the body does not match its content digest");
            }
        }
        if known {
            Ok(())
        } else {
            Err("the content digest uses no supported algorithm (sha-256, sha-512)")
        }
    }

    /// Verifies one signature: `entry` is its `Signature-Input` member, `input` the same
    /// as an inner list (its covered components and parameters).
    fn verify_one(
        &self,
        entry: &ListEntry,
        input: &InnerList,
        signature: &[u8],
        req: &http::request::Parts,
        ctx: &RequestCtx,
    ) -> Result<(Arc<Consumer>, Option<String>), &'static str> {
        let Some(BareItem::String(keyid)) = param(&input.params, "keyid") else {
            return Err("the signature has no keyid");
        };
        let key = self
            .keys
            .get(keyid.as_str())
            .ok_or("the signature's key is not known")?;
        if let Some(alg) = param(&input.params, "alg") {
            let BareItem::String(alg) = alg else {
                return Err("the signature's alg is not a string");
            };
            if alg.as_str() != key.alg {
                return Err("the signature's algorithm is not its key's");
            }
        }
        let covered: Vec<&str> = input
            .items
            .iter()
            .filter_map(|i| match &i.bare_item {
                BareItem::String(s) if i.params.is_empty() => Some(s.as_str()),
                _ => None,
            })
            .collect();
        if self.required.iter().any(|r| !covered.contains(&r.as_str())) {
            return Err("the signature does not cover every required component");
        }
        let now = now();
        let Some(BareItem::Integer(created)) = param(&input.params, "created") else {
            return Err("the signature has no created time");
        };
        let created = i64::from(*created);
        if created.abs_diff(now as i64) > self.skew {
            return Err("the signature's created time is outside the allowed clock skew");
        }
        if let Some(BareItem::Integer(expires)) = param(&input.params, "expires")
            && i64::from(*expires) < now as i64
        {
            return Err("the signature has expired");
        }
        let nonce = match param(&input.params, "nonce") {
            Some(BareItem::String(n)) => Some(n.as_str().to_string()),
            Some(_) => return Err("the signature's nonce is not a string"),
            None if self.require_nonce => return Err("the signature has no nonce"),
            None => None,
        };
        // The signature base (RFC 9421 section 2.5).
        let mut base = String::new();
        for item in &input.items {
            base.push_str(&item.serialize());
            base.push_str(": ");
            base.push_str(&self.component(item, req, ctx)?);
            base.push('\n');
        }
        base.push_str("\"@signature-params\": ");
        let mut params = sfv::ListSerializer::new();
        params.members([entry]);
        let params = params
            .finish()
            .ok_or("the signature parameters cannot be serialized")?;
        base.push_str(&params);
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature);
        let ok = jsonwebtoken::crypto::verify(&sig, base.as_bytes(), &key.key, key.verify_as)
            .unwrap_or(false);
        if !ok {
            return Err("the signature is not valid");
        }
        Ok((key.consumer.clone(), nonce.map(|n| format!("{keyid}\0{n}"))))
    }

    /// Remembers `nonce`; false when it was seen within `nonce_ttl` (a replay).
    fn first_use(&self, nonce: &str) -> bool {
        let mut fresh = false;
        let seen = self
            .nonces
            .get_or_insert_with(nonce, || {
                fresh = true;
                Ok::<_, ()>(Instant::now())
            })
            .unwrap_or_else(|_| Instant::now());
        if fresh {
            return true;
        }
        if seen.elapsed() >= self.nonce_ttl {
            self.nonces.insert(nonce.into(), Instant::now());
            return true;
        }
        false
    }

    fn refuse(&self, ctx: &RequestCtx, reason: &'static str, detail: &str) -> Flow {
        let challenge = HeaderValue::from_static("Signature");
        let mut r = crate::refusal::unauthorized(&ctx.request_id, detail, challenge);
        r.headers_mut()
            .insert("accept-signature", self.accept.clone());
        Flow::respond(reason, r)
    }
}

impl Policy for HttpSignature {
    fn name(&self) -> &str {
        &self.name
    }

    fn authenticates(&self) -> bool {
        true
    }

    fn body_needs(&self) -> BodyNeeds {
        BodyNeeds {
            request: RequestBodyNeed::Buffered { max: self.max_body },
            ..BodyNeeds::NONE
        }
    }

    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        let parsed = dictionary(&req.headers, "signature-input")
            .and_then(|i| Ok((i, dictionary(&req.headers, "signature")?)));
        let (inputs, signatures) = match parsed {
            Ok((Some(i), Some(s))) => (i, s),
            Ok(_) => return self.refuse(ctx, CREDENTIALS_MISSING, "a signed request is required"),
            Err(why) => return self.refuse(ctx, CREDENTIALS_INVALID, why),
        };
        let mut why = "the request carries no signature";
        let mut admitted = None;
        for (label, entry) in &inputs {
            let ListEntry::InnerList(input) = entry else {
                why = "a signature input is not an inner list";
                continue;
            };
            let Some(ListEntry::Item(Item {
                bare_item: BareItem::ByteSequence(sig),
                ..
            })) = signatures.get(label)
            else {
                why = "a signature input has no signature";
                continue;
            };
            match self.verify_one(entry, input, sig, req, ctx) {
                Ok(found) => {
                    admitted = Some(found);
                    break;
                }
                Err(e) => why = e,
            }
        }
        let Some((consumer, nonce)) = admitted else {
            return self.refuse(ctx, CREDENTIALS_INVALID, why);
        };
        let body = ctx.bodies().request.clone().unwrap_or_default();
        if let Err(e) = self.digest_matches(req, &body) {
            return self.refuse(ctx, CREDENTIALS_INVALID, e);
        }
        if let Some(n) = nonce
            && !self.first_use(&n)
        {
            return self.refuse(
                ctx,
                CREDENTIALS_INVALID,
                "the signature's nonce was already used",
            );
        }
        ctx.consumer = Some(consumer);
        Flow::Continue
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::kind::tests::build_one;

    #[test]
    fn required_components_are_checked_when_the_config_loads() {
        let e = build_one(
            "policies:\n  s: { type: http_signature, required_components: [\"@method\", \"@status\"] }\n",
            "s",
        )
        .unwrap_err();
        assert_eq!(e[0].path, "policies.s.required_components[1]");
        let e = build_one(
            "policies:\n  s: { type: http_signature, required_components: [Content-Digest] }\n",
            "s",
        )
        .unwrap_err();
        assert_eq!(e[0].path, "policies.s.required_components[0]");
        assert!(build_one("policies:\n  s: { type: http_signature }\n", "s").is_ok());
    }
}
