//! The operators CRS request rules test values with (`@rx`, `@pm`, `@detectSQLi`, ...),
//! compiled once from their argument (macros already expanded by the rule compiler) and
//! applied to transformed values as libmodsecurity applies them.

use aho_corasick::AhoCorasick;
use regex::bytes::{Regex, RegexBuilder};
use std::net::IpAddr;
use std::path::Path;

/// A compiled operator.
#[derive(Debug, Clone)]
pub enum Operator {
    /// `@rx`: a regex anywhere in the value (bytes, no Unicode classes, as PCRE without
    /// UTF mode).
    Rx(Regex),
    /// `@rx` with look-around or back-references: a backtracking engine (bounded in
    /// steps; over the bound is no match), on the value read as UTF-8 (invalid bytes as
    /// U+FFFD).
    FancyRx(Box<fancy_regex::Regex>),
    /// `@pm` / `@pmFromFile`: any of the phrases, without case.
    Pm(AhoCorasick, Vec<String>),
    /// `@streq`: the whole value.
    StrEq(Vec<u8>),
    /// `@contains`.
    Contains(Vec<u8>),
    /// `@beginsWith`.
    BeginsWith(Vec<u8>),
    /// `@endsWith`.
    EndsWith(Vec<u8>),
    /// `@within`: the value is found inside the argument.
    Within(Vec<u8>),
    /// `@eq`, `@lt`, `@le`, `@gt`, `@ge`: integers compared.
    Compare(Comparison, i64),
    /// `@validateByteRange`: matches a value with a byte outside the ranges.
    ByteRange(Box<[bool; 256]>),
    /// `@validateUrlEncoding`: matches a value with a broken `%` escape.
    UrlEncoding,
    /// `@validateUtf8Encoding`: matches a value that is not valid UTF-8.
    Utf8Encoding,
    /// `@ipMatch`: the value is an address in one of the networks.
    IpMatch(Vec<ipnet::IpNet>),
    /// `@detectSQLi`: libinjection's SQL injection finding.
    DetectSqli,
    /// `@detectXSS`: libinjection's XSS finding.
    DetectXss,
    /// `@unconditionalMatch`.
    Always,
    /// `@noMatch`.
    Never,
}

/// How `@eq` and its kin compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `@eq`.
    Eq,
    /// `@lt`.
    Lt,
    /// `@le`.
    Le,
    /// `@gt`.
    Gt,
    /// `@ge`.
    Ge,
}

/// What a match captured: the matched text (for `logdata`, incidents and `TX.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found(pub Vec<u8>);

/// The leading integer of `s` as C's `atoi` reads it (0 when there is none).
fn atoi(s: &[u8]) -> i64 {
    let s = s.trim_ascii_start();
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut v: i64 = 0;
    for &d in digits.iter().take_while(|d| d.is_ascii_digit()) {
        v = v.saturating_mul(10).saturating_add(i64::from(d - b'0'));
    }
    if neg { -v } else { v }
}

impl Operator {
    /// Compiles operator `name` with `argument`; `rules_dir` is where `@pmFromFile`
    /// files are found.
    pub fn compile(name: &str, argument: &str, rules_dir: &Path) -> Result<Self, String> {
        let bytes = || argument.as_bytes().to_vec();
        Ok(match name {
            "rx" => {
                let pattern = pcre_to_rust(argument);
                match RegexBuilder::new(&pattern)
                    .unicode(false)
                    .size_limit(64 << 20)
                    .build()
                {
                    Ok(re) => Self::Rx(re),
                    Err(first) => Self::FancyRx(Box::new(
                        fancy_regex::RegexBuilder::new(&pattern)
                            .backtrack_limit(100_000)
                            .build()
                            .map_err(|_| format!("@rx does not compile: {first}"))?,
                    )),
                }
            }
            "pm" => Self::pm(argument.split_whitespace().map(str::to_string).collect())?,
            "pmFromFile" | "pmf" => {
                let mut phrases = Vec::new();
                for file in argument.split_whitespace() {
                    let path = rules_dir.join(file);
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| format!("@pmFromFile {}: {e}", path.display()))?;
                    phrases.extend(
                        text.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(str::to_string),
                    );
                }
                Self::pm(phrases)?
            }
            "streq" => Self::StrEq(bytes()),
            "contains" => Self::Contains(bytes()),
            "beginsWith" => Self::BeginsWith(bytes()),
            "endsWith" => Self::EndsWith(bytes()),
            "within" => Self::Within(bytes()),
            "eq" => Self::Compare(Comparison::Eq, atoi(argument.as_bytes())),
            "lt" => Self::Compare(Comparison::Lt, atoi(argument.as_bytes())),
            "le" => Self::Compare(Comparison::Le, atoi(argument.as_bytes())),
            "gt" => Self::Compare(Comparison::Gt, atoi(argument.as_bytes())),
            "ge" => Self::Compare(Comparison::Ge, atoi(argument.as_bytes())),
            "validateByteRange" => Self::ByteRange(Box::new(byte_ranges(argument)?)),
            "validateUrlEncoding" => Self::UrlEncoding,
            "validateUtf8Encoding" => Self::Utf8Encoding,
            "ipMatch" => Self::IpMatch(
                argument
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        s.parse::<ipnet::IpNet>()
                            .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                            .map_err(|_| format!("@ipMatch: {s:?} is not an address or network"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "detectSQLi" => Self::DetectSqli,
            "detectXSS" => Self::DetectXss,
            "unconditionalMatch" => Self::Always,
            "noMatch" => Self::Never,
            other => return Err(format!("unsupported operator @{other}")),
        })
    }

    fn pm(phrases: Vec<String>) -> Result<Self, String> {
        AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&phrases)
            .map(|ac| Self::Pm(ac, phrases))
            .map_err(|e| format!("phrase list: {e}"))
    }

    /// The phrases of `@pm` / `@pmFromFile`; `None` for other operators.
    pub fn phrases(&self) -> Option<&[String]> {
        match self {
            Self::Pm(_, phrases) => Some(phrases),
            _ => None,
        }
    }

    /// The groups of a regex operator's first match in `value` (the whole match first,
    /// unmatched groups empty); nothing for other operators or no match.
    pub fn captures(&self, value: &[u8]) -> Vec<Vec<u8>> {
        match self {
            Self::Rx(re) => re.captures(value).map_or_else(Vec::new, |c| {
                c.iter()
                    .map(|g| g.map_or_else(Vec::new, |m| m.as_bytes().to_vec()))
                    .collect()
            }),
            Self::FancyRx(re) => {
                let text = String::from_utf8_lossy(value);
                match re.captures(text.as_ref()) {
                    Ok(Some(c)) => c
                        .iter()
                        .map(|g| g.map_or_else(Vec::new, |m| m.as_str().as_bytes().to_vec()))
                        .collect(),
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    /// Tests `value`; what matched, if it did.
    pub fn test(&self, value: &[u8]) -> Option<Found> {
        let whole = || Some(Found(value.to_vec()));
        match self {
            Self::Rx(re) => re.find(value).map(|m| Found(m.as_bytes().to_vec())),
            Self::FancyRx(re) => {
                let text = String::from_utf8_lossy(value);
                match re.find(text.as_ref()) {
                    Ok(Some(m)) => Some(Found(m.as_str().as_bytes().to_vec())),
                    _ => None,
                }
            }
            Self::Pm(ac, _) => ac
                .find(value)
                .map(|m| Found(value[m.start()..m.end()].to_vec())),
            Self::StrEq(s) => (value == s.as_slice()).then(whole).flatten(),
            Self::Contains(s) => contains(value, s).then(|| Found(s.clone())),
            Self::BeginsWith(s) => value.starts_with(s).then(|| Found(s.clone())),
            Self::EndsWith(s) => value.ends_with(s).then(|| Found(s.clone())),
            Self::Within(s) => contains(s, value).then(whole).flatten(),
            Self::Compare(c, n) => {
                let v = atoi(value);
                let hit = match c {
                    Comparison::Eq => v == *n,
                    Comparison::Lt => v < *n,
                    Comparison::Le => v <= *n,
                    Comparison::Gt => v > *n,
                    Comparison::Ge => v >= *n,
                };
                hit.then(whole).flatten()
            }
            Self::ByteRange(allowed) => value
                .iter()
                .find(|&&b| !allowed[usize::from(b)])
                .map(|b| Found(vec![*b])),
            Self::UrlEncoding => broken_url_encoding(value).then(whole).flatten(),
            Self::Utf8Encoding => std::str::from_utf8(value).is_err().then(whole).flatten(),
            Self::IpMatch(nets) => std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
                .filter(|ip| nets.iter().any(|n| n.contains(ip)))
                .and_then(|_| whole()),
            Self::DetectSqli => {
                // The state, not `detect_sqli`: that folds the value's tokens once more
                // after the verdict to report a fingerprint the state already holds.
                let mut state =
                    libinjectionrs::SqliState::new(value, libinjectionrs::SqliFlags::FLAG_NONE);
                state
                    .detect()
                    .then(|| Found(state.fingerprint_string().into_bytes()))
            }
            Self::DetectXss => libinjectionrs::detect_xss(value)
                .is_injection()
                .then(whole)
                .flatten(),
            Self::Always => whole(),
            Self::Never => None,
        }
    }
}

/// A PCRE pattern as the `regex` crate reads it: PCRE takes a `{` that starts no
/// quantifier, and an escaped `<` or `>`, as literals, where `regex` refuses the first
/// and reads the others as word boundaries; `\Z` (end, or before a final newline) has no
/// `regex` spelling but `\n?\z`; a non-ASCII character is its UTF-8 bytes.
pub fn pcre_to_rust(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut in_class = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' if i + 1 < chars.len() => {
                let next = chars[i + 1];
                match next {
                    '<' | '>' => out.push(next),
                    'Z' if !in_class => out.push_str(r"(?:\n?\z)"),
                    _ => {
                        out.push(c);
                        out.push(next);
                    }
                }
                i += 2;
                continue;
            }
            '[' if !in_class => {
                in_class = true;
                out.push(c);
                // A `]` or `^]` right after the opening is a literal `]`.
                if chars.get(i + 1) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                if chars.get(i + 1) == Some(&']') {
                    out.push_str(r"\]");
                    i += 1;
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            '[' if in_class => out.push_str(r"\["),
            '{' if !in_class => {
                // A quantifier is {n}, {n,} or {n,m}; anything else is a literal brace.
                let rest: String = chars[i + 1..].iter().take(24).collect();
                let end = rest.find('}');
                let body = end.map(|e| &rest[..e]);
                let quantifier = body.is_some_and(|b| {
                    let (lo, hi) = b.split_once(',').unwrap_or((b, "0"));
                    !lo.is_empty()
                        && lo.chars().all(|d| d.is_ascii_digit())
                        && hi.chars().all(|d| d.is_ascii_digit())
                });
                if quantifier {
                    let e = end.unwrap_or(0);
                    out.push('{');
                    out.extend(&chars[i + 1..=i + 1 + e]);
                    i += e + 2;
                    continue;
                }
                out.push_str(r"\{");
            }
            '}' if !in_class => out.push_str(r"\}"),
            // PCRE without UTF mode reads a non-ASCII character as its bytes.
            _ if !c.is_ascii() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// `9,10,13,32-126`: the bytes allowed.
fn byte_ranges(argument: &str) -> Result<[bool; 256], String> {
    let mut allowed = [false; 256];
    for part in argument.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let parse = |s: &str| {
            s.trim().parse::<u8>().map_err(|_| {
                format!("@validateByteRange: {part:?} is not a byte or a range of bytes")
            })
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if lo > hi {
            return Err(format!("@validateByteRange: {part:?} runs backwards"));
        }
        for b in lo..=hi {
            allowed[usize::from(b)] = true;
        }
    }
    Ok(allowed)
}

/// A `%` not followed by two hex digits.
fn broken_url_encoding(value: &[u8]) -> bool {
    value.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !matches!(value.get(i + 1..i + 3), Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(name: &str, arg: &str) -> Operator {
        Operator::compile(name, arg, Path::new("/nonexistent")).unwrap()
    }

    /// libinjection's keyword table searched as the released crate searched it
    /// (vendor/libinjectionrs/PATCHED.md): the entry's type byte, if the word is one.
    fn released_lookup(word: &str) -> Option<u8> {
        use libinjectionrs::sqli::sqli_data::SQL_KEYWORDS;
        let upper = word.to_ascii_uppercase();
        SQL_KEYWORDS
            .binary_search_by(|k| k.word.cmp(&upper))
            .ok()
            .map(|i| SQL_KEYWORDS[i].token_type)
    }

    /// The patched keyword lookup finds every entry in any case, and nothing the table
    /// does not hold.
    #[test]
    fn sqli_keyword_lookup_agrees_with_the_table() {
        use libinjectionrs::sqli::TokenType;
        use libinjectionrs::sqli::sqli_data::{SQL_KEYWORDS, lookup_word};
        for k in SQL_KEYWORDS {
            let found = lookup_word(k.word);
            assert_eq!(
                lookup_word(&k.word.to_ascii_lowercase()),
                found,
                "{}",
                k.word
            );
            assert_eq!(
                found == TokenType::Bareword,
                k.token_type == b'n',
                "{}",
                k.word
            );
        }
        for w in ["shoes", "SELECTX", "union select", "", &"SELECT".repeat(9)] {
            assert_eq!(released_lookup(w), None, "{w}");
            assert_eq!(lookup_word(w), TokenType::Bareword, "{w}");
        }
    }

    proptest::proptest! {
        /// Any word: a keyword to the patched lookup exactly when the table holds it.
        #[test]
        fn sqli_keyword_lookup_of_any_word(word in "[a-zA-Z_@.$0-9=<>!|&-]{0,40}") {
            use libinjectionrs::sqli::TokenType;
            use libinjectionrs::sqli::sqli_data::lookup_word;
            let kept = released_lookup(&word).is_some_and(|t| t != b'n');
            proptest::prop_assert_eq!(lookup_word(&word) != TokenType::Bareword, kept);
        }
    }

    fn hits(o: &Operator, v: &str) -> bool {
        o.test(v.as_bytes()).is_some()
    }

    #[test]
    fn regexes_and_phrases() {
        let rx = op("rx", r"(?i)\bunion\b.{1,100}?\bselect\b");
        assert_eq!(
            rx.test(b"1 UNION ALL SELECT pass"),
            Some(Found(b"UNION ALL SELECT".to_vec()))
        );
        assert!(!hits(&rx, "reunion selection"));
        // Bytes that are not UTF-8 are matched, not refused.
        assert!(op("rx", r"\xff").test(b"a\xffb").is_some());
        let pm = op("pm", "document.cookie <!-- ?>");
        assert_eq!(
            pm.test(b"x=DOCUMENT.Cookie"),
            Some(Found(b"DOCUMENT.Cookie".to_vec()))
        );
        assert!(!hits(&pm, "documents"));
        assert!(Operator::compile("rx", "(", Path::new("/")).is_err());
        assert!(Operator::compile("rbl", "x", Path::new("/")).is_err());
    }

    #[test]
    fn pcre_patterns_read_as_pcre_reads_them() {
        assert_eq!(
            pcre_to_rust(r"a{2,3}b{1}c{,2}\${"),
            r"a{2,3}b{1}c\{,2\}\$\{"
        );
        assert_eq!(pcre_to_rust(r"[{}\]]x\<y\>"), r"[{}\]]x<y>");
        assert_eq!(pcre_to_rust("[´’]"), r"[\xc2\xb4\xe2\x80\x99]");
        assert_eq!(pcre_to_rust(r"x\Z"), r"x(?:\n?\z)");
        assert!(hits(&op("rx", r"(?:\${|<\()"), "echo ${x}"));
        assert!(hits(&op("rx", "[´’]"), "it’s"));
        // Look-behind and back-references go to the backtracking engine.
        let lb = op("rx", r"(?<!&amp);|=");
        assert!(matches!(lb, Operator::FancyRx(_)));
        assert!(hits(&lb, "a;b") && !hits(&lb, "&amp;"));
        assert!(
            hits(&op("rx", r"\b(\w+)\b=\1"), "x=x") && !hits(&op("rx", r"\b(\w+)\b=\1"), "x=y")
        );
    }

    #[test]
    fn strings_numbers_and_ranges() {
        assert!(hits(&op("streq", "POST"), "POST") && !hits(&op("streq", "POST"), "POSTS"));
        assert!(hits(&op("endsWith", "/index.php"), "/a/index.php"));
        assert!(hits(&op("beginsWith", "/admin"), "/admin/x"));
        assert!(hits(&op("contains", "/webdav"), "/remote.php/webdav/x"));
        let within = op("within", "GET HEAD POST OPTIONS");
        assert!(hits(&within, "HEAD") && !hits(&within, "DELETE"));
        assert!(hits(&op("eq", "0"), "") && hits(&op("eq", "0"), "abc"));
        assert!(hits(&op("gt", "2"), "3x") && !hits(&op("gt", "2"), "2"));
        assert!(
            hits(&op("ge", "5"), " 5") && hits(&op("lt", "0"), "-1") && hits(&op("le", "1"), "1")
        );
        let range = op("validateByteRange", "32-36,38-126");
        assert_eq!(range.test(b"ok text"), None);
        assert_eq!(range.test(b"a%b"), Some(Found(b"%".to_vec())));
        assert!(Operator::compile("validateByteRange", "9-x", Path::new("/")).is_err());
    }

    #[test]
    fn encodings_addresses_and_libinjection() {
        let url = op("validateUrlEncoding", "");
        assert!(!hits(&url, "a%20b") && hits(&url, "a%2") && hits(&url, "%zz"));
        let utf8 = op("validateUtf8Encoding", "");
        assert!(!hits(&utf8, "é") && utf8.test(b"\xc3(").is_some());
        let ip = op("ipMatch", "127.0.0.1,::1,10.0.0.0/8");
        assert!(hits(&ip, "10.2.3.4") && hits(&ip, "::1") && !hits(&ip, "11.0.0.1"));
        let sqli = op("detectSQLi", "");
        assert!(hits(&sqli, "1' OR '1'='1") && !hits(&sqli, "O'Brien's pub"));
        // What matched is libinjection's fingerprint, as ModSecurity reports it.
        assert_eq!(
            sqli.test(b"1 UNION SELECT password FROM users").unwrap().0,
            b"1UEnk"
        );
        assert_eq!(
            libinjectionrs::detect_sqli(b"1' OR '1'='1")
                .fingerprint
                .unwrap()
                .to_string(),
            String::from_utf8(sqli.test(b"1' OR '1'='1").unwrap().0).unwrap()
        );
        let xss = op("detectXSS", "");
        assert!(hits(&xss, "<script>alert(1)</script>") && !hits(&xss, "a < b and c > d"));
        assert!(hits(&op("unconditionalMatch", ""), "") && !hits(&op("noMatch", ""), "x"));
    }

    #[test]
    fn phrase_files_are_read_beside_the_rules() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.data"), "# c\nnikto\n\nsqlmap\n").unwrap();
        let o = Operator::compile("pmFromFile", "a.data", dir.path()).unwrap();
        assert!(o.test(b"Mozilla (Nikto/2)").is_some());
        assert!(Operator::compile("pmFromFile", "missing.data", dir.path()).is_err());
    }

    /// Every operator of the installed CRS (Debian's modsecurity-crs, which
    /// scripts/test.sh installs) whose argument needs no macro compiles, but for the
    /// ones that need a network (`@rbl`, `@geoLookup`).
    #[test]
    fn the_installed_core_rule_set_operators_compile() {
        let dir = Path::new("/usr/share/modsecurity-crs/rules");
        let (mut compiled, mut failed) = (0, Vec::new());
        for entry in std::fs::read_dir(dir).expect("modsecurity-crs is installed") {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "conf") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for d in crate::seclang::parse(&text).unwrap() {
                let crate::seclang::DirectiveKind::Rule(r) = d.kind else {
                    continue;
                };
                let o = &r.operator;
                if o.argument.contains("%{") || ["rbl", "geoLookup"].contains(&o.name.as_str()) {
                    continue;
                }
                match Operator::compile(&o.name, &o.argument, dir) {
                    Ok(_) => compiled += 1,
                    Err(e) => failed.push(format!("{}:{}: {e}", path.display(), d.line)),
                }
            }
        }
        assert!(failed.is_empty(), "{}", failed.join("\n"));
        assert!(compiled >= 450, "{compiled}");
    }
}
