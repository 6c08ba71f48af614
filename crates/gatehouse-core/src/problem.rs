//! RFC 9457 problem+json bodies: the single shape of every response the gateway makes
//! itself. A problem has two texts: `detail`, safe for any client (no upstream address,
//! library wording or policy name), and `cause`, the full story for the log under the
//! same request id. Clients see the cause only when `errors.verbose` is on.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

use crate::LocalResponse;

/// A problem detail about to be sent to a client.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// What the client is told: short and free of internal names.
    pub detail: String,
    /// The full cause, for the log (and for clients under `errors.verbose`).
    pub cause: Option<String>,
    /// Extension members (RFC 9457 section 3.2) every client sees beside the standard
    /// ones, e.g. a validator's `errors` list: only what is safe to show.
    pub members: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

impl Problem {
    /// A problem whose `detail` is safe to show any client as it is.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            cause: None,
            members: None,
        }
    }

    /// A problem whose cause names internals: the client gets the status's generic
    /// detail, the log gets `cause`.
    pub fn internal(status: StatusCode, cause: impl Into<String>) -> Self {
        Self {
            status,
            detail: generic_detail(status).to_string(),
            cause: Some(cause.into()),
            members: None,
        }
    }

    /// This problem with the extension member `name` (the standard members `type`,
    /// `title`, `status`, `detail` and `request_id` cannot be replaced).
    pub fn with_member(mut self, name: &str, value: serde_json::Value) -> Self {
        self.members
            .get_or_insert_with(Default::default)
            .insert(name.to_string(), value);
        self
    }

    /// The text for the log: the cause when there is one, else the detail.
    pub fn log_text(&self) -> &str {
        self.cause.as_deref().unwrap_or(&self.detail)
    }
}

/// How problem bodies are rendered (`errors:` in the config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProblemStyle {
    /// Show each problem's cause as its detail (development only).
    pub verbose: bool,
    /// Base URL for `type` (`{type_base}/{status}`); `None` gives `about:blank`.
    pub type_base: Option<String>,
}

/// The status phrase used as `title` (RFC 9457 section 4.2.1 for `about:blank`).
pub fn title(status: StatusCode) -> &'static str {
    match status.as_u16() {
        499 => "Client Closed Request",
        _ => status.canonical_reason().unwrap_or("Error"),
    }
}

/// A short, generic explanation of a status, safe for any client.
pub fn generic_detail(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "The request is malformed.",
        401 => "Authentication is required.",
        403 => "Access to this resource is denied.",
        404 => "No resource matches the request.",
        405 => "The method is not allowed for this resource.",
        408 => "The request took too long to arrive.",
        413 => "The request body is too large.",
        414 => "The request target is too long.",
        429 => "Too many requests.",
        431 => "The request header fields are too large.",
        499 => "The client closed the request.",
        501 => "The request uses a feature the gateway does not implement.",
        502 => "The upstream service could not be reached.",
        503 => "The service is temporarily unavailable.",
        504 => "The upstream service did not answer in time.",
        s if s >= 500 => "The gateway failed while handling the request.",
        _ => "The request cannot be served.",
    }
}

/// Builds the problem+json response for `problem`, tagged with `request_id`, in the
/// default style. The problem rides along in the response's extensions so the engine
/// can log its cause and render it again in the configured style.
pub fn problem_response(problem: &Problem, request_id: &str) -> LocalResponse {
    let mut resp = http::Response::new(render(problem, request_id, &ProblemStyle::default()));
    *resp.status_mut() = problem.status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp.extensions_mut().insert(problem.clone());
    resp
}

/// The problem+json body of `problem` in `style`.
pub fn render(problem: &Problem, request_id: &str, style: &ProblemStyle) -> Bytes {
    let kind = match &style.type_base {
        Some(base) => format!("{}/{}", base.trim_end_matches('/'), problem.status.as_u16()),
        None => "about:blank".to_string(),
    };
    let detail = match (&problem.cause, style.verbose) {
        (Some(cause), true) => cause.as_str(),
        _ => problem.detail.as_str(),
    };
    let mut body = serde_json::json!({
        "type": kind,
        "title": title(problem.status),
        "status": problem.status.as_u16(),
        "detail": detail,
        "request_id": request_id,
    });
    if let (Some(members), Some(out)) = (&problem.members, body.as_object_mut()) {
        for (k, v) in members.iter() {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_has_all_contract_fields() {
        let resp = problem_response(
            &Problem::internal(StatusCode::NOT_FOUND, "no route for GET /x"),
            "abc",
        );
        assert_eq!(resp.status(), 404);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(v["status"], 404);
        assert_eq!(v["title"], "Not Found");
        assert_eq!(v["detail"], "No resource matches the request.");
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["type"], "about:blank");
        let p = resp.extensions().get::<Problem>().unwrap();
        assert_eq!(p.log_text(), "no route for GET /x");
    }

    #[test]
    fn extension_members_ride_along_but_never_replace_the_standard_ones() {
        let p = Problem::new(
            StatusCode::BAD_REQUEST,
            "The body does not match its schema.",
        )
        .with_member(
            "errors",
            serde_json::json!([{"pointer": "/a", "detail": "x"}]),
        )
        .with_member("status", serde_json::json!(200));
        let v: serde_json::Value =
            serde_json::from_slice(&render(&p, "id", &ProblemStyle::default())).unwrap();
        assert_eq!(v["errors"][0]["pointer"], "/a");
        assert_eq!(v["status"], 400);
    }

    #[test]
    fn styles() {
        let p = Problem::internal(
            StatusCode::BAD_GATEWAY,
            "upstream u target 10.0.0.1:80: reset",
        );
        let style = ProblemStyle {
            verbose: true,
            type_base: Some("https://errors.example.com/p/".into()),
        };
        let v: serde_json::Value = serde_json::from_slice(&render(&p, "id", &style)).unwrap();
        assert_eq!(v["type"], "https://errors.example.com/p/502");
        assert_eq!(v["detail"], "upstream u target 10.0.0.1:80: reset");
        let quiet: serde_json::Value =
            serde_json::from_slice(&render(&p, "id", &ProblemStyle::default())).unwrap();
        assert!(!quiet.to_string().contains("10.0.0.1"));
    }
}
