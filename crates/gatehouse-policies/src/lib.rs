//! Policy kinds, one module each, and the registry that builds them by `type`. Policies
//! see `http` request/response parts and the RequestCtx only; they never see connections
//! or each other. A new kind is one module plus one line in [`BUILTIN`]
//! (docs/policies.md).

pub mod acl;
pub mod api_key;
pub mod basic_auth;
pub mod bearer;
pub mod cidr;
pub mod claims;
pub mod cors;
pub mod headers;
pub mod idp_client;
pub mod ip_filter;
pub mod jwt;
pub mod key_set;
pub mod kind;
pub mod mtls_auth;
pub mod query_param;
pub mod rbac;

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
    cors::KIND,
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
