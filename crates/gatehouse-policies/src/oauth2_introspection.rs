//! `type: oauth2_introspection`: an opaque bearer token checked by the authorization
//! server's introspection endpoint (RFC 7662), authenticated with the gateway's client id
//! and secret. Authenticating (see `auth_mode`).
//!
//! An answer is remembered for `cache_ttl` (never past the token's own `exp`); an inactive
//! token's answer for `inactive_cache_ttl`, so a client retrying a bad token does not
//! reach the server on every request. While the server cannot answer, requests get 503
//! (nothing is remembered then): a client's token is never refused for the server's
//! fault.

use crate::bearer::Bearer;
use crate::claims::ForwardClaims;
use crate::idp_client::IdpClient;
use crate::token_key::{TokenKey, TokenRef};
use crate::{Build, BuildResult, Kind};
use gatehouse_core::{
    CREDENTIALS_INVALID, CREDENTIALS_MISSING, Consumer, Credential, Fingerprint, Flow, Policy,
    Problem, RequestCtx, Resume,
};
use http::{HeaderName, HeaderValue, StatusCode};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `type: oauth2_introspection`.
pub const KIND: Kind = Kind {
    name: "oauth2_introspection",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// The settings of `type: oauth2_introspection`.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "OAuth2IntrospectionPolicy")]
pub struct Config {
    /// The introspection endpoint (http or https).
    pub url: String,
    /// The gateway's client id at the authorization server (HTTP Basic).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Its secret (use `${VAR}`).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// PEM file of the CA of the server's HTTPS certificate (instead of the system's).
    #[serde(default)]
    pub ca: Option<String>,
    /// `token_type_hint` sent with each token; default `access_token`.
    #[serde(default = "default_hint")]
    pub token_type_hint: String,
    /// How long an active token's answer is remembered (at most until its `exp`);
    /// default 30s; 0s asks on every request.
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl: gatehouse_config::Duration,
    /// How long an inactive token's answer is remembered; default 5s.
    #[serde(default = "default_inactive_ttl")]
    pub inactive_cache_ttl: gatehouse_config::Duration,
    /// Scopes the token must all have (its `scope`); a token without them gets 403.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Request headers set from the answer's fields (`x-user-id: sub`).
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Header carrying the token; default `authorization` (with the `Bearer` scheme).
    #[serde(default = "crate::bearer::default_header")]
    pub header: String,
    /// Query parameter carrying the token; default none.
    #[serde(default)]
    pub query: Option<String>,
    /// Cookie carrying the token; default none.
    #[serde(default)]
    pub cookie: Option<String>,
    /// Remove the token before the request goes upstream; default false.
    #[serde(default)]
    pub hide_credentials: bool,
    /// Admit only tokens whose `sub` is a consumer's `jwt` credential; default false.
    #[serde(default)]
    pub require_consumer: bool,
    /// The realm of the `WWW-Authenticate: Bearer` challenge; default `gatehouse`.
    #[serde(default = "crate::bearer::default_realm")]
    pub realm: String,
    /// Answers remembered at most; default 10000.
    #[serde(default = "crate::bearer::default_cache_size")]
    pub cache_size: usize,
}

fn default_hint() -> String {
    "access_token".into()
}
fn default_cache_ttl() -> gatehouse_config::Duration {
    gatehouse_config::Duration::from_millis(30_000)
}
fn default_inactive_ttl() -> gatehouse_config::Duration {
    gatehouse_config::Duration::from_millis(5_000)
}

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    let issue = |field: &str, m: String| vec![b.issue(Some(field), m)];
    if !(c.url.starts_with("https://") || c.url.starts_with("http://"))
        || c.url.parse::<http::Uri>().is_err()
    {
        return Err(issue("url", format!("{:?} is not an http(s) URL", c.url)));
    }
    if c.client_id.is_some() != c.client_secret.is_some() {
        return Err(vec![
            b.issue(None, "client_id and client_secret go together"),
        ]);
    }
    if c.cache_size == 0 {
        return Err(issue("cache_size", "must be at least 1".into()));
    }
    let bearer = Bearer::new(&c.header, c.query.clone(), c.cookie.clone(), &c.realm)
        .map_err(|(field, m)| issue(field, m))?;
    let forward = ForwardClaims::new(&c.forward_claims).map_err(|m| issue("forward_claims", m))?;
    let ca = c.ca.as_ref().map(|p| b.dir.join(p));
    let client =
        IdpClient::new(ca.as_deref(), b.policy.timeout.get()).map_err(|m| issue("ca", m))?;
    let fp = Fingerprint::of(&(&b.policy.settings, &b.config.consumers));
    let answers = b
        .state
        .get_or_build("oauth2_introspection", b.name, fp, |_| {
            quick_cache::sync::Cache::new(c.cache_size)
        });
    Ok(Arc::new(Introspection {
        name: b.name.to_string(),
        inner: Arc::new(Inner {
            url: c.url,
            client_auth: c.client_id.zip(c.client_secret),
            hint: c.token_type_hint,
            client,
            bearer,
            hide: c.hide_credentials,
            ttl: c.cache_ttl.get(),
            inactive_ttl: c.inactive_cache_ttl.get(),
            required_scopes: c.required_scopes,
            forward,
            subjects: crate::Subjects::new(b.config, Credential::OAuth2),
            require_consumer: c.require_consumer,
            answers,
            failing: AtomicBool::new(false),
        }),
    }))
}

/// What the server said about a token, as remembered.
#[derive(Debug)]
enum Answer {
    /// Active and admitted: who it is and the headers it forwards.
    Active {
        consumer: Arc<Consumer>,
        headers: Vec<(HeaderName, HeaderValue)>,
        /// Whether it has every required scope.
        scoped: bool,
    },
    /// Not active, expired, or no consumer's when one is required.
    Refused(&'static str),
}

type Answers = quick_cache::sync::Cache<TokenKey, (Arc<Answer>, Instant)>;

/// The compiled oauth2_introspection policy.
#[derive(Debug)]
pub struct Introspection {
    name: String,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    url: String,
    client_auth: Option<(String, String)>,
    hint: String,
    client: IdpClient,
    bearer: Bearer,
    hide: bool,
    ttl: Duration,
    inactive_ttl: Duration,
    required_scopes: Vec<String>,
    forward: ForwardClaims,
    subjects: crate::Subjects,
    require_consumer: bool,
    /// Answers by token, with the instant each stops being used.
    answers: Arc<Answers>,
    failing: AtomicBool,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Inner {
    /// The server's answer to `token`, read into what this policy decides on, and how
    /// long it may be remembered.
    fn judge(&self, answer: &Value) -> Result<(Answer, Duration), String> {
        let fields: BTreeMap<String, Value> = answer
            .as_object()
            .ok_or("the answer is not a JSON object")?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let active = fields
            .get("active")
            .and_then(Value::as_bool)
            .ok_or("the answer has no boolean \"active\"")?;
        if !active {
            return Ok((
                Answer::Refused("the token is not active"),
                self.inactive_ttl,
            ));
        }
        let mut ttl = self.ttl;
        if let Some(exp) = fields.get("exp").and_then(Value::as_u64) {
            let now = unix_now();
            if exp <= now {
                return Ok((Answer::Refused("the token has expired"), self.inactive_ttl));
            }
            ttl = ttl.min(Duration::from_secs(exp - now));
        }
        let Some(consumer) = self.subjects.consumer(&fields, self.require_consumer) else {
            return Ok((
                Answer::Refused("the token's subject is not a consumer"),
                self.inactive_ttl,
            ));
        };
        let granted = crate::claims::scopes(&fields);
        let scoped = self
            .required_scopes
            .iter()
            .all(|s| granted.contains(s.as_str()));
        let headers = self.forward.headers(&fields);
        Ok((
            Answer::Active {
                consumer,
                headers,
                scoped,
            },
            ttl,
        ))
    }

    /// Applies an answer to the request.
    fn decide(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx, a: &Answer) -> Flow {
        match a {
            Answer::Refused(why) => self.bearer.refuse(ctx, CREDENTIALS_INVALID, why),
            Answer::Active { scoped: false, .. } => {
                let r = crate::refusal::forbidden(
                    &ctx.request_id,
                    "the token lacks a required scope".into(),
                    Some(&self.required_scopes),
                );
                Flow::respond("insufficient_scope", r)
            }
            Answer::Active {
                consumer, headers, ..
            } => {
                ctx.consumer = Some(consumer.clone());
                if self.hide {
                    self.bearer.hide(req);
                }
                ForwardClaims::set(&mut req.headers, headers);
                Flow::Continue
            }
        }
    }

    /// Asks the server about `token`.
    async fn introspect(&self, token: &str) -> Result<(Answer, Duration), String> {
        let user = self
            .client_auth
            .as_ref()
            .map(|(id, secret)| (id.as_str(), secret.as_str()));
        let form = [("token", token), ("token_type_hint", self.hint.as_str())];
        let answer = self.client.post_form(&self.url, user, &form).await?;
        self.judge(&answer)
    }
}

impl Policy for Introspection {
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
        let inner = &self.inner;
        let Some(token) = inner.bearer.find(req) else {
            return inner
                .bearer
                .refuse(ctx, CREDENTIALS_MISSING, "a bearer token is required");
        };
        if let Some((answer, until)) = inner.answers.get(&TokenRef(&token)) {
            if Instant::now() < until {
                drop(token);
                return inner.decide(req, ctx, &answer);
            }
            inner.answers.remove(&TokenRef(&token));
        }
        let token = token.into_owned();
        let inner = self.inner.clone();
        Flow::wait(async move {
            let judged = inner.introspect(&token).await;
            let answer = match judged {
                Ok((answer, ttl)) => {
                    if inner.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(url = %inner.url, "token introspection answers again");
                    }
                    let answer = Arc::new(answer);
                    if !ttl.is_zero() {
                        inner.answers.insert(
                            TokenKey::new(&token),
                            (answer.clone(), Instant::now() + ttl),
                        );
                    }
                    answer
                }
                Err(e) => {
                    if !inner.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(url = %inner.url, cause = %e, "token introspection failed");
                    }
                    return Err(Problem::internal(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("token introspection failed: {e}"),
                    ));
                }
            };
            let resume: Resume = Box::new(move |req, ctx| inner.decide(req, ctx, &answer));
            Ok(resume)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::kind::tests::build_one;

    #[test]
    fn settings_are_checked_when_the_config_loads() {
        let e = build_one(
            "policies:\n  p: { type: oauth2_introspection, url: \"ftp://x\" }\n",
            "p",
        )
        .unwrap_err();
        assert_eq!(e[0].path, "policies.p.url");
        let e = build_one("policies:\n  p: { type: oauth2_introspection, url: \"https://idp/i\", client_id: gw }\n", "p").unwrap_err();
        assert_eq!(
            (e[0].path.as_str(), e[0].message.as_str()),
            ("policies.p", "client_id and client_secret go together")
        );
        assert!(build_one("policies:\n  p: { type: oauth2_introspection, url: \"https://idp/i\", client_id: gw, client_secret: s }\n", "p").is_ok());
    }
}
