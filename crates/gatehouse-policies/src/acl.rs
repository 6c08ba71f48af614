//! `type: acl`: admits the authenticated consumer by its groups. Without a consumer the
//! answer is 401 (authenticate first); a consumer outside the allowed groups, or in a
//! denied one, gets 403.

use crate::{Build, BuildResult, Kind};
use gatehouse_core::{CREDENTIALS_MISSING, Flow, Policy, Problem, RequestCtx, problem_response};
use http::StatusCode;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;

/// `type: acl`.
pub const KIND: Kind = Kind {
    name: "acl",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// The settings of `type: acl`.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AclPolicy")]
pub struct Config {
    /// When non-empty, only consumers in one of these groups are admitted.
    #[serde(default)]
    pub allow_groups: Vec<String>,
    /// Consumers in any of these groups are refused; deny wins over allow.
    #[serde(default)]
    pub deny_groups: Vec<String>,
}

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    if c.allow_groups.is_empty() && c.deny_groups.is_empty() {
        return Err(vec![b.issue(None, "acl needs allow_groups or deny_groups")]);
    }
    Ok(Arc::new(Acl {
        name: b.name.to_string(),
        allow: c.allow_groups.into_iter().collect(),
        deny: c.deny_groups.into_iter().collect(),
    }))
}

/// The compiled acl policy.
#[derive(Debug)]
pub struct Acl {
    name: String,
    allow: HashSet<String>,
    deny: HashSet<String>,
}

impl Policy for Acl {
    fn name(&self) -> &str {
        &self.name
    }

    fn guards(&self) -> bool {
        true
    }

    fn on_request(&self, _req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        let Some(consumer) = &ctx.consumer else {
            let p = Problem::new(StatusCode::UNAUTHORIZED, "authentication is required");
            return Flow::respond(CREDENTIALS_MISSING, problem_response(&p, &ctx.request_id));
        };
        let denied = consumer.groups.iter().any(|g| self.deny.contains(g));
        let allowed =
            self.allow.is_empty() || consumer.groups.iter().any(|g| self.allow.contains(g));
        if allowed && !denied {
            return Flow::Continue;
        }
        let p = Problem::internal(
            StatusCode::FORBIDDEN,
            format!(
                "consumer {} is not allowed by policy {}",
                consumer.name, self.name
            ),
        );
        Flow::respond("acl_denied", problem_response(&p, &ctx.request_id))
    }
}
