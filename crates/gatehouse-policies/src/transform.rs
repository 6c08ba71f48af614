//! `type: transform`: edits JSON bodies (remove, rename, set, add at dotted paths with
//! `[n]`/`[*]`), and converts XML to JSON or JSON to XML, on the request, the response,
//! or both. Bodies of other types stream through untouched; edited ones are read whole
//! up to `max_body_size` (413 for a request, 502 for a response beyond it).

use crate::body_type::BodyType;
use crate::json_edit::{self, JsonPath, Reach};
use crate::xml_json::{ConvertError, is_xml_name, json_to_xml, xml_to_json};
use crate::{Build, BuildResult, Kind, content_coding};
use bytes::Bytes;
use gatehouse_config::validate::Issue;
use gatehouse_core::{
    BodyNeeds, Flow, Policy, Problem, RequestBodyNeed, RequestCtx, ResponseBodyNeed,
    problem_response,
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// `type: transform`.
pub const KIND: Kind = Kind {
    name: "transform",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// The settings of `type: transform`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TransformPolicy")]
pub struct Config {
    /// Largest body edited (default 1MiB): a larger request is answered 413, a larger
    /// response 502 (it cannot pass unedited).
    #[serde(default = "default_max_body_size")]
    pub max_body_size: gatehouse_config::Size,
    /// What is done to request bodies.
    #[serde(default)]
    pub request: Option<SideConfig>,
    /// What is done to response bodies.
    #[serde(default)]
    pub response: Option<SideConfig>,
}

/// What is done to one direction's bodies.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SideConfig {
    /// Edits of the JSON body (after `xml_to_json`, before `json_to_xml`).
    #[serde(default)]
    pub json: Option<JsonEditsConfig>,
    /// A conversion of the body.
    #[serde(default)]
    pub convert: Option<Convert>,
    /// The root element `json_to_xml` writes (default `root`).
    #[serde(default)]
    pub xml_root: Option<String>,
}

/// A body conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Convert {
    /// A JSON body becomes XML (`Content-Type: application/xml`).
    JsonToXml,
    /// An XML body becomes JSON (`Content-Type: application/json`).
    XmlToJson,
}

/// Edits of a JSON body, applied in this order.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonEditsConfig {
    /// Paths removed.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Path to new key name, in the same object.
    #[serde(default)]
    pub rename: Map<String, Value>,
    /// Path to value, replacing what is there (objects on the way created).
    #[serde(default)]
    pub set: Map<String, Value>,
    /// Path to value, only where nothing is there yet.
    #[serde(default)]
    pub add: Map<String, Value>,
}

fn default_max_body_size() -> gatehouse_config::Size {
    gatehouse_config::Size(1024 * 1024)
}

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    let mut issues = Vec::new();
    if c.request.is_none() && c.response.is_none() {
        issues.push(b.issue(None, "needs `request` or `response`"));
    }
    let request = c
        .request
        .as_ref()
        .map(|s| Side::compile(s, "request", b, &mut issues));
    let response = c
        .response
        .as_ref()
        .map(|s| Side::compile(s, "response", b, &mut issues));
    if !issues.is_empty() {
        return Err(issues);
    }
    let mut captured = Vec::new();
    if let Some(side) = &response {
        for (_, v) in side.set.iter().chain(&side.add) {
            header_refs(v, &mut captured);
        }
    }
    captured.sort();
    captured.dedup();
    Ok(Arc::new(Transform {
        name: b.name.to_string(),
        max: c.max_body_size.0,
        request,
        response,
        captured,
    }))
}

/// One direction's compiled edits and conversion.
#[derive(Debug)]
struct Side {
    remove: Vec<JsonPath>,
    rename: Vec<(JsonPath, String)>,
    set: Vec<(JsonPath, Value)>,
    add: Vec<(JsonPath, Value)>,
    /// What the edits' paths reach, opened as the body is read.
    reach: Reach,
    convert: Option<Convert>,
    xml_root: String,
}

impl Side {
    fn compile(c: &SideConfig, side: &str, b: &Build<'_>, issues: &mut Vec<Issue>) -> Self {
        let mut path = |field: String, text: &str| match JsonPath::parse(text) {
            Ok(p) => Some(p),
            Err(e) => {
                issues.push(b.issue(Some(&field), e));
                None
            }
        };
        let edits = c.json.clone().unwrap_or_default();
        let remove: Vec<JsonPath> = (edits.remove.iter().enumerate())
            .filter_map(|(i, t)| path(format!("{side}.json.remove[{i}]"), t))
            .collect();
        let mut rename = Vec::new();
        let mut bad_renames = Vec::new();
        for (from, to) in &edits.rename {
            let field = format!("{side}.json.rename.{from}");
            let Some(p) = path(field.clone(), from) else {
                continue;
            };
            match to.as_str() {
                Some(t) if !t.is_empty() && !t.contains(['.', '[', ']']) && p.ends_in_key() => {
                    rename.push((p, t.to_string()));
                }
                Some(_) if !p.ends_in_key() => {
                    bad_renames.push((field, "renames a key: the path must end in one"));
                }
                _ => bad_renames.push((field, "must be a key name (no `.` or `[`)")),
            }
        }
        let mut values = |kind: &str, m: &Map<String, Value>| {
            m.iter()
                .filter_map(|(k, v)| Some((path(format!("{side}.json.{kind}.{k}"), k)?, v.clone())))
                .collect::<Vec<_>>()
        };
        let set = values("set", &edits.set);
        let add = values("add", &edits.add);
        for (field, why) in bad_renames {
            issues.push(b.issue(Some(&field), why));
        }
        if c.json.is_none() && c.convert.is_none() {
            issues.push(b.issue(Some(side), "needs `json` edits or `convert`"));
        }
        if let Some(root) = &c.xml_root {
            if c.convert != Some(Convert::JsonToXml) {
                issues.push(b.issue(
                    Some(&format!("{side}.xml_root")),
                    "only applies with `convert: json_to_xml`",
                ));
            } else if !is_xml_name(root) {
                issues.push(b.issue(
                    Some(&format!("{side}.xml_root")),
                    "is not an XML element name",
                ));
            }
        }
        let reach = Reach::of(
            (remove.iter())
                .chain(rename.iter().map(|(p, _)| p))
                .chain(set.iter().chain(&add).map(|(p, _)| p)),
        );
        Self {
            reach,
            remove,
            rename,
            set,
            add,
            convert: c.convert,
            xml_root: c.xml_root.clone().unwrap_or_else(|| "root".into()),
        }
    }

    /// The body type this side reads.
    fn reads(&self) -> BodyType {
        match self.convert {
            Some(Convert::XmlToJson) => BodyType::Xml,
            _ => BodyType::Json,
        }
    }

    /// Whether a body with these headers is one this side edits.
    fn takes(&self, headers: &HeaderMap) -> bool {
        BodyType::of(headers) == Some(self.reads())
    }

    /// The body edited and converted, with the `Content-Type` it now has when converted.
    fn apply(
        &self,
        body: &[u8],
        vars: &Vars<'_>,
    ) -> Result<(Vec<u8>, Option<&'static str>), Fault> {
        // Edits work on JSON text: XML is converted to it first, and JSON bound for XML
        // is edited before it is read as values. A conversion alone skips the editor:
        // it wrote the JSON itself, or reads it as values anyway.
        let edited = |json: &[u8]| {
            json_edit::edit(json, &self.reach, |doc| self.edit(doc, vars)).map_err(malformed)
        };
        match self.convert {
            None => Ok((edited(body)?, None)),
            Some(Convert::XmlToJson) => {
                let json = to_json(&xml_to_json(body).map_err(Fault::Malformed)?);
                let json = if self.has_edits() {
                    edited(&json)?
                } else {
                    json
                };
                Ok((json, Some("application/json")))
            }
            Some(Convert::JsonToXml) => {
                let doc: Value = if self.has_edits() {
                    serde_json::from_slice(&edited(body)?)
                } else {
                    serde_json::from_slice(body)
                }
                .map_err(malformed)?;
                json_to_xml(&doc, &self.xml_root)
                    .map(|x| (x, Some("application/xml")))
                    .map_err(Fault::Unconvertible)
            }
        }
    }

    /// Whether this side has JSON edits (a side may only convert).
    fn has_edits(&self) -> bool {
        !(self.remove.is_empty()
            && self.rename.is_empty()
            && self.set.is_empty()
            && self.add.is_empty())
    }

    /// Applies this side's edits in their order: remove, rename, set, add.
    fn edit(&self, doc: &mut json_edit::Node<'_>, vars: &Vars<'_>) {
        for p in &self.remove {
            p.remove(doc);
        }
        for (p, to) in &self.rename {
            p.rename(doc, to);
        }
        for (p, v) in &self.set {
            p.set(doc, &vars.render(v), false);
        }
        for (p, v) in &self.add {
            p.set(doc, &vars.render(v), true);
        }
    }
}

/// A JSON parse error, said with its line and column.
fn malformed(e: serde_json::Error) -> Fault {
    Fault::Malformed(ConvertError {
        message: strip_position(&e.to_string()),
        line: e.line(),
        column: e.column(),
    })
}

fn to_json(doc: &Value) -> Vec<u8> {
    // Serializing a `Value` cannot fail (its keys are strings).
    serde_json::to_vec(doc).unwrap_or_default()
}

/// serde_json's message without its trailing " at line L column C" (said separately).
fn strip_position(msg: &str) -> String {
    msg.find(" at line ").map_or(msg, |i| &msg[..i]).to_string()
}

/// Why a body could not be transformed.
enum Fault {
    /// It is not well-formed JSON or XML.
    Malformed(ConvertError),
    /// It is, but cannot be converted (a key that is no XML name).
    Unconvertible(ConvertError),
}

/// The `{header.NAME}` names `v`'s strings refer to.
fn header_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            for_each_placeholder(s, |name| {
                if let Some(h) = name.strip_prefix("header.") {
                    out.push(h.to_ascii_lowercase());
                }
            });
        }
        Value::Array(a) => a.iter().for_each(|v| header_refs(v, out)),
        Value::Object(m) => m.values().for_each(|v| header_refs(v, out)),
        _ => {}
    }
}

/// Calls `f` with each `{name}` in `s` (names of letters, digits, `_ - .`).
fn for_each_placeholder(s: &str, mut f: impl FnMut(&str)) {
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        rest = &rest[open + 1..];
        if let Some(close) = rest.find('}') {
            let name = &rest[..close];
            if is_placeholder(name) {
                f(name);
                rest = &rest[close + 1..];
            }
        }
    }
}

fn is_placeholder(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Request headers a response side's values refer to, kept from the request phase.
#[derive(Debug, Clone, Default)]
struct CapturedHeaders(Vec<(String, String)>);

/// Where placeholder values come from.
struct Vars<'a> {
    ctx: &'a RequestCtx,
    headers: HeaderSource<'a>,
}

enum HeaderSource<'a> {
    Request(&'a HeaderMap),
    Captured(Option<&'a CapturedHeaders>),
}

impl Vars<'_> {
    fn lookup(&self, name: &str) -> String {
        match name {
            "route" => self.ctx.route.as_deref().unwrap_or_default().to_string(),
            "consumer" => self
                .ctx
                .consumer
                .as_ref()
                .map(|c| c.name.clone())
                .unwrap_or_default(),
            "request_id" => self.ctx.request_id.clone(),
            _ => match name.strip_prefix("header.") {
                Some(h) => match &self.headers {
                    HeaderSource::Request(map) => map
                        .get(h)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                    HeaderSource::Captured(c) => c
                        .and_then(|c| c.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(h)))
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default(),
                },
                None => self.ctx.param(name).unwrap_or_default().to_string(),
            },
        }
    }

    /// `v` with placeholders in its strings replaced (absent values render empty).
    fn render(&self, v: &Value) -> Value {
        match v {
            Value::String(s) if s.contains('{') => Value::String(self.render_str(s)),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.render(v)).collect()),
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), self.render(v))).collect())
            }
            other => other.clone(),
        }
    }

    fn render_str(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match after.find('}').filter(|c| is_placeholder(&after[..*c])) {
                Some(close) => {
                    out.push_str(&self.lookup(&after[..close]));
                    rest = &after[close + 1..];
                }
                None => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// A compiled `transform` policy.
#[derive(Debug)]
pub struct Transform {
    name: String,
    max: u64,
    request: Option<Side>,
    response: Option<Side>,
    /// Lower-case names of the request headers the response side's values refer to.
    captured: Vec<String>,
}

impl Transform {
    fn problem(status: StatusCode, what: &str, fault: &Fault) -> Problem {
        match fault {
            Fault::Malformed(e) => {
                let detail = if e.line == 0 {
                    format!("{what}: {}", e.message)
                } else {
                    format!(
                        "{what}: {} at line {} column {}",
                        e.message, e.line, e.column
                    )
                };
                let p = Problem::new(status, detail);
                if e.line == 0 {
                    return p;
                }
                p.with_member("line", json!(e.line))
                    .with_member("column", json!(e.column))
            }
            Fault::Unconvertible(e) => Problem::new(status, format!("{what}: {}", e.message)),
        }
    }
}

impl Policy for Transform {
    fn name(&self) -> &str {
        &self.name
    }

    fn body_needs(&self) -> BodyNeeds {
        let buffered = |side: &Option<Side>| side.is_some();
        BodyNeeds {
            request: if buffered(&self.request) {
                RequestBodyNeed::Buffered { max: self.max }
            } else {
                RequestBodyNeed::Untouched
            },
            response: if buffered(&self.response) {
                ResponseBodyNeed::Buffered { max: self.max }
            } else {
                ResponseBodyNeed::Untouched
            },
        }
    }

    fn buffers_request(&self, req: &http::request::Parts) -> bool {
        // A request body with a content coding is passed as it came.
        self.request.as_ref().is_some_and(|s| s.takes(&req.headers))
            && !req.headers.contains_key(header::CONTENT_ENCODING)
    }

    fn buffers_response(&self, resp: &http::response::Parts, _ctx: &RequestCtx) -> bool {
        let coding = resp
            .headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok());
        self.response
            .as_ref()
            .is_some_and(|s| s.takes(&resp.headers))
            && resp.status != StatusCode::PARTIAL_CONTENT
            && content_coding::decodable(coding)
    }

    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        if !self.captured.is_empty() {
            let mut kept = ctx
                .extensions
                .remove::<CapturedHeaders>()
                .unwrap_or_default();
            for name in &self.captured {
                if let Some(v) = req.headers.get(name.as_str()).and_then(|v| v.to_str().ok()) {
                    kept.0.push((name.clone(), v.to_string()));
                }
            }
            ctx.extensions.insert(kept);
        }
        let Some(side) = &self.request else {
            return Flow::Continue;
        };
        let Some(body) = ctx.bodies().request.clone().filter(|b| !b.is_empty()) else {
            return Flow::Continue;
        };
        if !side.takes(&req.headers) {
            return Flow::Continue;
        }
        let vars = Vars {
            ctx,
            headers: HeaderSource::Request(&req.headers),
        };
        match side.apply(&body, &vars) {
            Ok((out, content_type)) => {
                if let Some(t) = content_type {
                    req.headers
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static(t));
                }
                ctx.bodies().request = Some(Bytes::from(out));
                Flow::Continue
            }
            Err(fault) => {
                let what = match (&fault, side.reads()) {
                    (Fault::Unconvertible(_), _) => "the request body cannot be converted to XML",
                    (_, BodyType::Json) => "the request body is not valid JSON",
                    (_, BodyType::Xml) => "the request body is not valid XML",
                };
                let p = Self::problem(StatusCode::BAD_REQUEST, what, &fault);
                Flow::respond("malformed_body", problem_response(&p, &ctx.request_id))
            }
        }
    }

    fn on_response(&self, resp: &mut http::response::Parts, ctx: &mut RequestCtx) {
        let Some(side) = &self.response else { return };
        let Some(body) = ctx.bodies().response.clone().filter(|b| !b.is_empty()) else {
            return;
        };
        if !side.takes(&resp.headers) {
            return;
        }
        let coding = resp
            .headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let plain = match content_coding::decode(&coding, &body, self.max) {
            Ok(p) => p,
            Err(e) => {
                let cause = match e {
                    content_coding::DecodeError::TooLarge => "decoded, it is over max_body_size",
                    _ => "its content coding could not be decoded",
                };
                let p = Problem::internal(
                    StatusCode::BAD_GATEWAY,
                    format!("policy {}: the upstream's body: {cause}", self.name),
                );
                return self.replace(resp, ctx, &p);
            }
        };
        let vars = Vars {
            ctx,
            headers: HeaderSource::Captured(ctx.extensions.get::<CapturedHeaders>()),
        };
        match side.apply(&plain, &vars) {
            Ok((out, content_type)) => {
                if let Some(t) = content_type {
                    resp.headers
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static(t));
                }
                resp.headers.remove(header::CONTENT_ENCODING);
                // The upstream's validator names the upstream's representation.
                crate::compress::weaken_etag(&mut resp.headers);
                ctx.bodies().response = Some(Bytes::from(out));
            }
            Err(fault) => {
                let what = match (&fault, side.reads()) {
                    (Fault::Unconvertible(_), _) => {
                        "the upstream's body cannot be converted to XML"
                    }
                    (_, BodyType::Json) => "the upstream's body is not valid JSON",
                    (_, BodyType::Xml) => "the upstream's body is not valid XML",
                };
                let p = Self::problem(StatusCode::BAD_GATEWAY, what, &fault);
                self.replace(resp, ctx, &p);
            }
        }
    }
}

impl Transform {
    /// Replaces the response with `problem` (head and body).
    fn replace(&self, resp: &mut http::response::Parts, ctx: &mut RequestCtx, problem: &Problem) {
        tracing::warn!(request_id = %ctx.request_id, policy = %self.name, cause = problem.log_text(), "response body not transformed");
        let (parts, body) = problem_response(problem, &ctx.request_id).into_parts();
        resp.status = parts.status;
        resp.headers = parts.headers;
        ctx.bodies().response = Some(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RequestCtx {
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let conn = gatehouse_core::Connection::plain(addr, addr, "public".into());
        let mut c = RequestCtx::new("rid-1".into(), Arc::new(conn), std::time::Instant::now());
        c.route = Some("orders".into());
        c.params = vec![("user".into(), "ann".into())];
        c
    }

    #[test]
    fn placeholders_render_and_other_braces_stay() {
        let c = ctx();
        let mut h = HeaderMap::new();
        h.insert("x-tenant", HeaderValue::from_static("acme"));
        let vars = Vars {
            ctx: &c,
            headers: HeaderSource::Request(&h),
        };
        assert_eq!(
            vars.render_str("{route}/{user}/{header.X-Tenant}/{request_id}/{consumer}|{nope}"),
            "orders/ann/acme/rid-1/|"
        );
        assert_eq!(
            vars.render_str("{ not one } {} {a b} {"),
            "{ not one } {} {a b} {"
        );
        let mut refs = Vec::new();
        header_refs(
            &json!({"a": ["{header.X-A}", "{header.b}{route}"]}),
            &mut refs,
        );
        assert_eq!(refs, ["x-a", "b"]);
    }

    #[test]
    fn serde_positions_are_said_once() {
        let e = serde_json::from_slice::<Value>(b"{\"a\": ]").unwrap_err();
        assert_eq!(strip_position(&e.to_string()), "expected value");
    }
}
