//! RFC 9457 problem+json bodies: the single shape of every response the gateway makes itself.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

use crate::LocalResponse;

/// A problem detail about to be sent to a client.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable explanation specific to this occurrence.
    pub detail: String,
}

impl Problem {
    /// A problem with the given status and detail.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
        }
    }
}

/// The `type` URI we publish for a status: stable, documented in docs/errors.md.
fn type_uri(status: StatusCode) -> String {
    format!("https://gatehouse.dev/problems/{}", status.as_u16())
}

/// Builds the problem+json response for `problem`, tagged with `request_id`.
pub fn problem_response(problem: &Problem, request_id: &str) -> LocalResponse {
    let title = problem.status.canonical_reason().unwrap_or("Error");
    let body = serde_json::json!({
        "type": type_uri(problem.status),
        "title": title,
        "status": problem.status.as_u16(),
        "detail": problem.detail,
        "request_id": request_id,
    });
    let mut resp = http::Response::new(Bytes::from(body.to_string()));
    *resp.status_mut() = problem.status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_has_all_contract_fields() {
        let resp = problem_response(
            &Problem::new(StatusCode::NOT_FOUND, "no route for GET /x"),
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
        assert_eq!(v["detail"], "no route for GET /x");
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["type"], "https://gatehouse.dev/problems/404");
    }
}
