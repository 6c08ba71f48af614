//! The transformations CRS request rules apply to a value before their operator reads it
//! (`t:urlDecodeUni`, `t:lowercase`, ...), byte for byte as libmodsecurity does them, so
//! a rule matches here what it matches there. Values are bytes: a request may carry any.

use std::borrow::Cow;

/// A transformation, by its SecLang name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transformation {
    /// `lowercase`: ASCII letters to lower case.
    Lowercase,
    /// `urlDecode`: `%XX` and `+`.
    UrlDecode,
    /// `urlDecodeUni`: `urlDecode` plus IIS's `%uXXXX`.
    UrlDecodeUni,
    /// `htmlEntityDecode`: `&#DD;`, `&#xHH;`, `&quot;` `&amp;` `&lt;` `&gt;` `&nbsp;`.
    HtmlEntityDecode,
    /// `jsDecode`: JavaScript escapes.
    JsDecode,
    /// `cssDecode`: CSS 2.1 escapes.
    CssDecode,
    /// `removeNulls`: drops NUL bytes.
    RemoveNulls,
    /// `cmdLine`: the shell-evasion normalization of the RCE rules.
    CmdLine,
    /// `compressWhitespace`: runs of white space to one space.
    CompressWhitespace,
    /// `removeWhitespace`: drops white space.
    RemoveWhitespace,
    /// `replaceComments`: each C comment to one space.
    ReplaceComments,
    /// `normalizePath` (and `normalisePath`): `.`, `..` and `//` resolved.
    NormalizePath,
    /// `normalizePathWin`: backslashes as slashes, then `normalizePath`.
    NormalizePathWin,
    /// `hexEncode`: bytes as lower-case hex.
    HexEncode,
    /// `length`: the value's length in bytes, in decimal.
    Length,
    /// `utf8toUnicode`: multi-byte UTF-8 characters to `%uXXXX`.
    Utf8ToUnicode,
    /// `base64Decode`: standard Base64; nothing when the value is not Base64 (as
    /// libmodsecurity's decoder yields).
    Base64Decode,
    /// `sha1`: the value's SHA-1 digest (20 bytes).
    Sha1,
}

impl Transformation {
    /// The transformation named `name` (as in `t:name`); `Ok(None)` for `none`, which
    /// clears the ones before it.
    pub fn parse(name: &str) -> Result<Option<Self>, String> {
        Ok(Some(match name.to_ascii_lowercase().as_str() {
            "none" => return Ok(None),
            "lowercase" => Self::Lowercase,
            "urldecode" => Self::UrlDecode,
            "urldecodeuni" => Self::UrlDecodeUni,
            "htmlentitydecode" => Self::HtmlEntityDecode,
            "jsdecode" => Self::JsDecode,
            "cssdecode" => Self::CssDecode,
            "removenulls" => Self::RemoveNulls,
            "cmdline" => Self::CmdLine,
            "compresswhitespace" => Self::CompressWhitespace,
            "removewhitespace" => Self::RemoveWhitespace,
            "replacecomments" => Self::ReplaceComments,
            "normalizepath" | "normalisepath" => Self::NormalizePath,
            "normalizepathwin" | "normalisepathwin" => Self::NormalizePathWin,
            "hexencode" => Self::HexEncode,
            "length" => Self::Length,
            "utf8tounicode" => Self::Utf8ToUnicode,
            "base64decode" => Self::Base64Decode,
            "sha1" => Self::Sha1,
            _ => return Err(format!("unsupported transformation t:{name}")),
        }))
    }

    /// Whether it certainly hands a value with traits `t` back unchanged (exactly the
    /// cases [`Transformation::apply`] answers without transforming).
    pub fn keeps(self, t: Traits) -> bool {
        match self {
            Self::Lowercase => !t.has(Traits::UPPER),
            Self::UrlDecode | Self::UrlDecodeUni => !t.has(Traits::PERCENT_OR_PLUS),
            Self::HtmlEntityDecode => !t.has(Traits::AMPERSAND),
            Self::JsDecode | Self::CssDecode => !t.has(Traits::BACKSLASH),
            Self::RemoveNulls => !t.has(Traits::NUL),
            Self::CompressWhitespace => !t.has(Traits::RUN_OR_ODD_SPACE),
            Self::RemoveWhitespace => !t.has(Traits::SPACE),
            Self::ReplaceComments => !t.has(Traits::COMMENT),
            Self::Utf8ToUnicode => !t.has(Traits::NON_ASCII),
            _ => false,
        }
    }

    /// `input` transformed; borrowed when nothing changed.
    pub fn apply<'a>(self, input: &'a [u8]) -> Cow<'a, [u8]> {
        let out = match self {
            Self::Lowercase => {
                if !input.iter().any(u8::is_ascii_uppercase) {
                    return Cow::Borrowed(input);
                }
                input.to_ascii_lowercase()
            }
            Self::UrlDecode | Self::UrlDecodeUni => {
                if !input.iter().any(|&b| b == b'%' || b == b'+') {
                    return Cow::Borrowed(input);
                }
                url_decode(input, self == Self::UrlDecodeUni)
            }
            Self::HtmlEntityDecode => {
                if !input.contains(&b'&') {
                    return Cow::Borrowed(input);
                }
                html_entity_decode(input)
            }
            Self::JsDecode | Self::CssDecode => {
                if !input.contains(&b'\\') {
                    return Cow::Borrowed(input);
                }
                if self == Self::JsDecode {
                    js_decode(input)
                } else {
                    css_decode(input)
                }
            }
            Self::RemoveNulls => {
                if !input.contains(&0) {
                    return Cow::Borrowed(input);
                }
                input.iter().copied().filter(|&b| b != 0).collect()
            }
            Self::CmdLine => cmd_line(input),
            Self::CompressWhitespace => {
                // Only single spaces: nothing to compress (most values).
                let single = |w: &[u8]| !(is_space(w[0]) && is_space(w[1]));
                if !input.iter().any(|&b| b != b' ' && is_space(b)) && input.windows(2).all(single)
                {
                    return Cow::Borrowed(input);
                }
                compress_whitespace(input)
            }
            Self::RemoveWhitespace => {
                if !input.iter().any(|&b| is_space(b)) {
                    return Cow::Borrowed(input);
                }
                input.iter().copied().filter(|&b| !is_space(b)).collect()
            }
            Self::ReplaceComments => {
                if !input.windows(2).any(|w| w == b"/*") {
                    return Cow::Borrowed(input);
                }
                replace_comments(input)
            }
            Self::NormalizePath if path_is_normal(input) => return Cow::Borrowed(input),
            Self::NormalizePath => normalize_path(input),
            Self::NormalizePathWin if !input.contains(&b'\\') && path_is_normal(input) => {
                return Cow::Borrowed(input);
            }
            Self::NormalizePathWin => {
                let slashed: Vec<u8> = input
                    .iter()
                    .map(|&b| if b == b'\\' { b'/' } else { b })
                    .collect();
                normalize_path(&slashed)
            }
            Self::HexEncode => input.iter().flat_map(|b| hex_pair(*b)).collect(),
            Self::Length => input.len().to_string().into_bytes(),
            Self::Base64Decode => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(input)
                    .unwrap_or_default()
            }
            Self::Sha1 => {
                use sha1::Digest as _;
                sha1::Sha1::digest(input).to_vec()
            }
            Self::Utf8ToUnicode => {
                if input.is_ascii() {
                    return Cow::Borrowed(input);
                }
                utf8_to_unicode(input)
            }
        };
        if out == input {
            Cow::Borrowed(input)
        } else {
            Cow::Owned(out)
        }
    }
}

/// What one pass over a value tells about it: enough to know that most transformations
/// would hand it back unchanged, without each scanning it again (a request's values go
/// through a dozen pipelines of up to eight steps, and most change nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traits(u16);

impl Traits {
    const UPPER: u16 = 1;
    const PERCENT_OR_PLUS: u16 = 1 << 1;
    const AMPERSAND: u16 = 1 << 2;
    const BACKSLASH: u16 = 1 << 3;
    const NUL: u16 = 1 << 4;
    const SPACE: u16 = 1 << 5;
    /// White space other than a lone ` `: what `compressWhitespace` changes.
    const RUN_OR_ODD_SPACE: u16 = 1 << 6;
    const COMMENT: u16 = 1 << 7;
    const NON_ASCII: u16 = 1 << 8;

    /// Bytes that never set a trait alone but do in pairs (`/*`).
    const SLASH: u16 = 1 << 9;
    const STAR: u16 = 1 << 10;

    /// Each byte's traits, looked up rather than matched (a value is read once, byte by
    /// byte, for all of them).
    const CLASS: [u16; 256] = {
        let mut c = [0u16; 256];
        let mut b = 0;
        while b < 256 {
            let byte = b as u8;
            c[b] = match byte {
                b'A'..=b'Z' => Self::UPPER,
                b'%' | b'+' => Self::PERCENT_OR_PLUS,
                b'&' => Self::AMPERSAND,
                b'\\' => Self::BACKSLASH,
                0 => Self::NUL,
                b'/' => Self::SLASH,
                b'*' => Self::STAR,
                b' ' => Self::SPACE,
                b'\t' | b'\n' | 0x0b | 0x0c | b'\r' => Self::SPACE | Self::RUN_OR_ODD_SPACE,
                0xa0 => Self::SPACE | Self::RUN_OR_ODD_SPACE | Self::NON_ASCII,
                0x80.. => Self::NON_ASCII,
                _ => 0,
            };
            b += 1;
        }
        c
    };

    /// The traits of `v`.
    pub fn of(v: &[u8]) -> Self {
        let mut t = 0;
        for &b in v {
            t |= Self::CLASS[usize::from(b)];
        }
        // The pairs, only looked for when both halves are there.
        if t & Self::SPACE != 0 && v.windows(2).any(|w| is_space(w[0]) && is_space(w[1])) {
            t |= Self::RUN_OR_ODD_SPACE;
        }
        if t & (Self::SLASH | Self::STAR) == Self::SLASH | Self::STAR
            && v.windows(2).any(|w| w == b"/*")
        {
            t |= Self::COMMENT;
        }
        Traits(t)
    }

    fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }
}

/// White space as C's `isspace` in the C locale, and the no-break space (0xa0), which
/// ModSecurity's white-space transformations also count.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0)
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Two hex digits as a byte (both known to be hex).
fn x2c(hi: u8, lo: u8) -> u8 {
    hex_value(hi).unwrap_or(0) << 4 | hex_value(lo).unwrap_or(0)
}

fn hex_pair(b: u8) -> [u8; 2] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]
}

/// `%uXXXX` as ModSecurity reads it without a unicode map: the low byte, with full-width
/// ASCII (`U+FF01`-`U+FF5E`) brought back to ASCII.
fn unicode_low_byte(x: &[u8]) -> u8 {
    let mut c = x2c(x[2], x[3]);
    if c > 0 && c < 0x5f && x[0].eq_ignore_ascii_case(&b'f') && x[1].eq_ignore_ascii_case(&b'f') {
        c += 0x20;
    }
    c
}

fn url_decode(input: &[u8], uni: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'%' {
            if uni
                && input
                    .get(i + 1)
                    .is_some_and(|c| c.eq_ignore_ascii_case(&b'u'))
            {
                match input.get(i + 2..i + 6) {
                    Some(x) if x.iter().all(u8::is_ascii_hexdigit) => {
                        out.push(unicode_low_byte(x));
                        i += 6;
                    }
                    // Not four hex digits: `%u` stays as written.
                    _ => {
                        out.extend_from_slice(&input[i..i + 2]);
                        i += 2;
                    }
                }
                continue;
            }
            match input.get(i + 1..i + 3) {
                Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                    out.push(x2c(*h, *l));
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            }
        } else {
            out.push(if b == b'+' { b' ' } else { b });
            i += 1;
        }
    }
    out
}

/// A number of `digits` in `radix` as C's `strtol` then a cast to a byte: saturating.
fn strtol_byte(digits: &[u8], radix: u32) -> u8 {
    let mut v: u64 = 0;
    for &d in digits {
        let x = u64::from((d as char).to_digit(radix).unwrap_or(0));
        v = v.saturating_mul(u64::from(radix)).saturating_add(x);
    }
    // strtol saturates at LONG_MAX, whose low byte is 0xff.
    let v = v.min(i64::MAX as u64);
    (v & 0xff) as u8
}

fn html_entity_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    let n = input.len();
    while i < n {
        let mut copy = 1;
        if input[i] == b'&' && i + 1 < n {
            let mut j = i + 1;
            if input[j] == b'#' {
                j += 1;
                let hex = j < n && (input[j] == b'x' || input[j] == b'X');
                if hex {
                    j += 1;
                }
                let k = j;
                let radix = if hex { 16 } else { 10 };
                while j < n && (input[j] as char).is_digit(radix) {
                    j += 1;
                }
                if j > k {
                    out.push(strtol_byte(&input[k..j], radix));
                    i = if j < n && input[j] == b';' { j + 1 } else { j };
                    continue;
                }
            } else {
                let k = j;
                while j < n && input[j].is_ascii_alphanumeric() {
                    j += 1;
                }
                if j > k {
                    let decoded = match input[k..j].to_ascii_lowercase().as_slice() {
                        b"quot" => Some(b'"'),
                        b"amp" => Some(b'&'),
                        b"lt" => Some(b'<'),
                        b"gt" => Some(b'>'),
                        b"nbsp" => Some(0xa0),
                        _ => None,
                    };
                    match decoded {
                        Some(c) => {
                            out.push(c);
                            i = if j < n && input[j] == b';' { j + 1 } else { j };
                            continue;
                        }
                        None => copy = j - k + 1,
                    }
                }
            }
        }
        let end = (i + copy).min(n);
        out.extend_from_slice(&input[i..end]);
        i = end;
    }
    out
}

fn js_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    let n = input.len();
    let is_octal = |b: u8| (b'0'..=b'7').contains(&b);
    while i < n {
        if input[i] != b'\\' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        if i + 5 < n
            && input[i + 1] == b'u'
            && input[i + 2..i + 6].iter().all(u8::is_ascii_hexdigit)
        {
            out.push(unicode_low_byte(&input[i + 2..i + 6]));
            i += 6;
        } else if i + 3 < n
            && input[i + 1] == b'x'
            && input[i + 2].is_ascii_hexdigit()
            && input[i + 3].is_ascii_hexdigit()
        {
            out.push(x2c(input[i + 2], input[i + 3]));
            i += 4;
        } else if i + 1 < n && is_octal(input[i + 1]) {
            let mut j = 0;
            while i + 1 + j < n && j < 3 && is_octal(input[i + 1 + j]) {
                j += 1;
            }
            // Three digits only while they fit in a byte.
            if j == 3 && input[i + 1] > b'3' {
                j = 2;
            }
            out.push(strtol_byte(&input[i + 1..i + 1 + j], 8));
            i += 1 + j;
        } else if i + 1 < n {
            out.push(match input[i + 1] {
                b'a' => 0x07,
                b'b' => 0x08,
                b'f' => 0x0c,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'v' => 0x0b,
                // `\?`, `\\`, `\'`, `\"` and any other: the escape goes.
                other => other,
            });
            i += 2;
        } else {
            out.extend_from_slice(&input[i..]);
            i = n;
        }
    }
    out
}

fn css_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    let n = input.len();
    while i < n {
        if input[i] != b'\\' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        if i + 1 >= n {
            // A backslash at the end continues to nothing.
            i += 1;
            continue;
        }
        i += 1;
        let mut j = 0;
        while j < 6 && i + j < n && input[i + j].is_ascii_hexdigit() {
            j += 1;
        }
        if j > 0 {
            let x = &input[i..i + j];
            // The last two digits make the byte; four (or five and six with leading
            // zeros) may be full-width ASCII.
            let mut c = if j == 1 {
                hex_value(x[0]).unwrap_or(0)
            } else {
                x2c(x[j - 2], x[j - 1])
            };
            let full = match j {
                4 => true,
                5 => x[0] == b'0',
                6 => x[0] == b'0' && x[1] == b'0',
                _ => false,
            };
            if full
                && c > 0
                && c < 0x5f
                && x[j - 3].eq_ignore_ascii_case(&b'f')
                && x[j - 4].eq_ignore_ascii_case(&b'f')
            {
                c += 0x20;
            }
            out.push(c);
            // One white-space character after a hex escape belongs to it.
            if i + j < n && is_space(input[i + j]) && input[i + j] != 0xa0 {
                j += 1;
            }
            i += j;
        } else if input[i] == b'\n' {
            i += 1;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

fn cmd_line(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut space = false;
    for &a in input {
        match a {
            b'"' | b'\'' | b'\\' | b'^' => {}
            b' ' | b',' | b';' | b'\t' | b'\r' | b'\n' => {
                if !space {
                    out.push(b' ');
                    space = true;
                }
            }
            b'/' | b'(' => {
                if space {
                    out.pop();
                }
                space = false;
                out.push(a);
            }
            _ => {
                out.push(a.to_ascii_lowercase());
                space = false;
            }
        }
    }
    out
}

fn compress_whitespace(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut in_space = false;
    for &b in input {
        if is_space(b) {
            if !in_space {
                out.push(b' ');
                in_space = true;
            }
        } else {
            out.push(b);
            in_space = false;
        }
    }
    out
}

fn replace_comments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    let mut in_comment = false;
    while i < input.len() {
        let next = input.get(i + 1).copied();
        if !in_comment {
            if input[i] == b'/' && next == Some(b'*') {
                in_comment = true;
                i += 2;
            } else {
                out.push(input[i]);
                i += 1;
            }
        } else if input[i] == b'*' && next == Some(b'/') {
            in_comment = false;
            out.push(b' ');
            i += 2;
        } else {
            i += 1;
        }
    }
    if in_comment {
        out.push(b' ');
    }
    out
}

/// `.` and empty segments dropped, `..` removing the segment before it (kept at the
/// start of a relative path, dropped at the root), a trailing slash kept.
/// A path `normalize_path` leaves as it is: no empty segment inside it (`//`), no `.` or
/// `..` segment.
fn path_is_normal(input: &[u8]) -> bool {
    !input.windows(2).any(|w| w == b"//")
        && !input
            .split(|&b| b == b'/')
            .any(|seg| seg == b"." || seg == b"..")
}

fn normalize_path(input: &[u8]) -> Vec<u8> {
    if input.is_empty() {
        return Vec::new();
    }
    let absolute = input[0] == b'/';
    let trailing = input.len() > 1 && input.ends_with(b"/")
        || input.ends_with(b"/.")
        || input.ends_with(b"/..")
        || input == b"."
        || input == b"..";
    let mut segments: Vec<&[u8]> = Vec::new();
    for seg in input.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => match segments.last() {
                Some(last) if *last != b".." => {
                    segments.pop();
                }
                _ if !absolute => segments.push(seg),
                _ => {}
            },
            _ => segments.push(seg),
        }
    }
    let mut out = Vec::with_capacity(input.len());
    if absolute {
        out.push(b'/');
    }
    out.extend_from_slice(&segments.join(&b'/'));
    if trailing && !segments.is_empty() {
        out.push(b'/');
    }
    out
}

fn utf8_to_unicode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 2);
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        let len = match b {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 1,
        };
        let decoded = (len > 1)
            .then(|| input.get(i..i + len))
            .flatten()
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.chars().next());
        match decoded {
            Some(c) => {
                // Four hex digits at least, lower case, as ModSecurity writes them.
                out.extend_from_slice(format!("%u{:04x}", u32::from(c)).as_bytes());
                i += len;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, input: &[u8]) -> Vec<u8> {
        Transformation::parse(name)
            .unwrap()
            .unwrap()
            .apply(input)
            .into_owned()
    }

    #[test]
    fn names_as_crs_writes_them() {
        assert_eq!(Transformation::parse("none"), Ok(None));
        assert_eq!(
            Transformation::parse("urlDecodeUni"),
            Ok(Some(Transformation::UrlDecodeUni))
        );
        assert_eq!(
            Transformation::parse("normalisePath"),
            Ok(Some(Transformation::NormalizePath))
        );
        assert!(Transformation::parse("rot13").is_err());
    }

    #[test]
    fn url_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(t("urlDecode", b"a%20b+c%2"), b"a b c%2");
        assert_eq!(t("urlDecode", b"%zz%4"), b"%zz%4");
        assert_eq!(t("urlDecode", b"%u0041"), b"%u0041");
        assert_eq!(t("urlDecodeUni", b"%u0041%uFF1C%u123"), b"A<%u123");
        assert_eq!(t("urlDecodeUni", b"%27%20or%201=1"), b"' or 1=1");
        assert!(matches!(
            Transformation::UrlDecode.apply(b"plain"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn html_entities_with_and_without_semicolons() {
        assert_eq!(t("htmlEntityDecode", b"&lt;script&gt;"), b"<script>");
        assert_eq!(t("htmlEntityDecode", b"&#60;&#x3c;&#X3C"), b"<<<");
        assert_eq!(t("htmlEntityDecode", b"&QUOT;&nbsp;"), b"\"\xa0");
        assert_eq!(t("htmlEntityDecode", b"&foo;&#;&"), b"&foo;&#;&");
        assert_eq!(t("htmlEntityDecode", b"&#99999999999999999999;"), b"\xff");
    }

    #[test]
    fn javascript_escapes() {
        assert_eq!(t("jsDecode", br"\x3cscript\u003e"), b"<script>");
        assert_eq!(t("jsDecode", br"\74\101\477"), b"<A'7");
        assert_eq!(t("jsDecode", br"\n\t\'\q\uFF1C"), b"\n\t'q<");
        assert_eq!(t("jsDecode", br"end\"), br"end\");
    }

    #[test]
    fn css_escapes() {
        assert_eq!(t("cssDecode", br"\3c script"), b"<script");
        assert_eq!(t("cssDecode", br"\00003c\ff1c\6a"), b"<<j");
        assert_eq!(t("cssDecode", b"a\\\nb\\q\\"), b"abq");
    }

    #[test]
    fn command_lines_and_white_space() {
        assert_eq!(
            t("cmdLine", br#"C^at /eTc/"pa"ss\wd ,; x"#),
            b"cat/etc/passwd x"
        );
        assert_eq!(t("cmdLine", b"ls  (  x"), b"ls( x");
        assert_eq!(t("compressWhitespace", b"a \t\n\xa0b  c"), b"a b c");
        assert_eq!(t("removeWhitespace", b" a b\x0b\xa0c "), b"abc");
        assert_eq!(t("removeNulls", b"a\0b\0"), b"ab");
        assert_eq!(t("lowercase", b"SeLeCt"), b"select");
    }

    #[test]
    fn comments_paths_and_encodings() {
        assert_eq!(
            t("replaceComments", b"un/**/ion/*x*/sel/*open"),
            b"un ion sel "
        );
        assert_eq!(
            t("normalizePath", b"/a/b/../../../etc/./passwd"),
            b"/etc/passwd"
        );
        assert_eq!(t("normalizePath", b"a//b/../c/"), b"a/c/");
        assert_eq!(t("normalizePath", b"../../x"), b"../../x");
        assert_eq!(t("normalizePathWin", br"C:\a\..\b"), b"C:/b");
        assert_eq!(t("hexEncode", b"a\xff"), b"61ff");
        assert_eq!(t("length", b"12345"), b"5");
        assert_eq!(
            t("utf8toUnicode", "a<\u{ff1c}é\u{1f600}".as_bytes()),
            b"a<%uff1c%u00e9%u1f600"
        );
        assert_eq!(t("utf8toUnicode", b"\xc3("), b"\xc3(");
        assert_eq!(t("base64Decode", b"PHNjcmlwdD4="), b"<script>");
        assert_eq!(t("base64Decode", b"not base64!"), b"");
        assert_eq!(t("sha1", b"abc").len(), 20);
        assert_eq!(t("hexEncode", &t("sha1", b"abc"))[..8], *b"a9993e36");
    }

    proptest::proptest! {
        /// Every transformation takes any bytes a client can send without failing, and
        /// the decoders never grow a value.
        #[test]
        fn any_bytes_are_transformed(input in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            for name in [
                "lowercase", "urlDecode", "urlDecodeUni", "htmlEntityDecode", "jsDecode",
                "cssDecode", "removeNulls", "cmdLine", "compressWhitespace", "removeWhitespace",
                "replaceComments", "normalizePath", "normalizePathWin", "hexEncode", "length",
                "utf8toUnicode", "base64Decode", "sha1",
            ] {
                let out = t(name, &input);
                if ["urlDecode", "urlDecodeUni", "htmlEntityDecode", "jsDecode", "cssDecode"].contains(&name) {
                    proptest::prop_assert!(out.len() <= input.len(), "{name}");
                }
            }
        }

        /// A transformation that [`Traits`] says keeps a value does keep it.
        #[test]
        fn traits_agree(input in proptest::collection::vec(proptest::sample::select(b" \t\n\0./\\*%+&aB\xa0\xc3".to_vec()), 0..24)) {
            let traits = Traits::of(&input);
            for name in [
                "lowercase", "urlDecode", "urlDecodeUni", "htmlEntityDecode", "jsDecode",
                "cssDecode", "removeNulls", "compressWhitespace", "removeWhitespace",
                "replaceComments", "utf8toUnicode",
            ] {
                let Ok(Some(tr)) = Transformation::parse(name) else { unreachable!() };
                let borrowed = matches!(tr.apply(&input), Cow::Borrowed(_));
                if tr.keeps(traits) {
                    proptest::prop_assert!(borrowed, "{name} changed {input:?}");
                }
            }
        }

        /// The shortcuts for values left as they are agree with the full transformations.
        #[test]
        fn shortcuts_agree(input in proptest::collection::vec(proptest::sample::select(b" \t\n./\\a.".to_vec()), 0..24)) {
            proptest::prop_assert_eq!(t("compressWhitespace", &input), compress_whitespace(&input));
            proptest::prop_assert_eq!(t("normalizePath", &input), normalize_path(&input));
            let slashed: Vec<u8> = input.iter().map(|&b| if b == b'\\' { b'/' } else { b }).collect();
            proptest::prop_assert_eq!(t("normalizePathWin", &input), normalize_path(&slashed));
        }
    }
}
