//! A provider's signing keys (a JWKS, RFC 7517), fetched and kept fresh for `jwt`
//! policies. Lives in the state registry, so a reload that keeps the same source keeps
//! the keys and their cache.
//!
//! Fetches are single-flight (a burst of requests that find no keys, or a key id not in
//! the set, makes one fetch, and the others wait for it) and rate-limited: after any
//! attempt, the next waits `min_refresh`, so tokens with made-up key ids cannot turn the
//! gateway into a flood against the provider. A set older than `refresh` is replaced in
//! the background while requests go on using it; when a fetch fails, the last good set
//! stays in use.

use crate::idp_client::IdpClient;
use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A JWKS document.
    Jwks(String),
    /// An OpenID provider: its discovery document names the issuer and the JWKS.
    Discovery(String),
}

impl Source {
    /// The address of the discovery document of an OpenID provider given by its issuer
    /// URL (or by the document's own address).
    fn discovery_document(issuer: &str) -> String {
        const WELL_KNOWN: &str = "/.well-known/openid-configuration";
        if issuer.ends_with(WELL_KNOWN) {
            issuer.to_string()
        } else {
            format!("{}{WELL_KNOWN}", issuer.trim_end_matches('/'))
        }
    }
}

/// The family of a signing algorithm: a key only verifies algorithms of its own family,
/// which is what defeats algorithm confusion (an RSA public key used as an HMAC secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// HS256/384/512.
    Hmac,
    /// RS and PS.
    Rsa,
    /// ES256 (P-256) and ES384 (P-384).
    Ec,
    /// EdDSA (Ed25519).
    Ed,
}

/// The family of `alg`.
pub fn family(alg: Algorithm) -> Family {
    use Algorithm::*;
    match alg {
        HS256 | HS384 | HS512 => Family::Hmac,
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Family::Rsa,
        ES256 | ES384 => Family::Ec,
        EdDSA => Family::Ed,
    }
}

/// One verification key.
pub struct Key {
    /// Its `kid`, when the set gives one.
    pub kid: Option<String>,
    /// The only algorithm it may verify, when the set says (`alg`).
    pub alg: Option<Algorithm>,
    family: Family,
    /// For EC keys, the curve, which fixes the algorithm.
    curve: Option<EllipticCurve>,
    /// The key.
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({:?}, {:?})", self.kid, self.family)
    }
}

impl Key {
    /// A key that verifies only algorithms of `family` (a configured secret or PEM key).
    pub fn fixed(family: Family, key: DecodingKey, curve: Option<EllipticCurve>) -> Self {
        Self {
            kid: None,
            alg: None,
            family,
            curve,
            key,
        }
    }

    /// Whether this key may verify a token signed with `alg`.
    pub fn fits(&self, alg: Algorithm) -> bool {
        let curve_fits = match (alg, &self.curve) {
            (Algorithm::ES256, Some(c)) => *c == EllipticCurve::P256,
            (Algorithm::ES384, Some(c)) => *c == EllipticCurve::P384,
            _ => true,
        };
        family(alg) == self.family && self.alg.is_none_or(|a| a == alg) && curve_fits
    }

    /// The key a JWK describes, unless it is not a public signing key we can use: keys
    /// for encryption, symmetric (`oct`) keys (a key set is public; a secret in it would
    /// let anyone sign) and unknown types are skipped.
    fn from_jwk(value: &Value) -> Option<Self> {
        let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            return None;
        }
        let (family, curve) = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => (Family::Rsa, None),
            AlgorithmParameters::EllipticCurve(p) => (Family::Ec, Some(p.curve.clone())),
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                (Family::Ed, None)
            }
            _ => return None,
        };
        let alg = match jwk.common.key_algorithm {
            Some(a) => Some(a.to_string().parse::<Algorithm>().ok()?),
            None => None,
        };
        Some(Self {
            kid: jwk.common.key_id.clone(),
            alg,
            family,
            curve,
            key: DecodingKey::from_jwk(&jwk).ok()?,
        })
    }
}

/// One fetched set of keys.
#[derive(Debug)]
pub struct KeySet {
    /// The issuer the discovery document announced.
    pub issuer: Option<String>,
    /// The usable keys.
    pub keys: Vec<Key>,
    /// When it was fetched.
    pub fetched: Instant,
    /// Its keys as fetched, to tell a changed set from the same one fetched again.
    raw: Value,
}

impl KeySet {
    /// The keys that may verify a token with `kid` and `alg`: the one with that id, or,
    /// for a token without one, every key that fits.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys
            .iter()
            .filter(move |k| kid.is_none_or(|id| k.kid.as_deref() == Some(id)) && k.fits(alg))
    }

    /// Whether the set has a key with this id (of any algorithm).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Keys from one source, kept fresh.
#[derive(Debug)]
pub struct KeySource {
    source: Source,
    client: IdpClient,
    refresh: Duration,
    min_refresh: Duration,
    current: ArcSwapOption<KeySet>,
    /// Bumped when a fetch brings keys that differ from the current ones (a cache of
    /// verified tokens is dropped then: a key removed from the set no longer admits).
    generation: AtomicU64,
    /// Held by the one fetch in flight.
    fetching: tokio::sync::Mutex<()>,
    last_attempt: Mutex<Option<Instant>>,
    /// Whether the last fetch failed (so a failure streak is logged once).
    failing: AtomicBool,
}

impl KeySource {
    /// Keys from `source`, refetched every `refresh` and at most once per `min_refresh`.
    pub fn new(
        source: Source,
        client: IdpClient,
        refresh: Duration,
        min_refresh: Duration,
    ) -> Self {
        Self {
            source,
            client,
            refresh,
            min_refresh,
            current: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            fetching: tokio::sync::Mutex::new(()),
            last_attempt: Mutex::new(None),
            failing: AtomicBool::new(false),
        }
    }

    /// The keys fetched last, if any fetch succeeded yet.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    /// The count of changes of the key set so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a fetch may start now (none within `min_refresh`).
    pub fn may_fetch(&self) -> bool {
        let last = self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
        last.is_none_or(|t| t.elapsed() >= self.min_refresh)
    }

    /// Starts a fetch in the background when the set is older than `refresh` (requests go
    /// on with the current keys meanwhile).
    pub fn refresh_if_stale(self: &Arc<Self>, set: &KeySet) {
        if set.fetched.elapsed() < self.refresh || !self.may_fetch() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let me = self.clone();
            rt.spawn(async move {
                let _ = me.fetch(None).await;
            });
        }
    }

    /// Fetches the set unless another fetch did since generation `seen` was read (then
    /// its result is used), or one was attempted within `min_refresh`. Returns the keys
    /// to use: the new ones, or the last good ones when the fetch failed.
    pub async fn fetch(&self, seen: Option<u64>) -> Option<Arc<KeySet>> {
        let _one = self.fetching.lock().await;
        if seen.is_some_and(|g| g != self.generation()) || !self.may_fetch() {
            return self.current();
        }
        *self.last_attempt.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        match self.download().await {
            Ok(set) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(source = ?self.source, "signing keys fetched again");
                }
                let changed = self.current().is_none_or(|old| old.raw != set.raw);
                let set = Arc::new(set);
                self.current.store(Some(set.clone()));
                if changed {
                    self.generation.fetch_add(1, Ordering::AcqRel);
                }
                Some(set)
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(source = ?self.source, cause = %e, "cannot fetch signing keys; the last good ones stay in use");
                }
                self.current()
            }
        }
    }

    async fn download(&self) -> Result<KeySet, String> {
        let (issuer, jwks_url) = match &self.source {
            Source::Jwks(url) => (None, url.clone()),
            Source::Discovery(url) => {
                let doc_url = Source::discovery_document(url);
                let doc = self.client.get_json(&doc_url).await?;
                let field = |name: &str| {
                    doc.get(name)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| format!("{doc_url}: no {name:?} in the discovery document"))
                };
                (Some(field("issuer")?), field("jwks_uri")?)
            }
        };
        let doc = self.client.get_json(&jwks_url).await?;
        let raw = doc
            .get("keys")
            .filter(|k| k.is_array())
            .cloned()
            .ok_or_else(|| format!("{jwks_url}: no \"keys\" array"))?;
        let keys: Vec<Key> = raw
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Key::from_jwk)
            .collect();
        if keys.is_empty() {
            return Err(format!("{jwks_url}: no usable signing key"));
        }
        Ok(KeySet {
            issuer,
            keys,
            fetched: Instant::now(),
            raw,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn discovery_documents_are_found_from_the_issuer() {
        assert_eq!(
            Source::discovery_document("https://idp.example/"),
            "https://idp.example/.well-known/openid-configuration"
        );
        assert_eq!(
            Source::discovery_document(
                "https://idp.example/realms/a/.well-known/openid-configuration"
            ),
            "https://idp.example/realms/a/.well-known/openid-configuration"
        );
    }

    #[test]
    fn only_public_signing_keys_are_taken_and_each_fits_its_own_algorithms() {
        let ec = json!({"kty": "EC", "crv": "P-256", "kid": "e",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        let k = Key::from_jwk(&ec).unwrap();
        assert!(k.fits(Algorithm::ES256));
        assert!(!k.fits(Algorithm::ES384), "the curve fixes the algorithm");
        assert!(!k.fits(Algorithm::HS256) && !k.fits(Algorithm::RS256));
        let oct = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "s"});
        assert!(Key::from_jwk(&oct).is_none(), "no secrets from a key set");
        let mut enc = ec.clone();
        enc["use"] = json!("enc");
        assert!(Key::from_jwk(&enc).is_none());
        let mut pinned = ec.clone();
        pinned["alg"] = json!("ES256");
        assert!(Key::from_jwk(&pinned).unwrap().fits(Algorithm::ES256));
        assert!(Key::from_jwk(&json!({"kty": "nope"})).is_none());
    }
}
