//! `type: ip_filter`: admit or reject clients by CIDR; deny wins over allow.

use crate::cidr::CidrSet;
use crate::{Build, BuildResult, Kind};
use gatehouse_config::validate::parse_cidr;
use gatehouse_core::{Flow, Policy, Problem, RequestCtx, problem_response};
use http::StatusCode;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

/// `type: ip_filter`.
pub const KIND: Kind = Kind {
    name: "ip_filter",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// The settings of `type: ip_filter`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "IpFilterPolicy")]
pub struct Config {
    /// When non-empty, only these CIDRs (or ip_groups) are admitted.
    #[serde(default)]
    pub allow: Vec<String>,
    /// These CIDRs (or ip_groups) are rejected; deny wins over allow.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Status of the rejection; default 403.
    #[serde(default = "default_forbidden")]
    pub status: u16,
}

fn default_forbidden() -> u16 {
    403
}

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    let groups = &b.config.ip_groups;
    let mut issues = Vec::new();
    for (list, entries) in [("allow", &c.allow), ("deny", &c.deny)] {
        for (i, e) in entries.iter().enumerate() {
            if parse_cidr(e).is_none() && !groups.contains_key(e) {
                issues.push(b.issue(
                    Some(&format!("{list}[{i}]")),
                    format!("{e:?} is neither a CIDR, an IP nor an ip_groups name"),
                ));
            }
        }
    }
    if c.allow.is_empty() && c.deny.is_empty() {
        issues.push(b.issue(None, "ip_filter needs allow or deny entries"));
    }
    let status = StatusCode::from_u16(c.status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error());
    if status.is_none() {
        issues.push(b.issue(Some("status"), "must be a 4xx or 5xx status"));
    }
    let (Some(status), true) = (status, issues.is_empty()) else {
        return Err(issues);
    };
    let sets = CidrSet::build(&c.allow, groups)
        .and_then(|allow| CidrSet::build(&c.deny, groups).map(|deny| (allow, deny)));
    let (allow, deny) = sets.map_err(|e| vec![b.issue(None, e)])?;
    Ok(Arc::new(IpFilter {
        name: b.name.to_string(),
        allow,
        deny,
        status,
    }))
}

/// The compiled ip_filter policy.
#[derive(Debug)]
pub struct IpFilter {
    name: String,
    allow: CidrSet,
    deny: CidrSet,
    status: StatusCode,
}

impl IpFilter {
    /// Whether `ip` is admitted.
    pub fn admits(&self, ip: std::net::IpAddr) -> bool {
        !self.deny.contains(ip) && (self.allow.is_empty() || self.allow.contains(ip))
    }
}

impl Policy for IpFilter {
    fn name(&self) -> &str {
        &self.name
    }

    fn guards(&self) -> bool {
        true
    }

    fn on_request(&self, _req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        if self.admits(ctx.client_ip) {
            return Flow::Continue;
        }
        let detail = format!(
            "client address {} is not allowed by policy {}",
            ctx.client_ip, self.name
        );
        // The client learns the status only: a `status: 404` rejection reads exactly like
        // a missing route, and the policy's name stays in the log.
        Flow::respond(
            "ip_denied",
            problem_response(&Problem::internal(self.status, detail), &ctx.request_id),
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::kind::tests::build_one;
    use gatehouse_core::{Flow, RequestCtx};

    fn admits(policy: &str, ip: &str) -> bool {
        let yaml = format!(
            "ip_groups: {{ office: [192.168.0.0/16] }}\npolicies:\n  f: {{ type: ip_filter, {policy} }}\n"
        );
        let p = build_one(&yaml, "f").unwrap();
        let (mut parts, ()) = http::Request::new(()).into_parts();
        let mut ctx = RequestCtx::detached(
            "rid",
            format!("{ip}:5")
                .parse()
                .unwrap_or_else(|_| format!("[{ip}]:5").parse().unwrap()),
        );
        match p.on_request(&mut parts, &mut ctx) {
            Flow::Continue => true,
            Flow::Respond { response, reason } => {
                assert_eq!(response.status(), 403);
                assert_eq!(reason, "ip_denied");
                false
            }
            Flow::Wait(_) => panic!("ip_filter decides at once"),
        }
    }

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            ("allow: [10.0.0.0/8]", "10.1.2.3", true),
            ("allow: [10.0.0.0/8]", "11.0.0.1", false),
            (
                "allow: [10.0.0.0/8], deny: [10.9.0.0/16]",
                "10.9.1.1",
                false,
            ),
            ("deny: [10.0.0.0/8]", "8.8.8.8", true),
            ("allow: [\"2001:db8::/32\"]", "2001:db8::1", true),
            ("allow: [\"2001:db8::/32\"]", "2001:db9::1", false),
            ("allow: [office]", "192.168.4.4", true),
            ("allow: [127.0.0.1]", "::ffff:127.0.0.1", true),
        ];
        for (policy, ip, want) in cases {
            assert_eq!(admits(policy, ip), *want, "{policy} {ip}");
        }
    }

    #[test]
    fn every_bad_setting_is_reported_at_its_field() {
        let yaml = "policies:\n  f: { type: ip_filter, allow: [nope, 10.0.0.0/8], deny: [300.1.1.1], status: 200 }\n";
        let paths: Vec<_> = build_one(yaml, "f")
            .unwrap_err()
            .into_iter()
            .map(|i| i.path)
            .collect();
        assert_eq!(
            paths,
            [
                "policies.f.allow[0]",
                "policies.f.deny[0]",
                "policies.f.status"
            ]
        );
        let e = build_one("policies:\n  f: { type: ip_filter, alow: [] }\n", "f").unwrap_err();
        assert_eq!(e[0].path, "policies.f.alow");
        assert!(
            e[0].message.starts_with("unknown field \"alow\""),
            "{}",
            e[0].message
        );
    }
}
