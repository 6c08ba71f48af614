//! Request path normalization (docs/routing.md, "Path normalization"): the one form of a
//! path that routes match, policies see and the upstream receives. Percent-encoded
//! unreserved characters are decoded (RFC 3986 section 6.2.2.2), the hex digits of the
//! remaining escapes are upper-cased (6.2.2.1), dot segments are removed (5.2.4) and,
//! when asked, repeated slashes are merged. Encoded slashes and backslashes are kept,
//! rejected or decoded as the listener says.
//!
//! Routing additionally ignores path parameters (`;...` inside a segment), which servlet
//! containers drop before they route: [`routing_path`] gives the path routes match.

use std::borrow::Cow;

/// What to do with `%2F`, `%5C` and a literal `\` in a request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    /// Forward them unchanged; they are not separators for routing.
    #[default]
    Keep,
    /// Answer 400.
    Reject,
    /// Turn each into `/` before dot segments are removed and slashes merged.
    Decode,
}

/// How a listener normalizes paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Normalization {
    /// Merge runs of `/` into one.
    pub merge_slashes: bool,
    /// Encoded slashes and backslashes.
    pub escaped_slashes: EscapedSlashes,
}

impl Default for Normalization {
    fn default() -> Self {
        Self {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Keep,
        }
    }
}

/// Why a path cannot be normalized; each is a client error (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("the path has an invalid percent-encoding")]
    BadEscape,
    /// An encoded slash or backslash on a listener that rejects them.
    #[error("the path has an encoded slash or a backslash, which this listener rejects")]
    EscapedSlash,
    /// An escape that decodes to a control character or NUL.
    #[error("the path encodes a control character")]
    ControlCharacter,
}

/// The normalized form of `path` (an origin-form path without its query). Borrows when
/// the path is already normal, which is the common case and costs one scan.
pub fn normalize(path: &str, how: Normalization) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        // `*` (OPTIONS) and authority-form targets have no path to normalize.
        return Ok(Cow::Borrowed(path));
    }
    if is_normal(path.as_bytes(), how) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path, how.escaped_slashes)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded, how.merge_slashes)))
}

/// The path routes match: `path` (already normalized) without path parameters, with dot
/// segments that parameters hid (`/..;/`) removed.
pub fn routing_path(path: &str, merge_slashes: bool) -> Cow<'_, str> {
    if !path.contains(';') {
        return Cow::Borrowed(path);
    }
    let stripped: Vec<&str> = path
        .split('/')
        .map(|seg| seg.split(';').next().unwrap_or(""))
        .collect();
    Cow::Owned(remove_dot_segments(&stripped.join("/"), merge_slashes))
}

/// True when `p` needs no change: no escape, no backslash, no dot segment, no `//`.
fn is_normal(p: &[u8], how: Normalization) -> bool {
    let mut prev_slash = false;
    for (i, &b) in p.iter().enumerate() {
        match b {
            b'%' | b'\\' => return false,
            b'/' => {
                if prev_slash && how.merge_slashes {
                    return false;
                }
                prev_slash = true;
                continue;
            }
            b'.' if prev_slash => {
                // `/.` ending a segment, or `/..` ending one.
                let rest = &p[i + 1..];
                let end = |r: &[u8]| r.first().is_none_or(|c| *c == b'/');
                if end(rest) || (rest.first() == Some(&b'.') && end(&rest[1..])) {
                    return false;
                }
            }
            _ => {}
        }
        prev_slash = false;
    }
    true
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes unreserved escapes and applies the escaped-slash choice; other escapes stay,
/// with upper-case hex.
fn decode(path: &str, slashes: EscapedSlashes) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let p = path.as_bytes();
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        let b = p[i];
        if b == b'\\' {
            match slashes {
                EscapedSlashes::Keep => out.push(b'\\'),
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Decode => out.push(b'/'),
            }
            i += 1;
            continue;
        }
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            p.get(i + 1).copied().and_then(hex),
            p.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::BadEscape);
        };
        let c = hi << 4 | lo;
        if c < 0x20 || c == 0x7f {
            return Err(PathError::ControlCharacter);
        }
        if is_unreserved(c) {
            out.push(c);
        } else if c == b'/' || c == b'\\' {
            match slashes {
                EscapedSlashes::Keep => {
                    out.extend_from_slice(&[b'%', HEX[hi as usize], HEX[lo as usize]])
                }
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Decode => out.push(b'/'),
            }
        } else {
            out.extend_from_slice(&[b'%', HEX[hi as usize], HEX[lo as usize]]);
        }
        i += 3;
    }
    // Only ASCII was decoded into the (valid UTF-8) input, so this cannot fail.
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

/// RFC 3986 section 5.2.4 over segments, optionally dropping empty segments (merged
/// slashes). A trailing slash, or a trailing `.`/`..`, leaves a trailing slash.
fn remove_dot_segments(path: &str, merge_slashes: bool) -> String {
    let body = path.strip_prefix('/').unwrap_or(path);
    let segments: Vec<&str> = body.split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            "" if merge_slashes && i != last => {}
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(path.len());
    s.push('/');
    s.push_str(&out.join("/"));
    if merge_slashes {
        // `/a//` after merging inner slashes can still end in `//`.
        while s.ends_with("//") {
            s.pop();
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> String {
        normalize(p, Normalization::default()).unwrap().into_owned()
    }

    #[test]
    fn table() {
        for (input, want) in [
            ("/", "/"),
            ("/v1/admin", "/v1/admin"),
            ("/v1/%61dmin", "/v1/admin"),
            ("/v1/x/../admin", "/v1/admin"),
            ("/v1//admin", "/v1/admin"),
            ("/v1/./admin", "/v1/admin"),
            ("/v1/admin;x", "/v1/admin;x"),
            ("/v1/..;/v1/admin", "/v1/..;/v1/admin"),
            ("/v1/%2e%2e/admin", "/admin"),
            ("/v1/%2E./admin", "/admin"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/", "/a/"),
            ("/a//", "/a/"),
            ("//", "/"),
            ("/a/%2f/b", "/a/%2F/b"),
            ("/a%20b", "/a%20b"),
            ("/a%7e", "/a~"),
            ("/a%c3%a9", "/a%C3%A9"),
            ("/.hidden/..x", "/.hidden/..x"),
            ("*", "*"),
        ] {
            assert_eq!(n(input), want, "normalize({input:?})");
        }
    }

    #[test]
    fn slashes_kept_unmerged() {
        let how = Normalization {
            merge_slashes: false,
            ..Default::default()
        };
        assert_eq!(normalize("/a//b", how).unwrap(), "/a//b");
        assert_eq!(normalize("/a//../b", how).unwrap(), "/a/b");
    }

    #[test]
    fn escaped_slashes() {
        let with = |e| Normalization {
            merge_slashes: true,
            escaped_slashes: e,
        };
        for p in ["/a%2Fb", "/a%5cb", "/a\\b"] {
            assert_eq!(
                normalize(p, with(EscapedSlashes::Reject)),
                Err(PathError::EscapedSlash)
            );
            assert_eq!(normalize(p, with(EscapedSlashes::Decode)).unwrap(), "/a/b");
        }
        assert_eq!(
            normalize("/x/..%2F..%2Fadmin", with(EscapedSlashes::Decode)).unwrap(),
            "/admin"
        );
        assert_eq!(
            normalize("/a%5cb", with(EscapedSlashes::Keep)).unwrap(),
            "/a%5Cb"
        );
    }

    #[test]
    fn bad_escapes() {
        for p in ["/a%", "/a%4", "/a%zz", "/a%00", "/a%0a"] {
            assert!(normalize(p, Normalization::default()).is_err(), "{p}");
        }
    }

    #[test]
    fn routing_ignores_parameters() {
        assert_eq!(routing_path("/v1/admin;x", true), "/v1/admin");
        assert_eq!(routing_path("/v1/..;/v1/admin", true), "/v1/admin");
        assert_eq!(routing_path("/a;b=c/d;e", true), "/a/d");
        assert_eq!(routing_path("/plain", true), "/plain");
    }

    #[test]
    fn normal_form_is_stable() {
        for p in ["/a/./b/../c//d", "/%2e%2E/x", "/a/b/.", "/a;x/../b"] {
            let once = n(p);
            assert_eq!(n(&once), once, "{p}");
        }
    }
}
