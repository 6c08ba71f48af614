//! `type: bot_filter`: refuses clients by their User-Agent (docs/protection.md): the
//! Core Rule Set's list of security scanners (the list CRS rule 913100 reads), deny
//! and allow patterns, and optionally requests with no User-Agent at all. A refusal is
//! a `bot` offence toward `protection.ban`.

use crate::{Build, BuildResult, Kind};
use aho_corasick::AhoCorasick;
use gatehouse_config::validate::Issue;
use gatehouse_core::{Flow, Offence, Policy, Problem, RequestCtx, problem_response};
use http::StatusCode;
use regex::RegexSet;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

/// `type: bot_filter`.
pub const KIND: Kind = Kind {
    name: "bot_filter",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// The CRS data file of security scanners' user agents.
const SCANNERS: &str = "scanners-user-agents.data";

/// The settings of `type: bot_filter`.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BotFilterPolicy")]
pub struct Config {
    /// Refuse the security scanners of the Core Rule Set's list
    /// (`scanners-user-agents.data`); default true.
    #[serde(default = "yes")]
    pub known_scanners: bool,
    /// The CRS rules folder the scanner list is read from; default: the OS package's
    /// (e.g. /usr/share/modsecurity-crs/rules).
    #[serde(default)]
    pub crs_dir: Option<String>,
    /// Regexes: a User-Agent matching any is refused.
    #[serde(default)]
    pub deny_user_agents: Vec<String>,
    /// Regexes: a User-Agent matching any is let through, whatever else matches.
    #[serde(default)]
    pub allow_user_agents: Vec<String>,
    /// Refuse requests without a User-Agent (or with an empty one); default false.
    #[serde(default)]
    pub deny_empty_user_agent: bool,
}

fn yes() -> bool {
    true
}

fn patterns(b: &Build<'_>, field: &str, list: &[String]) -> Result<RegexSet, Vec<Issue>> {
    let mut issues = Vec::new();
    for (i, p) in list.iter().enumerate() {
        if let Err(e) = regex::Regex::new(p) {
            issues.push(b.issue(
                Some(&format!("{field}[{i}]")),
                format!("invalid regex: {e}"),
            ));
        }
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    RegexSet::new(list).map_err(|e| vec![b.issue(Some(field), e.to_string())])
}

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    let allow = patterns(b, "allow_user_agents", &c.allow_user_agents);
    let deny = patterns(b, "deny_user_agents", &c.deny_user_agents);
    let scanners = if c.known_scanners {
        crate::crs::rules_dir(c.crs_dir.as_deref(), b.dir)
            .and_then(|dir| crate::crs::phrases(&dir, SCANNERS))
            .and_then(|list| {
                // Case-insensitive, as ModSecurity's @pmFromFile after t:lowercase.
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(&list)
                    .map_err(|e| e.to_string())
            })
            .map(Some)
            .map_err(|e| vec![b.issue(Some("known_scanners"), e)])
    } else {
        Ok(None)
    };
    let (allow, deny, scanners) = match (allow, deny, scanners) {
        (Ok(a), Ok(d), Ok(s)) => (a, d, s),
        (a, d, s) => {
            let issues = [a.err(), d.err(), s.err()]
                .into_iter()
                .flatten()
                .flatten()
                .collect();
            return Err(issues);
        }
    };
    if scanners.is_none() && deny.is_empty() && !c.deny_empty_user_agent {
        return Err(vec![b.issue(
            None,
            "bot_filter refuses nothing: set known_scanners, deny_user_agents or deny_empty_user_agent",
        )]);
    }
    Ok(Arc::new(BotFilter {
        name: b.name.to_string(),
        allow,
        deny,
        scanners,
        deny_empty: c.deny_empty_user_agent,
    }))
}

/// The compiled bot filter.
#[derive(Debug)]
pub struct BotFilter {
    name: String,
    allow: RegexSet,
    deny: RegexSet,
    scanners: Option<AhoCorasick>,
    deny_empty: bool,
}

/// Why a User-Agent is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let through.
    Pass,
    /// No User-Agent, and `deny_empty_user_agent`.
    Empty,
    /// Matched `deny_user_agents`.
    Denied,
    /// On the CRS scanner list.
    Scanner,
}

impl BotFilter {
    /// What the filter makes of a request's User-Agent values.
    pub fn judge<'a>(&self, agents: impl Iterator<Item = &'a [u8]>) -> Verdict {
        // Several User-Agent fields are read as one, as a list (RFC 9110 section 5.3).
        let agents: Vec<&str> = agents
            .map(|v| std::str::from_utf8(v).unwrap_or_default().trim())
            .filter(|v| !v.is_empty())
            .collect();
        if agents.is_empty() {
            return if self.deny_empty {
                Verdict::Empty
            } else {
                Verdict::Pass
            };
        }
        if agents.iter().any(|a| self.allow.is_match(a)) {
            return Verdict::Pass;
        }
        if agents.iter().any(|a| self.deny.is_match(a)) {
            return Verdict::Denied;
        }
        if let Some(s) = &self.scanners
            && agents.iter().any(|a| s.is_match(a))
        {
            return Verdict::Scanner;
        }
        Verdict::Pass
    }
}

impl Policy for BotFilter {
    fn name(&self) -> &str {
        &self.name
    }

    fn guards(&self) -> bool {
        true
    }

    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        let agents = req
            .headers
            .get_all(http::header::USER_AGENT)
            .iter()
            .map(|v| v.as_bytes());
        let reason = match self.judge(agents) {
            Verdict::Pass => return Flow::Continue,
            Verdict::Empty => "bot_no_user_agent",
            Verdict::Denied => "bot_denied",
            Verdict::Scanner => "bot_scanner",
        };
        ctx.offence = Some(Offence::Bot);
        // Nothing of the request is echoed; the policy and the reason go to the log.
        let p = Problem::new(StatusCode::FORBIDDEN, "Access to this resource is denied.");
        Flow::respond(reason, problem_response(&p, &ctx.request_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::tests::build_one;

    fn filter(settings: &str, dir: &std::path::Path) -> BuildResult {
        let yaml = format!(
            "policies:\n  b: {{ type: bot_filter, crs_dir: {:?}, {settings} }}\nroutes:\n  - {{ name: r, policies: [b], respond: {{ status: 200 }} }}\n",
            dir.display()
        );
        build_one(&yaml, "b")
    }

    fn crs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SCANNERS),
            "# scanners\nnikto\nsqlmap\n(hydra)\nBFAC\n",
        )
        .unwrap();
        dir
    }

    fn verdict(p: &Arc<dyn Policy>, agents: &[&str]) -> Option<&'static str> {
        let mut b = http::Request::builder();
        for a in agents {
            b = b.header(http::header::USER_AGENT, *a);
        }
        let (mut parts, ()) = b.body(()).unwrap().into_parts();
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let conn = gatehouse_core::Connection::plain(addr, addr, "public".into());
        let mut ctx = RequestCtx::new("rid".into(), Arc::new(conn), std::time::Instant::now());
        match p.on_request(&mut parts, &mut ctx) {
            Flow::Respond { reason, response } => {
                assert_eq!(response.status(), 403);
                assert_eq!(ctx.offence, Some(Offence::Bot));
                Some(reason)
            }
            _ => None,
        }
    }

    #[test]
    fn scanners_deny_and_allow_lists_and_empty_agents() {
        let dir = crs();
        let p = filter(
            r#"deny_user_agents: ["(?i)badbot"], allow_user_agents: ["^Monitor/"], deny_empty_user_agent: true"#,
            dir.path(),
        )
        .unwrap();
        assert_eq!(
            verdict(&p, &["Mozilla/5.0 (Nikto/2.1.6)"]),
            Some("bot_scanner")
        );
        assert_eq!(verdict(&p, &["bfac/1.0"]), Some("bot_scanner"));
        assert_eq!(
            verdict(&p, &["sqlmap/1.7#stable (https://sqlmap.org)"]),
            Some("bot_scanner")
        );
        assert_eq!(verdict(&p, &["SuperBadBot 2"]), Some("bot_denied"));
        assert_eq!(verdict(&p, &[]), Some("bot_no_user_agent"));
        assert_eq!(verdict(&p, &["  "]), Some("bot_no_user_agent"));
        assert_eq!(
            verdict(&p, &["Monitor/1 nikto"]),
            None,
            "allow is checked first"
        );
        assert_eq!(
            verdict(&p, &["Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"]),
            None
        );
        assert_eq!(verdict(&p, &["curl/8.5.0"]), None);
    }

    #[test]
    fn mistakes_are_located() {
        let dir = crs();
        let e = filter(r#"deny_user_agents: ["ok", "(unclosed"]"#, dir.path()).unwrap_err();
        assert_eq!(e[0].path, "policies.b.deny_user_agents[1]");
        let e = filter("known_scanners: false", dir.path()).unwrap_err();
        assert!(e[0].message.contains("refuses nothing"), "{e:?}");
        let empty = tempfile::tempdir().unwrap();
        let e = filter("known_scanners: true", empty.path()).unwrap_err();
        assert_eq!(e[0].path, "policies.b.known_scanners");
        assert!(e[0].message.contains(SCANNERS), "{e:?}");
    }
}
