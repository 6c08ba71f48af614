//! `type: jwt`: a bearer JSON Web Token (RFC 7519), verified against a shared secret
//! (HS*), a public key file, a key set (`jwks_url`) or an OpenID provider's key set
//! found by discovery (`discovery`). Authenticating (see `auth_mode`).
//!
//! What is never accepted, whatever the config: `alg: none` (not an algorithm here), an
//! algorithm outside `algorithms`, a key of another family than the token's algorithm
//! (an RSA public key used as an HMAC secret), HMAC with keys from a key set, and tokens
//! that name their own key (`jwk`, `jku`, `x5u`, `x5c` headers). A `kid` is only ever
//! looked up among the fetched keys.
//!
//! A verified token is remembered until its `exp` (checked again on every use), so a
//! client reusing its token costs one signature check per token, not per request; the
//! memory is dropped when the key set changes.

use crate::bearer::Bearer;
use crate::claims::ForwardClaims;
use crate::key_set::{Family, Key, KeySet, KeySource, Source, family};
use crate::token_key::{TokenKey, TokenRef};
use crate::{Build, BuildResult, Kind};
use gatehouse_core::{
    CREDENTIALS_INVALID, CREDENTIALS_MISSING, Consumer, Credential, Fingerprint, Flow, Policy,
    Problem, RequestCtx, Resume, problem_response,
};
use http::{HeaderName, HeaderValue, StatusCode};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `type: jwt`.
pub const KIND: Kind = Kind {
    name: "jwt",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// The settings of `type: jwt`. Exactly one of `jwks_url`, `discovery`, `secret` and
/// `public_key` says where the verification keys come from.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "JwtPolicy")]
pub struct Config {
    /// URL of a JSON Web Key Set (RFC 7517); its RSA, EC and Ed25519 keys verify.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// URL of an OpenID provider (its issuer, or its discovery document): the discovery
    /// document gives the issuer (the default of `issuer`) and the key set's URL.
    #[serde(default)]
    pub discovery: Option<String>,
    /// Shared secret for HS256/384/512, at least 32 bytes (use `${VAR}`).
    #[serde(default)]
    pub secret: Option<String>,
    /// PEM file of an RSA, EC or Ed25519 public key; relative to the config file.
    #[serde(default)]
    pub public_key: Option<String>,
    /// PEM file of the CA that signs the provider's certificate (instead of the system's
    /// trust store), for `jwks_url` and `discovery` over HTTPS.
    #[serde(default)]
    pub ca: Option<String>,
    /// Required `iss`; with `discovery`, the discovered issuer by default.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted audiences: `aud` must name one of them. Empty (default): not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted `alg` values. Default: HS256, HS384, HS512 with `secret`; RS256, RS384,
    /// RS512, PS256, PS384, PS512, ES256, ES384, EdDSA with keys.
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// Clock skew allowed on `exp` and `nbf`; default 60s.
    #[serde(default = "default_leeway")]
    pub leeway: gatehouse_config::Duration,
    /// Claims a token must carry; default `[exp]`.
    #[serde(default = "default_required")]
    pub required_claims: Vec<String>,
    /// Request headers set from claims (`x-user-id: sub`; dotted paths reach nested
    /// claims). The client's own headers of these names are always removed.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Header carrying the token; default `authorization` (with the `Bearer` scheme).
    #[serde(default = "crate::bearer::default_header")]
    pub header: String,
    /// Query parameter carrying the token, looked at after the header; default none.
    #[serde(default)]
    pub query: Option<String>,
    /// Cookie carrying the token, looked at last; default none.
    #[serde(default)]
    pub cookie: Option<String>,
    /// Remove the token before the request goes upstream; default false.
    #[serde(default)]
    pub hide_credentials: bool,
    /// Admit only tokens whose `sub` is a consumer's `jwt` credential; default false
    /// (another subject is a consumer of that name, with no groups).
    #[serde(default)]
    pub require_consumer: bool,
    /// The realm of the `WWW-Authenticate: Bearer` challenge; default `gatehouse`.
    #[serde(default = "crate::bearer::default_realm")]
    pub realm: String,
    /// How old the fetched keys may grow before they are fetched again (in the
    /// background); default 5m.
    #[serde(default = "default_refresh")]
    pub jwks_refresh: gatehouse_config::Duration,
    /// Least time between two fetches (a token with an unknown `kid` fetches at once,
    /// but no more often than this); default 10s.
    #[serde(default = "default_min_refresh")]
    pub jwks_min_refresh: gatehouse_config::Duration,
    /// Verified tokens remembered at most; default 10000.
    #[serde(default = "crate::bearer::default_cache_size")]
    pub cache_size: usize,
}

fn default_leeway() -> gatehouse_config::Duration {
    gatehouse_config::Duration::from_millis(60_000)
}
fn default_required() -> Vec<String> {
    vec!["exp".into()]
}
fn default_refresh() -> gatehouse_config::Duration {
    gatehouse_config::Duration::from_millis(300_000)
}
fn default_min_refresh() -> gatehouse_config::Duration {
    gatehouse_config::Duration::from_millis(10_000)
}

/// The algorithms `alg` may name.
const ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// Where the keys come from, compiled.
#[derive(Debug)]
enum Keys {
    /// A secret or a public key file.
    Fixed(Vec<Key>),
    /// A key set, fetched.
    Remote(Arc<KeySource>),
}

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    let issue = |field: &str, m: String| vec![b.issue(Some(field), m)];
    let sources = [
        c.jwks_url.is_some(),
        c.discovery.is_some(),
        c.secret.is_some(),
        c.public_key.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err(vec![b.issue(
            None,
            "needs exactly one of jwks_url, discovery, secret and public_key",
        )]);
    }
    let symmetric = c.secret.is_some();
    let algorithms = match &c.algorithms {
        None if symmetric => vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
        None => ALGORITHMS[3..]
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect(),
        Some(list) => {
            let mut v = Vec::new();
            for (i, a) in list.iter().enumerate() {
                let field = format!("algorithms[{i}]");
                let alg: Algorithm = match a.parse() {
                    Ok(alg) if ALGORITHMS.contains(&a.as_str()) => alg,
                    _ => {
                        return Err(issue(
                            &field,
                            format!(
                                "unknown algorithm {a:?}; expected one of: {}",
                                ALGORITHMS.join(", ")
                            ),
                        ));
                    }
                };
                if (family(alg) == Family::Hmac) != symmetric {
                    let m = if symmetric {
                        format!(
                            "{a} needs a public key; a `secret` verifies only HS256, HS384 and HS512"
                        )
                    } else {
                        format!("{a} needs `secret`; keys verify only RS, PS, ES and EdDSA")
                    };
                    return Err(issue(&field, m));
                }
                v.push(alg);
            }
            if v.is_empty() {
                return Err(issue("algorithms", "must name at least one".into()));
            }
            v
        }
    };
    let bearer = Bearer::new(&c.header, c.query.clone(), c.cookie.clone(), &c.realm)
        .map_err(|(field, m)| issue(field, m))?;
    let forward = ForwardClaims::new(&c.forward_claims).map_err(|m| issue("forward_claims", m))?;
    if c.cache_size == 0 {
        return Err(issue("cache_size", "must be at least 1".into()));
    }
    // What the verified-token cache depends on besides the settings: a key file's
    // content (a key replaced under the same path must not keep admitting old tokens).
    let mut key_material = Vec::new();
    let keys = if let Some(secret) = &c.secret {
        if secret.len() < 32 {
            return Err(issue(
                "secret",
                "must be at least 32 bytes (RFC 7518 section 3.2)".into(),
            ));
        }
        Keys::Fixed(vec![Key::fixed(
            Family::Hmac,
            DecodingKey::from_secret(secret.as_bytes()),
            None,
        )])
    } else if let Some(path) = &c.public_key {
        let pem = std::fs::read(b.dir.join(path))
            .map_err(|e| issue("public_key", format!("cannot read {path:?}: {e}")))?;
        let key = DecodingKey::from_rsa_pem(&pem)
            .map(|k| (Family::Rsa, k))
            .or_else(|_| DecodingKey::from_ec_pem(&pem).map(|k| (Family::Ec, k)))
            .or_else(|_| DecodingKey::from_ed_pem(&pem).map(|k| (Family::Ed, k)))
            .map_err(|_| {
                issue(
                    "public_key",
                    format!("{path:?} is not a PEM RSA, EC or Ed25519 public key"),
                )
            })?;
        key_material = pem;
        Keys::Fixed(vec![Key::fixed(key.0, key.1, None)])
    } else {
        let (source, field) = match (&c.jwks_url, &c.discovery) {
            (Some(u), _) => (Source::Jwks(u.clone()), "jwks_url"),
            (_, Some(u)) => (Source::Discovery(u.clone()), "discovery"),
            (None, None) => return Err(vec![b.issue(None, "names no key source")]),
        };
        let url = match &source {
            Source::Jwks(u) | Source::Discovery(u) => u,
        };
        if !(url.starts_with("https://") || url.starts_with("http://"))
            || url.parse::<http::Uri>().is_err()
        {
            return Err(issue(field, format!("{url:?} is not an http(s) URL")));
        }
        let ca = c.ca.as_ref().map(|p| b.dir.join(p));
        let ca_pem = ca.as_ref().map(|p| std::fs::read(p).unwrap_or_default());
        let timeout = b.policy.timeout.get();
        let client = crate::idp_client::IdpClient::new(ca.as_deref(), timeout)
            .map_err(|m| issue("ca", m))?;
        let (refresh, min_refresh) = (c.jwks_refresh.get(), c.jwks_min_refresh.get());
        let fp = Fingerprint::of(&(&source, &ca_pem, refresh, min_refresh, timeout));
        Keys::Remote(b.state.get_or_build("jwks", url, fp, |_| {
            KeySource::new(source.clone(), client, refresh, min_refresh)
        }))
    };
    if c.ca.is_some() && !matches!(keys, Keys::Remote(_)) {
        return Err(issue("ca", "is only for jwks_url and discovery".into()));
    }

    let subjects = crate::Subjects::new(b.config, Credential::Jwt);

    let leeway = c.leeway.get().as_secs();
    let validations = algorithms
        .iter()
        .map(|alg| {
            let mut v = Validation::new(*alg);
            v.leeway = leeway;
            v.set_required_spec_claims(&c.required_claims);
            v.validate_nbf = true;
            v.validate_aud = !c.audiences.is_empty();
            if !c.audiences.is_empty() {
                v.set_audience(&c.audiences);
            }
            (*alg, v)
        })
        .collect();
    let fp = Fingerprint::of(&(&b.policy.settings, &b.config.consumers, &key_material));
    let cache = b.state.get_or_build("jwt", b.name, fp, |_| {
        quick_cache::sync::Cache::new(c.cache_size)
    });
    Ok(Arc::new(Jwt {
        name: b.name.to_string(),
        inner: Arc::new(Verifier {
            bearer,
            hide: c.hide_credentials,
            keys,
            validations,
            issuer: c.issuer,
            leeway,
            subjects,
            require_consumer: c.require_consumer,
            forward,
            cache,
        }),
    }))
}

type TokenCache = quick_cache::sync::Cache<TokenKey, Arc<Verified>>;

/// A token that passed, as remembered.
#[derive(Debug)]
struct Verified {
    consumer: Arc<Consumer>,
    exp: Option<u64>,
    nbf: Option<u64>,
    /// The `forward_claims` headers it sets.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The key set generation it was verified against.
    generation: u64,
}

/// The compiled jwt policy.
#[derive(Debug)]
pub struct Jwt {
    name: String,
    inner: Arc<Verifier>,
}

#[derive(Debug)]
struct Verifier {
    bearer: Bearer,
    hide: bool,
    keys: Keys,
    validations: Vec<(Algorithm, Validation)>,
    issuer: Option<String>,
    leeway: u64,
    subjects: crate::Subjects,
    require_consumer: bool,
    forward: ForwardClaims,
    cache: Arc<TokenCache>,
}

/// Why a token was not admitted.
enum Refusal {
    /// Not valid: 401 with this description.
    Invalid(&'static str),
    /// Signed with a key id the current set does not have.
    UnknownKey,
    /// No keys to check it with: 503.
    NoKeys,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Verifier {
    fn generation(&self) -> u64 {
        match &self.keys {
            Keys::Fixed(_) => 0,
            Keys::Remote(s) => s.generation(),
        }
    }

    /// The remembered verdict on `token`, while it still holds.
    fn remembered(&self, token: &str) -> Option<Arc<Verified>> {
        let v = self.cache.get(&TokenRef(token))?;
        let now = now();
        let fresh = v.generation == self.generation()
            && v.exp.is_none_or(|e| now <= e.saturating_add(self.leeway))
            && v.nbf.is_none_or(|n| n <= now.saturating_add(self.leeway));
        if fresh {
            Some(v)
        } else {
            self.cache.remove(&TokenRef(token));
            None
        }
    }

    /// Checks `token` against the fixed keys or `set`.
    fn verify(&self, token: &str, set: Option<&KeySet>) -> Result<Arc<Verified>, Refusal> {
        let generation = self.generation();
        let head = jsonwebtoken::decode_header(token)
            .map_err(|_| Refusal::Invalid("the token is malformed or its algorithm unknown"))?;
        if head.jwk.is_some() || head.jku.is_some() || head.x5u.is_some() || head.x5c.is_some() {
            return Err(Refusal::Invalid("the token must not name its own key"));
        }
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == head.alg) else {
            return Err(Refusal::Invalid("the token's algorithm is not accepted"));
        };
        let kid = head.kid.as_deref();
        let candidates: Vec<&Key> = match (&self.keys, set) {
            (Keys::Fixed(keys), _) => keys.iter().filter(|k| k.fits(head.alg)).collect(),
            (Keys::Remote(_), Some(set)) => {
                if kid.is_some_and(|k| !set.has_kid(k)) {
                    return Err(Refusal::UnknownKey);
                }
                set.candidates(kid, head.alg).collect()
            }
            (Keys::Remote(_), None) => return Err(Refusal::NoKeys),
        };
        let mut data = None;
        for key in candidates {
            match jsonwebtoken::decode::<BTreeMap<String, Value>>(token, &key.key, validation) {
                Ok(d) => {
                    data = Some(d.claims);
                    break;
                }
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => return Err(Refusal::Invalid(describe(e.kind()))),
            }
        }
        let claims = data.ok_or(Refusal::Invalid("the token's signature is not valid"))?;
        let issuer = self
            .issuer
            .as_deref()
            .or(set.and_then(|s| s.issuer.as_deref()));
        if let Some(want) = issuer
            && claims.get("iss").and_then(Value::as_str) != Some(want)
        {
            return Err(Refusal::Invalid("the token's issuer is not accepted"));
        }
        let consumer = self
            .subjects
            .consumer(&claims, self.require_consumer)
            .ok_or(Refusal::Invalid("the token's subject is not a consumer"))?;
        let number = |c: &str| claims.get(c).and_then(Value::as_u64);
        let v = Arc::new(Verified {
            headers: self.forward.headers(&claims),
            exp: number("exp"),
            nbf: number("nbf"),
            consumer,
            generation,
        });
        self.cache.insert(TokenKey::new(token), v.clone());
        Ok(v)
    }

    fn admit(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx, v: &Verified) -> Flow {
        ctx.consumer = Some(v.consumer.clone());
        if self.hide {
            self.bearer.hide(req);
        }
        ForwardClaims::set(&mut req.headers, &v.headers);
        Flow::Continue
    }

    /// The decision on the request's token given `set` (after a fetch, or at once).
    fn decide(
        self: &Arc<Self>,
        req: &mut http::request::Parts,
        ctx: &mut RequestCtx,
        set: Option<Arc<KeySet>>,
        may_wait: bool,
    ) -> Flow {
        let Some(token) = self.bearer.find(req) else {
            return self
                .bearer
                .refuse(ctx, CREDENTIALS_MISSING, "a bearer token is required");
        };
        let outcome = match self.remembered(&token) {
            Some(v) => Ok(v),
            None => self.verify(&token, set.as_deref()),
        };
        drop(token);
        match outcome {
            Ok(v) => self.admit(req, ctx, &v),
            Err(Refusal::Invalid(why)) => self.bearer.refuse(ctx, CREDENTIALS_INVALID, why),
            Err(Refusal::UnknownKey) if may_wait && self.may_fetch() => self.fetch_then_decide(),
            Err(Refusal::NoKeys) if may_wait => self.fetch_then_decide(),
            Err(Refusal::UnknownKey) => self.bearer.refuse(
                ctx,
                CREDENTIALS_INVALID,
                "the token's key is not among the issuer's keys",
            ),
            Err(Refusal::NoKeys) => {
                let p = Problem::internal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the signing keys cannot be fetched",
                );
                Flow::respond("keys_unavailable", problem_response(&p, &ctx.request_id))
            }
        }
    }

    /// Whether a fetch of the key set may start now.
    fn may_fetch(&self) -> bool {
        matches!(&self.keys, Keys::Remote(s) if s.may_fetch())
    }

    /// Waits for a fetch of the key set (one per `jwks_min_refresh`, shared by every
    /// request that needs it), then decides with what it brought.
    fn fetch_then_decide(self: &Arc<Self>) -> Flow {
        let Keys::Remote(source) = &self.keys else {
            return Flow::Continue;
        };
        let (me, source) = (self.clone(), source.clone());
        let generation = source.generation();
        Flow::wait(async move {
            let set = source.fetch(Some(generation)).await;
            let resume: Resume = Box::new(move |req, ctx| me.decide(req, ctx, set, false));
            Ok(resume)
        })
    }
}

/// A client's description of why a token that was checked is not valid.
fn describe(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet",
        ErrorKind::InvalidAudience => "the token is not for this audience",
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
        _ => "the token is not valid",
    }
}

impl Policy for Jwt {
    fn name(&self) -> &str {
        &self.name
    }

    fn authenticates(&self) -> bool {
        true
    }

    fn scrub(&self, req: &mut http::request::Parts) {
        self.inner.forward.scrub(&mut req.headers);
    }

    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        let set = match &self.inner.keys {
            Keys::Fixed(_) => None,
            Keys::Remote(source) => {
                let set = source.current();
                if let Some(s) = &set {
                    source.refresh_if_stale(s);
                }
                set
            }
        };
        self.inner.decide(req, ctx, set, true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::kind::tests::build_one;

    fn error(settings: &str) -> (String, String) {
        let yaml = format!("policies:\n  j: {{ type: jwt, {settings} }}\n");
        let e = build_one(&yaml, "j").unwrap_err();
        (e[0].path.clone(), e[0].message.clone())
    }

    #[test]
    fn settings_that_would_weaken_verification_are_config_errors() {
        let secret = "secret: 0123456789abcdef0123456789abcdef";
        let jwks = "jwks_url: \"https://idp.example/jwks.json\"";
        assert_eq!(
            error(&format!("{jwks}, {secret}")),
            (
                "policies.j".into(),
                "needs exactly one of jwks_url, discovery, secret and public_key".into()
            )
        );
        let (path, m) = error(&format!("{jwks}, algorithms: [RS256, HS256]"));
        assert_eq!(path, "policies.j.algorithms[1]");
        assert!(m.starts_with("HS256 needs `secret`"), "{m}");
        let (path, m) = error(&format!("{secret}, algorithms: [RS256]"));
        assert_eq!(path, "policies.j.algorithms[0]");
        assert!(m.contains("verifies only HS256"), "{m}");
        let (path, m) = error(&format!("{jwks}, algorithms: [none]"));
        assert_eq!(path, "policies.j.algorithms[0]");
        assert!(m.starts_with("unknown algorithm \"none\""), "{m}");
        assert_eq!(
            error("secret: short").0,
            "policies.j.secret",
            "HMAC secrets shorter than the hash"
        );
        assert_eq!(error(&format!("{secret}, ca: x.pem")).0, "policies.j.ca");
        assert_eq!(error("jwks_url: \"ftp://x/\"").0, "policies.j.jwks_url");
        assert_eq!(
            error("public_key: /nonexistent/k.pem").0,
            "policies.j.public_key"
        );
        assert_eq!(
            error(&format!("{jwks}, forward_claims: {{ \"bad name\": sub }}")).0,
            "policies.j.forward_claims"
        );
    }

    #[test]
    fn a_public_key_file_is_read_and_a_bad_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n").unwrap();
        let yaml = format!(
            "policies:\n  j: {{ type: jwt, public_key: \"{}\", algorithms: [EdDSA] }}\n",
            p.display()
        );
        assert!(build_one(&yaml, "j").is_ok());
        std::fs::write(&p, "not a key").unwrap();
        let e = build_one(&yaml, "j").unwrap_err();
        assert!(
            e[0].message
                .contains("is not a PEM RSA, EC or Ed25519 public key"),
            "{}",
            e[0].message
        );
    }
}
