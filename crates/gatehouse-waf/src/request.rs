//! A request as CRS rules see it: the collections their variables name (`ARGS`,
//! `REQUEST_HEADERS`, `REQUEST_COOKIES`, `XML`, ...), built once per inspected request
//! the way libmodsecurity builds them: query and form arguments URL-decoded, JSON
//! arguments named by their path (`json.user.name`, `json.ids.array_0`), cookies and
//! headers as sent, the XML body's text.

/// One member of a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Its name (a header, argument or cookie name; empty for single values).
    pub name: String,
    /// Its value, as bytes.
    pub value: Vec<u8>,
}

/// How the body was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/x-www-form-urlencoded`.
    Form,
    /// JSON (`application/json`, `+json`).
    Json,
    /// XML (`text/xml`, `application/xml`, `+xml`).
    Xml,
    /// `multipart/form-data`.
    Multipart,
    /// Anything else: only `REQUEST_BODY` sees it.
    Other,
}

impl BodyKind {
    /// The body processor for a `Content-Type` value.
    pub fn of(content_type: Option<&[u8]>) -> Self {
        let Some(ct) = content_type else {
            return Self::Other;
        };
        let ct = String::from_utf8_lossy(ct).to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence == "application/x-www-form-urlencoded" {
            Self::Form
        } else if essence == "application/json" || essence.ends_with("+json") {
            Self::Json
        } else if essence == "text/xml" || essence == "application/xml" || essence.ends_with("+xml")
        {
            Self::Xml
        } else if essence == "multipart/form-data" {
            Self::Multipart
        } else {
            Self::Other
        }
    }
}

/// The collections a request has, in slot order: the engine resolves a rule's variable
/// to its slot once, at load, so nothing is looked up by name per request.
pub const COLLECTIONS: [&str; 27] = [
    "REQUEST_METHOD",
    "REQUEST_PROTOCOL",
    "REQUEST_URI",
    "REQUEST_URI_RAW",
    "REQUEST_FILENAME",
    "REQUEST_BASENAME",
    "QUERY_STRING",
    "REQUEST_LINE",
    "REQUEST_HEADERS",
    "REQUEST_HEADERS_NAMES",
    "REQUEST_COOKIES",
    "REQUEST_COOKIES_NAMES",
    "REQUEST_BODY",
    "REQUEST_BODY_LENGTH",
    "XML",
    "ARGS",
    "ARGS_NAMES",
    "ARGS_GET",
    "ARGS_GET_NAMES",
    "ARGS_POST",
    "ARGS_POST_NAMES",
    "ARGS_COMBINED_SIZE",
    "FILES",
    "FILES_NAMES",
    "MULTIPART_PART_HEADERS",
    "FILES_COMBINED_SIZE",
    "REQBODY_PROCESSOR",
];

// Sets of slots are `u32` bit masks ([`Collections::filled`]).
const _: () = assert!(COLLECTIONS.len() <= 32);

/// The slot of collection `name` (upper case, as rules write it).
pub fn slot(name: &str) -> Option<usize> {
    COLLECTIONS.iter().position(|n| *n == name)
}

/// A request's collections.
#[derive(Debug, Default)]
pub struct Collections {
    /// Members by slot ([`COLLECTIONS`]).
    slots: [Vec<Item>; COLLECTIONS.len()],
    /// The body could not be parsed as its Content-Type says (`REQBODY_ERROR`).
    pub body_error: Option<String>,
    /// More arguments (query and body together) or cookies were sent than
    /// [`Collections::of_limited`] reads: only the first were read.
    pub over_limit: bool,
}

/// A part of requests a policy's exclusions keep from the rules (`arg:q`, `header:x`,
/// `cookie:c`, `path`, `body`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Excluded {
    /// A query, form or JSON argument (`a.b` for JSON's `json.a.b`), without case.
    Arg(String),
    /// A header, without case.
    Header(String),
    /// A cookie, without case.
    Cookie(String),
    /// The path (the file name, its base name, the path in the URI and request line).
    Path,
    /// The body: raw, its arguments, XML and multipart files.
    Body,
}

impl Excluded {
    /// Reads `arg:NAME`, `header:NAME`, `cookie:NAME`, `path` or `body`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let named = |n: &str, kind: &str| {
            if n.is_empty() {
                Err(format!("{kind}: names nothing"))
            } else {
                Ok(n.to_string())
            }
        };
        match s.split_once(':') {
            Some(("arg", n)) => Ok(Self::Arg(named(n, "arg")?)),
            Some(("header", n)) => Ok(Self::Header(named(n, "header")?)),
            Some(("cookie", n)) => Ok(Self::Cookie(named(n, "cookie")?)),
            None if s == "path" => Ok(Self::Path),
            None if s == "body" => Ok(Self::Body),
            _ => Err(format!(
                "{s:?} is not a target: arg:NAME, header:NAME, cookie:NAME, path or body"
            )),
        }
    }
}

/// The parts of a request the collections are made from.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The request target as sent (`/path?query`, or absolute form).
    pub target: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub protocol: &'a str,
    /// Header fields in order, names as sent.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The body as far as it is inspected, if any.
    pub body: Option<&'a [u8]>,
}

impl Collections {
    /// The collections of `r`.
    pub fn of(r: &RequestParts<'_>) -> Self {
        Self::of_limited(r, usize::MAX)
    }

    /// The collections of `r` with at most `max_arguments` arguments (query and body
    /// together, in that order) and as many cookies, as ModSecurity's
    /// `SecArgumentsLimit`: past it [`Collections::over_limit`] is set. The rules'
    /// work grows with the number of values, so a hostile body of tens of thousands of
    /// `a=1&` is cut before it costs more than an ordinary request.
    pub fn of_limited(r: &RequestParts<'_>, max_arguments: usize) -> Self {
        let mut c = Self::default();
        // One more than the limit is read, to know it was passed.
        let cap = max_arguments.saturating_add(1);
        let single = |v: &[u8]| {
            vec![Item {
                name: String::new(),
                value: v.to_vec(),
            }]
        };
        // The path and query of an absolute-form target.
        let uri = match r.target.find("://").filter(|_| !r.target.starts_with('/')) {
            Some(i) => {
                let rest = &r.target[i + 3..];
                rest.find('/').map_or("/", |p| &rest[p..])
            }
            None => r.target,
        };
        let query = uri.split_once('?').map_or("", |(_, q)| q);
        // As ModSecurity 3: REQUEST_URI, REQUEST_FILENAME and REQUEST_BASENAME are
        // percent-decoded (the path ending at the first `?` once decoded, the base name
        // after the last `/` or `\`, absent when empty); QUERY_STRING stays raw.
        let decoded = uri_decode(uri.as_bytes());
        let path = decoded
            .iter()
            .position(|&b| b == b'?')
            .map_or(&decoded[..], |i| &decoded[..i]);
        c.put("REQUEST_METHOD", single(r.method.as_bytes()));
        c.put("REQUEST_PROTOCOL", single(r.protocol.as_bytes()));
        c.put("REQUEST_URI", single(&decoded));
        c.put("REQUEST_URI_RAW", single(r.target.as_bytes()));
        c.put("REQUEST_FILENAME", single(path));
        if let Some(i) = path.iter().rposition(|&b| b == b'/' || b == b'\\')
            && i + 1 < path.len()
        {
            c.put("REQUEST_BASENAME", single(&path[i + 1..]));
        }
        c.put("QUERY_STRING", single(query.as_bytes()));
        let line = format!("{} {} {}", r.method, r.target, r.protocol);
        c.put("REQUEST_LINE", single(line.as_bytes()));

        let headers: Vec<Item> = r
            .headers
            .iter()
            .map(|(n, v)| Item {
                name: (*n).to_string(),
                value: v.to_vec(),
            })
            .collect();
        c.put("REQUEST_HEADERS_NAMES", names(&headers));
        let cookies: Vec<Item> = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .flat_map(|h| cookie_pairs(&h.value))
            .take(cap)
            .collect();
        let cookies = c.within(cookies, max_arguments);
        c.put("REQUEST_COOKIES_NAMES", names(&cookies));
        c.put("REQUEST_COOKIES", cookies);

        let get = c.within(url_arguments(query.as_bytes(), cap), max_arguments);
        let room = max_arguments - get.len();
        let content_type = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-type"))
            .map(|h| h.value.as_slice());
        c.put("REQUEST_HEADERS", headers.clone());
        let mut post = Vec::new();
        if let Some(body) = r.body {
            c.put("REQUEST_BODY", single(body));
            c.put(
                "REQUEST_BODY_LENGTH",
                single(body.len().to_string().as_bytes()),
            );
            let kind = BodyKind::of(content_type);
            let processor: &[u8] = match kind {
                BodyKind::Form => b"URLENCODED",
                BodyKind::Json => b"JSON",
                BodyKind::Xml => b"XML",
                BodyKind::Multipart => b"MULTIPART",
                BodyKind::Other => b"",
            };
            if !processor.is_empty() {
                c.put("REQBODY_PROCESSOR", single(processor));
            }
            match kind {
                BodyKind::Form => post = url_arguments(body, room.saturating_add(1)),
                BodyKind::Json => {
                    let mut path = String::from("json");
                    let read = JsonArguments {
                        path: &mut path,
                        out: &mut post,
                        max: room.saturating_add(1),
                    };
                    let mut de = serde_json::Deserializer::from_slice(body);
                    let whole = serde::de::DeserializeSeed::deserialize(read, &mut de)
                        .and_then(|()| de.end());
                    if let Err(e) = whole {
                        // A body that is not JSON yields no arguments, whatever was read.
                        post.clear();
                        c.body_error = Some(format!("JSON: {e}"));
                    }
                }
                BodyKind::Xml => match xml_text(body) {
                    Ok(text) => c.put("XML", single(&text)),
                    Err(e) => c.body_error = Some(format!("XML: {e}")),
                },
                BodyKind::Multipart => {
                    let ct = content_type.unwrap_or_default();
                    match boundary(ct).and_then(|b| parts(body, &b)) {
                        Ok(list) => multipart_collections(&mut c, list, &mut post),
                        Err(e) => c.body_error = Some(format!("multipart: {e}")),
                    }
                }
                BodyKind::Other => {}
            }
        }
        let post = c.within(post, room);
        c.put("ARGS_GET_NAMES", names(&get));
        c.put("ARGS_POST_NAMES", names(&post));
        let args: Vec<Item> = get.iter().chain(&post).cloned().collect();
        c.put("ARGS_NAMES", names(&args));
        let combined: usize = args.iter().map(|a| a.name.len() + a.value.len()).sum();
        c.put(
            "ARGS_COMBINED_SIZE",
            single(combined.to_string().as_bytes()),
        );
        c.put("ARGS", args);
        c.put("ARGS_GET", get);
        c.put("ARGS_POST", post);
        c
    }

    /// `items` cut to `max`, noting when that left some out.
    fn within(&mut self, mut items: Vec<Item>, max: usize) -> Vec<Item> {
        if items.len() > max {
            self.over_limit = true;
            items.truncate(max);
        }
        items
    }

    fn put(&mut self, name: &'static str, items: Vec<Item>) {
        if let Some(i) = slot(name) {
            self.slots[i] = items;
        }
    }

    /// The members of collection `name` (upper case, as rules write it); empty when the
    /// request has none.
    pub fn get(&self, name: &str) -> &[Item] {
        slot(name).map_or(&[], |i| self.at(i))
    }

    /// Takes `x` out of the collections, so no rule reads it.
    pub fn exclude(&mut self, x: &Excluded) {
        let named = |n: &str| {
            let n = n.to_string();
            move |i: &Item| {
                i.name.eq_ignore_ascii_case(&n)
                    || i.name
                        .strip_prefix("json.")
                        .is_some_and(|j| j.eq_ignore_ascii_case(&n))
            }
        };
        match x {
            Excluded::Arg(n) => {
                for c in ["ARGS", "ARGS_GET", "ARGS_POST"] {
                    self.remove(c, named(n));
                }
            }
            Excluded::Header(n) => self.remove("REQUEST_HEADERS", named(n)),
            Excluded::Cookie(n) => self.remove("REQUEST_COOKIES", named(n)),
            Excluded::Path => {
                for c in ["REQUEST_FILENAME", "REQUEST_BASENAME"] {
                    self.put(c, Vec::new());
                }
                for c in ["REQUEST_URI", "REQUEST_URI_RAW", "REQUEST_LINE"] {
                    if let Some(i) = slot(c) {
                        for item in &mut self.slots[i] {
                            item.value = without_path(&item.value);
                        }
                    }
                }
            }
            Excluded::Body => {
                for c in [
                    "REQUEST_BODY",
                    "XML",
                    "ARGS_POST",
                    "ARGS_POST_NAMES",
                    "FILES",
                    "FILES_NAMES",
                    "MULTIPART_PART_HEADERS",
                ] {
                    self.put(c, Vec::new());
                }
                let get = self.get("ARGS_GET").to_vec();
                self.put("ARGS_NAMES", names(&get));
                self.put("ARGS", get);
            }
        }
    }

    fn remove(&mut self, name: &'static str, matches: impl Fn(&Item) -> bool) {
        if let Some(i) = slot(name) {
            self.slots[i].retain(|item| !matches(item));
        }
    }

    /// The members of the collection in slot `i` ([`slot`]).
    pub fn at(&self, i: usize) -> &[Item] {
        self.slots.get(i).map_or(&[], Vec::as_slice)
    }

    /// A bit per slot ([`COLLECTIONS`]) that holds a member.
    pub fn filled(&self) -> u32 {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .fold(0, |m, (i, _)| m | 1 << i)
    }
}

/// A URI or request line with its path replaced by `/` (the query kept).
fn without_path(v: &[u8]) -> Vec<u8> {
    let Some(start) = v.iter().position(|&b| b == b'/') else {
        return v.to_vec();
    };
    let end = v[start..]
        .iter()
        .position(|&b| b == b'?' || b == b' ')
        .map_or(v.len(), |e| start + e);
    let mut out = v[..start].to_vec();
    out.push(b'/');
    out.extend_from_slice(&v[end..]);
    out
}

/// The names of `items`, as a collection of their own (`ARGS_NAMES`, ...).
fn names(items: &[Item]) -> Vec<Item> {
    items
        .iter()
        .map(|i| Item {
            name: i.name.clone(),
            value: i.name.as_bytes().to_vec(),
        })
        .collect()
}

/// `a=1&b=2&c` URL-decoded as ModSecurity does (`+` is a space, broken escapes stay):
/// the first `max`.
fn url_arguments(text: &[u8], max: usize) -> Vec<Item> {
    let decode = |b: &[u8]| {
        crate::transformation::Transformation::UrlDecode
            .apply(b)
            .into_owned()
    };
    text.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (n, v) = name_value(pair);
            Item {
                name: String::from_utf8_lossy(&decode(n)).into_owned(),
                value: decode(v),
            }
        })
        .take(max)
        .collect()
}

/// `%XX` sequences decoded (not `+`), others kept as they are: ModSecurity's
/// `uri_decode` of the request target.
fn uri_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%'
            && i + 2 < raw.len()
            && let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

/// `name=value` split at the first `=`; without one, all name and an empty value.
fn name_value(pair: &[u8]) -> (&[u8], &[u8]) {
    match pair.iter().position(|&b| b == b'=') {
        Some(i) => (&pair[..i], &pair[i + 1..]),
        None => (pair, &[]),
    }
}

/// `a=1; b=2` as sent (ModSecurity does not decode cookies).
fn cookie_pairs(header: &[u8]) -> Vec<Item> {
    header
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (n, v) = name_value(pair);
            Item {
                name: String::from_utf8_lossy(n).into_owned(),
                value: v.to_vec(),
            }
        })
        .collect()
}

/// A JSON document's scalars, each named by its path (`json.a.b`, `json.list.array_0`),
/// read as the parser meets them (no document tree is built): the first `max`, the rest
/// parsed but not kept. A key given twice yields both values, as ModSecurity's JSON
/// reader does (a tree would keep one, and an attack could hide behind the other).
/// `path` is the value's own, extended and cut back in place for its members.
struct JsonArguments<'a> {
    path: &'a mut String,
    out: &'a mut Vec<Item>,
    max: usize,
}

impl JsonArguments<'_> {
    fn push(self, value: Vec<u8>) {
        self.out.push(Item {
            name: self.path.clone(),
            value,
        });
    }

    /// The same reader for a member (`path` then ends with the member's name).
    fn member(&mut self) -> JsonArguments<'_> {
        JsonArguments {
            path: self.path,
            out: self.out,
            max: self.max,
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for JsonArguments<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonArguments<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.push(if v {
            b"true".to_vec()
        } else {
            b"false".to_vec()
        });
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.push(serde_json::Number::from(v).to_string().into_bytes());
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.push(serde_json::Number::from(v).to_string().into_bytes());
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        // Written as a document tree's number is (JSON has no NaN or infinity).
        let text = serde_json::Number::from_f64(v).map_or_else(String::new, |n| n.to_string());
        self.push(text.into_bytes());
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.push(v.as_bytes().to_vec());
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.push(Vec::new());
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        use std::fmt::Write;
        let at = self.path.len();
        let mut i = 0usize;
        loop {
            if self.out.len() >= self.max {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                return Ok(());
            }
            // Writing to a String cannot fail.
            let _ = write!(self.path, ".array_{i}");
            let more = seq.next_element_seed(self.member())?.is_some();
            self.path.truncate(at);
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let at = self.path.len();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if self.out.len() >= self.max {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            self.path.push('.');
            self.path.push_str(&key);
            map.next_value_seed(self.member())?;
            self.path.truncate(at);
        }
        Ok(())
    }
}

/// One part of a multipart body.
struct Part {
    name: String,
    filename: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    data: Vec<u8>,
}

/// A multipart body's parts as ModSecurity files them: fields in `ARGS_POST`, files in
/// `FILES` (field name, file name) and `FILES_NAMES`, every part's header lines in
/// `MULTIPART_PART_HEADERS`.
fn multipart_collections(c: &mut Collections, list: Vec<Part>, post: &mut Vec<Item>) {
    let mut files = Vec::new();
    let mut headers = Vec::new();
    let mut files_size = 0usize;
    for p in list {
        for (n, v) in &p.headers {
            let mut line = format!("{n}: ").into_bytes();
            line.extend_from_slice(v);
            headers.push(Item {
                name: p.name.clone(),
                value: line,
            });
        }
        match p.filename {
            Some(f) => {
                files_size += p.data.len();
                files.push(Item {
                    name: p.name,
                    value: f.into_bytes(),
                });
            }
            None => post.push(Item {
                name: p.name,
                value: p.data,
            }),
        }
    }
    c.put(
        "FILES_COMBINED_SIZE",
        vec![Item {
            name: String::new(),
            value: files_size.to_string().into_bytes(),
        }],
    );
    c.put("FILES_NAMES", names(&files));
    c.put("FILES", files);
    c.put("MULTIPART_PART_HEADERS", headers);
}

/// The `boundary` parameter of a multipart Content-Type.
fn boundary(content_type: &[u8]) -> Result<String, String> {
    let ct = String::from_utf8_lossy(content_type);
    ct.split(';')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or_else(|| "no boundary in the Content-Type".to_string())
}

/// The parts of a multipart body (RFC 7578): each part's headers, its name and file
/// name from Content-Disposition, and its content.
fn parts(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
    let delimiter = format!("--{boundary}").into_bytes();
    let find = |from: usize| {
        body.get(from..)?
            .windows(delimiter.len())
            .position(|w| w == delimiter.as_slice())
            .map(|p| p + from)
    };
    let mut at = find(0).ok_or("no boundary in the body")? + delimiter.len();
    let mut out = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(out);
        }
        if !rest.starts_with(b"\r\n") {
            return Err("a boundary not followed by a line end".into());
        }
        let start = at + 2;
        let next = find(start).ok_or("the last part has no closing boundary")?;
        // The line end before a delimiter belongs to the delimiter.
        let end = if next >= start + 2 && body[next - 2..next] == *b"\r\n" {
            next - 2
        } else {
            next
        };
        let part = &body[start..end];
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let (offset, headers) = match httparse::parse_headers(part, &mut slots) {
            Ok(httparse::Status::Complete((n, h))) => (n, h),
            _ => return Err("a part's headers are malformed".into()),
        };
        let mut p = Part {
            name: String::new(),
            filename: None,
            headers: headers
                .iter()
                .map(|h| (h.name.to_string(), h.value.to_vec()))
                .collect(),
            data: part[offset..].to_vec(),
        };
        let disposition = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-disposition"));
        if let Some(cd) = disposition {
            for param in String::from_utf8_lossy(cd.value).split(';').skip(1) {
                if let Some((k, v)) = param.split_once('=') {
                    let v = v.trim().trim_matches('"').to_string();
                    match k.trim().to_ascii_lowercase().as_str() {
                        "name" => p.name = v,
                        "filename" => p.filename = Some(v),
                        _ => {}
                    }
                }
            }
        }
        out.push(p);
        at = next + delimiter.len();
    }
}

/// The text of an XML document (every text and CDATA node, in order): what `XML:/*`
/// reads.
fn xml_text(body: &[u8]) -> Result<Vec<u8>, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut depth = 0usize;
    let mut seen_root = false;
    loop {
        match reader
            .read_event_into(&mut buf)
            .map_err(|e| e.to_string())?
        {
            Event::Start(_) => {
                depth += 1;
                seen_root = true;
            }
            Event::Empty(_) => seen_root = true,
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Text(t) if depth > 0 => {
                let text = t.xml_content().map_err(|e| e.to_string())?;
                out.extend_from_slice(text.as_bytes());
            }
            Event::CData(t) if depth > 0 => out.extend_from_slice(&t),
            Event::GeneralRef(r) if depth > 0 => match r.resolve_char_ref() {
                Ok(Some(c)) => out.extend_from_slice(c.to_string().as_bytes()),
                _ => {
                    // A predefined entity as its character; any other (no DTD is read)
                    // as written, so its text is still inspected.
                    let name = r.decode().map_err(|e| e.to_string())?;
                    match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(v) => out.extend_from_slice(v.as_bytes()),
                        None => out.extend_from_slice(format!("&{name};").as_bytes()),
                    }
                }
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !seen_root || depth != 0 {
        return Err("not a complete document".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(c: &Collections, name: &str) -> Vec<(String, String)> {
        c.get(name)
            .iter()
            .map(|i| {
                (
                    i.name.clone(),
                    String::from_utf8_lossy(&i.value).into_owned(),
                )
            })
            .collect()
    }

    fn pair(n: &str, v: &str) -> (String, String) {
        (n.into(), v.into())
    }

    #[test]
    fn line_query_headers_and_cookies() {
        let headers: &[(&str, &[u8])] = &[
            ("Host", b"shop.example"),
            ("Cookie", b"sid=a%20b; theme=dark"),
            ("cookie", b"lang"),
        ];
        let c = Collections::of(&RequestParts {
            method: "GET",
            target: "/shop/item.php?id=1%27+or+1=1&q&%3Cx%3E=y",
            protocol: "HTTP/1.1",
            headers,
            body: None,
        });
        assert_eq!(
            values(&c, "ARGS"),
            [pair("id", "1' or 1=1"), pair("q", ""), pair("<x>", "y")]
        );
        assert_eq!(values(&c, "ARGS_NAMES")[2], pair("<x>", "<x>"));
        assert_eq!(
            values(&c, "QUERY_STRING")[0].1,
            "id=1%27+or+1=1&q&%3Cx%3E=y"
        );
        assert_eq!(values(&c, "REQUEST_FILENAME")[0].1, "/shop/item.php");
        assert_eq!(values(&c, "REQUEST_BASENAME")[0].1, "item.php");
        assert_eq!(
            values(&c, "REQUEST_LINE")[0].1,
            "GET /shop/item.php?id=1%27+or+1=1&q&%3Cx%3E=y HTTP/1.1"
        );
        assert_eq!(
            values(&c, "REQUEST_COOKIES"),
            [
                pair("sid", "a%20b"),
                pair("theme", "dark"),
                pair("lang", "")
            ]
        );
        assert_eq!(
            values(&c, "REQUEST_HEADERS")[0],
            pair("Host", "shop.example")
        );
        assert!(c.get("REQUEST_BODY").is_empty() && c.get("XML").is_empty());
    }

    #[test]
    fn exclusions_take_parts_out_of_every_collection_that_holds_them() {
        let headers: &[(&str, &[u8])] = &[
            ("Host", b"shop.example"),
            ("X-Note", b"<script>"),
            ("Cookie", b"sid=1; pref=x"),
            ("Content-Type", b"application/json"),
        ];
        let parts = RequestParts {
            method: "POST",
            target: "/a/b.php?q=1&keep=2",
            protocol: "HTTP/1.1",
            headers,
            body: Some(br#"{"user":{"name":"x"},"q":"y"}"#),
        };
        let mut c = Collections::of(&parts);
        for x in [
            "arg:q",
            "arg:user.name",
            "header:x-note",
            "cookie:SID",
            "path",
        ] {
            c.exclude(&Excluded::parse(x).unwrap());
        }
        assert_eq!(values(&c, "ARGS"), [pair("keep", "2")]);
        assert_eq!(values(&c, "ARGS_GET"), [pair("keep", "2")]);
        assert!(c.get("ARGS_POST").is_empty());
        assert_eq!(values(&c, "REQUEST_COOKIES"), [pair("pref", "x")]);
        assert!(
            !values(&c, "REQUEST_HEADERS")
                .iter()
                .any(|h| h.0 == "X-Note")
        );
        assert!(c.get("REQUEST_FILENAME").is_empty());
        assert_eq!(values(&c, "REQUEST_URI")[0].1, "/?q=1&keep=2");
        assert_eq!(
            values(&c, "REQUEST_LINE")[0].1,
            "POST /?q=1&keep=2 HTTP/1.1"
        );
        let mut c = Collections::of(&parts);
        c.exclude(&Excluded::Body);
        assert!(c.get("REQUEST_BODY").is_empty());
        assert_eq!(values(&c, "ARGS").len(), 2, "the query's arguments stay");
        for bad in ["arg:", "query:x", "paths"] {
            assert!(Excluded::parse(bad).is_err(), "{bad}");
        }
    }

    /// ModSecurity 3 decodes the path: `%XX` only, the path ending at a decoded `?`.
    #[test]
    fn the_path_is_percent_decoded_as_modsecurity_does() {
        let at = |target: &str| {
            Collections::of(&RequestParts {
                method: "GET",
                target,
                protocol: "HTTP/1.1",
                headers: &[],
                body: None,
            })
        };
        let c = at("/files/a+b/phpinfo%28%29%zz?x=%41");
        assert_eq!(
            values(&c, "REQUEST_FILENAME")[0].1,
            "/files/a+b/phpinfo()%zz"
        );
        assert_eq!(values(&c, "REQUEST_BASENAME")[0].1, "phpinfo()%zz");
        assert_eq!(
            values(&c, "REQUEST_URI")[0].1,
            "/files/a+b/phpinfo()%zz?x=A"
        );
        assert_eq!(values(&c, "QUERY_STRING")[0].1, "x=%41");
        let c = at("/a%3Fb/c%5Cd.bak");
        assert_eq!(values(&c, "REQUEST_FILENAME")[0].1, "/a");
        assert_eq!(values(&c, "REQUEST_BASENAME")[0].1, "a");
        assert!(at("/dir/").get("REQUEST_BASENAME").is_empty());
        assert_eq!(
            values(&at("/x/c%5Cd.bak"), "REQUEST_BASENAME")[0].1,
            "d.bak"
        );
    }

    /// Past the limit only the first arguments (query, then body) and cookies are read,
    /// and the request says so.
    #[test]
    fn arguments_and_cookies_are_read_up_to_the_limit() {
        let parts = |headers, body| RequestParts {
            method: "POST",
            target: "/?a=1&b=2",
            protocol: "HTTP/1.1",
            headers,
            body: Some(body),
        };
        let form: &[(&str, &[u8])] = &[
            ("Content-Type", b"application/x-www-form-urlencoded"),
            ("Cookie", b"x=1; y=2; z=3"),
        ];
        let c = Collections::of_limited(&parts(form, b"c=3&d=4"), 3);
        assert!(c.over_limit);
        assert_eq!(
            values(&c, "ARGS"),
            [pair("a", "1"), pair("b", "2"), pair("c", "3")]
        );
        assert_eq!(values(&c, "ARGS_POST_NAMES").len(), 1);
        assert_eq!(values(&c, "REQUEST_COOKIES").len(), 3);
        let c = Collections::of_limited(&parts(form, b"c=3"), 3);
        assert!(!c.over_limit, "exactly at the limit");
        let json: &[(&str, &[u8])] = &[("Content-Type", b"application/json")];
        let c = Collections::of_limited(&parts(json, br#"{"l":[1,2,3,4],"m":5}"#), 4);
        assert!(c.over_limit);
        assert_eq!(
            values(&c, "ARGS"),
            [
                pair("a", "1"),
                pair("b", "2"),
                pair("json.l.array_0", "1"),
                pair("json.l.array_1", "2")
            ]
        );
        let hostile = "a=1&".repeat(30_000);
        let c = Collections::of_limited(&parts(form, hostile.as_bytes()), 1000);
        assert!(c.over_limit);
        assert_eq!(c.get("ARGS").len(), 1000);
        assert!(!Collections::of(&parts(form, hostile.as_bytes())).over_limit);
    }

    #[test]
    fn form_json_and_xml_bodies() {
        let form: &[(&str, &[u8])] = &[(
            "Content-Type",
            b"application/x-www-form-urlencoded; charset=utf-8",
        )];
        let c = Collections::of(&RequestParts {
            method: "POST",
            target: "http://api.example/login?next=%2F",
            protocol: "HTTP/1.1",
            headers: form,
            body: Some(b"user=ann&pass=x+y"),
        });
        assert_eq!(values(&c, "REQUEST_URI")[0].1, "/login?next=/");
        assert_eq!(
            values(&c, "REQUEST_URI_RAW")[0].1,
            "http://api.example/login?next=%2F"
        );
        assert_eq!(values(&c, "QUERY_STRING")[0].1, "next=%2F");
        assert_eq!(
            values(&c, "ARGS"),
            [pair("next", "/"), pair("user", "ann"), pair("pass", "x y")]
        );
        assert_eq!(values(&c, "ARGS_POST_NAMES").len(), 2);

        let json: &[(&str, &[u8])] = &[("content-type", b"application/json")];
        let c = Collections::of(&RequestParts {
            method: "PUT",
            target: "/users/7",
            protocol: "HTTP/2.0",
            headers: json,
            body: Some(br#"{"name":"O'Brien","tags":["a","<b>"],"age":7,"x":null,"ok":true}"#),
        });
        assert_eq!(
            values(&c, "ARGS"),
            [
                pair("json.name", "O'Brien"),
                pair("json.tags.array_0", "a"),
                pair("json.tags.array_1", "<b>"),
                pair("json.age", "7"),
                pair("json.x", ""),
                pair("json.ok", "true"),
            ]
        );
        let bad = Collections::of(&RequestParts {
            method: "POST",
            target: "/",
            protocol: "HTTP/1.1",
            headers: json,
            body: Some(b"{\"a\":"),
        });
        assert!(
            bad.body_error
                .as_deref()
                .is_some_and(|e| e.starts_with("JSON"))
        );
        let json_post = |body: &'static [u8]| RequestParts {
            method: "POST",
            target: "/",
            protocol: "HTTP/1.1",
            headers: json,
            body: Some(body),
        };
        // Broken after a good start, or with trailing bytes: no arguments at all.
        for broken in [&br#"{"q":"x","r":"#[..], br#"{"q":"x"} y"#] {
            let c = Collections::of(&json_post(broken));
            assert!(c.body_error.is_some());
            assert!(c.get("ARGS").is_empty());
        }
        // A key given twice: both values read (ModSecurity's reader), numbers as written.
        let c = Collections::of(&json_post(
            br#"{"q":"' or 1=1--","q":"ok","n":[1.5,-2,1e3]}"#,
        ));
        assert_eq!(
            values(&c, "ARGS"),
            [
                pair("json.q", "' or 1=1--"),
                pair("json.q", "ok"),
                pair("json.n.array_0", "1.5"),
                pair("json.n.array_1", "-2"),
                pair("json.n.array_2", "1000.0"),
            ]
        );
        // Past the argument limit the rest is parsed, not kept.
        let c = Collections::of_limited(&json_post(br#"{"a":1,"b":{"c":2,"d":3},"e":[4,5]}"#), 2);
        assert!(c.over_limit && c.body_error.is_none());
        assert_eq!(
            values(&c, "ARGS"),
            [pair("json.a", "1"), pair("json.b.c", "2")]
        );

        let xml: &[(&str, &[u8])] = &[("Content-Type", b"application/soap+xml")];
        let c = Collections::of(&RequestParts {
            method: "POST",
            target: "/soap",
            protocol: "HTTP/1.1",
            headers: xml,
            body: Some(b"<?xml version=\"1.0\"?><a><b>1 &lt; 2</b><c><![CDATA[<script>]]></c></a>"),
        });
        assert_eq!(values(&c, "XML")[0].1, "1 < 2<script>");
        assert_eq!(values(&c, "REQUEST_BODY_LENGTH")[0].1, "70");

        let mp: &[(&str, &[u8])] = &[("Content-Type", b"multipart/form-data; boundary=\"XyZ\"")];
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nMy <b>cat</b>\r\n--XyZ\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"shell.php\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n--XyZ--\r\n";
        let c = Collections::of(&RequestParts {
            method: "POST",
            target: "/upload",
            protocol: "HTTP/1.1",
            headers: mp,
            body: Some(body),
        });
        assert!(c.body_error.is_none(), "{:?}", c.body_error);
        assert_eq!(values(&c, "ARGS"), [pair("title", "My <b>cat</b>")]);
        assert_eq!(values(&c, "FILES"), [pair("upload", "shell.php")]);
        assert_eq!(values(&c, "FILES_NAMES"), [pair("upload", "upload")]);
        assert_eq!(
            values(&c, "MULTIPART_PART_HEADERS")[2],
            pair("upload", "Content-Type: image/png")
        );
        let broken = Collections::of(&RequestParts {
            method: "POST",
            target: "/upload",
            protocol: "HTTP/1.1",
            headers: mp,
            body: Some(b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end"),
        });
        assert!(broken.body_error.is_some());
    }

    proptest::proptest! {
        /// Any target and body, under any of the body types, make collections.
        #[test]
        fn any_request_makes_collections(
            target in "[ -~]{0,40}",
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            kind in 0usize..4,
        ) {
            let ct: &[u8] = [&b"application/json"[..], b"text/xml", b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=b"][kind];
            let headers: &[(&str, &[u8])] = &[("Content-Type", ct), ("Cookie", &body)];
            let c = Collections::of(&RequestParts { method: "POST", target: &target, protocol: "HTTP/1.1", headers, body: Some(&body) });
            proptest::prop_assert_eq!(c.get("REQUEST_BODY").len(), 1);
        }
    }
}
