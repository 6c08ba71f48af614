//! How authenticating and authorizing policies refuse: a 401 problem with the policy's
//! `WWW-Authenticate` challenge, or a 403 for a bearer token that lacks a scope (RFC
//! 6750 section 3.1, `insufficient_scope` naming the scopes wanted).

use gatehouse_core::{LocalResponse, Problem, problem_response};
use http::{HeaderValue, StatusCode, header};

/// 401 with `detail` and `challenge`.
pub fn unauthorized(request_id: &str, detail: &str, challenge: HeaderValue) -> LocalResponse {
    let mut r = problem_response(
        &Problem::new(StatusCode::UNAUTHORIZED, detail.to_string()),
        request_id,
    );
    r.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    r
}

/// 403 with `detail`, challenging for `scopes` when a scope is what was missing.
pub fn forbidden(request_id: &str, detail: String, scopes: Option<&[String]>) -> LocalResponse {
    let mut r = problem_response(&Problem::new(StatusCode::FORBIDDEN, detail), request_id);
    if let Some(scopes) = scopes
        && let Ok(v) = HeaderValue::from_str(&format!(
            "Bearer error=\"insufficient_scope\", scope=\"{}\"",
            scopes.join(" ")
        ))
    {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}
