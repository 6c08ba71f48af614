//! `type: api_key`: the caller is the consumer whose `api_key` credential matches the key
//! in a header (or a query parameter). Keys are indexed by their SHA-256, so the clear key
//! of a `key_sha256` credential is never known and a presented key is never kept; neither
//! is ever logged. Authenticating (see `auth_mode`).

use crate::{Build, BuildResult, Kind};
use gatehouse_config::CredentialConfig;
use gatehouse_config::validate::sha256_from_hex;
use gatehouse_core::{
    CREDENTIALS_INVALID, CREDENTIALS_MISSING, Consumer, Credential, Flow, Policy, RequestCtx,
};
use gatehouse_store::digest;
use http::{HeaderName, HeaderValue};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

/// `type: api_key`.
pub const KIND: Kind = Kind {
    name: "api_key",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// The settings of `type: api_key`.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ApiKeyPolicy")]
pub struct Config {
    /// Header carrying the key; default `x-api-key`.
    #[serde(default = "default_header")]
    pub header: String,
    /// Query parameter also accepted, when set (the header wins when both are sent).
    #[serde(default)]
    pub query: Option<String>,
    /// Remove the key from the request before it goes upstream; default false.
    #[serde(default)]
    pub hide_credentials: bool,
}

fn default_header() -> String {
    "x-api-key".into()
}

type Digest32 = [u8; 32];

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    let header = HeaderName::from_bytes(c.header.as_bytes()).map_err(|_| {
        vec![b.issue(
            Some("header"),
            format!("{:?} is not a header name", c.header),
        )]
    })?;
    if c.query.as_deref().is_some_and(str::is_empty) {
        return Err(vec![b.issue(Some("query"), "must not be empty")]);
    }
    let mut keys: HashMap<Digest32, Arc<Consumer>> = HashMap::new();
    let mut by_name: HashMap<String, Arc<Consumer>> = HashMap::new();
    for consumer in &b.config.consumers {
        let who = crate::consumer(consumer, Credential::ApiKey);
        by_name.insert(consumer.name.clone(), who.clone());
        for cred in &consumer.credentials {
            let CredentialConfig::ApiKey { key, key_sha256 } = cred else {
                continue;
            };
            let d = match (key, key_sha256) {
                (Some(k), _) => Some(digest(k.as_bytes())),
                (None, Some(h)) => sha256_from_hex(h),
                (None, None) => None,
            };
            // Validation reports malformed credentials; a duplicate between a key and the
            // digest of the same key is only visible here.
            if let Some(d) = d
                && let Some(other) = keys.insert(d, who.clone())
                && other.name != who.name
            {
                return Err(vec![b.issue(
                    None,
                    format!(
                        "consumers {:?} and {:?} have the same API key",
                        other.name, who.name
                    ),
                )]);
            }
        }
    }
    Ok(Arc::new(ApiKey {
        name: b.name.to_string(),
        challenge: HeaderValue::from_str(&format!("ApiKey header=\"{}\"", header.as_str()))
            .unwrap_or_else(|_| HeaderValue::from_static("ApiKey")),
        header,
        query: c.query,
        hide: c.hide_credentials,
        keys,
        by_name,
        store: {
            let (kind, name) = gatehouse_store::STATE;
            b.state
                .staged::<gatehouse_store::Opened>(kind, name)
                .and_then(|o| o.0.as_ref().ok().cloned())
        },
    }))
}

/// The compiled api_key policy.
#[derive(Debug)]
pub struct ApiKey {
    name: String,
    header: HeaderName,
    query: Option<String>,
    hide: bool,
    keys: HashMap<Digest32, Arc<Consumer>>,
    challenge: HeaderValue,
    /// The config's consumers by name, for keys of the store.
    by_name: HashMap<String, Arc<Consumer>>,
    /// Keys created through the admin API (`store.path`).
    store: Option<Arc<gatehouse_store::Store>>,
}

impl ApiKey {
    /// The digest of the key the request carries: the header's, else the query
    /// parameter's. The key itself is hashed where it lies, never copied.
    fn presented(&self, req: &http::request::Parts) -> Option<Digest32> {
        if let Some(v) = req.headers.get(&self.header) {
            return Some(digest(v.as_bytes()));
        }
        let name = self.query.as_deref()?;
        crate::query_param::value(req.uri.query()?, name).map(|k| digest(&k))
    }

    fn refuse(&self, ctx: &RequestCtx, reason: &'static str, detail: &str) -> Flow {
        let r = crate::refusal::unauthorized(&ctx.request_id, detail, self.challenge.clone());
        Flow::respond(reason, r)
    }

    fn hide(&self, req: &mut http::request::Parts) {
        req.headers.remove(&self.header);
        if let Some(name) = self.query.as_deref() {
            crate::query_param::remove(req, name);
        }
    }
}

impl Policy for ApiKey {
    fn name(&self) -> &str {
        &self.name
    }

    fn authenticates(&self) -> bool {
        true
    }

    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        let Some(key) = self.presented(req) else {
            return self.refuse(ctx, CREDENTIALS_MISSING, "an API key is required");
        };
        // A stored key belongs to a consumer of the config or one stored with it (the
        // config's wins when both have the name).
        let stored = || {
            let store = self.store.as_ref()?;
            let name = store.consumer_of(&key)?;
            self.by_name
                .get(&name)
                .cloned()
                .or_else(|| store.consumer(&name))
        };
        let Some(consumer) = self.keys.get(&key).cloned().or_else(stored) else {
            return self.refuse(ctx, CREDENTIALS_INVALID, "the API key is not valid");
        };
        ctx.consumer = Some(consumer);
        if self.hide {
            self.hide(req);
        }
        Flow::Continue
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hex_digests_parse() {
        let d = digest(b"abc");
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(sha256_from_hex(&hex), Some(d));
    }
}
