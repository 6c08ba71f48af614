//! Reads ModSecurity rules files (SecLang, the language of the OWASP Core Rule Set) into
//! directives: `SecRule`, `SecAction`, `SecMarker`, and the names of the others, each
//! with the line it starts on. Only the syntax is read here; what the variables,
//! operators and actions mean is the compiler's business.
//!
//! The syntax is Apache's configuration syntax: a directive per line, a backslash at the
//! end of a line continues it, `#` starts a comment line, and arguments are separated
//! by blanks or written in double quotes (where `\"` is a quote and every other
//! backslash stays as written, so regexes keep their escapes).

use std::fmt;

/// A rules file that could not be read: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line of the directive.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for SyntaxError {}

/// One directive and the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Directive {
    /// 1-based line where the directive starts.
    pub line: usize,
    /// What it says.
    pub kind: DirectiveKind,
}

/// The directives the engine reads.
#[derive(Debug, Clone, PartialEq)]
pub enum DirectiveKind {
    /// `SecRule VARIABLES OPERATOR [ACTIONS]`.
    Rule(Rule),
    /// `SecAction ACTIONS`: actions run unconditionally.
    Action(Vec<Action>),
    /// `SecMarker NAME`: a target for `skipAfter`.
    Marker(String),
    /// Any other directive, by name (`SecComponentSignature`, ...), with its arguments.
    Other(String, Vec<String>),
}

/// A `SecRule`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// What it inspects.
    pub variables: Vec<Variable>,
    /// How it tests each value.
    pub operator: Operator,
    /// What it does (id, phase, transformations, disruptive action, setvar, ...).
    pub actions: Vec<Action>,
}

impl Rule {
    /// The value of the first action named `name` (`None` when absent or valueless).
    pub fn action(&self, name: &str) -> Option<&str> {
        action_value(&self.actions, name)
    }
}

/// The value of the first action named `name` in `actions`.
pub fn action_value<'a>(actions: &'a [Action], name: &str) -> Option<&'a str> {
    actions
        .iter()
        .find(|a| a.name == name)
        .and_then(|a| a.value.as_deref())
}

/// One element of a rule's variable list: `ARGS`, `REQUEST_HEADERS:User-Agent`,
/// `!REQUEST_COOKIES:/__utm/`, `&ARGS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// `&`: the number of values, not the values.
    pub count: bool,
    /// `!`: removes the selected values from the collection named before it.
    pub exclude: bool,
    /// The collection (`ARGS`, `REQUEST_HEADERS`, `TX`, ...), upper case as written.
    pub collection: String,
    /// Which members (all when `None`).
    pub selector: Option<Selector>,
}

/// Which members of a collection a variable takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A member by name (compared without case for headers, as ModSecurity does).
    Key(String),
    /// Members whose names match a regex (`/.../`).
    Regex(String),
}

/// A rule's operator: `@rx ...`, `!@eq 0`, or a bare regex (an implicit `@rx`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// `!`: the rule matches when the operator does not.
    pub negated: bool,
    /// Its name without the `@` (`rx`, `pm`, `eq`, ...).
    pub name: String,
    /// Its argument as written (macros such as `%{tx.x}` not expanded).
    pub argument: String,
}

/// One action: `id:942100`, `t:lowercase`, `block`, `setvar:'tx.x=+5'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// Its name (`id`, `t`, `setvar`, ...).
    pub name: String,
    /// Its value, with surrounding single quotes removed.
    pub value: Option<String>,
}

/// Reads a rules file.
pub fn parse(text: &str) -> Result<Vec<Directive>, SyntaxError> {
    let mut out = Vec::new();
    for (line, logical) in logical_lines(text) {
        let err = |message: String| SyntaxError { line, message };
        let args = arguments(&logical).map_err(err)?;
        let Some((name, rest)) = args.split_first() else {
            continue;
        };
        let kind = match name.as_str() {
            "SecRule" => {
                let (vars, op, actions) = match rest {
                    [v, o] => (v, o, None),
                    [v, o, a] => (v, o, Some(a)),
                    _ => {
                        return Err(err(format!(
                            "SecRule takes variables, an operator and actions; found {} arguments",
                            rest.len()
                        )));
                    }
                };
                DirectiveKind::Rule(Rule {
                    variables: variables(vars).map_err(err)?,
                    operator: operator(op),
                    actions: match actions {
                        Some(a) => self::actions(a).map_err(err)?,
                        None => Vec::new(),
                    },
                })
            }
            "SecAction" => match rest {
                [a] => DirectiveKind::Action(actions(a).map_err(err)?),
                _ => return Err(err("SecAction takes one list of actions".into())),
            },
            "SecMarker" => match rest {
                [m] => DirectiveKind::Marker(m.clone()),
                _ => return Err(err("SecMarker takes one name".into())),
            },
            other if other.starts_with("Sec") => {
                DirectiveKind::Other(other.to_string(), rest.to_vec())
            }
            other => return Err(err(format!("unknown directive {other:?}"))),
        };
        out.push(Directive { line, kind });
    }
    Ok(out)
}

/// The file's directives as single lines (continuations joined), with the line each
/// starts on; comments and blank lines dropped.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let (body, continues) = match line.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (line, false),
        };
        match current.as_mut() {
            Some((_, acc)) => acc.push_str(body),
            None => {
                let t = body.trim_start();
                if t.is_empty() && !continues || t.starts_with('#') {
                    continue;
                }
                current = Some((i + 1, body.to_string()));
            }
        }
        if !continues
            && let Some(done) = current.take()
            && !done.1.trim().is_empty()
        {
            out.push(done);
        }
    }
    if let Some(done) = current.filter(|d| !d.1.trim().is_empty()) {
        out.push(done);
    }
    out
}

/// A line's arguments: blank-separated words or double-quoted strings.
fn arguments(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return Ok(out);
        };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("a quoted argument is not closed".into()),
                    Some('"') => break,
                    Some('\\') if chars.peek() == Some(&'"') => {
                        word.push('"');
                        chars.next();
                    }
                    Some(c) => word.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '"' {
                    return Err(format!(
                        "a stray quote in {word}\" (a quoted argument ended early?)"
                    ));
                }
                word.push(c);
            }
        }
        out.push(word);
    }
}

/// `ARGS|!ARGS:foo|REQUEST_HEADERS:/^x-/|&TX:x`.
fn variables(text: &str) -> Result<Vec<Variable>, String> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (count, exclude, body) = match rest.as_bytes()[0] {
            b'&' => (true, false, &rest[1..]),
            b'!' => (false, true, &rest[1..]),
            _ => (false, false, rest),
        };
        let name_len = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        if name_len == 0 {
            return Err(format!("expected a variable name at {rest:?}"));
        }
        let collection = body[..name_len].to_ascii_uppercase();
        let mut after = &body[name_len..];
        let selector = if let Some(sel) = after.strip_prefix(':') {
            let (s, left) = selector(sel, collection == "XML")?;
            after = left;
            Some(s)
        } else {
            None
        };
        out.push(Variable {
            count,
            exclude,
            collection,
            selector,
        });
        rest = match after.strip_prefix('|') {
            Some(r) => r.trim_start(),
            None if after.trim().is_empty() => "",
            None => return Err(format!("expected | between variables at {after:?}")),
        };
    }
    if out.is_empty() {
        return Err("a rule needs at least one variable".into());
    }
    Ok(out)
}

/// A selector up to the next `|` outside `/.../` and `'...'`: the selector and the rest.
/// An XPath (`xpath`: the XML collection's selectors) is a name, slashes and all.
fn selector(text: &str, xpath: bool) -> Result<(Selector, &str), String> {
    let unquoted = text.strip_prefix('\'');
    let body = unquoted.unwrap_or(text);
    if let Some(regex) = body.strip_prefix('/').filter(|_| !xpath) {
        // Up to the closing slash no backslash escapes.
        let mut escaped = false;
        for (i, c) in regex.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '/' if !escaped => {
                    let mut rest = &regex[i + 1..];
                    if unquoted.is_some() {
                        rest = rest
                            .strip_prefix('\'')
                            .ok_or("a quoted selector is not closed")?;
                    }
                    return Ok((Selector::Regex(regex[..i].to_string()), rest));
                }
                _ => escaped = false,
            }
        }
        return Err(format!("a selector regex is not closed: {text:?}"));
    }
    if unquoted.is_some() {
        let end = body.find('\'').ok_or("a quoted selector is not closed")?;
        return Ok((Selector::Key(body[..end].to_string()), &body[end + 1..]));
    }
    let end = body.find('|').unwrap_or(body.len());
    Ok((Selector::Key(body[..end].trim().to_string()), &body[end..]))
}

/// `@name argument`, `!@name argument`, or a bare regex.
fn operator(text: &str) -> Operator {
    let (negated, body) = match text.strip_prefix('!') {
        Some(b) => (true, b),
        None => (false, text),
    };
    match body.strip_prefix('@') {
        Some(op) => {
            let (name, arg) = op.split_once(char::is_whitespace).unwrap_or((op, ""));
            Operator {
                negated,
                name: name.to_string(),
                argument: arg.trim_start().to_string(),
            }
        }
        None => Operator {
            negated,
            name: "rx".into(),
            argument: body.to_string(),
        },
    }
}

/// `id:1,phase:2,t:none,msg:'a, b',block`.
fn actions(text: &str) -> Result<Vec<Action>, String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut items = Vec::new();
    for c in text.chars() {
        match c {
            '\\' if quoted && !escaped => {
                escaped = true;
                current.push(c);
                continue;
            }
            '\'' if !escaped => quoted = !quoted,
            ',' if !quoted => {
                items.push(std::mem::take(&mut current));
                escaped = false;
                continue;
            }
            _ => {}
        }
        escaped = false;
        current.push(c);
    }
    if quoted {
        return Err(format!("a quoted action value is not closed in {text:?}"));
    }
    items.push(current);
    for item in items {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (name, value) = match item.split_once(':') {
            Some((n, v)) => {
                let v = v.trim();
                let v = v
                    .strip_prefix('\'')
                    .and_then(|v| v.strip_suffix('\''))
                    .unwrap_or(v);
                (n.trim(), Some(v.to_string()))
            }
            None => (item, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid action {item:?}"));
        }
        out.push(Action {
            name: name.to_string(),
            value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> Rule {
        match parse(text).unwrap().remove(0).kind {
            DirectiveKind::Rule(r) => r,
            other => panic!("not a rule: {other:?}"),
        }
    }

    #[test]
    fn a_crs_rule_with_continuations_quotes_and_selectors() {
        let text = r#"
# a comment
SecRule REQUEST_COOKIES|!REQUEST_COOKIES:/__utm/|REQUEST_COOKIES_NAMES|ARGS_NAMES|ARGS|XML:/* "@rx (?i)\bunion\b.{1,100}?\bselect\b" \
    "id:942190,\
    phase:2,\
    block,\
    capture,\
    t:none,t:urlDecodeUni,\
    msg:'Detects MSSQL code execution, and information gathering attempts',\
    logdata:'Matched Data: %{TX.0} found within %{MATCHED_VAR_NAME}: %{MATCHED_VAR}',\
    tag:'paranoia-level/1',\
    setvar:'tx.sql_injection_score=+%{tx.critical_anomaly_score}'"
"#;
        let d = parse(text).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].line, 3);
        let DirectiveKind::Rule(r) = &d[0].kind else {
            panic!()
        };
        assert_eq!(r.variables.len(), 6);
        assert_eq!(
            r.variables[1],
            Variable {
                count: false,
                exclude: true,
                collection: "REQUEST_COOKIES".into(),
                selector: Some(Selector::Regex("__utm".into())),
            }
        );
        // XML's selector is an XPath expression, not a regex.
        assert_eq!(r.variables[5].selector, Some(Selector::Key("/*".into())));
        assert_eq!(r.operator.name, "rx");
        assert_eq!(r.operator.argument, r"(?i)\bunion\b.{1,100}?\bselect\b");
        assert_eq!(r.action("id"), Some("942190"));
        assert_eq!(
            r.action("msg"),
            Some("Detects MSSQL code execution, and information gathering attempts")
        );
        assert_eq!(
            r.action("setvar"),
            Some("tx.sql_injection_score=+%{tx.critical_anomaly_score}")
        );
        let ts: Vec<_> = r.actions.iter().filter(|a| a.name == "t").collect();
        assert_eq!(ts.len(), 2);
        assert!(
            r.actions
                .iter()
                .any(|a| a.name == "block" && a.value.is_none())
        );
    }

    #[test]
    fn operators_counts_negations_and_other_directives() {
        let r =
            rule(r#"SecRule &TX:blocking_paranoia_level "@eq 0" "id:901120,phase:1,pass,nolog""#);
        assert!(r.variables[0].count);
        assert_eq!(
            r.variables[0].selector,
            Some(Selector::Key("blocking_paranoia_level".into()))
        );
        assert_eq!(
            (r.operator.name.as_str(), r.operator.argument.as_str()),
            ("eq", "0")
        );
        let r =
            rule(r#"SecRule REQUEST_METHOD "!@within %{tx.allowed_methods}" "id:911100,block""#);
        assert!(r.operator.negated);
        assert_eq!(r.operator.argument, "%{tx.allowed_methods}");
        let r = rule(r#"SecRule ARGS "^\d+$" "id:1""#);
        assert_eq!(
            (r.operator.name.as_str(), r.operator.argument.as_str()),
            ("rx", r"^\d+$")
        );
        let r = rule(r#"SecRule REQUEST_HEADERS:'/^(?:a|b)$/' "@rx \"x\"" "id:2""#);
        assert_eq!(
            r.variables[0].selector,
            Some(Selector::Regex("^(?:a|b)$".into()))
        );
        assert_eq!(r.operator.argument, r#""x""#);
        let d = parse("SecMarker \"END-REQUEST-942\"\nSecComponentSignature \"OWASP_CRS/3.3.4\"\nSecAction \"id:900000,pass,setvar:tx.paranoia_level=1\"\n").unwrap();
        assert_eq!(d[0].kind, DirectiveKind::Marker("END-REQUEST-942".into()));
        assert!(matches!(&d[1].kind, DirectiveKind::Other(n, _) if n == "SecComponentSignature"));
        let DirectiveKind::Action(a) = &d[2].kind else {
            panic!()
        };
        assert_eq!(action_value(a, "setvar"), Some("tx.paranoia_level=1"));
        assert_eq!(d.iter().map(|d| d.line).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn broken_files_are_located() {
        let e = parse("\n\nSecRule ARGS \"@rx a\" \"id:1,msg:'open\"\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("not closed"), "{e}");
        let e = parse("SecRule ARGS\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse("SecRule \"ARGS:/x\" \"@rx a\" \"id:1\"\n").unwrap_err();
        assert!(e.message.contains("regex is not closed"), "{e}");
        let e = parse("Include foo.conf\n").unwrap_err();
        assert!(e.message.contains("unknown directive"), "{e}");
        let e = parse("SecRule ARGS \"@rx \"id:1\"\n").unwrap_err();
        assert!(e.message.contains("stray quote"), "{e}");
    }

    /// Every rules file of the installed CRS (Debian's modsecurity-crs, which
    /// scripts/test.sh installs) reads, with every rule's id found.
    #[test]
    fn the_installed_core_rule_set_reads() {
        let dir = std::path::Path::new("/usr/share/modsecurity-crs/rules");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("modsecurity-crs is installed (scripts/test.sh)")
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        files.sort();
        let mut rules = 0;
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            let d = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let mut chained = false;
            for x in &d {
                if let DirectiveKind::Rule(r) = &x.kind {
                    rules += 1;
                    // A chained rule (after one with `chain`) has no id of its own.
                    assert!(
                        chained || r.action("id").is_some(),
                        "{}:{} has no id",
                        f.display(),
                        x.line
                    );
                    chained = r.actions.iter().any(|a| a.name == "chain");
                }
            }
        }
        assert!(
            files.len() >= 25 && rules >= 500,
            "{} files, {rules} rules",
            files.len()
        );
    }
}
