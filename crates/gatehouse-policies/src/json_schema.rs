//! `type: json_schema`: validates JSON request bodies against a JSON Schema (drafts
//! 2020-12 and 7, among those `$schema` may name) before anything goes upstream. A body
//! that fails is answered 400 with every violation listed as `errors: [{pointer,
//! detail}]`; the values the client sent are never echoed back.

use crate::json_instance::{self, Instance, Sonic};
use crate::{Build, BuildResult, Kind};
use gatehouse_core::{
    BodyNeeds, Flow, Policy, Problem, RequestBodyNeed, RequestCtx, problem_response,
};
use http::{HeaderMap, Method, StatusCode, header};
use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// `type: json_schema`.
pub const KIND: Kind = Kind {
    name: "json_schema",
    schema: |g| g.subschema_for::<Config>(),
    build,
};

/// At most this many violations are listed in one answer (the rest are counted), so a
/// body of a million bad items cannot make a million-line answer.
const MAX_ERRORS: usize = 100;

/// The settings of `type: json_schema`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "JsonSchemaPolicy")]
pub struct Config {
    /// A file holding the schema, relative to the config file's directory; `$ref`s to
    /// other files resolve relative to it. Exactly one of `schema_file` and `schema`.
    #[serde(default)]
    pub schema_file: Option<String>,
    /// The schema inline.
    #[serde(default)]
    pub schema: Option<Value>,
    /// Methods whose bodies are validated (default POST, PUT, PATCH); others pass.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Largest body read (default 1MiB); larger ones are answered 413.
    #[serde(default = "default_max_body_size")]
    pub max_body_size: gatehouse_config::Size,
    /// Whether `format` (email, date-time, uuid, ...) is asserted rather than only
    /// annotated (default true, as users of Kong's validator expect).
    #[serde(default = "default_true")]
    pub validate_formats: bool,
}

fn default_methods() -> Vec<String> {
    ["POST", "PUT", "PATCH"].map(String::from).to_vec()
}
fn default_max_body_size() -> gatehouse_config::Size {
    gatehouse_config::Size(1024 * 1024)
}
fn default_true() -> bool {
    true
}

fn build(b: &Build<'_>) -> BuildResult {
    let c: Config = b.settings()?;
    let mut issues = Vec::new();
    let mut methods = Vec::new();
    for (i, m) in c.methods.iter().enumerate() {
        match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(m) => methods.push(m),
            Err(_) => issues.push(b.issue(Some(&format!("methods[{i}]")), "is not a method")),
        }
    }
    let (schema, field, base) = match (&c.schema_file, &c.schema) {
        (Some(_), Some(_)) => {
            issues.push(b.issue(None, "has both `schema_file` and `schema`; keep one"));
            return Err(issues);
        }
        (None, None) => {
            issues.push(b.issue(None, "needs `schema_file` or `schema`"));
            return Err(issues);
        }
        (None, Some(s)) => (s.clone(), "schema", None),
        (Some(f), None) => {
            let path = b.dir.join(f);
            let read = std::fs::read(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|bytes| {
                    serde_json::from_slice::<Value>(&bytes)
                        .map_err(|e| format!("{} is not JSON: {e}", path.display()))
                });
            match read {
                Ok(s) => (s, "schema_file", std::path::absolute(&path).ok()),
                Err(e) => {
                    issues.push(b.issue(Some("schema_file"), e));
                    return Err(issues);
                }
            }
        }
    };
    let mut options =
        jsonschema::options_for::<Sonic>().should_validate_formats(c.validate_formats);
    if let Some(url) = base.as_deref().and_then(file_url) {
        options = options.with_base_uri(url);
    }
    let validator = match options.build(&schema) {
        Ok(v) => v,
        Err(e) => {
            issues.push(b.issue(Some(field), format!("is not a valid JSON Schema: {e}")));
            return Err(issues);
        }
    };
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(Arc::new(JsonSchemaPolicy {
        name: b.name.to_string(),
        validator,
        methods,
        max_body: c.max_body_size.0,
    }))
}

/// A `file://` URL for an absolute path, percent-encoding what a URL cannot hold.
fn file_url(path: &std::path::Path) -> Option<String> {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let p = path.to_str()?;
    Some(format!(
        "file://{}",
        percent_encoding::utf8_percent_encode(p, SET)
    ))
}

/// A compiled `json_schema` policy.
pub struct JsonSchemaPolicy {
    name: String,
    validator: Validator<Sonic>,
    methods: Vec<Method>,
    max_body: u64,
}

impl std::fmt::Debug for JsonSchemaPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSchemaPolicy")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Policy for JsonSchemaPolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn body_needs(&self) -> BodyNeeds {
        BodyNeeds {
            request: RequestBodyNeed::Buffered { max: self.max_body },
            ..BodyNeeds::NONE
        }
    }

    fn buffers_request(&self, req: &http::request::Parts) -> bool {
        self.methods.contains(&req.method)
    }

    fn on_request(&self, req: &mut http::request::Parts, ctx: &mut RequestCtx) -> Flow {
        if !self.methods.contains(&req.method) {
            return Flow::Continue;
        }
        if !is_json(&req.headers) {
            let p = Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be JSON (application/json)",
            );
            return Flow::respond("not_json", problem_response(&p, &ctx.request_id));
        }
        let body = ctx.bodies().request.clone().unwrap_or_default();
        if body.is_empty() {
            let p = Problem::new(StatusCode::BAD_REQUEST, "a JSON body is required");
            return Flow::respond("schema_invalid", problem_response(&p, &ctx.request_id));
        }
        let doc = match json_instance::parse(&body) {
            Ok(doc) => doc,
            Err(e) => {
                let p = Problem::new(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not valid JSON: {e}"),
                );
                return Flow::respond("malformed_body", problem_response(&p, &ctx.request_id));
            }
        };
        // Most bodies are valid: that check builds no errors.
        if self.validator.is_valid(Instance::Value(&doc)) {
            return Flow::Continue;
        }
        let mut errors = Vec::new();
        let mut total = 0usize;
        for e in self.validator.iter_errors(Instance::Value(&doc)) {
            total += 1;
            if errors.len() < MAX_ERRORS {
                errors.push(violation(&e));
            }
        }
        if total == 0 {
            return Flow::Continue;
        }
        let detail = match total {
            1 => "the body does not match the schema: 1 violation".to_string(),
            n => format!("the body does not match the schema: {n} violations"),
        };
        let mut p = Problem::new(StatusCode::BAD_REQUEST, detail)
            .with_member("errors", Value::Array(errors));
        if total > MAX_ERRORS {
            p = p.with_member("errors_omitted", json!(total - MAX_ERRORS));
        }
        Flow::respond("schema_invalid", problem_response(&p, &ctx.request_id))
    }
}

/// Whether the request's body is declared JSON (`application/json`, `*/*+json`), or not
/// declared at all (RFC 9110 section 8.3 lets a recipient decide; JSON is what this
/// route takes).
fn is_json(headers: &HeaderMap) -> bool {
    !headers.contains_key(header::CONTENT_TYPE)
        || crate::body_type::BodyType::of(headers) == Some(crate::body_type::BodyType::Json)
}

/// One violation as `{pointer, detail}`. A missing property's pointer names the
/// property, so the pointer always says where the fix goes.
fn violation(e: &ValidationError<'_>) -> Value {
    let mut pointer = e.instance_path().to_string();
    if let ValidationErrorKind::Required { property } = e.kind() {
        let name = property.as_str().unwrap_or_default();
        pointer.push('/');
        pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
    }
    json!({ "pointer": pointer, "detail": describe(e.kind()) })
}

/// What a violation breaks, in words that name the schema's limits but never the
/// client's values (which may be large, or secret).
fn describe(kind: &ValidationErrorKind) -> String {
    use ValidationErrorKind as K;
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match kind {
        K::AdditionalItems { limit } => format!("must have at most {limit} items"),
        K::AdditionalProperties { unexpected } => {
            format!("has properties not allowed: {}", list(unexpected))
        }
        K::AnyOf { .. } => "must match at least one of the schemas in anyOf".into(),
        K::BacktrackLimitExceeded { .. } | K::RegexEngineFailure { .. } => {
            "is too complex to check against the pattern".into()
        }
        K::Constant { expected_value } => format!("must be {expected_value}"),
        K::Contains => "must contain an item matching the schema in contains".into(),
        K::ContentEncoding { content_encoding } => {
            format!("must be encoded as {content_encoding}")
        }
        K::ContentMediaType { content_media_type } => {
            format!("must be of media type {content_media_type}")
        }
        K::Custom { message, .. } => message.clone(),
        K::Enum { options } => format!("must be one of {options}"),
        K::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        K::ExclusiveMinimum { limit } => format!("must be greater than {limit}"),
        K::FalseSchema => "is not allowed".into(),
        K::Format { format } => format!("must be a valid {format}"),
        K::FromUtf8 { .. } => "must be valid UTF-8 once decoded".into(),
        K::MaxItems { limit } => format!("must have at most {limit} items"),
        K::Maximum { limit } => format!("must be at most {limit}"),
        K::MaxLength { limit } => format!("must be at most {limit} characters long"),
        K::MaxProperties { limit } => format!("must have at most {limit} properties"),
        K::MinItems { limit } => format!("must have at least {limit} items"),
        K::Minimum { limit } => format!("must be at least {limit}"),
        K::MinLength { limit } => format!("must be at least {limit} characters long"),
        K::MinProperties { limit } => format!("must have at least {limit} properties"),
        K::MultipleOf { multiple_of } => format!("must be a multiple of {multiple_of}"),
        K::Not { .. } => "must not match the schema in not".into(),
        K::OneOfMultipleValid { .. } => {
            "must match exactly one schema in oneOf, matches several".into()
        }
        K::OneOfNotValid { .. } => "must match exactly one schema in oneOf, matches none".into(),
        K::Pattern { pattern } => format!("must match the pattern {pattern:?}"),
        K::PropertyNames { error } => {
            format!("has a property name that {}", describe(error.kind()))
        }
        K::Required { .. } => "is required".into(),
        K::Type { kind } => match kind {
            TypeKind::Single(t) => format!("must be of type {t}"),
            TypeKind::Multiple(ts) => {
                let names: Vec<String> = ts.iter().map(|t| t.to_string()).collect();
                format!("must be of type {}", names.join(" or "))
            }
        },
        K::UnevaluatedItems { unexpected } => {
            format!("has items not allowed: {}", list(unexpected))
        }
        K::UnevaluatedProperties { unexpected } => {
            format!("has properties not allowed: {}", list(unexpected))
        }
        K::UniqueItems => "must have unique items".into(),
        K::Referencing(_) => "could not be checked: the schema has an unresolved reference".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The violations of `doc` against `schema`, read as the policy reads a body.
    fn errors(schema: Value, doc: Value) -> Vec<Value> {
        let v = jsonschema::options_for::<Sonic>().build(&schema).unwrap();
        let doc = json_instance::parse(doc.to_string().as_bytes()).unwrap();
        let found: Vec<_> = (v.iter_errors(Instance::Value(&doc)))
            .map(|e| violation(&e))
            .collect();
        assert_eq!(found.is_empty(), v.is_valid(Instance::Value(&doc)));
        found
    }

    #[test]
    fn the_deepest_body_allowed_fits_a_worker_stack() {
        // A schema that recurses as deep as the body, on a thread with a worker's stack,
        // in whatever build runs the tests.
        let v = jsonschema::options_for::<Sonic>()
            .build(&json!({"type": "array", "items": {"$ref": "#"}, "maxItems": 1}))
            .unwrap();
        let n = json_instance::MAX_DEPTH;
        let body = "[".repeat(n) + &"]".repeat(n);
        let valid = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let doc = json_instance::parse(body.as_bytes()).unwrap();
                v.is_valid(Instance::Value(&doc))
                    && v.iter_errors(Instance::Value(&doc)).count() == 0
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(valid);
    }

    #[test]
    fn a_repeated_name_is_validated_in_every_copy() {
        // Upstream parsers differ on which copy they read: each one must be valid.
        let schema = json!({"properties": {"qty": {"minimum": 1}}, "required": ["qty"]});
        let v = jsonschema::options_for::<Sonic>().build(&schema).unwrap();
        for (body, valid) in [
            (&br#"{"qty": 1, "qty": -5}"#[..], false),
            (br#"{"qty": -5, "qty": 1}"#, false),
            (br#"{"qty": 2, "qty": 1}"#, true),
        ] {
            let doc = json_instance::parse(body).unwrap();
            assert_eq!(v.is_valid(Instance::Value(&doc)), valid, "{body:?}");
        }
    }

    #[test]
    fn violations_point_where_the_fix_goes() {
        let schema = json!({
            "type": "object",
            "required": ["items", "customer"],
            "properties": {
                "items": { "type": "array", "items": {
                    "type": "object", "required": ["sku"],
                    "properties": { "qty": { "type": "integer", "minimum": 1 } } } }
            }
        });
        let mut got = errors(
            schema,
            json!({"items": [{"sku": "a", "qty": 0}, {"qty": 2}]}),
        );
        got.sort_by_key(|v| v["pointer"].as_str().unwrap().to_string());
        assert_eq!(
            got,
            vec![
                json!({"pointer": "/customer", "detail": "is required"}),
                json!({"pointer": "/items/0/qty", "detail": "must be at least 1"}),
                json!({"pointer": "/items/1/sku", "detail": "is required"}),
            ]
        );
    }

    #[test]
    fn details_never_echo_the_values_sent() {
        let secret = "hunter2-very-secret";
        let schema = json!({"properties": {
            "a": {"maxLength": 3}, "b": {"type": "integer"}, "c": {"format": "email"},
            "d": {"enum": ["x", "y"]}, "e": {"pattern": "^z"}
        }});
        let v = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        let doc = json!({"a": secret, "b": secret, "c": secret, "d": secret, "e": secret});
        let got: Vec<_> = v.iter_errors(&doc).map(|e| violation(&e)).collect();
        assert_eq!(got.len(), 5);
        for g in got {
            assert!(!g.to_string().contains(secret), "{g}");
        }
    }

    #[test]
    fn json_media_types() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().unwrap());
            is_json(&h)
        };
        assert!(is_json(&HeaderMap::new()));
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!with("json"));
    }

    #[test]
    fn file_urls_escape_what_urls_cannot_hold() {
        assert_eq!(
            file_url(std::path::Path::new("/a b/s#1.json")).unwrap(),
            "file:///a%20b/s%231.json"
        );
    }
}
