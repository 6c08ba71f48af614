//! `type: rbac`: admits the authenticated consumer by what its credential grants, rule by
//! rule. The first rule whose methods and paths match the request decides: every scope
//! in `require_scopes` and every role in `require_roles` must be granted. A request no
//! rule matches is refused (`default: deny`) unless `default: allow`. Scopes are the
//! token's `scope` (space-separated) and `scp` claims; roles are the consumer's groups
//! and the `roles_claim` claim (default `roles`, dotted paths reach nested claims such
//! as Keycloak's `realm_access.roles`). No consumer: 401; not granted: 403, with an RFC
//! 6750 `insufficient_scope` challenge when a scope was missing.

use crate::{Build, BuildResult, Kind};
use gatehouse_core::{
    CREDENTIALS_MISSING, Consumer, Flow, Policy, Problem, RequestCtx, problem_response,
};
use http::{Method, StatusCode};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;

/// `type: rbac`.
pub const KIND: Kind = Kind {
    name: "rbac",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// The settings of `type: rbac`.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RbacPolicy")]
pub struct Config {
    /// Rules, first match decides.
    pub rules: Vec<RuleConfig>,
    /// What happens to a request no rule matches: `deny` (default, 403) or `allow`.
    #[serde(default)]
    pub default: Unmatched,
    /// The claim holding roles, besides the consumer's groups; default `roles`.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
}

fn default_roles_claim() -> String {
    "roles".into()
}

/// What a request no rule matches gets.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    /// 403.
    #[default]
    Deny,
    /// Admitted.
    Allow,
}

/// One rule of an `rbac` policy.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Methods it covers; empty (default): all.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Path prefixes it covers; empty (default): all.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Scopes that must all be granted.
    #[serde(default)]
    pub require_scopes: Vec<String>,
    /// Roles that must all be held.
    #[serde(default)]
    pub require_roles: Vec<String>,
}

#[derive(Debug)]
struct Rule {
    methods: Vec<Method>,
    paths: Vec<String>,
    scopes: Vec<String>,
    roles: Vec<String>,
}

impl Rule {
    fn covers(&self, req: &http::request::Parts) -> bool {
        (self.methods.is_empty() || self.methods.contains(&req.method))
            && (self.paths.is_empty()
                || self
                    .paths
                    .iter()
                    .any(|p| req.uri.path().starts_with(p.as_str())))
    }
}

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    if c.rules.is_empty() {
        return Err(vec![b.issue(Some("rules"), "must hold at least one rule")]);
    }
    let mut rules = Vec::with_capacity(c.rules.len());
    for (i, r) in c.rules.iter().enumerate() {
        let mut methods = Vec::new();
        for (j, m) in r.methods.iter().enumerate() {
            match Method::from_bytes(m.as_bytes()) {
                Ok(method) if m.bytes().all(|b| b.is_ascii_uppercase()) => methods.push(method),
                _ => {
                    return Err(vec![b.issue(
                        Some(&format!("rules[{i}].methods[{j}]")),
                        format!("{m:?} is not an upper-case method"),
                    )]);
                }
            }
        }
        if let Some((j, p)) = r
            .paths
            .iter()
            .enumerate()
            .find(|(_, p)| !p.starts_with('/'))
        {
            return Err(vec![b.issue(
                Some(&format!("rules[{i}].paths[{j}]")),
                format!("{p:?} must start with /"),
            )]);
        }
        if r.require_scopes.is_empty() && r.require_roles.is_empty() {
            return Err(vec![b.issue(
                Some(&format!("rules[{i}]")),
                "a rule needs require_scopes or require_roles",
            )]);
        }
        rules.push(Rule {
            methods,
            paths: r.paths.clone(),
            scopes: r.require_scopes.clone(),
            roles: r.require_roles.clone(),
        });
    }
    Ok(Arc::new(Rbac {
        name: b.name.to_string(),
        rules,
        allow_unmatched: c.default == Unmatched::Allow,
        roles_claim: c.roles_claim,
    }))
}

/// The compiled rbac policy.
#[derive(Debug)]
pub struct Rbac {
    name: String,
    rules: Vec<Rule>,
    allow_unmatched: bool,
    roles_claim: String,
}

impl Rbac {
    fn roles<'c>(&self, c: &'c Consumer) -> HashSet<&'c str> {
        let mut roles: HashSet<&str> = c.groups.iter().map(String::as_str).collect();
        if let Some(v) = crate::claims::lookup(&c.claims, &self.roles_claim) {
            roles.extend(crate::claims::words(v));
        }
        roles
    }

    fn refuse(&self, ctx: &RequestCtx, detail: String, missing_scope: Option<&[String]>) -> Flow {
        let r = crate::refusal::forbidden(&ctx.request_id, detail, missing_scope);
        Flow::respond("rbac_denied", r)
    }
}

impl Policy for Rbac {
    fn name(&self) -> &str {
        &self.name
    }

    fn guards(&self) -> bool {
        true
    }

    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        let Some(consumer) = ctx.consumer.clone() else {
            let p = Problem::new(StatusCode::UNAUTHORIZED, "authentication is required");
            return Flow::respond(CREDENTIALS_MISSING, problem_response(&p, &ctx.request_id));
        };
        let Some(rule) = self.rules.iter().find(|r| r.covers(req)) else {
            if self.allow_unmatched {
                return Flow::Continue;
            }
            return self.refuse(ctx, "no rule allows this request".into(), None);
        };
        if !rule.scopes.is_empty() {
            let granted = crate::claims::scopes(&consumer.claims);
            if !rule.scopes.iter().all(|s| granted.contains(s.as_str())) {
                return self.refuse(
                    ctx,
                    "the credential lacks a required scope".into(),
                    Some(&rule.scopes),
                );
            }
        }
        if !rule.roles.is_empty() {
            let held = self.roles(&consumer);
            if !rule.roles.iter().all(|r| held.contains(r.as_str())) {
                return self.refuse(ctx, "the consumer lacks a required role".into(), None);
            }
        }
        Flow::Continue
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::kind::tests::build_one;
    use gatehouse_core::Credential;

    fn policy(rules: &str) -> Arc<dyn Policy> {
        build_one(&format!("policies:\n  p: {{ type: rbac, {rules} }}\n"), "p").unwrap()
    }

    fn run(
        p: &dyn Policy,
        method: &str,
        path: &str,
        consumer: Option<Consumer>,
    ) -> (u16, Option<String>) {
        let mut ctx = RequestCtx::detached("id", "127.0.0.1:1".parse().unwrap());
        ctx.consumer = consumer.map(Arc::new);
        let (mut req, ()) = http::Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
            .into_parts();
        match p.on_request(&mut req, &mut ctx) {
            Flow::Continue => (200, None),
            Flow::Respond { response, .. } => (
                response.status().as_u16(),
                response
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap().to_string()),
            ),
            Flow::Wait(_) => panic!("rbac never waits"),
        }
    }

    fn who(groups: &[&str], claims: serde_json::Value) -> Option<Consumer> {
        Some(Consumer {
            name: "c".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            credential: Credential::Jwt,
            claims: serde_json::from_value(claims).unwrap(),
        })
    }

    #[test]
    fn the_first_matching_rule_decides_by_scopes_and_roles() {
        let p = policy(
            "rules: [{ methods: [GET], require_scopes: [orders:read] },
                     { methods: [POST, DELETE], paths: [/orders], require_roles: [admin] }],
             roles_claim: realm_access.roles",
        );
        let reader = who(&[], serde_json::json!({"scope": "profile orders:read"}));
        assert_eq!(run(&*p, "GET", "/orders", reader.clone()).0, 200);
        let (status, challenge) = run(
            &*p,
            "GET",
            "/orders",
            who(&[], serde_json::json!({"scp": ["profile"]})),
        );
        assert_eq!(status, 403);
        assert_eq!(
            challenge.as_deref(),
            Some("Bearer error=\"insufficient_scope\", scope=\"orders:read\"")
        );
        assert_eq!(run(&*p, "POST", "/orders", reader.clone()).0, 403);
        let admin_by_claim = who(
            &[],
            serde_json::json!({"realm_access": {"roles": ["admin"]}}),
        );
        assert_eq!(run(&*p, "POST", "/orders/1", admin_by_claim).0, 200);
        assert_eq!(
            run(
                &*p,
                "DELETE",
                "/orders",
                who(&["admin"], serde_json::json!({}))
            )
            .0,
            200
        );
        // No rule for PATCH, or for POST elsewhere: denied by default.
        assert_eq!(
            run(
                &*p,
                "PATCH",
                "/orders",
                who(&["admin"], serde_json::json!({}))
            )
            .0,
            403
        );
        assert_eq!(
            run(
                &*p,
                "POST",
                "/other",
                who(&["admin"], serde_json::json!({}))
            )
            .0,
            403
        );
        assert_eq!(run(&*p, "GET", "/orders", None).0, 401);
        let open = policy("default: allow, rules: [{ methods: [POST], require_roles: [admin] }]");
        assert_eq!(run(&*open, "GET", "/x", reader).0, 200);
    }

    #[test]
    fn rules_are_checked_when_the_config_loads() {
        let e = build_one(
            "policies:\n  p: { type: rbac, rules: [{ methods: [get], require_roles: [a] }] }\n",
            "p",
        )
        .unwrap_err();
        assert_eq!(e[0].path, "policies.p.rules[0].methods[0]");
        let e = build_one(
            "policies:\n  p: { type: rbac, rules: [{ methods: [GET] }] }\n",
            "p",
        )
        .unwrap_err();
        assert_eq!(e[0].path, "policies.p.rules[0]");
        let e = build_one(
            "policies:\n  p: { type: rbac, rules: [{ paths: [orders], require_roles: [a] }] }\n",
            "p",
        )
        .unwrap_err();
        assert_eq!(e[0].path, "policies.p.rules[0].paths[0]");
        let e = build_one("policies:\n  p: { type: rbac, rules: [] }\n", "p").unwrap_err();
        assert_eq!(e[0].path, "policies.p.rules");
    }
}
