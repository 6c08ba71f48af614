//! `type: compress`: compresses response bodies with zstd, brotli or gzip as the client's
//! `Accept-Encoding` allows, streamed frame by frame (each flushed as the upstream sends
//! it). A response encoder: its response phase runs after every other policy's, so a
//! cache stores, and a transform edits, the body as the upstream sent it.

use crate::{Build, BuildResult, Kind};
use bytes::Bytes;
use gatehouse_core::{
    BodyFilter, BodyNeeds, FilterError, Flow, Policy, RequestBodyNeed, RequestCtx, ResponseBodyNeed,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use schemars::JsonSchema;
use serde::Deserialize;
use std::io::Write;
use std::sync::Arc;

/// `type: compress`.
pub const KIND: Kind = Kind {
    name: "compress",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// A content coding the policy can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Zstandard (RFC 8878).
    Zstd,
    /// Brotli (RFC 7932).
    Br,
    /// gzip (RFC 1952).
    Gzip,
}

impl Algorithm {
    /// Its `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Br => "br",
            Self::Gzip => "gzip",
        }
    }
}

/// The settings of `type: compress`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CompressPolicy")]
pub struct Config {
    /// The codings offered, in order of preference among equal q-values.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Bodies whose `Content-Length` is below this pass unchanged (default 1KiB; a body
    /// of unknown length is compressed).
    #[serde(default = "default_min_size")]
    pub min_size: gatehouse_config::Size,
    /// Media types compressed: exact (`application/json`), a whole type (`text/*`) or a
    /// structured suffix (`application/*+json`). Parameters are ignored.
    #[serde(default = "default_content_types")]
    pub content_types: Vec<String>,
    /// Compression level per coding.
    #[serde(default)]
    pub levels: Levels,
}

/// Levels per coding.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Levels {
    /// gzip, 1-9 (default 5).
    #[serde(default = "default_gzip")]
    pub gzip: u32,
    /// brotli, 0-11 (default 4).
    #[serde(default = "default_br")]
    pub br: u32,
    /// zstd, 1-19 (default 3).
    #[serde(default = "default_zstd")]
    pub zstd: i32,
}

impl Default for Levels {
    fn default() -> Self {
        Self {
            gzip: default_gzip(),
            br: default_br(),
            zstd: default_zstd(),
        }
    }
}

fn default_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::Zstd, Algorithm::Br, Algorithm::Gzip]
}
fn default_min_size() -> gatehouse_config::Size {
    gatehouse_config::Size(1024)
}
fn default_content_types() -> Vec<String> {
    [
        "text/*",
        "application/json",
        "application/*+json",
        "application/xml",
        "application/*+xml",
        "application/javascript",
        "image/svg+xml",
    ]
    .map(String::from)
    .to_vec()
}
fn default_gzip() -> u32 {
    5
}
fn default_br() -> u32 {
    4
}
fn default_zstd() -> i32 {
    3
}

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    let mut issues = Vec::new();
    if c.algorithms.is_empty() {
        issues.push(b.issue(Some("algorithms"), "lists no coding"));
    }
    if !(1..=9).contains(&c.levels.gzip) {
        issues.push(b.issue(Some("levels.gzip"), "must be 1 to 9"));
    }
    if c.levels.br > 11 {
        issues.push(b.issue(Some("levels.br"), "must be 0 to 11"));
    }
    if !(1..=19).contains(&c.levels.zstd) {
        issues.push(b.issue(Some("levels.zstd"), "must be 1 to 19"));
    }
    let mut types = Vec::new();
    for (i, t) in c.content_types.iter().enumerate() {
        match MediaPattern::parse(t) {
            Some(p) => types.push(p),
            None => issues.push(b.issue(
                Some(&format!("content_types[{i}]")),
                format!("`{t}` is not a media type (type/subtype, type/*, type/*+suffix)"),
            )),
        }
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(Arc::new(Compress {
        name: b.name.to_string(),
        algorithms: c.algorithms,
        min_size: c.min_size.0,
        types,
        levels: c.levels,
    }))
}

/// A `content_types` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MediaPattern {
    /// `type/subtype`.
    Exact(String),
    /// `type/*`.
    AnySubtype(String),
    /// `type/*+suffix`: the suffix with its `+`.
    Suffix(String, String),
}

impl MediaPattern {
    fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase();
        let (ty, sub) = s.split_once('/')?;
        let token = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        if !token(ty) {
            return None;
        }
        if sub == "*" {
            return Some(Self::AnySubtype(ty.to_string()));
        }
        if let Some(suffix) = sub.strip_prefix("*+") {
            return token(suffix).then(|| Self::Suffix(ty.to_string(), format!("+{suffix}")));
        }
        token(sub).then(|| Self::Exact(s.clone()))
    }

    /// Whether `media` (lower-case `type/subtype`, no parameters) matches.
    fn matches(&self, media: &str) -> bool {
        let (ty, sub) = media.split_once('/').unwrap_or((media, ""));
        match self {
            Self::Exact(m) => m == media,
            Self::AnySubtype(t) => t == ty,
            Self::Suffix(t, suffix) => t == ty && sub.ends_with(suffix.as_str()),
        }
    }
}

/// The compiled policy.
#[derive(Debug)]
struct Compress {
    name: String,
    algorithms: Vec<Algorithm>,
    min_size: u64,
    types: Vec<MediaPattern>,
    levels: Levels,
}

/// What the request phase learnt: the coding the client takes best (if any) and whether
/// the request was HEAD.
#[derive(Debug, Clone, Copy)]
struct Negotiated {
    chosen: Option<Algorithm>,
    head: bool,
}

impl Policy for Compress {
    fn name(&self) -> &str {
        &self.name
    }

    fn encodes_response(&self) -> bool {
        true
    }

    fn body_needs(&self) -> BodyNeeds {
        BodyNeeds {
            request: RequestBodyNeed::Untouched,
            response: ResponseBodyNeed::Filtered,
        }
    }

    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        let chosen = negotiate(&req.headers, &self.algorithms);
        ctx.extensions.insert(Negotiated {
            chosen,
            head: req.method == Method::HEAD,
        });
        Flow::Continue
    }

    fn on_response(&self, resp: &mut http::response::Parts, ctx: &mut RequestCtx) {
        let Some(n) = ctx.extensions.get::<Negotiated>().copied() else {
            return;
        };
        let buffered = ctx
            .bodies_if_any()
            .and_then(|b| b.response.as_ref())
            .map(|b| b.len() as u64);
        if !self.could_compress(resp, buffered) {
            return;
        }
        // The representation depends on Accept-Encoding from here on, whatever this
        // client asked for: caches must keep the variants apart.
        add_vary(&mut resp.headers);
        let Some(algorithm) = n.chosen else { return };
        if n.head {
            return;
        }
        // Filters attached before this one change the body: its length is then unknown.
        let filtered = ctx.bodies_if_any().is_some_and(|b| !b.filters.is_empty());
        let length = buffered
            .or_else(|| content_length(&resp.headers))
            .filter(|_| !filtered);
        resp.headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(algorithm.token()),
        );
        resp.headers.remove(header::CONTENT_LENGTH);
        // Byte ranges of the compressed body are not served.
        resp.headers.remove(header::ACCEPT_RANGES);
        weaken_etag(&mut resp.headers);
        match Encoder::new(algorithm, &self.levels, length) {
            Ok(e) => ctx.bodies().filters.push(Box::new(Compressor(Some(e)))),
            Err(e) => {
                // Setting up a coder only fails on memory; send the body as it is.
                tracing::warn!(policy = %self.name, error = %e, "compressor unavailable");
                resp.headers.remove(header::CONTENT_ENCODING);
            }
        }
    }
}

impl Compress {
    /// Whether this response is one the policy compresses for a client that takes it.
    fn could_compress(&self, resp: &http::response::Parts, buffered: Option<u64>) -> bool {
        if matches!(
            resp.status,
            StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        ) || resp.status.is_informational()
        {
            return false;
        }
        let h = &resp.headers;
        if h.get(header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
            || h.contains_key(header::CONTENT_RANGE)
        {
            return false;
        }
        if h.get_all(header::CACHE_CONTROL).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
            })
        }) {
            return false;
        }
        let Some(media) = h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
        else {
            return false;
        };
        if !self.types.iter().any(|p| p.matches(&media)) {
            return false;
        }
        buffered
            .or_else(|| content_length(h))
            .is_none_or(|l| l >= self.min_size)
    }
}

/// The coding of `offered` the client's `Accept-Encoding` takes with the highest q-value
/// (ties: the first offered); none without the header or when all are refused. `*`
/// stands for the codings the header does not name; `x-gzip` is gzip.
pub fn negotiate(headers: &HeaderMap, offered: &[Algorithm]) -> Option<Algorithm> {
    let mut named: [Option<u16>; 3] = [None; 3];
    let mut star: Option<u16> = None;
    let mut any = false;
    for v in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            if coding.is_empty() {
                continue;
            }
            any = true;
            let mut q = Some(1000);
            for p in parts {
                let (k, val) = p.split_once('=').unwrap_or((p, ""));
                if k.trim().eq_ignore_ascii_case("q") {
                    q = parse_q(val.trim());
                }
            }
            // A malformed q-value makes the item mean nothing.
            let Some(q) = q else { continue };
            let slot = if coding == "*" {
                &mut star
            } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                &mut named[2]
            } else if coding.eq_ignore_ascii_case("br") {
                &mut named[1]
            } else if coding.eq_ignore_ascii_case("zstd") {
                &mut named[0]
            } else {
                continue;
            };
            // Listed twice: the higher counts.
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
    }
    if !any {
        return None;
    }
    let q_of = |a: Algorithm| {
        let i = match a {
            Algorithm::Zstd => 0,
            Algorithm::Br => 1,
            Algorithm::Gzip => 2,
        };
        named[i].or(star).unwrap_or(0)
    };
    let mut best: Option<(Algorithm, u16)> = None;
    for a in offered {
        let q = q_of(*a);
        if q > 0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((*a, q));
        }
    }
    best.map(|(a, _)| a)
}

/// A q-value in thousandths (RFC 9110 §12.4.2: 0 to 1, up to three decimals).
fn parse_q(v: &str) -> Option<u16> {
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value = format!("{frac:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

/// The response's `Content-Length`, when it has a valid one.
fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Adds `Accept-Encoding` to `Vary` unless it is there (or `Vary: *`).
fn add_vary(h: &mut HeaderMap) {
    let present = h.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|t| {
                let t = t.trim();
                t == "*" || t.eq_ignore_ascii_case("accept-encoding")
            })
        })
    });
    if !present {
        h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// A strong ETag names the bytes the upstream sent; the compressed bytes differ, so it
/// becomes weak (the representation is still semantically the same).
pub(crate) fn weaken_etag(h: &mut HeaderMap) {
    if let Some(tag) = h.get(header::ETAG)
        && tag.as_bytes().first() == Some(&b'"')
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(tag.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&weak) {
            h.insert(header::ETAG, v);
        }
    }
}

/// One response's compressor: each frame in, flushed out, so a streamed response keeps
/// its pace.
enum Encoder {
    Gzip(Gzip),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    /// A coder for a body of `length` bytes, when known.
    fn new(algorithm: Algorithm, levels: &Levels, length: Option<u64>) -> std::io::Result<Self> {
        Ok(match algorithm {
            Algorithm::Gzip => Self::Gzip(Gzip::new(levels.gzip, length)),
            // 4 KiB of internal buffer, a 4 MiB window (lgwin 22, brotli's default).
            // A window the size of the body (setting up brotli's default 4 MiB one cost
            // five times the compression of a 16 KiB body); 512 KiB for a stream, as
            // nginx's brotli module.
            Algorithm::Br => Self::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                levels.br,
                window_bits(length, 10, 19),
            ))),
            Algorithm::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(Vec::new(), levels.zstd)?;
                if length.is_some() {
                    e.window_log(window_bits(length, 10, 21))?;
                }
                Self::Zstd(e)
            }
        })
    }

    /// The bytes produced so far, taken out of the coder's output.
    fn take(&mut self) -> Bytes {
        let out = match self {
            Self::Gzip(e) => &mut e.out,
            Self::Br(e) => e.get_mut(),
            Self::Zstd(e) => e.get_mut(),
        };
        Bytes::from(std::mem::take(out))
    }
}

/// The log2 window for a body of `length` bytes: the smallest that holds it, within
/// `min..=max`; `max` when the length is unknown.
fn window_bits(length: Option<u64>, min: u32, max: u32) -> u32 {
    let Some(len) = length else { return max };
    let mut bits = max;
    while bits > min && (1u64 << (bits - 1)) >= len {
        bits -= 1;
    }
    bits
}

/// A gzip stream whose window fits the body when its length is known (as nginx sizes
/// it): a 16 KiB body needs a 16 KiB window, not 32, and less state to set up.
struct Gzip {
    coder: flate2::Compress,
    out: Vec<u8>,
}

impl Gzip {
    fn new(level: u32, length: Option<u64>) -> Self {
        let bits = u8::try_from(window_bits(length, 9, 15)).unwrap_or(15);
        Self {
            coder: flate2::Compress::new_gzip(flate2::Compression::new(level), bits),
            out: Vec::new(),
        }
    }

    /// Compresses `data` into `out`, then flushes as `flush` says (all of it is taken).
    fn push(&mut self, mut data: &[u8], flush: flate2::FlushCompress) -> std::io::Result<()> {
        loop {
            self.out.reserve(data.len() / 2 + 256);
            let before = self.coder.total_in();
            let status = self
                .coder
                .compress_vec(data, &mut self.out, flush)
                .map_err(std::io::Error::other)?;
            let taken = usize::try_from(self.coder.total_in() - before).unwrap_or(data.len());
            data = data.get(taken..).unwrap_or_default();
            let room_left = self.out.len() < self.out.capacity();
            match (status, flush) {
                (flate2::Status::StreamEnd, _) => return Ok(()),
                (_, flate2::FlushCompress::Finish) => {}
                _ if data.is_empty() && room_left => return Ok(()),
                _ => {}
            }
        }
    }
}

/// The filter: the coder until the end of the body.
struct Compressor(Option<Encoder>);

impl BodyFilter for Compressor {
    fn on_data(&mut self, data: Bytes) -> Result<Bytes, FilterError> {
        let Some(coder) = self.0.as_mut() else {
            return Err("data after the end of the body".into());
        };
        match coder {
            Encoder::Gzip(e) => e.push(&data, flate2::FlushCompress::Sync)?,
            Encoder::Br(e) => {
                e.write_all(&data)?;
                e.flush()?;
            }
            Encoder::Zstd(e) => {
                e.write_all(&data)?;
                e.flush()?;
            }
        }
        Ok(coder.take())
    }

    fn on_end(&mut self) -> Result<Bytes, FilterError> {
        let rest = match self.0.take() {
            Some(Encoder::Gzip(mut e)) => {
                e.push(&[], flate2::FlushCompress::Finish)?;
                e.out
            }
            Some(Encoder::Br(e)) => e.into_inner(),
            Some(Encoder::Zstd(e)) => e.finish()?,
            None => Vec::new(),
        };
        Ok(Bytes::from(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn q_values_pick_the_coding_and_order_breaks_ties() {
        let all = default_algorithms();
        let pick = |v: &str| negotiate(&accept(v), &all).map(Algorithm::token);
        assert_eq!(pick("gzip, deflate, br, zstd"), Some("zstd"));
        assert_eq!(pick("gzip;q=1.0, br;q=0.8"), Some("gzip"));
        assert_eq!(pick("br;q=0.5, gzip;q=0.5"), Some("br"));
        assert_eq!(pick("zstd;q=0, *"), Some("br"));
        assert_eq!(pick("*;q=0"), None);
        assert_eq!(pick("identity"), None);
        assert_eq!(pick("x-gzip"), Some("gzip"));
        assert_eq!(pick("gzip;q=2, br;q=0.0001, zstd;q=abc"), None);
        assert_eq!(pick("GZIP ; Q=0.3"), Some("gzip"));
        assert_eq!(negotiate(&HeaderMap::new(), &all), None);
        assert_eq!(
            negotiate(&accept("br, gzip"), &[Algorithm::Gzip]).map(Algorithm::token),
            Some("gzip")
        );
    }

    #[test]
    fn media_patterns_match_exact_wildcards_and_suffixes() {
        let p = |s: &str| MediaPattern::parse(s).unwrap();
        assert!(p("text/*").matches("text/html"));
        assert!(!p("text/*").matches("application/json"));
        assert!(p("application/*+json").matches("application/problem+json"));
        assert!(!p("application/*+json").matches("application/json"));
        assert!(p("Application/JSON").matches("application/json"));
        assert!(MediaPattern::parse("json").is_none());
        assert!(MediaPattern::parse("text/*+").is_none());
    }

    #[test]
    fn every_coding_round_trips_frame_by_frame() {
        let text = "{\"items\":[1,2,3],\"name\":\"gatehouse\"}".repeat(200);
        for a in default_algorithms() {
            let mut e = Compressor(Some(Encoder::new(a, &Levels::default(), None).unwrap()));
            let mut out = Vec::new();
            for chunk in text.as_bytes().chunks(1000) {
                let piece = e.on_data(Bytes::copy_from_slice(chunk)).unwrap();
                // Flushed with each frame: something comes out every time.
                assert!(!piece.is_empty(), "{a:?}");
                out.extend_from_slice(&piece);
            }
            out.extend_from_slice(&e.on_end().unwrap());
            assert!(out.len() < text.len() / 4, "{a:?} compresses");
            let mut back = String::new();
            match a {
                Algorithm::Gzip => {
                    flate2::read::GzDecoder::new(&out[..])
                        .read_to_string(&mut back)
                        .unwrap();
                }
                Algorithm::Br => {
                    brotli::Decompressor::new(&out[..], 4096)
                        .read_to_string(&mut back)
                        .unwrap();
                }
                Algorithm::Zstd => {
                    back = String::from_utf8(zstd::decode_all(&out[..]).unwrap()).unwrap();
                }
            }
            assert_eq!(back, text, "{a:?}");
        }
    }

    #[test]
    fn a_window_sized_to_the_body_still_decodes() {
        let text = "0123456789abcdef".repeat(1000);
        for length in [Some(100), Some(16_000), Some(1 << 20), None] {
            for a in default_algorithms() {
                let coder = Encoder::new(a, &Levels::default(), length).unwrap();
                let mut e = Compressor(Some(coder));
                let mut out = e.on_data(Bytes::from(text.clone())).unwrap().to_vec();
                out.extend_from_slice(&e.on_end().unwrap());
                let mut back = Vec::new();
                match a {
                    Algorithm::Gzip => {
                        flate2::read::GzDecoder::new(&out[..])
                            .read_to_end(&mut back)
                            .unwrap();
                    }
                    Algorithm::Br => {
                        brotli::Decompressor::new(&out[..], 4096)
                            .read_to_end(&mut back)
                            .unwrap();
                    }
                    Algorithm::Zstd => back = zstd::decode_all(&out[..]).unwrap(),
                }
                assert_eq!(back, text.as_bytes(), "{a:?} {length:?}");
            }
        }
    }

    #[test]
    fn strong_etags_turn_weak_and_vary_is_added_once() {
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        weaken_etag(&mut h);
        assert_eq!(h[header::ETAG], "W/\"abc\"");
        weaken_etag(&mut h);
        assert_eq!(h[header::ETAG], "W/\"abc\"");
        h.insert(header::VARY, HeaderValue::from_static("origin"));
        add_vary(&mut h);
        add_vary(&mut h);
        let vary: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["origin", "Accept-Encoding"]);
    }
}
