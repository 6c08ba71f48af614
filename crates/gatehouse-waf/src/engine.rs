//! The rule interpreter: CRS request rules (phases 1 and 2) compiled from SecLang and run
//! over a request's collections as ModSecurity runs them: in file order per phase, each
//! target's value transformed then tested, chains, `setvar` on the transaction's `TX`
//! collection, `skipAfter` markers, captures and macros, and the blocking evaluation's
//! `deny`. Persistent collections (`IP`, `GLOBAL`) and response phases are not run.
//! Operators and transformations the engine lacks disable their rule, listed in
//! [`Engine::unsupported`].

use crate::operator::Operator;
use crate::phrasebook::Phrasebook;
use crate::request::{self, Collections};
use crate::seclang::{self, Action, DirectiveKind, Rule, Selector};
use crate::template::{Part, Template};
use crate::transformation::{Traits, Transformation};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

/// A rules file that cannot be used: which, where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Which members of a collection a target reads.
#[derive(Debug, Clone)]
enum Pick {
    All,
    /// By name, without case.
    Key(String),
    /// A selector regex that is a plain word anchored at the start (`/^header_name_/`):
    /// names starting with it, without case (TX has a hundred names to try).
    Prefix(String),
    /// A plain word selector (`/__utm/`): names holding it, without case.
    Contains(String),
    Regex(regex::Regex),
}

impl Pick {
    fn of(s: &Option<Selector>) -> Result<Self, String> {
        Ok(match s {
            None => Self::All,
            Some(Selector::Key(k)) => Self::Key(k.to_ascii_lowercase()),
            Some(Selector::Regex(r)) if is_word(r.strip_prefix('^').unwrap_or(r)) => {
                match r.strip_prefix('^') {
                    Some(w) => Self::Prefix(w.to_ascii_lowercase()),
                    None => Self::Contains(r.to_ascii_lowercase()),
                }
            }
            Some(Selector::Regex(r)) => Self::Regex(
                regex::RegexBuilder::new(r)
                    .case_insensitive(true)
                    .build()
                    .map_err(|e| format!("selector /{r}/: {e}"))?,
            ),
        })
    }

    fn takes(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Key(k) => name.eq_ignore_ascii_case(k),
            Self::Prefix(p) => name
                .as_bytes()
                .get(..p.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(p.as_bytes())),
            Self::Contains(w) => name
                .as_bytes()
                .windows(w.len())
                .any(|h| h.eq_ignore_ascii_case(w.as_bytes())),
            Self::Regex(r) => r.is_match(name),
        }
    }
}

/// Whether a selector regex is a plain word (letters, digits, `_`, `-`): no
/// metacharacter, so it can be matched without a regex.
fn is_word(r: &str) -> bool {
    !r.is_empty()
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Where a variable's values come from, resolved at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A request collection, by slot ([`request::COLLECTIONS`]).
    Slot(usize),
    /// The transaction's `TX`.
    Tx,
    MatchedVar,
    MatchedVarName,
    /// `1` when the body could not be parsed as its Content-Type says, else `0`.
    ReqbodyError,
    /// A single empty value (`DURATION`, `REMOTE_ADDR`, `UNIQUE_ID`: not needed by the
    /// request rules' decisions).
    Empty,
    /// No values (persistent collections, `GEO`, `MATCHED_VARS`).
    Nothing,
}

impl Source {
    fn of(collection: &str) -> Self {
        match collection {
            "TX" => Self::Tx,
            "MATCHED_VAR" => Self::MatchedVar,
            "MATCHED_VAR_NAME" => Self::MatchedVarName,
            "REQBODY_ERROR" => Self::ReqbodyError,
            "DURATION" | "REMOTE_ADDR" | "UNIQUE_ID" => Self::Empty,
            name => request::slot(name).map_or(Self::Nothing, Self::Slot),
        }
    }
}

/// One variable of a rule, with the exclusions (`!COLL:x`) that follow it.
#[derive(Debug, Clone)]
struct Target {
    collection: String,
    /// `COLLECTION:key` for a target of one key (named without a `format!` per match).
    keyed: Option<String>,
    source: Source,
    pick: Pick,
    count: bool,
    excluded: Vec<Pick>,
}

impl Target {
    /// Whether it reads the member `name` of its collection.
    fn keeps(&self, name: &str) -> bool {
        self.pick.takes(name) && !self.excluded.iter().any(|x| x.takes(name))
    }
}

/// An operator, compiled now or (when its argument has macros) per request.
#[derive(Debug, Clone)]
enum Op {
    Ready(Operator),
    Macro {
        name: String,
        template: Template,
        /// The argument as the setup's `TX` expands it, compiled at load: what a
        /// request uses while its own expansion is the same (CRS's `@within
        /// %{tx.allowed_methods}` and the like always are, unless a rule changes them).
        ready: Option<Box<(Vec<u8>, Operator)>>,
    },
}

/// A `setvar` on `TX`: `tx.name=value`, `=+n`, `=-n` or `!tx.name` (the name may hold
/// macros too: `tx.%{rule.id}-...`).
#[derive(Debug, Clone)]
struct SetVar {
    op: SetOp,
    /// Without `tx.`, in lower case.
    name: Template,
    value: Template,
}

/// What a `setvar` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetOp {
    Set,
    Add,
    Sub,
    Delete,
}

/// One rule of a chain.
#[derive(Debug, Clone)]
struct Link {
    targets: Vec<Target>,
    /// Its transformation pipeline, by index into [`Engine::pipelines`].
    pipeline: usize,
    op: Op,
    /// Its `@rx` pattern's place in its pipeline's prefilter set, if it has one.
    prefilter: Option<usize>,
    /// Its `@pm` phrase list's number in [`Engine::phrasebook`], if it has one.
    phrases: Option<usize>,
    /// Links that read the same request values through the same pipeline share a
    /// group (most CRS attack rules read `ARGS|ARGS_NAMES|REQUEST_COOKIES|...`): once
    /// one of them has scanned the values, a link whose pattern none of them holds is
    /// answered without visiting them.
    group: Option<usize>,
    negated: bool,
    capture: bool,
    /// `multiMatch`: the operator tests the value before and after each transformation
    /// that changes it, each match counting.
    multi_match: bool,
    setvars: Vec<SetVar>,
    /// The request collections (a bit per slot) its values can only come from, when
    /// they all are such: with none of them filled, it cannot match and is not run.
    reads: Option<u32>,
}

impl Link {
    /// [`Link::reads`] of `targets`: `None` when one yields a value whatever the
    /// request holds (a count, `TX`, `MATCHED_VAR`...) or there is none (`SecAction`).
    fn reads(targets: &[Target]) -> Option<u32> {
        let mut mask = 0u32;
        for t in targets {
            match t.source {
                Source::Slot(s) if !t.count => mask |= 1 << s,
                Source::Nothing if !t.count => {}
                _ => return None,
            }
        }
        (!targets.is_empty()).then_some(mask)
    }
}

/// What a rule does when it stops a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disruptive {
    Pass,
    Block,
    Deny,
    Allow,
}

/// A compiled rule: a chain of links (one for an unchained rule) and its head's actions.
#[derive(Debug, Clone)]
struct Compiled {
    id: u32,
    phase: u8,
    links: Vec<Link>,
    disruptive: Disruptive,
    skip_after: Option<String>,
    /// Where its `skipAfter` marker is (the `order` of the first rule after it), found
    /// at load; `None` for a marker no file sets (nothing is skipped then).
    skip_to: Option<usize>,
    msg: Option<Template>,
    tags: Vec<String>,
    /// Not `nolog`: its matches are reported in [`Verdict::hits`].
    log: bool,
    /// Disabled: an operator or transformation the engine lacks.
    disabled: bool,
    /// What a request would make of it whatever it holds, found at load.
    fold: Fold,
    /// Where it was in the files, for markers.
    order: usize,
}

/// A rule's outcome when it reads only `TX` variables no rule a request runs can change
/// (CRS's paranoia gates, its disabled exclusion packages, unset options): decided once,
/// at load, against the setup's `TX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fold {
    /// Depends on the request: run it.
    Run,
    /// Never matches: not visited.
    Never,
    /// Always matches and does nothing but skip to its marker: the skip is taken
    /// without running it.
    Always,
}

/// A rule that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Its id.
    pub id: u32,
    /// Its `msg`, macros expanded.
    pub msg: String,
    /// Its `tag`s.
    pub tags: Vec<String>,
    /// The variable that matched (`ARGS:q`).
    pub target: String,
    /// What matched in it (at most 64 bytes).
    pub data: Vec<u8>,
}

impl Hit {
    /// The attack type of its CRS `attack-*` tag, as the access log and incidents name
    /// it (`sqli`, `xss`, `lfi`, `rfi`, `rce`, `php`, `java`, `protocol`, `scanner`,
    /// `fixation`, `multipart`, `generic`); `None` for a rule without one.
    pub fn attack(&self) -> Option<&'static str> {
        let tag = self.tags.iter().find_map(|t| t.strip_prefix("attack-"))?;
        Some(match tag {
            "sqli" => "sqli",
            "xss" => "xss",
            "lfi" => "lfi",
            "rfi" => "rfi",
            "rce" => "rce",
            "injection-php" | "php" => "php",
            "injection-java" | "java" => "java",
            "protocol" => "protocol",
            "reputation-scanner" | "scanner" => "scanner",
            "fixation" => "fixation",
            t if t.starts_with("multipart") => "multipart",
            _ => "generic",
        })
    }
}

/// Rules left out of an inspection (a policy's `exclusions`): ids, id ranges, tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleFilter {
    ranges: Vec<(u32, u32)>,
    tags: Vec<String>,
}

impl RuleFilter {
    /// Reads `942100`, `942000-942999` or `tag:attack-sqli`.
    pub fn add(&mut self, item: &str) -> Result<(), String> {
        let item = item.trim();
        if let Some(tag) = item.strip_prefix("tag:") {
            if tag.is_empty() {
                return Err("tag: names no tag".into());
            }
            self.tags.push(tag.to_string());
            return Ok(());
        }
        let id = |s: &str| {
            s.trim().parse::<u32>().map_err(|_| {
                format!("{item:?} is not a rule id, an id range (942000-942999) or tag:NAME")
            })
        };
        let (from, to) = match item.split_once('-') {
            Some((a, b)) => (id(a)?, id(b)?),
            None => (id(item)?, id(item)?),
        };
        if from > to {
            return Err(format!("{item:?}: the range ends before it starts"));
        }
        self.ranges.push((from, to));
        Ok(())
    }

    /// Adds what `other` leaves out.
    pub fn merge(&mut self, other: &Self) {
        self.ranges.extend_from_slice(&other.ranges);
        self.tags.extend(other.tags.iter().cloned());
    }

    /// Whether it leaves out nothing.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.tags.is_empty()
    }

    fn skips(&self, id: u32, tags: &[String]) -> bool {
        self.ranges.iter().any(|(a, b)| (*a..=*b).contains(&id))
            || self
                .tags
                .iter()
                .any(|t| tags.iter().any(|x| x.eq_ignore_ascii_case(t)))
    }
}

/// What the engine made of a request.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// The rules that matched, in order (but those marked `nolog`: CRS's setup and
    /// flow control).
    pub hits: Vec<Hit>,
    /// A `deny` rule matched (the blocking evaluation, for CRS): the request is refused.
    pub denied: bool,
    /// `tx.anomaly_score` once the rules ran (the inbound score CRS blocks on).
    pub anomaly_score: i64,
}

/// Where every request starts once the leading rules that read nothing of it (the
/// presets, CRS 901's initialization) have run: computed at load, not per request.
#[derive(Debug, Default)]
struct Setup {
    /// The transaction after them.
    tx: Tx<'static>,
    /// The index in [`Engine::rules`] of the first rule still to run.
    resume: usize,
    /// A `skipAfter` still pending there.
    skip_to: Option<usize>,
    /// Per phase, the rules a request from this setup visits: enabled and not
    /// [`Fold::Never`], in order.
    live: [Vec<Step>; 2],
    /// Per phase, every enabled rule (for a request that leaves out a setup rule: it
    /// starts from scratch, so nothing folded holds for it).
    enabled: [Vec<Step>; 2],
}

/// A rule as a request's walk over a list sees it: what decides whether the rule is
/// visited at all, packed two to a cache line. The walk reads the list, not the rules:
/// CRS has hundreds, most are passed over for what they read or for their group's
/// prefilter answer, and with the caches cold (as the proxy's own work and the kernel
/// leave them) each rule reached into costs a few memory misses.
#[derive(Debug, Clone, Copy)]
struct Step {
    /// Its index in [`Engine::rules`].
    rule: u32,
    /// [`Compiled::order`].
    order: u32,
    /// The slots its head reads whole (a bit per slot, [`Link::reads`]); [`ANY_SLOT`]
    /// when it reads whatever the request holds.
    reads: u32,
    /// The members its head reads by name ([`Engine::names`], a bit each): a rule on
    /// `REQUEST_HEADERS:Content-Type` alone is passed over when there is none.
    names: u64,
    /// Its head's group ([`Link::group`]) when the group's prefilter answer decides
    /// it ([`NONE`] otherwise), and its pattern's place in that answer.
    group: u32,
    prefilter: u32,
    /// [`Fold::Always`].
    always: bool,
}

/// [`Step::reads`] and [`Step::names`] of `link`, its names numbered in `names`
/// (a name past the 64th stands for its whole slot).
fn reach(names: &mut Vec<(usize, String)>, link: &Link) -> (u32, u64) {
    if link.reads.is_none() {
        return (ANY_SLOT, 0);
    }
    let (mut slots, mut named) = (0u32, 0u64);
    for t in &link.targets {
        match (t.source, &t.pick) {
            (Source::Slot(s), Pick::Key(k)) => {
                let bit = match names.iter().position(|(o, n)| (*o, n.as_str()) == (s, k)) {
                    Some(b) => b,
                    None if names.len() < 64 => {
                        names.push((s, k.clone()));
                        names.len() - 1
                    }
                    None => {
                        slots |= 1 << s;
                        continue;
                    }
                };
                named |= 1 << bit;
            }
            (Source::Slot(s), _) => slots |= 1 << s,
            _ => {}
        }
    }
    (slots, named)
}

/// The bit of [`Step::reads`] every request has: no slot holds it (there are fewer
/// than 32).
const ANY_SLOT: u32 = 1 << 31;
const _: () = assert!(request::COLLECTIONS.len() < 31);

/// A compiled rule set.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<Compiled>,
    /// The distinct transformation pipelines; a value goes through each at most once per
    /// request, however many rules read it.
    pipelines: Vec<Vec<Transformation>>,
    /// Per pipeline, every `@rx` pattern read through it in one `RegexSet`: one scan of
    /// a value tells which of those rules can match; only those run their own regex.
    prefilters: Vec<Option<regex::bytes::RegexSet>>,
    /// Every prefilter's patterns in one set, pipeline after pipeline: a value no
    /// pipeline changes (most are short words, and 16 pipelines read each argument) is
    /// scanned once for all of them instead of once per pipeline.
    union: Option<Union>,
    /// Every enabled rule's `@pm` phrases in one automaton ([`Link::phrases`]).
    phrasebook: Option<Phrasebook>,
    /// Marker name to its place among the rules (`order` of the first rule after it).
    markers: HashMap<String, usize>,
    /// Values set before the rules run (as crs-setup.conf's `SecAction`s would).
    presets: Vec<(String, String)>,
    /// The leading rules that read no request (CRS's initialization), run once at load.
    setup: Setup,
    /// How many link groups there are ([`Link::group`]).
    groups: usize,
    /// The most patterns a prefilter answer has (the union's, or the largest set's):
    /// the run of `false` every answer that finds nothing shares ([`Scratch::answer`]).
    widest: usize,
    /// The members rules' heads read by name (slot, name in lower case): a bit each in
    /// [`Step::names`], at most 64.
    names: Vec<(usize, String)>,
    /// Rules disabled for lack of support: id and why.
    pub unsupported: Vec<(u32, String)>,
    rules_dir: std::path::PathBuf,
}

impl Engine {
    /// Loads the request rules of the CRS in `dir` (`REQUEST-*.conf`, in name order),
    /// with `extra` set on `TX` first (e.g. `paranoia_level`), as crs-setup.conf would.
    pub fn load_crs(dir: &Path, extra: &[(&str, &str)]) -> Result<Self, LoadError> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| LoadError {
                file: dir.display().to_string(),
                line: 0,
                message: e.to_string(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("REQUEST-") && n.ends_with(".conf"))
            })
            .collect();
        files.sort();
        // Gatehouse is the CRS's setup (crs-setup.conf's role): the rules check for it.
        let mut presets: Vec<(&str, &str)> = vec![("crs_setup_version", "330")];
        presets.extend_from_slice(extra);
        let mut texts = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).map_err(|e| LoadError {
                file: f.display().to_string(),
                line: 0,
                message: e.to_string(),
            })?;
            texts.push((f.display().to_string(), text));
        }
        Self::load(&texts, dir, &presets)
    }

    /// Compiles rules files (`(name, text)`, in order); `dir` is where `@pmFromFile`
    /// looks.
    pub fn load(
        files: &[(String, String)],
        dir: &Path,
        presets: &[(&str, &str)],
    ) -> Result<Self, LoadError> {
        // Rules of a higher paranoia level than any the presets run are gated off by
        // the rule set itself (CRS's `skipAfter` on `executing_paranoia_level`): leave
        // them out of the prefilters and never visit them.
        let paranoia = presets
            .iter()
            .filter(|(k, _)| {
                let k = k.to_ascii_lowercase();
                k.ends_with("paranoia_level")
            })
            .filter_map(|(_, v)| v.trim().parse::<u8>().ok())
            .max()
            .unwrap_or(1);
        let mut e = Engine {
            rules: Vec::new(),
            pipelines: Vec::new(),
            prefilters: Vec::new(),
            union: None,
            phrasebook: None,
            markers: HashMap::new(),
            presets: presets
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_string()))
                .collect(),
            setup: Setup::default(),
            groups: 0,
            widest: 0,
            names: Vec::new(),
            unsupported: Vec::new(),
            rules_dir: dir.to_path_buf(),
        };
        let mut order = 0;
        for (file, text) in files {
            let err = |line, message| LoadError {
                file: file.clone(),
                line,
                message,
            };
            let directives = seclang::parse(text).map_err(|s| err(s.line, s.message))?;
            let mut pending: Option<Compiled> = None;
            for d in directives {
                match d.kind {
                    DirectiveKind::Rule(r) => {
                        let chained = r.actions.iter().any(|a| a.name == "chain");
                        let link = e.link(&r, dir);
                        // A chained rule extends the rule before it; any other starts one.
                        let mut head = match pending.take() {
                            Some(head) => head,
                            None => {
                                let head =
                                    head_of(&r.actions, order).map_err(|m| err(d.line, m))?;
                                order += 1;
                                head
                            }
                        };
                        match link {
                            Ok(l) => head.links.push(l),
                            Err(why) => {
                                e.unsupported.push((head.id, why));
                                head.disabled = true;
                            }
                        }
                        if chained {
                            pending = Some(head);
                        } else {
                            e.rules.push(head);
                        }
                    }
                    DirectiveKind::Action(actions) => {
                        if let Some(head) = pending.take() {
                            e.rules.push(head);
                        }
                        let mut head = head_of(&actions, order).map_err(|m| err(d.line, m))?;
                        order += 1;
                        let pipeline = e.pipeline(Vec::new());
                        head.links.push(Link {
                            targets: Vec::new(),
                            pipeline,
                            prefilter: None,
                            phrases: None,
                            group: None,
                            op: Op::Ready(Operator::Always),
                            negated: false,
                            capture: false,
                            multi_match: false,
                            setvars: setvars(&actions),
                            reads: None,
                        });
                        e.rules.push(head);
                    }
                    DirectiveKind::Marker(m) => {
                        if let Some(head) = pending.take() {
                            e.rules.push(head);
                        }
                        e.markers.insert(m, order);
                    }
                    DirectiveKind::Other(..) => {}
                }
            }
            if let Some(head) = pending.take() {
                e.rules.push(head);
            }
        }
        for rule in &mut e.rules {
            rule.skip_to = rule
                .skip_after
                .as_ref()
                .and_then(|m| e.markers.get(m).copied());
        }
        let patterns = e.gate(paranoia);
        e.prefilters = patterns
            .iter()
            .map(|list| {
                // A set too large to build leaves its rules to their own regexes.
                (!list.is_empty())
                    .then(|| {
                        regex::bytes::RegexSetBuilder::new(list)
                            .unicode(false)
                            .size_limit(256 << 20)
                            .dfa_size_limit(8 << 20)
                            .build()
                            .ok()
                    })
                    .flatten()
            })
            .collect();
        e.union = Union::of(&patterns, &e.prefilters);
        e.widest = e
            .prefilters
            .iter()
            .flatten()
            .map(regex::bytes::RegexSet::len)
            .chain(e.union.as_ref().map(|u| u.set.len()))
            .max()
            .unwrap_or(0);
        e.phrasebook = e.phrasebook();
        let mut groups: HashMap<String, usize> = HashMap::new();
        for link in e.rules.iter_mut().flat_map(|r| r.links.iter_mut()) {
            if e.prefilters[link.pipeline].is_none() {
                link.prefilter = None;
            }
            let values_only = !link.targets.is_empty()
                && link
                    .targets
                    .iter()
                    .all(|t| matches!(t.source, Source::Slot(_)) && !t.count);
            if values_only {
                let key = format!("{}{:?}", link.pipeline, link.targets);
                let next = groups.len();
                link.group = Some(*groups.entry(key).or_insert(next));
            }
        }
        e.groups = groups.len();
        e.setup = e.run_setup();
        e.ready_macros();
        e.fold();
        Ok(e)
    }

    /// Compiles each macro operator ([`Op::Macro`]) with its argument as the setup
    /// leaves it, for the requests that do not change what it names.
    fn ready_macros(&mut self) {
        let tx = &self.setup.tx;
        for link in self.rules.iter_mut().flat_map(|r| r.links.iter_mut()) {
            if let Op::Macro {
                name,
                template,
                ready,
            } = &mut link.op
            {
                let text = tx.expand(template).into_owned();
                let argument = String::from_utf8_lossy(&text).into_owned();
                *ready = Operator::compile(name, &argument, &self.rules_dir)
                    .ok()
                    .map(|o| Box::new((text, o)));
            }
        }
    }

    /// Decides at load the rules whose outcome no request can change ([`Fold`]) and
    /// lists, per phase, those a request visits.
    fn fold(&mut self) {
        // What a request's rules may write in TX: names, and patterns for names made of
        // macros (`tx.%{rule.id}-OWASP_CRS/...`).
        let resume = self.setup.resume;
        let mut written: std::collections::HashSet<String> =
            (0..10).map(|d| d.to_string()).collect();
        let mut shapes: Vec<regex::Regex> = Vec::new();
        let mut reads_match = false;
        for (i, rule) in self.rules.iter().enumerate() {
            reads_match |= rule.links.first().is_some_and(|l| {
                l.targets
                    .iter()
                    .any(|t| matches!(t.source, Source::MatchedVar | Source::MatchedVarName))
            });
            if rule.disabled || (rule.phase == 1 && i < resume) {
                continue;
            }
            for s in rule.links.iter().flat_map(|l| &l.setvars) {
                if let Some(k) = s.name.literal() {
                    written.insert(k.to_string());
                    continue;
                }
                match regex::Regex::new(&s.name.shape()) {
                    Ok(r) => shapes.push(r),
                    // Unreadable: any name may be written, nothing folds.
                    Err(_) => return self.list(),
                }
            }
        }
        let constant = |t: &Target| match (&t.source, &t.pick) {
            (Source::Tx, Pick::Key(k)) => {
                !written.contains(k) && !shapes.iter().any(|r| r.is_match(k))
            }
            (Source::Empty | Source::Nothing, _) => true,
            _ => false,
        };
        let empty = Collections::default();
        let mut folds = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.disabled || (rule.phase == 1 && i < resume) {
                folds.push(Fold::Run);
                continue;
            }
            // Each link's outcome, if constant.
            let outcome = |link: &Link| -> Option<bool> {
                if link.targets.is_empty()
                    || !matches!(link.op, Op::Ready(_))
                    || !link.targets.iter().all(constant)
                {
                    return None;
                }
                let mut tx = Tx::over(&self.setup.tx);
                let mut scratch =
                    Scratch::new(&empty, self.pipelines.len(), self.groups, self.widest);
                Some(!self.matches(link, &empty, &mut tx, &mut scratch).is_empty())
            };
            let quiet = !rule.log
                && matches!(rule.disruptive, Disruptive::Pass | Disruptive::Block)
                && rule
                    .links
                    .iter()
                    .all(|l| l.setvars.is_empty() && !l.capture);
            folds.push(match rule.links.first().and_then(outcome) {
                // The head fails: nothing of the rule happens.
                Some(false) => Fold::Never,
                // Every link matches and the only effect is the skip (and the last
                // match, which no rule reads from an earlier one here).
                Some(true)
                    if quiet
                        && !reads_match
                        && rule.links[1..].iter().all(|l| outcome(l) == Some(true)) =>
                {
                    Fold::Always
                }
                _ => Fold::Run,
            });
        }
        for (rule, fold) in self.rules.iter_mut().zip(folds) {
            rule.fold = fold;
        }
        self.list();
    }

    /// Fills the setup's per-phase lists of rules to visit.
    fn list(&mut self) {
        for (p, phase) in [1u8, 2].into_iter().enumerate() {
            let enabled = self
                .rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.phase == phase && !r.disabled);
            let mut step = |(i, r): (usize, &Compiled)| {
                let head = r.links.first();
                let (reads, names) = head.map_or((ANY_SLOT, 0), |l| reach(&mut self.names, l));
                let decided = head.and_then(|l| {
                    let ready = matches!(l.op, Op::Ready(_));
                    (ready && !l.negated && !l.multi_match)
                        .then(|| l.group.zip(l.prefilter))
                        .flatten()
                });
                Step {
                    rule: i as u32,
                    order: r.order as u32,
                    reads,
                    names,
                    group: decided.map_or(NONE, |(g, _)| g as u32),
                    prefilter: decided.map_or(0, |(_, k)| k as u32),
                    always: r.fold == Fold::Always,
                }
            };
            let enabled: Vec<_> = enabled.map(&mut step).collect();
            self.setup.live[p] = enabled
                .iter()
                .filter(|s| self.rules[s.rule as usize].fold != Fold::Never)
                .copied()
                .collect();
            self.setup.enabled[p] = enabled;
        }
    }

    /// Runs the phase 1 rules from the start while they read nothing of the request
    /// (only `TX` and the last match), report nothing and stop nothing: what every
    /// request would compute the same.
    fn run_setup(&self) -> Setup {
        let mut tx = Tx::default();
        for (k, v) in &self.presets {
            tx.set(Cow::Borrowed(k), v.as_bytes());
        }
        let empty = Collections::default();
        let mut scratch = Scratch::new(&empty, self.pipelines.len(), self.groups, self.widest);
        let mut verdict = Verdict::default();
        let mut skip_to = None;
        let mut resume = self.rules.len();
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.phase != 1 {
                continue;
            }
            if let Some(to) = skip_to {
                if rule.order < to {
                    continue;
                }
                skip_to = None;
            }
            if rule.disabled {
                continue;
            }
            let independent = rule.links.iter().all(|l| {
                l.targets.iter().all(|t| {
                    matches!(
                        t.source,
                        Source::Tx
                            | Source::MatchedVar
                            | Source::MatchedVarName
                            | Source::Empty
                            | Source::Nothing
                    )
                })
            });
            if !independent {
                resume = i;
                break;
            }
            // One that would be reported or stop the request is left to each request.
            let quiet = !rule.log && rule.disruptive == Disruptive::Pass;
            let before = (!quiet).then(|| tx.clone());
            if !self.run(rule, &empty, &mut tx, &mut scratch, &mut verdict) {
                continue;
            }
            if let Some(before) = before {
                tx = before;
                resume = i;
                break;
            }
            // Nothing is pending here (the rule ran): its own marker, if any, is next.
            skip_to = rule.skip_to;
        }
        Setup {
            tx,
            resume,
            skip_to,
            ..Setup::default()
        }
    }

    /// Disables the rules tagged `paranoia-level/N` above `level`; the distinct `@rx`
    /// patterns of the others that match no [`COMMON`] value, per pipeline (each link
    /// told its place), for the prefilters.
    fn gate(&mut self, level: u8) -> Vec<Vec<String>> {
        let mut patterns = vec![Vec::new(); self.pipelines.len()];
        for rule in &mut self.rules {
            let above = rule.tags.iter().any(|t| {
                t.strip_prefix("paranoia-level/")
                    .and_then(|n| n.parse::<u8>().ok())
                    .is_some_and(|n| n > level)
            });
            if above {
                rule.disabled = true;
            }
            for link in &mut rule.links {
                link.prefilter = None;
                if rule.disabled {
                    continue;
                }
                if let Op::Ready(Operator::Rx(re)) = &link.op
                    && !COMMON.iter().any(|v| re.is_match(v.as_bytes()))
                {
                    let list: &mut Vec<String> = &mut patterns[link.pipeline];
                    // The same pattern in several rules is scanned for once.
                    let at = match list.iter().position(|p| p == re.as_str()) {
                        Some(at) => at,
                        None => {
                            list.push(re.as_str().to_string());
                            list.len() - 1
                        }
                    };
                    link.prefilter = Some(at);
                }
            }
        }
        patterns
    }

    /// The phrase lists of the enabled rules' `@pm` links in one book, each link told
    /// its list's number.
    fn phrasebook(&mut self) -> Option<Phrasebook> {
        let mut lists: Vec<&[String]> = Vec::new();
        let mut owners: Vec<(usize, usize)> = Vec::new();
        for (r, rule) in self.rules.iter().enumerate().filter(|(_, r)| !r.disabled) {
            for (l, link) in rule.links.iter().enumerate() {
                if let Op::Ready(op) = &link.op
                    && let Some(phrases) = op.phrases()
                {
                    lists.push(phrases);
                    owners.push((r, l));
                }
            }
        }
        let book = Phrasebook::of(lists)?;
        for (k, (r, l)) in owners.into_iter().enumerate() {
            self.rules[r].links[l].phrases = Some(k);
        }
        Some(book)
    }

    /// The index of pipeline `transforms`, added if new.
    fn pipeline(&mut self, transforms: Vec<Transformation>) -> usize {
        if let Some(i) = self.pipelines.iter().position(|p| *p == transforms) {
            return i;
        }
        self.pipelines.push(transforms);
        self.pipelines.len() - 1
    }

    /// Compiles one rule of a chain.
    fn link(&mut self, r: &Rule, dir: &Path) -> Result<Link, String> {
        let mut targets: Vec<Target> = Vec::new();
        for v in &r.variables {
            let pick = Pick::of(&v.selector)?;
            if v.exclude {
                if let Some(t) = targets
                    .iter_mut()
                    .rev()
                    .find(|t| t.collection == v.collection)
                {
                    t.excluded.push(pick);
                }
                continue;
            }
            targets.push(Target {
                keyed: match &pick {
                    Pick::Key(k) => Some(format!("{}:{k}", v.collection)),
                    _ => None,
                },
                collection: v.collection.clone(),
                source: Source::of(&v.collection),
                pick,
                count: v.count,
                excluded: Vec::new(),
            });
        }
        let mut transforms = Vec::new();
        for a in r.actions.iter().filter(|a| a.name == "t") {
            match Transformation::parse(a.value.as_deref().unwrap_or(""))? {
                Some(t) => transforms.push(t),
                None => transforms.clear(),
            }
        }
        let o = &r.operator;
        let op = if o.argument.contains("%{") {
            Op::Macro {
                name: o.name.clone(),
                template: Template::parse(&o.argument),
                ready: None,
            }
        } else {
            Op::Ready(Operator::compile(&o.name, &o.argument, dir)?)
        };
        Ok(Link {
            reads: Link::reads(&targets),
            targets,
            pipeline: self.pipeline(transforms),
            prefilter: None,
            phrases: None,
            group: None,
            op,
            negated: o.negated,
            capture: r.actions.iter().any(|a| a.name == "capture"),
            multi_match: r.actions.iter().any(|a| a.name == "multiMatch"),
            setvars: setvars(&r.actions),
        })
    }

    /// Runs the rules over `c`.
    pub fn inspect(&self, c: &Collections) -> Verdict {
        self.inspect_except(c, &RuleFilter::default())
    }

    /// Runs the rules over `c` but those `skip` names.
    pub fn inspect_except(&self, c: &Collections, skip: &RuleFilter) -> Verdict {
        // The setup computed at load stands unless a rule of it is left out: the
        // request's TX is laid over it, not copied from it.
        let setup = &self.setup;
        // Folded: starting from the setup, where what was decided at load holds.
        let (mut tx, start, mut pending, folded) = if skip.is_empty()
            || !self.rules[..setup.resume]
                .iter()
                .any(|r| skip.skips(r.id, &r.tags))
        {
            (Tx::over(&setup.tx), setup.resume, setup.skip_to, true)
        } else {
            let mut tx = Tx::default();
            for (k, v) in &self.presets {
                tx.set(Cow::Borrowed(k), v.as_bytes());
            }
            (tx, 0, None, false)
        };
        let lists = if folded { &setup.live } else { &setup.enabled };
        tx.request = Some(c);
        let mut scratch = Scratch::new(c, self.pipelines.len(), self.groups, self.widest);
        let mut verdict = Verdict::default();
        let filled = c.filled();
        let present = self.present(c);
        'phases: for (p, list) in lists.iter().enumerate() {
            let mut skip_to: Option<usize> = pending.take();
            let from = if p == 0 { start } else { 0 };
            let list = &list[list.partition_point(|s| (s.rule as usize) < from)..];
            for step in list {
                if let Some(to) = skip_to {
                    if (step.order as usize) < to {
                        continue;
                    }
                    skip_to = None;
                }
                // Decided from the step alone where it can be: the rule is not read.
                if !step.always
                    && step.reads & (filled | ANY_SLOT) == 0
                    && step.names & present == 0
                {
                    continue;
                }
                if step.group != NONE
                    && let at = scratch.groups[step.group as usize]
                    && at != NONE
                    && !scratch.bits[at as usize + step.prefilter as usize]
                {
                    continue;
                }
                let rule = &self.rules[step.rule as usize];
                if !skip.is_empty() && skip.skips(rule.id, &rule.tags) {
                    continue;
                }
                if folded && step.always {
                    skip_to = rule.skip_to;
                    continue;
                }
                if !self.run(rule, c, &mut tx, &mut scratch, &mut verdict) {
                    continue;
                }
                match rule.disruptive {
                    Disruptive::Deny => {
                        verdict.denied = true;
                        break 'phases;
                    }
                    Disruptive::Allow => break 'phases,
                    Disruptive::Pass | Disruptive::Block => {}
                }
                // Nothing is pending here (the rule ran): its own marker, if any, is next.
                skip_to = rule.skip_to;
            }
        }
        // CRS 4 keeps the inbound score it blocks on apart; CRS 3 in anomaly_score.
        verdict.anomaly_score = match tx.get("blocking_inbound_anomaly_score").is_some() {
            true => tx.int("blocking_inbound_anomaly_score"),
            false => tx.int("anomaly_score"),
        };
        verdict
    }

    /// A bit per member of [`Engine::names`] `c` holds (a value without a name, as
    /// `REQUEST_URI`'s, is read whatever name is asked for: it counts too).
    fn present(&self, c: &Collections) -> u64 {
        let mut bits = 0;
        for (bit, (slot, name)) in self.names.iter().enumerate() {
            let held = |i: &request::Item| i.name.is_empty() || i.name.eq_ignore_ascii_case(name);
            if c.at(*slot).iter().any(held) {
                bits |= 1 << bit;
            }
        }
        bits
    }

    /// Runs one rule; whether it matched (its actions then done).
    fn run<'c>(
        &self,
        rule: &Compiled,
        c: &'c Collections,
        tx: &mut Tx,
        scratch: &mut Scratch<'c>,
        verdict: &mut Verdict,
    ) -> bool {
        let mut first: Option<(String, Vec<u8>)> = None;
        let report = rule.log;
        for (i, link) in rule.links.iter().enumerate() {
            let matches = self.matches(link, c, tx, scratch);
            if matches.is_empty() {
                return false;
            }
            if i == 0 && report {
                first = matches
                    .first()
                    .map(|(n, m)| (n.to_string(), m.data.clone()));
            }
            // As ModSecurity: a link's `setvar`s run once per matching value as soon as
            // it matches, whatever the rest of the chain does (CRS 920440 sets
            // `tx.extension` in the chain's head for its second link to test).
            for (name, m) in &matches {
                if link.capture {
                    tx.capture(m);
                }
                tx.matched(name, &m.value);
                for s in &link.setvars {
                    tx.apply(s);
                }
            }
        }
        if !rule.log {
            return true;
        }
        let (target, mut data) = first.unwrap_or_default();
        data.truncate(64);
        verdict.hits.push(Hit {
            id: rule.id,
            msg: rule
                .msg
                .as_ref()
                .map(|m| String::from_utf8_lossy(&tx.expand(m)).into_owned())
                .unwrap_or_default(),
            tags: rule.tags.clone(),
            target,
            data,
        });
        true
    }

    /// The (name, matched data) of each value of `link`'s targets its operator accepts.
    fn matches<'e, 'c>(
        &'e self,
        link: &'e Link,
        c: &'c Collections,
        tx: &mut Tx,
        scratch: &mut Scratch<'c>,
    ) -> Vec<(Cow<'e, str>, Matched)> {
        let dynamic;
        let op = match &link.op {
            Op::Ready(o) => o,
            Op::Macro {
                name,
                template,
                ready,
            } => {
                let argument = tx.expand(template);
                match ready.as_deref() {
                    Some((text, o)) if *text == *argument => o,
                    _ => {
                        let argument = String::from_utf8_lossy(&argument).into_owned();
                        match Operator::compile(name, &argument, &self.rules_dir) {
                            Ok(o) => {
                                dynamic = o;
                                &dynamic
                            }
                            Err(_) => return Vec::new(),
                        }
                    }
                }
            }
        };
        if let (Some(g), Some(k), Some(set)) =
            (link.group, link.prefilter, &self.prefilters[link.pipeline])
            && !link.negated
            && !link.multi_match
            && !self.group_may_match(link, g, k, set, c, scratch)
        {
            return Vec::new();
        }
        let mut out: Vec<(Cow<'e, str>, Matched)> = Vec::new();
        if link.targets.is_empty() {
            // SecAction: one match, unconditionally.
            out.push((
                Cow::Borrowed(""),
                Matched {
                    data: Vec::new(),
                    value: Vec::new(),
                    groups: Vec::new(),
                },
            ));
        }
        // Named only once matched: most values are not.
        let full = |t: &'e Target, name: &str| -> Cow<'e, str> {
            if name.is_empty() {
                Cow::Borrowed(&t.collection)
            } else if let Some(k) = t
                .keyed
                .as_deref()
                .filter(|k| k.get(t.collection.len() + 1..) == Some(name))
            {
                Cow::Borrowed(k)
            } else {
                // Without `format!`: its machinery costs more than the copy.
                let mut full = String::with_capacity(t.collection.len() + 1 + name.len());
                full.push_str(&t.collection);
                full.push(':');
                full.push_str(name);
                Cow::Owned(full)
            }
        };
        for t in &link.targets {
            let keep = |name: &str| t.keeps(name);
            if t.count {
                let count = match t.source {
                    Source::Tx => match &t.pick {
                        Pick::Key(k) => usize::from(tx.get(k).is_some()),
                        _ => tx.iter_where(keep).count(),
                    },
                    Source::Slot(i) => c
                        .at(i)
                        .iter()
                        .filter(|i| i.name.is_empty() || keep(&i.name))
                        .count(),
                    _ => 0,
                };
                let mut digits = [0u8; 20];
                let count = decimal(count as u64, &mut digits);
                if let Some(data) = self.test_now(link, op, count) {
                    out.push((full(t, ""), data));
                }
                continue;
            }
            match t.source {
                Source::Slot(slot) => {
                    for (at, i) in c.at(slot).iter().enumerate() {
                        if !(i.name.is_empty() || keep(&i.name)) {
                            continue;
                        }
                        if link.multi_match {
                            for data in self.test_stages(link, op, &i.value) {
                                out.push((full(t, &i.name), data));
                            }
                        } else if let Some(data) =
                            self.test_cached(link, op, (slot, at), &i.value, scratch)
                        {
                            out.push((full(t, &i.name), data));
                        }
                    }
                }
                Source::Tx => {
                    // One variable by name: looked up, not searched for.
                    if let Pick::Key(k) = &t.pick {
                        if let Some(v) = tx.get(k)
                            && let Some(data) = self.test_now(link, op, v)
                        {
                            out.push((full(t, k), data));
                        }
                        continue;
                    }
                    for (k, v) in tx.iter_where(keep) {
                        if let Some(data) = self.test_now(link, op, v) {
                            out.push((full(t, k), data));
                        }
                    }
                }
                source => {
                    let value: &[u8] = match source {
                        Source::MatchedVar => &tx.matched_var,
                        Source::MatchedVarName => tx.matched_name.as_bytes(),
                        Source::ReqbodyError if c.body_error.is_some() => b"1",
                        Source::ReqbodyError => b"0",
                        Source::Empty => b"",
                        _ => continue,
                    };
                    if let Some(data) = self.test_now(link, op, value) {
                        out.push((full(t, ""), data));
                    }
                }
            }
        }
        if link.capture {
            // TX.0 is the match, TX.1-9 its groups (as ModSecurity's `capture`), taken
            // from each matching value for its own `setvar`s.
            for (_, m) in &mut out {
                m.groups = op.captures(&m.value);
            }
        }
        out
    }

    /// `value` tested as `multiMatch` does: as it is, then after each transformation
    /// that changes it; what matched at each stage.
    fn test_stages(&self, link: &Link, op: &Operator, value: &[u8]) -> Vec<Matched> {
        let mut out = Vec::new();
        let mut v: Cow<'_, [u8]> = Cow::Borrowed(value);
        out.extend(decide(op.test(&v).map(|f| f.0), link.negated, &v));
        for tr in &self.pipelines[link.pipeline] {
            let next = tr.apply(&v).into_owned();
            if next != *v {
                out.extend(decide(op.test(&next).map(|f| f.0), link.negated, &next));
                v = Cow::Owned(next);
            }
        }
        out
    }

    /// `value` through `link`'s pipeline and operator: what matched, if it did.
    fn test_now(&self, link: &Link, op: &Operator, value: &[u8]) -> Option<Matched> {
        let v = transformed(&self.pipelines[link.pipeline], value, None);
        decide(op.test(&v).map(|f| f.0), link.negated, &v)
    }

    /// As [`Self::test_now`] for a value of the request: transformed once per pipeline,
    /// scanned once by the pipeline's prefilter, kept in `scratch` for the next rule.
    fn test_cached<'c>(
        &self,
        link: &Link,
        op: &Operator,
        (slot, i): (usize, usize),
        value: &'c [u8],
        scratch: &mut Scratch<'c>,
    ) -> Option<Matched> {
        let e = scratch.entry(&self.pipelines, slot, i, value, link.pipeline);
        if let (Some(k), Some(set)) = (link.prefilter, &self.prefilters[link.pipeline]) {
            let at = scratch.scan(e, link.pipeline, set, self.union.as_ref());
            if !scratch.bits[at + k] {
                return decide(None, link.negated, &scratch.seen[e].value);
            }
        }
        if let (Some(k), Some(book)) = (link.phrases, &self.phrasebook)
            && let at = scratch.phrases(e, book)
            && !scratch.phrase_bits[at + k]
        {
            return decide(None, link.negated, &scratch.seen[e].value);
        }
        let v = &scratch.seen[e].value;
        decide(op.test(v).map(|f| f.0), link.negated, v)
    }

    /// Whether the prefilter of `link` (one of group `g`) finds its pattern in any of
    /// the group's values: the union of their answers, joined once per request.
    fn group_may_match<'c>(
        &self,
        link: &Link,
        g: usize,
        k: usize,
        set: &regex::bytes::RegexSet,
        c: &'c Collections,
        scratch: &mut Scratch<'c>,
    ) -> bool {
        if scratch.groups[g] == NONE {
            let union = scratch.bits.len();
            scratch.bits.resize(union + set.len(), false);
            for t in &link.targets {
                let Source::Slot(slot) = t.source else {
                    continue;
                };
                for (i, item) in c.at(slot).iter().enumerate() {
                    if !(item.name.is_empty() || t.keeps(&item.name)) {
                        continue;
                    }
                    let e = scratch.entry(&self.pipelines, slot, i, &item.value, link.pipeline);
                    let at = scratch.scan(e, link.pipeline, set, self.union.as_ref());
                    if at < self.widest {
                        // The shared empty answer: nothing to add.
                        continue;
                    }
                    // The value's answer was scanned before the union was made or after.
                    let (low, high) = scratch.bits.split_at_mut(at.max(union));
                    let (into, from) = match at < union {
                        true => (&mut high[..set.len()], &low[at..at + set.len()]),
                        false => (&mut low[union..union + set.len()], &high[..set.len()]),
                    };
                    for (u, b) in into.iter_mut().zip(from) {
                        *u |= *b;
                    }
                }
            }
            scratch.groups[g] = union as u32;
        }
        scratch.bits[scratch.groups[g] as usize + k]
    }
}

/// Everyday values: a pattern that matches one of them (`^.*$`, `(..)$`, `^[^;\s]+`,
/// mostly chain links that capture or negated rules that check a format) would make its
/// pipeline's prefilter match every value and run the slow overlapping scan that names
/// the patterns; such a pattern is left out of the prefilter and tested on its own.
const COMMON: [&str; 12] = [
    "",
    "a",
    "0",
    "abc",
    "red shoes",
    "/shop/search",
    "shop.example",
    "text/html,application/json",
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "session=3f2a9c1e7b; theme=dark",
    "GET /shop/search?q=red+shoes HTTP/1.1",
    "host",
];

/// A value after a pipeline; with its [`Traits`] known, the steps they say keep it are
/// not run while it is unchanged.
fn transformed<'a>(
    pipeline: &[Transformation],
    value: &'a [u8],
    traits: Option<Traits>,
) -> Cow<'a, [u8]> {
    let mut v: Cow<'a, [u8]> = Cow::Borrowed(value);
    for tr in pipeline {
        v = match v {
            Cow::Borrowed(b) if traits.is_some_and(|t| tr.keeps(t)) => Cow::Borrowed(b),
            Cow::Borrowed(b) => tr.apply(b),
            // A transformation that changes nothing hands the value back: not copied.
            Cow::Owned(o) => match tr.apply(&o) {
                Cow::Owned(n) => Cow::Owned(n),
                Cow::Borrowed(_) => Cow::Owned(o),
            },
        };
    }
    v
}

/// What an operator's outcome matched, `negated` (`!@rx`) taken into account: a
/// negated operator that does not match matches the whole value.
fn decide(found: Option<Vec<u8>>, negated: bool, value: &[u8]) -> Option<Matched> {
    let data = match (found, negated) {
        (Some(f), false) => f,
        (None, true) => value.to_vec(),
        _ => return None,
    };
    Some(Matched {
        data,
        value: value.to_vec(),
        groups: Vec::new(),
    })
}

/// A value an operator accepted.
struct Matched {
    /// What matched in it (the whole value for a negated operator).
    data: Vec<u8>,
    /// The value as the operator saw it (transformed): `MATCHED_VAR`, as ModSecurity
    /// sets it for the chain's next link.
    value: Vec<u8>,
    /// A capturing rule's groups in it (`TX.0` the whole match).
    groups: Vec<Vec<u8>>,
}

/// `n` in decimal, written into `buf` (no allocation: counts are made per rule).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// `n` in decimal with its sign, written into `buf`.
fn signed_decimal(n: i64, buf: &mut [u8; 21]) -> &[u8] {
    let mut digits = [0u8; 20];
    let d = decimal(n.unsigned_abs(), &mut digits);
    let sign = usize::from(n < 0);
    buf[0] = b'-';
    buf[sign..sign + d.len()].copy_from_slice(d);
    &buf[..sign + d.len()]
}

/// No entry (in [`Scratch`]'s lists).
const NONE: u32 = u32::MAX;

/// [`Scratch::unchanged`] of a value one pipeline has scanned unchanged.
const ONCE: u32 = u32::MAX - 1;

/// One request's work kept across rules: each (value, pipeline) transformed and
/// prefiltered once; each group's prefilter answers over all its values joined once.
/// Values are numbered per request (slot by slot), so nothing is hashed.
struct Scratch<'c> {
    /// Where each slot's members start in the request's numbering.
    offsets: [usize; request::COLLECTIONS.len()],
    /// Per value and pipeline, its entry in `seen`.
    table: Vec<u32>,
    /// Per value, its traits, once a pipeline needed them.
    traits: Vec<Option<Traits>>,
    /// The phrasebook's answers, one run of flags per value read ([`Scratch::phrases`]).
    phrase_bits: Vec<bool>,
    /// Per value, where the phrasebook's answer over it as it came starts in
    /// `phrase_bits`.
    phrased: Vec<u32>,
    /// Per value, where [`Engine::union`]'s answer over it as it came starts in `bits`
    /// (`ONCE` while one pipeline only has scanned it unchanged).
    unchanged: Vec<u32>,
    pipelines: usize,
    seen: Vec<Seen<'c>>,
    /// The prefilter's answers (one allocation): the empty answer all values that
    /// match nothing share, then a run of bits per value that matched or group.
    bits: Vec<bool>,
    /// Per group ([`Link::group`]), where the union of its values' answers starts in
    /// `bits`.
    groups: Vec<u32>,
}

/// All the prefilters' patterns in one set ([`Engine::union`]).
#[derive(Debug)]
struct Union {
    set: regex::bytes::RegexSet,
    /// Per pipeline, where its prefilter's patterns start in `set`.
    starts: Vec<usize>,
}

impl Union {
    /// The union of the pipelines' prefilter `patterns`, those whose set was built;
    /// `None` when it cannot be built (each pipeline then scans with its own).
    fn of(patterns: &[Vec<String>], built: &[Option<regex::bytes::RegexSet>]) -> Option<Self> {
        let mut all: Vec<&str> = Vec::new();
        let mut starts = Vec::with_capacity(patterns.len());
        for (list, set) in patterns.iter().zip(built) {
            starts.push(all.len());
            if set.is_some() {
                all.extend(list.iter().map(String::as_str));
            }
        }
        let set = regex::bytes::RegexSetBuilder::new(all)
            .unicode(false)
            .size_limit(256 << 20)
            .dfa_size_limit(8 << 20)
            .build()
            .ok()?;
        Some(Union { set, starts })
    }
}

/// A request value after one pipeline.
struct Seen<'c> {
    value: Cow<'c, [u8]>,
    /// The value's number in the request when the pipeline left it as it was.
    unchanged: Option<u32>,
    /// Where its pipeline's prefilter answer over it starts in [`Scratch::bits`],
    /// once a rule asked.
    scanned: u32,
    /// Where the phrasebook's answer over it starts in [`Scratch::phrase_bits`], once
    /// a phrase rule asked.
    phrased: u32,
}

impl<'c> Scratch<'c> {
    fn new(c: &Collections, pipelines: usize, groups: usize, widest: usize) -> Self {
        let mut offsets = [0; request::COLLECTIONS.len()];
        let mut total = 0;
        for (slot, at) in offsets.iter_mut().enumerate() {
            *at = total;
            total += c.at(slot).len();
        }
        Scratch {
            offsets,
            table: vec![NONE; total * pipelines],
            traits: vec![None; total],
            unchanged: vec![NONE; total],
            phrase_bits: Vec::new(),
            phrased: vec![NONE; total],
            pipelines,
            // Sized for what a request takes (measured: eight pipelines a value on a JSON
            // POST, some forty prefilter answers): growing them was a tenth of its cost.
            seen: Vec::with_capacity(total * 10),
            bits: {
                let mut bits = Vec::with_capacity(widest + total * 100);
                bits.resize(widest, false);
                bits
            },
            groups: vec![NONE; groups],
        }
    }

    /// The entry of member `i` of `slot` (`value`) after pipeline `p`, made on first
    /// use.
    fn entry(
        &mut self,
        pipelines: &[Vec<Transformation>],
        slot: usize,
        i: usize,
        value: &'c [u8],
        p: usize,
    ) -> usize {
        let n = self.offsets[slot] + i;
        let at = &mut self.table[n * self.pipelines + p];
        if *at == NONE {
            *at = self.seen.len() as u32;
            let traits = *self.traits[n].get_or_insert_with(|| Traits::of(value));
            let value = transformed(&pipelines[p], value, Some(traits));
            self.seen.push(Seen {
                unchanged: matches!(value, Cow::Borrowed(_)).then_some(n as u32),
                value,
                scanned: NONE,
                phrased: NONE,
            });
        }
        *at as usize
    }

    /// Where the answer of pipeline `p`'s prefilter `set` over entry `e` starts in
    /// `bits`, scanned on first use (with `union`'s, when `p` left the value as it was).
    fn scan(
        &mut self,
        e: usize,
        p: usize,
        set: &regex::bytes::RegexSet,
        union: Option<&Union>,
    ) -> usize {
        if self.seen[e].scanned != NONE {
            return self.seen[e].scanned as usize;
        }
        if let (Some(n), Some(u)) = (self.seen[e].unchanged, union) {
            // A value one pipeline reads is scanned with that pipeline's set; one a
            // second reads unchanged too, with the union (for them all).
            let n = n as usize;
            match self.unchanged[n] {
                NONE => self.unchanged[n] = ONCE,
                ONCE => {
                    let at = Self::answer(&mut self.bits, &u.set, &self.seen[e].value);
                    self.unchanged[n] = at;
                    return at as usize + u.starts[p];
                }
                at => return at as usize + u.starts[p],
            }
        }
        self.seen[e].scanned = Self::answer(&mut self.bits, set, &self.seen[e].value);
        self.seen[e].scanned as usize
    }

    /// Where the phrasebook's answer over entry `e` starts in `phrase_bits`, read on
    /// first use (once for all the pipelines that leave the value as it came).
    fn phrases(&mut self, e: usize, book: &Phrasebook) -> usize {
        let seen = &mut self.seen[e];
        let state = match seen.unchanged {
            Some(n) => &mut self.phrased[n as usize],
            None => &mut seen.phrased,
        };
        if *state == NONE {
            let at = self.phrase_bits.len();
            *state = at as u32;
            self.phrase_bits.resize(at + book.lists(), false);
            book.read(&seen.value, &mut self.phrase_bits[at..]);
        }
        *state as usize
    }

    /// `set`'s answer over `value`: where it starts in `bits`, appended there when a
    /// pattern matched; otherwise 0, the run of `false` at the start of `bits` that
    /// every empty answer shares ([`Engine::widest`] long).
    fn answer(bits: &mut Vec<bool>, set: &regex::bytes::RegexSet, value: &[u8]) -> u32 {
        // Most values match none: a plain search says so faster than the overlapping
        // one that names which, and nothing is written for them.
        if !set.is_match(value) {
            return 0;
        }
        let at = bits.len();
        bits.resize(at + set.len(), false);
        set.matches_read_at(&mut bits[at..], value, 0);
        at as u32
    }
}

/// The head of a rule: id, phase, disruptive action, markers, message and tags.
fn head_of(actions: &[Action], order: usize) -> Result<Compiled, String> {
    let id = seclang::action_value(actions, "id")
        .ok_or("a rule without an id")?
        .parse::<u32>()
        .map_err(|_| "the id is not a number".to_string())?;
    let phase = match seclang::action_value(actions, "phase") {
        None | Some("2") | Some("request") => 2,
        Some("1") => 1,
        Some(_) => 5,
    };
    let disruptive = actions
        .iter()
        .rev()
        .find_map(|a| match a.name.as_str() {
            "deny" | "drop" => Some(Disruptive::Deny),
            "block" => Some(Disruptive::Block),
            "allow" => Some(Disruptive::Allow),
            "pass" => Some(Disruptive::Pass),
            _ => None,
        })
        .unwrap_or(Disruptive::Pass);
    Ok(Compiled {
        id,
        phase,
        links: Vec::new(),
        disruptive,
        skip_after: seclang::action_value(actions, "skipAfter").map(str::to_string),
        skip_to: None,
        msg: seclang::action_value(actions, "msg").map(Template::parse),
        tags: actions
            .iter()
            .filter(|a| a.name == "tag")
            .filter_map(|a| a.value.clone())
            .collect(),
        log: !actions.iter().any(|a| a.name == "nolog"),
        disabled: false,
        fold: Fold::Run,
        order,
    })
}

/// A rule's `setvar`s on `TX` (others name persistent collections, not run).
fn setvars(actions: &[Action]) -> Vec<SetVar> {
    actions
        .iter()
        .filter(|a| a.name == "setvar")
        .filter_map(|a| {
            let v = a.value.as_deref()?;
            let tx = |name: &str| {
                let name = name.trim().to_ascii_lowercase();
                name.strip_prefix("tx.").map(Template::parse)
            };
            if let Some(name) = v.strip_prefix('!') {
                return Some(SetVar {
                    op: SetOp::Delete,
                    name: tx(name)?,
                    value: Template::parse(""),
                });
            }
            let (name, value) = v.split_once('=').unwrap_or((v, "1"));
            let (op, value) = match (value.strip_prefix('+'), value.strip_prefix('-')) {
                (Some(n), _) => (SetOp::Add, n),
                (_, Some(n)) => (SetOp::Sub, n),
                _ => (SetOp::Set, value),
            };
            Some(SetVar {
                op,
                name: tx(name)?,
                value: Template::parse(value),
            })
        })
        .collect()
}

/// `TX` variables by name; `None` where a request deleted one its base has.
type Vars = HashMap<String, Option<Vec<u8>>, ahash::RandomState>;

/// The transaction's state: `TX`, and the last match. A request's `TX` is its own
/// changes laid over the setup's (read through, never copied: CRS sets about a hundred
/// variables before it reads the request).
#[derive(Debug, Default, Clone)]
struct Tx<'b> {
    base: Option<&'b Vars>,
    own: Vars,
    /// The request, for macros that name its collections (`%{request_headers.host}`).
    request: Option<&'b Collections>,
    matched_var: Vec<u8>,
    matched_name: String,
    /// Where `setvar` values are expanded (kept: most requests set dozens).
    buffer: Vec<u8>,
}

impl<'b> Tx<'b> {
    /// A transaction starting from `setup`'s state.
    fn over(setup: &'b Tx<'_>) -> Self {
        debug_assert!(setup.base.is_none(), "a setup stands alone");
        Tx {
            base: Some(&setup.own),
            own: Vars::default(),
            request: None,
            matched_var: setup.matched_var.clone(),
            matched_name: setup.matched_name.clone(),
            buffer: Vec::new(),
        }
    }

    /// `TX:name`, if set.
    fn get(&self, name: &str) -> Option<&[u8]> {
        match self.own.get(name) {
            Some(v) => v.as_deref(),
            None => self.base?.get(name)?.as_deref(),
        }
    }

    /// Every variable set whose name `keep` takes, with its value.
    fn iter_where<'s>(
        &'s self,
        keep: impl Fn(&str) -> bool + Copy + 's,
    ) -> impl Iterator<Item = (&'s str, &'s [u8])> {
        let own = self.own.iter();
        let base = self.base.into_iter().flat_map(|b| b.iter());
        own.filter(move |(k, _)| keep(k))
            .filter_map(|(k, v)| Some((k.as_str(), v.as_deref()?)))
            .chain(base.filter_map(move |(k, v)| {
                // The name first: it rules out most without a lookup in `own`.
                (keep(k) && !self.own.contains_key(k)).then_some((k.as_str(), v.as_deref()?))
            }))
    }

    fn int(&self, name: &str) -> i64 {
        self.get(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `TX.0` to `TX.9` from a capturing rule's match: its groups, or what matched.
    fn capture(&mut self, m: &Matched) {
        if m.groups.is_empty() {
            self.set(Cow::Borrowed("0"), &m.data);
        }
        const NAMES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
        for (name, g) in NAMES.iter().zip(&m.groups) {
            self.set(Cow::Borrowed(name), g);
        }
    }

    fn matched(&mut self, name: &str, value: &[u8]) {
        self.matched_var.clear();
        self.matched_var.extend_from_slice(value);
        self.matched_name.clear();
        self.matched_name.push_str(name);
    }

    /// Sets `TX:k` (its buffers reused when it exists).
    fn set(&mut self, k: Cow<'_, str>, v: &[u8]) {
        match self.own.get_mut(k.as_ref()) {
            Some(Some(old)) => {
                old.clear();
                old.extend_from_slice(v);
            }
            Some(gone) => *gone = Some(v.to_vec()),
            None => {
                self.own.insert(k.into_owned(), Some(v.to_vec()));
            }
        }
    }

    fn apply(&mut self, s: &SetVar) {
        let name: Cow<'_, str> = match s.name.literal() {
            Some(k) => Cow::Borrowed(k),
            None => Cow::Owned(String::from_utf8_lossy(&self.expand(&s.name)).to_ascii_lowercase()),
        };
        match s.op {
            SetOp::Set => {
                // Expanded into a buffer kept across setvars: no allocation per value.
                let mut value = std::mem::take(&mut self.buffer);
                value.clear();
                self.expand_into(&s.value, &mut value);
                self.set(name, &value);
                self.buffer = value;
            }
            SetOp::Add | SetOp::Sub => {
                let by: i64 = std::str::from_utf8(&self.expand(&s.value))
                    .ok()
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0);
                let cur = self.int(&name);
                let next = match s.op {
                    SetOp::Add => cur.saturating_add(by),
                    _ => cur.saturating_sub(by),
                };
                let mut digits = [0u8; 21];
                let text = signed_decimal(next, &mut digits);
                self.set(name, text);
            }
            SetOp::Delete => match self.base.is_some_and(|b| b.contains_key(name.as_ref())) {
                true => {
                    self.own.insert(name.into_owned(), None);
                }
                false => {
                    self.own.remove(name.as_ref());
                }
            },
        }
    }

    /// What a macro part stands for now.
    fn part<'s>(&'s self, p: &'s Part) -> &'s [u8] {
        match p {
            Part::Text(t) => t.as_bytes(),
            Part::Tx(k) => self.get(k).unwrap_or_default(),
            Part::MatchedVar => &self.matched_var,
            Part::MatchedVarName => self.matched_name.as_bytes(),
            Part::Request { slot, key } => self.request.map_or(&[], |c| {
                c.at(*slot)
                    .iter()
                    .find(|i| key.is_empty() || i.name.eq_ignore_ascii_case(key))
                    .map_or(&[], |i| &i.value)
            }),
            Part::Nothing => &[],
        }
    }

    /// `t` with its macros expanded: `%{tx.x}`, `%{MATCHED_VAR}`,
    /// `%{MATCHED_VAR_NAME}`, `%{TX.0}` and the request's collections
    /// (`%{REQUEST_HEADERS.host}`, `%{REQUEST_LINE}`: the first value); unknown macros
    /// to nothing. A template of one part is not copied.
    fn expand<'s>(&'s self, t: &'s Template) -> Cow<'s, [u8]> {
        match t.parts() {
            [] => Cow::Borrowed(&[]),
            [p] => Cow::Borrowed(self.part(p)),
            _ => {
                let mut out = Vec::new();
                self.expand_into(t, &mut out);
                Cow::Owned(out)
            }
        }
    }

    /// `t` expanded at the end of `out`.
    fn expand_into(&self, t: &Template, out: &mut Vec<u8>) {
        for p in t.parts() {
            out.extend_from_slice(self.part(p));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::RequestParts;

    fn get(target: &str) -> Collections {
        Collections::of(&RequestParts {
            method: "GET",
            target,
            protocol: "HTTP/1.1",
            headers: &[
                ("Host", b"shop.example"),
                (
                    "User-Agent",
                    b"Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
                ),
                ("Accept", b"text/html"),
            ],
            body: None,
        })
    }

    const RULES: &str = r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.threshold=5,setvar:tx.critical=5"
SecRule &TX:paranoia "@eq 0" "id:2,phase:1,pass,nolog,setvar:tx.paranoia=1"
SecRule TX:paranoia "@lt 2" "id:3,phase:2,pass,nolog,skipAfter:END-PL2"
SecRule ARGS "@rx evil" "id:10,phase:2,block,msg:'PL2 only',setvar:'tx.anomaly_score=+%{tx.critical}'"
SecMarker END-PL2
SecRule ARGS|!ARGS:safe "@rx (?i)\bunion\b.*\bselect\b" "id:20,phase:2,block,capture,t:none,t:urlDecodeUni,msg:'SQLi in %{MATCHED_VAR_NAME}',tag:'attack-sqli',setvar:'tx.anomaly_score=+%{tx.critical}'"
SecRule REQUEST_METHOD "@streq GET" "id:30,phase:2,pass,chain"
    SecRule ARGS:debug "@streq 1" "setvar:tx.anomaly_score=+1"
SecRule TX:ANOMALY_SCORE "@ge %{tx.threshold}" "id:99,phase:2,deny,msg:'score %{tx.anomaly_score}'"
"#;

    fn engine(presets: &[(&str, &str)]) -> Engine {
        Engine::load(&[("t.conf".into(), RULES.into())], Path::new("/"), presets).unwrap()
    }

    #[test]
    fn scores_chains_markers_and_exclusions() {
        let e = engine(&[]);
        let v = e.inspect(&get("/?q=1%20UNION%20SELECT%20pass&x=evil"));
        assert!(v.denied);
        assert_eq!(v.anomaly_score, 5, "id 10 is skipped at paranoia 1");
        let ids: Vec<u32> = v.hits.iter().map(|h| h.id).collect();
        assert_eq!(ids, [20, 99], "nolog rules are not reported");
        let sqli = &v.hits[0];
        assert_eq!(sqli.msg, "SQLi in ARGS:q");
        assert_eq!(sqli.data, b"UNION SELECT");
        assert_eq!(sqli.tags, ["attack-sqli"]);
        assert_eq!(v.hits[1].msg, "score 5");
        // A rule left out by id or tag does not run.
        let mut skip = RuleFilter::default();
        skip.add("15-25").unwrap();
        let v = e.inspect_except(&get("/?q=1%20UNION%20SELECT%20pass"), &skip);
        assert!(!v.denied && v.hits.is_empty());
        let mut skip = RuleFilter::default();
        skip.add("tag:attack-sqli").unwrap();
        assert!(
            e.inspect_except(&get("/?q=union+select"), &skip)
                .hits
                .is_empty()
        );
        assert!(RuleFilter::default().add("9-x").is_err());
        assert!(RuleFilter::default().add("9-1").is_err());
        assert_eq!(v.hits.iter().filter_map(Hit::attack).count(), 0);
        // Paranoia 2 from the presets runs rule 10 too; an excluded argument is not read.
        let v = engine(&[("paranoia", "2")]).inspect(&get("/?safe=union+select&x=evil"));
        assert_eq!(v.anomaly_score, 5);
        assert!(v.hits.iter().any(|h| h.id == 10) && !v.hits.iter().any(|h| h.id == 20));
        // Each matching value adds; a chain adds once when all its links match.
        let v = engine(&[]).inspect(&get("/?a=union+select&b=union+select&debug=1"));
        assert_eq!(v.anomaly_score, 11);
        let v = e.inspect(&get("/?q=reunion+selection"));
        assert!(!v.denied && v.anomaly_score == 0);
        // The setup rules run once at load; leaving one of them out runs them again per
        // request without it (no paranoia level set: the PL2 rule is not skipped).
        assert_eq!(e.inspect(&get("/?x=evil")).anomaly_score, 0);
        let mut skip = RuleFilter::default();
        skip.add("2").unwrap();
        assert_eq!(e.inspect_except(&get("/?x=evil"), &skip).anomaly_score, 5);
    }

    /// Rules that read only `TX` variables no request can change are decided at load
    /// (CRS's paranoia gates); one whose variable a request's rule writes still runs,
    /// and a request that leaves out a setup rule runs them all.
    #[test]
    fn constant_rules_are_decided_at_load() {
        const GATES: &str = r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.level=1"
SecRule REQUEST_METHOD "@streq POST" "id:2,phase:1,pass,nolog,setvar:tx.posted=1"
SecRule TX:level "@lt 1" "id:3,phase:2,pass,nolog,skipAfter:END-1"
SecRule ARGS "@rx evil" "id:4,phase:2,block,setvar:tx.anomaly_score=+5"
SecMarker END-1
SecRule TX:level "@lt 2" "id:5,phase:2,pass,nolog,skipAfter:END-2"
SecRule ARGS "@rx evil" "id:6,phase:2,block,setvar:tx.anomaly_score=+50"
SecMarker END-2
SecRule TX:posted "@eq 1" "id:7,phase:2,pass,nolog,skipAfter:END-3"
SecRule ARGS "@rx evil" "id:8,phase:2,block,setvar:tx.anomaly_score=+500"
SecMarker END-3
"#;
        let e = Engine::load(&[("g.conf".into(), GATES.into())], Path::new("/"), &[]).unwrap();
        let fold = |id| e.rules.iter().find(|r| r.id == id).unwrap().fold;
        assert_eq!(fold(3), Fold::Never);
        assert_eq!(fold(5), Fold::Always);
        assert_eq!(fold(7), Fold::Run, "rule 2 writes tx.posted per request");
        assert_eq!(e.inspect(&get("/?a=evil")).anomaly_score, 505);
        let post = Collections::of(&RequestParts {
            method: "POST",
            target: "/?a=evil",
            protocol: "HTTP/1.1",
            headers: &[("Host", b"shop.example")],
            body: None,
        });
        assert_eq!(e.inspect(&post).anomaly_score, 5);
        // Without rule 1, tx.level is unset: neither gate skips.
        let mut skip = RuleFilter::default();
        skip.add("1").unwrap();
        assert_eq!(e.inspect_except(&get("/?a=evil"), &skip).anomaly_score, 555);
    }

    /// A value read by several pipelines is answered by the union of their prefilters
    /// once a second pipeline leaves it unchanged, by each pipeline's own set when one
    /// changes it, and rules on collections the request leaves empty are not run; the
    /// scores come out as each rule alone would make them.
    #[test]
    fn prefilters_shared_across_pipelines_answer_as_their_own() {
        const PIPELINES: &str = r#"
SecRule ARGS "@rx ^abc$" "id:1,phase:2,pass,t:none,setvar:tx.anomaly_score=+1"
SecRule ARGS "@rx ^abc$" "id:2,phase:2,pass,t:lowercase,setvar:tx.anomaly_score=+10"
SecRule ARGS "@rx ^a.c$" "id:3,phase:2,pass,t:urlDecodeUni,setvar:tx.anomaly_score=+100"
SecRule ARGS "@rx xyz" "id:4,phase:2,pass,t:lowercase,setvar:tx.anomaly_score=+1000"
SecRule REQUEST_COOKIES "!@rx never" "id:5,phase:2,pass,setvar:tx.anomaly_score=+10000"
"#;
        let e = Engine::load(&[("p.conf".into(), PIPELINES.into())], Path::new("/"), &[]).unwrap();
        assert!(e.union.is_some());
        assert_eq!(e.inspect(&get("/?a=abc")).anomaly_score, 111);
        assert_eq!(e.inspect(&get("/?a=ABC")).anomaly_score, 10);
        assert_eq!(e.inspect(&get("/?a=a%2562c")).anomaly_score, 100);
        assert_eq!(e.inspect(&get("/?a=abc&b=XYZ")).anomaly_score, 1111);
        let cookie = Collections::of(&RequestParts {
            method: "GET",
            target: "/",
            protocol: "HTTP/1.1",
            headers: &[("Cookie", b"k=v")],
            body: None,
        });
        assert_eq!(e.inspect(&cookie).anomaly_score, 10000);
    }

    /// Macros read the request's collections (CRS 931130 compares a URL argument's host
    /// with `%{request_headers.host}`).
    #[test]
    fn macros_read_the_request() {
        const OFF_SITE: &str = r#"
SecRule ARGS "@rx ^(?i:https?)://(.*)$" "id:1,phase:2,block,capture,msg:'%{REQUEST_LINE}',chain"
    SecRule TX:1 "!@beginsWith %{request_headers.host}" "setvar:tx.anomaly_score=+5"
"#;
        let e = Engine::load(&[("r.conf".into(), OFF_SITE.into())], Path::new("/"), &[]).unwrap();
        let v = e.inspect(&get("/?u=http://evil.example/x"));
        assert_eq!(v.anomaly_score, 5);
        assert_eq!(v.hits[0].msg, "GET /?u=http://evil.example/x HTTP/1.1");
        assert_eq!(
            e.inspect(&get("/?u=http://shop.example/x")).anomaly_score,
            0
        );
    }

    /// A macro operator compiled at load serves the requests that leave its variable as
    /// the setup made it; one that changes it gets its own. A rule on a named member is
    /// passed over without it and run with it.
    #[test]
    fn ready_macros_and_named_members() {
        const ALLOWED: &str = r#"
SecAction "id:1,phase:1,pass,nolog,setvar:'tx.allowed=GET HEAD'"
SecRule REQUEST_HEADERS:X-Allow-Delete "@streq yes" "id:2,phase:1,pass,nolog,setvar:'tx.allowed=GET HEAD DELETE'"
SecRule REQUEST_METHOD "!@within %{tx.allowed}" "id:3,phase:1,block,setvar:tx.anomaly_score=+5"
SecRule REQUEST_HEADERS:Content-Type "@rx ^text/" "id:4,phase:1,block,setvar:tx.anomaly_score=+3"
"#;
        let e = Engine::load(&[("r.conf".into(), ALLOWED.into())], Path::new("/"), &[]).unwrap();
        let request = |method: &str, headers: &[(&str, &[u8])]| {
            e.inspect(&Collections::of(&RequestParts {
                method,
                target: "/",
                protocol: "HTTP/1.1",
                headers,
                body: None,
            }))
            .anomaly_score
        };
        assert_eq!(request("GET", &[]), 0);
        assert_eq!(request("DELETE", &[]), 5);
        assert_eq!(request("DELETE", &[("X-Allow-Delete", b"yes")]), 0);
        assert_eq!(request("GET", &[("content-type", b"text/plain")]), 3);
        assert_eq!(request("GET", &[("Accept", b"text/plain")]), 0);
    }

    /// As ModSecurity: a capturing rule's `setvar`s run per matching value with that
    /// value's capture (CRS 920450 records every header name, not only the last).
    #[test]
    fn captures_per_matching_value() {
        const RESTRICTED: &str = r#"
SecRule REQUEST_HEADERS_NAMES "@rx ^.*$" "id:1,phase:2,block,capture,t:none,t:lowercase,setvar:'tx.header_name_%{tx.0}=/%{tx.0}/',chain"
    SecRule TX:/^HEADER_NAME_/ "@within /proxy/ /lock-token/" "setvar:tx.anomaly_score=+5"
"#;
        let e = Engine::load(&[("r.conf".into(), RESTRICTED.into())], Path::new("/"), &[]).unwrap();
        let with = |headers: &[(&str, &[u8])]| {
            e.inspect(&Collections::of(&RequestParts {
                method: "GET",
                target: "/",
                protocol: "HTTP/1.1",
                headers,
                body: None,
            }))
            .anomaly_score
        };
        let proxy_first: &[(&str, &[u8])] = &[("Proxy", b"x"), ("Host", b"a"), ("Accept", b"b")];
        assert_eq!(with(proxy_first), 5);
        assert_eq!(with(&[("Host", b"a"), ("Accept", b"b")]), 0);
    }

    /// As ModSecurity: a chain head's `setvar` runs when the head matches, for the next
    /// link to read (CRS 920440); `multiMatch` tests each stage of the pipeline.
    #[test]
    fn chain_heads_set_variables_and_multi_match_tests_each_stage() {
        let rules = r#"
SecRule REQUEST_BASENAME "@rx \.([^.]+)$" "id:1,phase:2,block,capture,t:none,setvar:'tx.ext=.%{tx.1}/',chain"
    SecRule TX:EXT "@within .bak/ .log/" "t:lowercase,setvar:tx.anomaly_score=+5"
SecRule ARGS "@rx this\.constructor" "id:2,phase:2,block,t:none,t:urlDecodeUni,t:base64Decode,multiMatch,setvar:tx.anomaly_score=+3"
SecRule ARGS "@rx this\.constructor" "id:3,phase:2,block,t:none,t:urlDecodeUni,t:base64Decode,setvar:tx.anomaly_score=+100"
"#;
        let e = Engine::load(&[("t.conf".into(), rules.into())], Path::new("/"), &[]).unwrap();
        assert_eq!(e.inspect(&get("/files/dump.BAK")).anomaly_score, 5);
        assert_eq!(e.inspect(&get("/files/photo.png")).anomaly_score, 0);
        // The raw value matches (3); after base64Decode it no longer does (not 100).
        let v = e.inspect(&get("/?a=this.constructor.constructor(1)"));
        assert_eq!(v.anomaly_score, 3);
    }

    /// `MATCHED_VAR` is the value that matched (transformed), not what matched in it:
    /// each link of CRS 932200 tests the whole argument again.
    #[test]
    fn matched_var_is_the_whole_value() {
        let rules = r#"
SecRule ARGS "@rx /[^/]+?[\\]" "id:1,phase:2,block,capture,t:none,t:lowercase,chain"
    SecRule MATCHED_VAR "@rx /" "t:none,chain"
        SecRule MATCHED_VAR "@rx \s" "t:none,setvar:tx.anomaly_score=+5"
"#;
        let e = Engine::load(&[("t.conf".into(), rules.into())], Path::new("/"), &[]).unwrap();
        let v = e.inspect(&get("/?q=CMD.exe%20%2Fc%20dir%20c%3A%5C"));
        assert_eq!(v.anomaly_score, 5);
        assert_eq!(v.hits[0].data, b"/c dir c:\\");
    }

    #[test]
    fn broken_rules_are_located_and_unsupported_ones_listed() {
        let bad = "SecRule ARGS \"@rx a\" \"phase:2,pass\"\n";
        let e = Engine::load(&[("x.conf".into(), bad.into())], Path::new("/"), &[]).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("x.conf", 1));
        let odd = "SecRule REMOTE_ADDR \"@geoLookup\" \"id:7,phase:1,pass\"\nSecRule ARGS \"@rx a\" \"id:8,t:rot13,pass\"\n";
        let e = Engine::load(&[("x.conf".into(), odd.into())], Path::new("/"), &[]).unwrap();
        let ids: Vec<u32> = e.unsupported.iter().map(|u| u.0).collect();
        assert_eq!(ids, [7, 8]);
    }

    /// The installed CRS (Debian's modsecurity-crs 3.3, which scripts/test.sh installs)
    /// at paranoia level 1: attacks of each kind are refused, ordinary requests are not.
    #[test]
    fn the_installed_core_rule_set_blocks_attacks_and_passes_ordinary_requests() {
        let e = Engine::load_crs(Path::new("/usr/share/modsecurity-crs/rules"), &[]).unwrap();
        let unsupported: Vec<u32> = e.unsupported.iter().map(|u| u.0).collect();
        // Only the rules that need a network (DNS block lists, GeoIP) are left out.
        assert_eq!(unsupported, [910100, 910140]);
        for attack in [
            "/?id=1%27%20OR%20%271%27=%271",
            "/?q=%3Cscript%3Ealert(1)%3C/script%3E",
            "/?file=../../../../etc/passwd",
            "/?cmd=;cat%20/etc/passwd",
            "/?u=http://evil.example/shell.txt?",
            "/?x=%3C?php%20system($_GET[c]);%20?%3E",
        ] {
            let v = e.inspect(&get(attack));
            assert!(
                v.denied,
                "{attack}: score {}, hits {:?}",
                v.anomaly_score,
                v.hits.iter().map(|h| h.id).collect::<Vec<_>>()
            );
        }
        // A PHP script uploaded as a file (933110), and a form field with SQL in it.
        let upload = Collections::of(&RequestParts {
            method: "POST",
            target: "/upload",
            protocol: "HTTP/1.1",
            headers: &[
                ("Host", b"shop.example"),
                ("User-Agent", b"Mozilla/5.0"),
                ("Content-Type", b"multipart/form-data; boundary=b1"),
            ],
            body: Some(b"--b1\r\nContent-Disposition: form-data; name=\"f\"; filename=\"shell.php\"\r\nContent-Type: image/png\r\n\r\nx\r\n--b1--\r\n"),
        });
        assert!(e.inspect(&upload).denied);
        let form = Collections::of(&RequestParts {
            method: "POST",
            target: "/login",
            protocol: "HTTP/1.1",
            headers: &[
                ("Host", b"shop.example"),
                ("User-Agent", b"Mozilla/5.0"),
                ("Content-Type", b"application/x-www-form-urlencoded"),
            ],
            body: Some(b"user=admin%27--&pass=x"),
        });
        assert!(e.inspect(&form).denied);
        for ordinary in [
            "/",
            "/search?q=red+shoes&page=2",
            "/users/42/orders?sort=-date&limit=20",
            "/api/v1/items?name=O%27Brien",
        ] {
            let v = e.inspect(&get(ordinary));
            assert!(
                !v.denied,
                "{ordinary}: score {}, hits {:?}",
                v.anomaly_score,
                v.hits
                    .iter()
                    .map(|h| (h.id, h.msg.clone()))
                    .collect::<Vec<_>>()
            );
        }
    }

    /// CRS 922110 counts part content types into `tx.multipart_headers_content_types_N`
    /// (a macro in a `setvar` name) from a capture's group 1: an ordinary upload passes.
    #[test]
    fn capture_groups_and_macro_names_in_setvar() {
        let e = Engine::load_crs(Path::new("/usr/share/modsecurity-crs/rules"), &[]).unwrap();
        let body: &[u8] = b"--b2\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHoliday\r\n--b2\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"beach.jpg\"\r\nContent-Type: image/jpeg\r\n\r\nJFIFdata\r\n--b2--\r\n";
        let length = body.len().to_string();
        let upload = |content_type: &'static [u8]| {
            let headers: Vec<(&str, &[u8])> = vec![
                ("host", b"t"),
                ("user-agent", b"Mozilla/5.0"),
                ("content-length", length.as_bytes()),
                ("content-type", b"multipart/form-data; boundary=b2"),
            ];
            let body = String::from_utf8_lossy(body)
                .replace("image/jpeg", std::str::from_utf8(content_type).unwrap());
            e.inspect(&Collections::of(&RequestParts {
                method: "POST",
                target: "/photos",
                protocol: "HTTP/1.1",
                headers: &headers,
                body: Some(body.as_bytes()),
            }))
        };
        let v = upload(b"image/jpeg");
        assert!(v.hits.is_empty(), "{:?}", v.hits);
        let v = upload(b"text/plain; charset=ibm037");
        assert!(v.hits.iter().any(|h| h.id == 922110), "{:?}", v.hits);
    }
}
