//! Policy kinds, one module each, and the registry that builds them by `type`. Policies
//! see `http` request/response parts and the RequestCtx only; they never see connections
//! or each other. A new kind is one module plus one line in [`BUILTIN`]
//! (docs/policies.md).

pub mod acl;
pub mod api_key;
pub mod basic_auth;
pub mod bearer;
pub mod body_type;
pub mod bot_filter;
pub mod cache;
pub mod cache_store;
pub mod cidr;
pub mod claims;
pub mod compress;
pub mod concurrency_limit;
pub mod content_coding;
pub mod cors;
pub mod crs;
pub mod freshness;
pub mod headers;
pub mod http_signature;
pub mod idp_client;
pub mod incident;
pub mod ip_filter;
pub mod json_edit;
pub mod json_instance;
pub mod json_schema;
pub mod jwt;
pub mod key_set;
pub mod kind;
pub mod limiter;
pub mod mtls_auth;
pub mod notes;
pub mod oauth2_introspection;
pub mod purge_relay;
pub mod query_param;
pub mod quota;
pub mod rate_limit;
pub mod rbac;
pub mod refusal;
pub mod shared_limit;
pub mod token_key;
pub mod transform;
pub mod waf;
pub mod waf_tally;
pub mod xml_json;

pub use kind::{Build, BuildResult, Kind, Kinds};

/// The kinds built into gatehouse.
pub const BUILTIN: &[Kind] = &[
    headers::KIND,
    ip_filter::KIND,
    api_key::KIND,
    basic_auth::KIND,
    acl::KIND,
    rbac::KIND,
    mtls_auth::KIND,
    jwt::KIND,
    oauth2_introspection::KIND,
    http_signature::KIND,
    cors::KIND,
    rate_limit::KIND,
    concurrency_limit::KIND,
    quota::KIND,
    compress::KIND,
    json_schema::KIND,
    transform::KIND,
    cache::KIND,
    bot_filter::KIND,
    waf::KIND,
];

/// The consumer a credential of `c` authenticates, as the authenticating kinds record it.
pub(crate) fn consumer(
    c: &gatehouse_config::ConsumerConfig,
    credential: gatehouse_core::Credential,
) -> std::sync::Arc<gatehouse_core::Consumer> {
    std::sync::Arc::new(gatehouse_core::Consumer {
        name: c.name.clone(),
        groups: c.groups.clone(),
        credential,
        claims: Default::default(),
    })
}

/// The consumers that `jwt` credentials name by token subject, for the token policies
/// (`jwt`, `oauth2_introspection`).
#[derive(Debug)]
pub(crate) struct Subjects {
    by_subject: std::collections::HashMap<String, std::sync::Arc<gatehouse_core::Consumer>>,
    credential: gatehouse_core::Credential,
}

impl Subjects {
    /// The subjects of `config`'s consumers, for credentials of kind `credential`.
    pub(crate) fn new(
        config: &gatehouse_config::Config,
        credential: gatehouse_core::Credential,
    ) -> Self {
        let mut by_subject = std::collections::HashMap::new();
        for c in &config.consumers {
            let who = consumer(c, credential);
            for cred in &c.credentials {
                if let gatehouse_config::CredentialConfig::Jwt { subject } = cred {
                    by_subject.insert(subject.clone(), who.clone());
                }
            }
        }
        Self {
            by_subject,
            credential,
        }
    }

    /// The consumer a verified token with `claims` is: the one its `sub` names, else
    /// (unless `required`) a consumer named after its `sub` (or `client_id`, or
    /// `username`) without groups. The claims go with it.
    pub(crate) fn consumer(
        &self,
        claims: &std::collections::BTreeMap<String, serde_json::Value>,
        required: bool,
    ) -> Option<std::sync::Arc<gatehouse_core::Consumer>> {
        let subject = ["sub", "client_id", "username"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(serde_json::Value::as_str))
            .unwrap_or_default();
        let c = match self.by_subject.get(subject) {
            Some(c) => gatehouse_core::Consumer {
                claims: claims.clone(),
                ..(**c).clone()
            },
            None if required => return None,
            None => gatehouse_core::Consumer {
                name: subject.to_string(),
                groups: Vec::new(),
                credential: self.credential,
                claims: claims.clone(),
            },
        };
        Some(std::sync::Arc::new(c))
    }
}
