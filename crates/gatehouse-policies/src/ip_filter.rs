//! `type: ip_filter`: admit or reject clients by CIDR; deny wins over allow.

use crate::cidr::CidrSet;
use gatehouse_config::IpFilterPolicy as Config;
use gatehouse_core::{Flow, Policy, Problem, RequestCtx, problem_response};
use http::StatusCode;
use std::collections::BTreeMap;

/// The compiled ip_filter policy.
#[derive(Debug)]
pub struct IpFilter {
    name: String,
    allow: CidrSet,
    deny: CidrSet,
    status: StatusCode,
}

impl IpFilter {
    /// Compiles the policy, expanding ip_groups names.
    pub fn build(
        name: &str,
        c: &Config,
        groups: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, String> {
        Ok(Self {
            name: name.to_string(),
            allow: CidrSet::build(&c.allow, groups)?,
            deny: CidrSet::build(&c.deny, groups)?,
            status: StatusCode::from_u16(c.status)
                .map_err(|_| format!("invalid status {}", c.status))?,
        })
    }

    /// Whether `ip` is admitted.
    pub fn admits(&self, ip: std::net::IpAddr) -> bool {
        !self.deny.contains(ip) && (self.allow.is_empty() || self.allow.contains(ip))
    }
}

impl Policy for IpFilter {
    fn name(&self) -> &str {
        &self.name
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
    use super::*;

    fn filter(allow: &[&str], deny: &[&str]) -> IpFilter {
        let groups = BTreeMap::from([("office".to_string(), vec!["192.168.0.0/16".to_string()])]);
        IpFilter::build(
            "f",
            &Config {
                allow: allow.iter().map(|s| s.to_string()).collect(),
                deny: deny.iter().map(|s| s.to_string()).collect(),
                status: 403,
            },
            &groups,
        )
        .unwrap()
    }

    #[test]
    fn table() {
        let cases: &[(&[&str], &[&str], &str, bool)] = &[
            (&["10.0.0.0/8"], &[], "10.1.2.3", true),
            (&["10.0.0.0/8"], &[], "11.0.0.1", false),
            (&["10.0.0.0/8"], &["10.9.0.0/16"], "10.9.1.1", false),
            (&[], &["10.0.0.0/8"], "8.8.8.8", true),
            (&["2001:db8::/32"], &[], "2001:db8::1", true),
            (&["2001:db8::/32"], &[], "2001:db9::1", false),
            (&["office"], &[], "192.168.4.4", true),
            (&["127.0.0.1"], &[], "::ffff:127.0.0.1", true),
        ];
        for (allow, deny, ip, want) in cases {
            let f = filter(allow, deny);
            assert_eq!(
                f.admits(ip.parse().unwrap()),
                *want,
                "{allow:?} {deny:?} {ip}"
            );
        }
    }

    #[test]
    fn rejection_is_a_problem_with_a_reason() {
        let f = filter(&["10.0.0.0/8"], &[]);
        let (mut parts, ()) = http::Request::new(()).into_parts();
        let mut ctx = RequestCtx::detached("rid", "127.0.0.1:5".parse().unwrap());
        match f.on_request(&mut parts, &mut ctx) {
            Flow::Respond { response, reason } => {
                assert_eq!(response.status(), 403);
                assert_eq!(reason, "ip_denied");
            }
            Flow::Continue => panic!("must reject"),
        }
    }
}
