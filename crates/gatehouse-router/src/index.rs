//! The path index of one host bucket: exact map, template trie, prefix trie, RegexSet.

use crate::key::PrecedenceKey;
use crate::path::{TemplateSegment, prefix_segments};
use regex::{Regex, RegexSet};
use std::collections::HashMap;

/// A route registered in an index, with its precedence there.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Precedence in this index.
    pub key: PrecedenceKey,
    /// Route number.
    pub route: usize,
}

/// What a lookup yields before the non-path conditions are checked.
pub struct Candidate {
    /// The entry.
    pub entry: Entry,
    /// Captured path parameters.
    pub params: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct PrefixNode {
    children: HashMap<Box<str>, PrefixNode>,
    entries: Vec<Entry>,
}

#[derive(Debug, Default)]
struct TemplateNode {
    literals: HashMap<Box<str>, TemplateNode>,
    param: Option<Box<TemplateNode>>,
    /// Templates ending here, with their parameter names in order.
    ends: Vec<(Entry, Vec<String>)>,
    /// Templates whose `{*rest}` starts here.
    catch_all: Vec<(Entry, Vec<String>)>,
}

/// Path index of one host bucket.
#[derive(Debug, Default)]
pub struct PathIndex {
    exact: HashMap<Box<str>, Vec<Entry>>,
    prefix: PrefixNode,
    templates: TemplateNode,
    has_templates: bool,
    regex_src: Vec<(String, Entry)>,
    regex_set: Option<RegexSet>,
    regexes: Vec<(Regex, Entry)>,
}

impl PathIndex {
    /// Registers an exact path.
    pub fn add_exact(&mut self, path: &str, e: Entry) {
        self.exact.entry(path.into()).or_default().push(e);
    }

    /// Registers a prefix.
    pub fn add_prefix(&mut self, prefix: &str, e: Entry) {
        let mut node = &mut self.prefix;
        for seg in prefix_segments(prefix) {
            node = node.children.entry(seg.into()).or_default();
        }
        node.entries.push(e);
    }

    /// Registers a parsed template.
    pub fn add_template(&mut self, segs: &[TemplateSegment], e: Entry) {
        self.has_templates = true;
        let mut names = Vec::new();
        let mut node = &mut self.templates;
        for seg in segs {
            match seg {
                TemplateSegment::Literal(l) => {
                    node = node.literals.entry(l.as_str().into()).or_default();
                }
                TemplateSegment::Param(n) => {
                    names.push(n.clone());
                    node = node.param.get_or_insert_with(Default::default);
                }
                TemplateSegment::CatchAll(n) => {
                    names.push(n.clone());
                    node.catch_all.push((e, names));
                    return;
                }
            }
        }
        node.ends.push((e, names));
    }

    /// Registers a regex (already validated).
    pub fn add_regex(&mut self, re: &str, e: Entry) {
        self.regex_src.push((format!("^(?:{re})$"), e));
    }

    /// Sorts every bucket by precedence and compiles the RegexSet.
    pub fn finish(&mut self) -> Result<(), regex::Error> {
        for v in self.exact.values_mut() {
            v.sort_by_key(|e| e.key);
        }
        sort_prefix(&mut self.prefix);
        sort_template(&mut self.templates);
        self.regex_src.sort_by_key(|(_, e)| e.key);
        if !self.regex_src.is_empty() {
            self.regex_set = Some(RegexSet::new(self.regex_src.iter().map(|(s, _)| s))?);
            self.regexes = self
                .regex_src
                .iter()
                .map(|(s, e)| Regex::new(s).map(|r| (r, *e)))
                .collect::<Result<_, _>>()?;
        }
        Ok(())
    }

    /// The best candidate whose route also passes `accept`, in precedence order.
    pub fn lookup(&self, path: &str, accept: &dyn Fn(usize) -> bool) -> Option<Candidate> {
        let found = |e: &Entry| accept(e.route);
        if let Some(list) = self.exact.get(path)
            && let Some(e) = list.iter().find(|e| found(e))
        {
            return Some(Candidate {
                entry: *e,
                params: Vec::new(),
            });
        }
        if self.has_templates
            && let Some(c) = self.lookup_template(path, accept)
        {
            return Some(c);
        }
        if let Some(e) = self.lookup_prefix(path, accept) {
            return Some(Candidate {
                entry: e,
                params: Vec::new(),
            });
        }
        self.lookup_regex(path, accept)
    }

    fn lookup_prefix(&self, path: &str, accept: &dyn Fn(usize) -> bool) -> Option<Entry> {
        deepest_prefix(&self.prefix, path.split('/').skip(1), accept)
    }

    fn lookup_template(&self, path: &str, accept: &dyn Fn(usize) -> bool) -> Option<Candidate> {
        let rest = path.strip_prefix('/')?;
        let mut best: Option<Candidate> = None;
        let mut values: Vec<&str> = Vec::new();
        if rest.is_empty() {
            offer(&self.templates.ends, &values, None, accept, &mut best);
        }
        walk_template(&self.templates, rest, &mut values, accept, &mut best);
        best
    }

    fn lookup_regex(&self, path: &str, accept: &dyn Fn(usize) -> bool) -> Option<Candidate> {
        let set = self.regex_set.as_ref()?;
        // RegexSet yields indices in ascending order, which is precedence order.
        let i = set
            .matches(path)
            .into_iter()
            .find(|&i| accept(self.regexes[i].1.route))?;
        let (re, entry) = &self.regexes[i];
        let params = if re.capture_names().flatten().next().is_some() {
            re.captures(path)
                .map(|caps| {
                    re.capture_names()
                        .flatten()
                        .filter_map(|n| {
                            caps.name(n)
                                .map(|m| (n.to_string(), m.as_str().to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        Some(Candidate {
            entry: *entry,
            params,
        })
    }
}

fn offer<'a>(
    list: &[(Entry, Vec<String>)],
    values: &[&'a str],
    extra: Option<&'a str>,
    accept: &dyn Fn(usize) -> bool,
    best: &mut Option<Candidate>,
) {
    if let Some((e, names)) = list.iter().find(|(e, _)| accept(e.route))
        && best.as_ref().is_none_or(|b| e.key < b.entry.key)
    {
        let params = names
            .iter()
            .zip(values.iter().copied().chain(extra))
            .map(|(n, v)| (n.clone(), v.to_string()))
            .collect();
        *best = Some(Candidate { entry: *e, params });
    }
}

fn walk_template<'a>(
    node: &TemplateNode,
    rest: &'a str,
    values: &mut Vec<&'a str>,
    accept: &dyn Fn(usize) -> bool,
    best: &mut Option<Candidate>,
) {
    if !node.catch_all.is_empty() {
        offer(&node.catch_all, values, Some(rest), accept, best);
    }
    let (seg, tail) = match rest.split_once('/') {
        Some((s, t)) => (s, Some(t)),
        None => (rest, None),
    };
    let mut step = |child: &TemplateNode, values: &mut Vec<&'a str>| match tail {
        None => offer(&child.ends, values, None, accept, best),
        Some(t) => walk_template(child, t, values, accept, best),
    };
    if let Some(child) = node.literals.get(seg) {
        step(child, values);
    }
    if !seg.is_empty()
        && let Some(child) = &node.param
    {
        values.push(seg);
        step(child, values);
        values.pop();
    }
}

/// The deepest node on the path's way down holding an accepted entry wins: deeper is longer.
fn deepest_prefix<'a>(
    node: &PrefixNode,
    mut segs: impl Iterator<Item = &'a str>,
    accept: &dyn Fn(usize) -> bool,
) -> Option<Entry> {
    let deeper = segs
        .next()
        .and_then(|seg| node.children.get(seg))
        .and_then(|child| deepest_prefix(child, segs, accept));
    deeper.or_else(|| node.entries.iter().find(|e| accept(e.route)).copied())
}

fn sort_prefix(n: &mut PrefixNode) {
    n.entries.sort_by_key(|e| e.key);
    n.children.values_mut().for_each(sort_prefix);
}

fn sort_template(n: &mut TemplateNode) {
    n.ends.sort_by_key(|(e, _)| e.key);
    n.catch_all.sort_by_key(|(e, _)| e.key);
    n.literals.values_mut().for_each(sort_template);
    if let Some(p) = n.param.as_mut() {
        sort_template(p);
    }
}
