//! `type: basic_auth`: HTTP Basic (RFC 7617) against the consumers' `basic` credentials,
//! whose passwords are kept only as Argon2 hashes. Argon2 is slow by design (tens of
//! milliseconds), so it never runs on a worker: a request waits (`Flow::Wait`) while the
//! blocking pool verifies, at most one verification per core at a time, and a verified
//! user and password are remembered (as a keyed digest, never in clear) for `cache_ttl`,
//! in a sharded bounded cache (no lock shared by every request).
//! Authenticating (see `auth_mode`).

use crate::{Build, BuildResult, Kind};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use gatehouse_config::CredentialConfig;
use gatehouse_core::{
    CREDENTIALS_INVALID, CREDENTIALS_MISSING, Consumer, Credential, Flow, Policy, Problem,
    RequestCtx, Resume,
};
use http::{HeaderValue, StatusCode, header};
use schemars::JsonSchema;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// `type: basic_auth`.
pub const KIND: Kind = Kind {
    name: "basic_auth",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// The settings of `type: basic_auth`.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BasicAuthPolicy")]
pub struct Config {
    /// The realm of the challenge; default `gatehouse`.
    #[serde(default = "crate::bearer::default_realm")]
    pub realm: String,
    /// Remove `Authorization` before the request goes upstream; default false.
    #[serde(default)]
    pub hide_credentials: bool,
    /// How long a verified user and password are remembered; default 5m.
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl: gatehouse_config::Duration,
}

fn default_cache_ttl() -> gatehouse_config::Duration {
    gatehouse_config::Duration::from_millis(300_000)
}

/// Verified credentials remembered at most (the cache evicts the coldest beyond).
const CACHE_MAX: usize = 10_000;

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    let challenge = HeaderValue::from_str(&format!(
        "Basic realm=\"{}\", charset=\"UTF-8\"",
        c.realm.replace('"', "")
    ))
    .map_err(|_| vec![b.issue(Some("realm"), "must be printable text")])?;
    let mut users = HashMap::new();
    for consumer in &b.config.consumers {
        let who = crate::consumer(consumer, Credential::Basic);
        for cred in &consumer.credentials {
            if let CredentialConfig::Basic {
                username,
                password_hash,
            } = cred
            {
                users.insert(
                    username.clone(),
                    (Arc::<str>::from(password_hash.as_str()), who.clone()),
                );
            }
        }
    }
    let secret = process_secret();
    Ok(Arc::new(BasicAuth {
        name: b.name.to_string(),
        challenge,
        hide: c.hide_credentials,
        ttl: c.cache_ttl.get(),
        users,
        verified: Arc::new(quick_cache::sync::Cache::new(CACHE_MAX)),
        secret,
        slots: Arc::new(Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        )),
    }))
}

/// A key only this process knows (from the OS-seeded keys of the standard library's
/// hasher), so the cache of verified credentials holds nothing a reader of memory could
/// test passwords against faster than against the Argon2 hashes.
fn process_secret() -> [u8; 32] {
    use std::hash::{BuildHasher, RandomState};
    let mut h = Sha256::new();
    for i in 0..4u8 {
        h.update(RandomState::new().hash_one(i).to_le_bytes());
    }
    h.finalize().into()
}

type Verified = Arc<quick_cache::sync::Cache<[u8; 32], (Arc<Consumer>, Instant)>>;

/// The compiled basic_auth policy.
#[derive(Debug)]
pub struct BasicAuth {
    name: String,
    challenge: HeaderValue,
    hide: bool,
    ttl: Duration,
    users: HashMap<String, (Arc<str>, Arc<Consumer>)>,
    verified: Verified,
    secret: [u8; 32],
    slots: Arc<Semaphore>,
}

/// The user name and password of an `Authorization: Basic` header (RFC 7617).
pub fn credentials(headers: &http::HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

fn refusal(challenge: &HeaderValue, request_id: &str, reason: &'static str, detail: &str) -> Flow {
    let r = crate::refusal::unauthorized(request_id, detail, challenge.clone());
    Flow::respond(reason, r)
}

impl BasicAuth {
    fn cache_key(&self, user: &str, pass: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(pass.as_bytes());
        h.finalize().into()
    }

    fn admit(
        hide: bool,
        req: &mut http::request::Parts,
        ctx: &mut RequestCtx,
        c: Arc<Consumer>,
    ) -> Flow {
        ctx.consumer = Some(c);
        if hide {
            req.headers.remove(header::AUTHORIZATION);
        }
        Flow::Continue
    }
}

impl Policy for BasicAuth {
    fn name(&self) -> &str {
        &self.name
    }

    fn authenticates(&self) -> bool {
        true
    }

    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        let Some((user, pass)) = credentials(&req.headers) else {
            return refusal(
                &self.challenge,
                &ctx.request_id,
                CREDENTIALS_MISSING,
                "credentials are required",
            );
        };
        let Some((hash, consumer)) = self.users.get(&user) else {
            return refusal(
                &self.challenge,
                &ctx.request_id,
                CREDENTIALS_INVALID,
                "the user name or password is not valid",
            );
        };
        let key = self.cache_key(&user, &pass);
        if let Some((c, at)) = self.verified.get(&key)
            && at.elapsed() < self.ttl
        {
            return Self::admit(self.hide, req, ctx, c);
        }
        // Argon2 on the blocking pool, one per core at a time; the request waits,
        // bounded by the policy's timeout (503 beyond).
        let (hash, consumer) = (hash.clone(), consumer.clone());
        let (slots, verified) = (self.slots.clone(), self.verified.clone());
        let (hide, challenge) = (self.hide, self.challenge.clone());
        Flow::wait(async move {
            let _slot = slots.acquire_owned().await.map_err(|_| {
                Problem::internal(StatusCode::SERVICE_UNAVAILABLE, "verifier closed")
            })?;
            let ok = tokio::task::spawn_blocking(move || {
                PasswordHash::new(&hash)
                    .map(|h| {
                        Argon2::default()
                            .verify_password(pass.as_bytes(), &h)
                            .is_ok()
                    })
                    .unwrap_or(false)
            })
            .await
            .map_err(|e| {
                Problem::internal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("verifier failed: {e}"),
                )
            })?;
            if ok {
                verified.insert(key, (consumer.clone(), Instant::now()));
            }
            let resume: Resume = Box::new(move |req, ctx| {
                if ok {
                    Self::admit(hide, req, ctx, consumer)
                } else {
                    refusal(
                        &challenge,
                        &ctx.request_id,
                        CREDENTIALS_INVALID,
                        "the user name or password is not valid",
                    )
                }
            });
            Ok(resume)
        })
    }
}
