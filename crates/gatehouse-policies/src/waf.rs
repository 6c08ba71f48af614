//! `type: waf`: inspects requests with the OWASP Core Rule Set (docs/protection.md),
//! read from an installed CRS by the `gatehouse-waf` engine: path, query, headers,
//! cookies and the body up to `body_inspection_limit` (JSON, forms, multipart, XML),
//! decoded as CRS does. In `block` mode a request whose inbound anomaly score reaches
//! `anomaly_threshold` is refused (403, a `waf` offence toward `protection.ban`); in
//! `detect` mode it goes on. Both put the verdict on the access-log line under `waf`.

use crate::incident::{Incident, Incidents, Match};
use crate::waf_tally::WafTally;
use crate::{Build, BuildResult, Kind};
use gatehouse_config::Size;
use gatehouse_config::validate::Issue;
use gatehouse_core::{
    BodyNeeds, Fingerprint, Flow, Offence, Policy, Problem, RequestBodyNeed, RequestCtx,
    ResponseBodyNeed, problem_response,
};
use gatehouse_waf::engine::{Engine, LoadError, RuleFilter, Verdict};
use gatehouse_waf::request::{Collections, Excluded, RequestParts};
use http::StatusCode;
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

/// `type: waf`.
pub const KIND: Kind = Kind {
    name: "waf",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// What a match does.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Refuse requests at or over the threshold (403).
    #[default]
    Block,
    /// Log and count only.
    Detect,
}

/// The rule set.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum RuleSet {
    /// The OWASP Core Rule Set, from `crs_dir`.
    #[default]
    Crs,
}

/// What happens to a body longer than `body_inspection_limit`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum OversizeBody {
    /// Its first `body_inspection_limit` bytes are inspected; all of it goes upstream.
    #[default]
    InspectPrefix,
    /// Refused with 413.
    Reject,
}

/// One exclusion: on `routes` (all when empty), the `targets` are not read and the
/// `rules` do not run.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    /// Route names; empty: every route of the policy.
    #[serde(default)]
    pub routes: Vec<String>,
    /// `arg:NAME` (query, form, JSON `a.b`), `header:NAME`, `cookie:NAME`, `path`, `body`.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Rule ids (`942100`), ranges (`942000-942999`), tags (`tag:attack-sqli`).
    #[serde(default)]
    pub rules: Vec<String>,
}

/// The settings of `type: waf`.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "WafPolicy")]
pub struct Config {
    /// `block` (default) or `detect`.
    #[serde(default)]
    pub mode: Mode,
    /// `crs` (the only one).
    #[serde(default)]
    pub rule_set: RuleSet,
    /// A CRS 3.3 or 4.x rules folder; default: the OS package's (e.g.
    /// /usr/share/modsecurity-crs/rules).
    #[serde(default)]
    pub crs_dir: Option<String>,
    /// 1-4; default 1.
    #[serde(default = "one")]
    pub paranoia_level: u8,
    /// Rules up to this level run, those above `paranoia_level` log only; default:
    /// `paranoia_level`.
    #[serde(default)]
    pub detection_paranoia_level: Option<u8>,
    /// The inbound anomaly score that blocks; default 5 (one critical match).
    #[serde(default = "five")]
    pub anomaly_threshold: u32,
    /// Methods allowed (CRS rule 911100); default GET, HEAD, POST, PUT, PATCH, DELETE,
    /// OPTIONS.
    #[serde(default = "methods")]
    pub allowed_methods: Vec<String>,
    /// How much of a body is inspected; default 128KiB.
    #[serde(default = "limit")]
    pub body_inspection_limit: Size,
    /// `inspect_prefix` (default) or `reject` (413).
    #[serde(default)]
    pub oversize_body: OversizeBody,
    /// The most arguments (query and body together) and cookies a request may have,
    /// as ModSecurity's `SecArgumentsLimit`; default 1000. More: 400 in `block` mode,
    /// only the first inspected in `detect` mode.
    #[serde(default = "thousand")]
    pub max_arguments: u32,
    /// Targets and rules left out on some routes.
    #[serde(default)]
    pub exclusions: Vec<Exclusion>,
}

fn one() -> u8 {
    1
}

fn five() -> u32 {
    5
}

fn thousand() -> u32 {
    1000
}

fn methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        .map(String::from)
        .to_vec()
}

fn limit() -> Size {
    Size(128 * 1024)
}

/// An exclusion compiled.
#[derive(Debug)]
struct Except {
    routes: Vec<String>,
    targets: Vec<Excluded>,
    rules: RuleFilter,
}

fn exclusions(b: &Build<'_>, list: &[Exclusion]) -> Result<Vec<Except>, Vec<Issue>> {
    let mut issues = Vec::new();
    let mut out = Vec::new();
    for (i, x) in list.iter().enumerate() {
        let mut targets = Vec::new();
        for (j, t) in x.targets.iter().enumerate() {
            match Excluded::parse(t) {
                Ok(t) => targets.push(t),
                Err(e) => issues.push(b.issue(Some(&format!("exclusions[{i}].targets[{j}]")), e)),
            }
        }
        let mut rules = RuleFilter::default();
        for (j, r) in x.rules.iter().enumerate() {
            if let Err(e) = rules.add(r) {
                issues.push(b.issue(Some(&format!("exclusions[{i}].rules[{j}]")), e));
            }
        }
        if x.targets.is_empty() && x.rules.is_empty() {
            issues.push(b.issue(
                Some(&format!("exclusions[{i}]")),
                "an exclusion names targets or rules",
            ));
        }
        for (j, r) in x.routes.iter().enumerate() {
            if !b.config.routes.iter().any(|route| route.name == *r) {
                issues.push(b.issue(
                    Some(&format!("exclusions[{i}].routes[{j}]")),
                    format!("no route is named {r:?}"),
                ));
            }
        }
        out.push(Except {
            routes: x.routes.clone(),
            targets,
            rules,
        });
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    let mut issues = Vec::new();
    if !(1..=4).contains(&c.paranoia_level) {
        issues.push(b.issue(Some("paranoia_level"), "must be 1 to 4"));
    }
    let detection = c.detection_paranoia_level.unwrap_or(c.paranoia_level);
    if !(1..=4).contains(&detection) || detection < c.paranoia_level {
        issues.push(b.issue(
            Some("detection_paranoia_level"),
            "must be 1 to 4, and not below paranoia_level",
        ));
    }
    if c.anomaly_threshold == 0 {
        issues.push(b.issue(Some("anomaly_threshold"), "must be at least 1"));
    }
    for (i, m) in c.allowed_methods.iter().enumerate() {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
            issues.push(b.issue(
                Some(&format!("allowed_methods[{i}]")),
                "a method is upper-case letters (GET, POST, ...)",
            ));
        }
    }
    if c.max_arguments == 0 {
        issues.push(b.issue(Some("max_arguments"), "must be at least 1"));
    }
    if c.body_inspection_limit.0 == 0 {
        issues.push(b.issue(Some("body_inspection_limit"), "must be above 0"));
    }
    let except = exclusions(b, &c.exclusions);
    if let Err(e) = &except {
        issues.extend(e.iter().cloned());
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let dir = crate::crs::rules_dir(c.crs_dir.as_deref(), b.dir)
        .map_err(|e| vec![b.issue(Some("crs_dir"), e)])?;
    let pl = c.paranoia_level.to_string();
    let dpl = detection.to_string();
    let threshold = c.anomaly_threshold.to_string();
    let methods = c.allowed_methods.join(" ");
    // What crs-setup.conf would set, under CRS 3's and CRS 4's names.
    let presets = [
        ("paranoia_level", pl.as_str()),
        ("blocking_paranoia_level", pl.as_str()),
        ("executing_paranoia_level", dpl.as_str()),
        ("detection_paranoia_level", dpl.as_str()),
        ("inbound_anomaly_score_threshold", threshold.as_str()),
        ("allowed_methods", methods.as_str()),
    ];
    // Policies with the same rules and levels share one compiled rule set, kept across
    // reloads while the rules files stay as they were.
    let key = format!("{}|{presets:?}", dir.display());
    let engine = b.state.get_or_build(
        "waf_engine",
        &key,
        Fingerprint::of(&rules_files(&dir)),
        |_: Option<&Result<Engine, LoadError>>| Engine::load_crs(&dir, &presets),
    );
    if let Err(e) = &*engine {
        return Err(vec![b.issue(
            Some("crs_dir"),
            format!("a rules file cannot be used: {e}"),
        )]);
    }
    let mode = match c.mode {
        Mode::Block => "block",
        Mode::Detect => "detect",
    };
    let tally = b.state.get_or_build(
        crate::waf_tally::STATE,
        b.name,
        Fingerprint::of(&mode),
        |old| WafTally::new(mode, old),
    );
    let (kind, name) = crate::incident::STATE;
    let incidents = b
        .state
        .get_or_build(kind, name, Fingerprint(0), |_: Option<&Incidents>| {
            Incidents::default()
        });
    Ok(Arc::new(Waf {
        name: b.name.to_string(),
        mode: c.mode,
        tally,
        incidents,
        engine,
        threshold: i64::from(c.anomaly_threshold),
        limit: c.body_inspection_limit.0,
        oversize: c.oversize_body,
        max_arguments: c.max_arguments as usize,
        except: except.unwrap_or_default(),
    }))
}

/// The rules files of `dir` with their sizes and times: what a reload compares to know
/// whether the rules changed.
fn rules_files(
    dir: &std::path::Path,
) -> Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.path(), m.len(), m.modified().ok()))
        })
        .collect();
    files.sort();
    files
}

/// The compiled WAF.
#[derive(Debug)]
pub struct Waf {
    name: String,
    mode: Mode,
    tally: Arc<WafTally>,
    incidents: Arc<Incidents>,
    /// Always `Ok`: a build with a rules error fails.
    engine: Arc<Result<Engine, LoadError>>,
    threshold: i64,
    limit: u64,
    oversize: OversizeBody,
    max_arguments: usize,
    except: Vec<Except>,
}

/// A random 64-bit incident id in hex: what the client is shown and the log keeps.
fn incident_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// The rules that only evaluate the score (CRS's blocking evaluation): not reported as
/// what matched.
fn evaluation(id: u32) -> bool {
    (949000..950000).contains(&id) || (980000..981000).contains(&id)
}

impl Waf {
    /// The verdict on a request: its collections built from the head and the
    /// inspected body, the route's exclusions applied; and whether it had more
    /// arguments or cookies than `max_arguments` (in `block` mode the rules do not run
    /// then: the request is refused whatever they find).
    fn judge(&self, req: &http::request::Parts, ctx: &mut RequestCtx) -> (Verdict, bool) {
        let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let protocol = match req.version {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2.0",
            http::Version::HTTP_3 => "HTTP/3.0",
            _ => "HTTP/1.1",
        };
        let headers: Vec<(&str, &[u8])> = req
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        let body = ctx.bodies().request.clone();
        let mut c = Collections::of_limited(
            &RequestParts {
                method: req.method.as_str(),
                target,
                protocol,
                headers: &headers,
                body: body.as_deref().filter(|b| !b.is_empty()).map(|b| {
                    &b[..b
                        .len()
                        .min(usize::try_from(self.limit).unwrap_or(usize::MAX))]
                }),
            },
            self.max_arguments,
        );
        if c.over_limit && self.mode == Mode::Block {
            return (Verdict::default(), true);
        }
        let route = ctx.route.as_deref().unwrap_or_default();
        let mut skip = RuleFilter::default();
        for x in &self.except {
            if !x.routes.is_empty() && !x.routes.iter().any(|r| r == route) {
                continue;
            }
            for t in &x.targets {
                c.exclude(t);
            }
            skip.merge(&x.rules);
        }
        let v = match &*self.engine {
            Ok(e) => e.inspect_except(&c, &skip),
            Err(_) => Verdict::default(),
        };
        (v, c.over_limit)
    }

    /// Refuses a request with more arguments or cookies than `max_arguments` before
    /// the rules run: 400 (as ModSecurity's recommended rule 200007), a `waf` offence.
    fn too_many_arguments(&self, ctx: &mut RequestCtx) -> Flow {
        self.tally.matched(true, std::iter::empty());
        ctx.log.push((
            "waf",
            serde_json::json!({
                "policy": self.name,
                "action": "blocked",
                "too_many_arguments": true,
            }),
        ));
        ctx.offence = Some(Offence::Waf);
        let p = Problem::new(
            StatusCode::BAD_REQUEST,
            "The request has more arguments than the web application firewall accepts.",
        );
        Flow::respond(
            "waf_too_many_arguments",
            problem_response(&p, &ctx.request_id),
        )
    }
}

impl Policy for Waf {
    fn name(&self) -> &str {
        &self.name
    }

    fn guards(&self) -> bool {
        true
    }

    fn body_needs(&self) -> BodyNeeds {
        let request = match self.oversize {
            OversizeBody::InspectPrefix => RequestBodyNeed::Prefix { max: self.limit },
            OversizeBody::Reject => RequestBodyNeed::Buffered { max: self.limit },
        };
        BodyNeeds {
            request,
            response: ResponseBodyNeed::Untouched,
        }
    }

    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        let (v, over_limit) = self.judge(req, ctx);
        self.tally.inspected();
        if over_limit && self.mode == Mode::Block {
            return self.too_many_arguments(ctx);
        }
        let blocked = v.denied || v.anomaly_score >= self.threshold;
        let hits: Vec<_> = v.hits.iter().filter(|h| !evaluation(h.id)).collect();
        if !blocked && hits.is_empty() && !over_limit {
            return Flow::Continue;
        }
        let incident = incident_id();
        let mut attacks: Vec<&str> = hits.iter().filter_map(|h| h.attack()).collect();
        attacks.sort_unstable();
        attacks.dedup();
        let refuse = blocked && self.mode == Mode::Block;
        let action = if refuse { "blocked" } else { "detected" };
        self.tally
            .matched(refuse, hits.iter().map(|h| (h.id, h.attack())));
        // A rule matches once per request: its ids are distinct.
        let rule_ids: Vec<u32> = hits.iter().map(|h| h.id).collect();
        ctx.attack = Some(Box::new(gatehouse_core::Attack {
            kinds: attacks.clone(),
            rules: rule_ids.clone(),
        }));
        self.incidents.record(Incident {
            id: incident.clone(),
            time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            request_id: ctx.request_id.clone(),
            policy: self.name.clone(),
            action,
            score: v.anomaly_score,
            client: ctx.client_ip,
            route: ctx.route.as_deref().map(str::to_string),
            method: req.method.to_string(),
            path: req.uri.path().to_string(),
            attacks: attacks.clone(),
            rules: hits
                .iter()
                .map(|h| Match {
                    id: h.id,
                    msg: h.msg.clone(),
                    attack: h.attack(),
                    target: h.target.clone(),
                    data: String::from_utf8_lossy(&h.data).into_owned(),
                })
                .collect(),
        });
        let mut line = serde_json::json!({
            "policy": self.name,
            "action": action,
            "score": v.anomaly_score,
            "rule_ids": rule_ids,
            "attacks": attacks,
            "incident_id": incident,
        });
        if over_limit {
            // Detect mode: only the first `max_arguments` were inspected.
            line["too_many_arguments"] = serde_json::Value::Bool(true);
        }
        ctx.log.push(("waf", line));
        if !refuse {
            return Flow::Continue;
        }
        ctx.offence = Some(Offence::Waf);
        // No rule ids and nothing of the request: the incident id finds the rest.
        let p = Problem::new(
            StatusCode::FORBIDDEN,
            "The request was refused by the web application firewall.",
        )
        .with_member("incident_id", serde_json::Value::String(incident));
        Flow::respond("waf_blocked", problem_response(&p, &ctx.request_id))
    }
}
