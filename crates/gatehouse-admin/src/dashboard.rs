//! `GET /dashboard`: the built-in dashboard (docs/operations.md, "Dashboard"). Its four
//! files are compiled into the binary; the page asks the admin API it is served from,
//! under `Content-Security-Policy: default-src 'self'`, so it cannot run inline code or
//! reach anywhere else.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

const INDEX: &str = include_str!("../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../assets/dashboard/app.js");
const STYLE: &str = include_str!("../assets/dashboard/style.css");
const ICON: &str = include_str!("../assets/dashboard/favicon.svg");

/// The page's policy: its own files and its own origin's API, nothing inline.
pub const CSP: &str = "default-src 'self'";

/// Serves a dashboard path, or `None` when it names no file of the dashboard.
pub fn asset(path: &str) -> Option<Response<Full<Bytes>>> {
    let (body, kind) = match path {
        "/dashboard" | "/dashboard/" | "/dashboard/index.html" => {
            (INDEX, "text/html; charset=utf-8")
        }
        "/dashboard/app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/dashboard/style.css" => (STYLE, "text/css; charset=utf-8"),
        "/dashboard/favicon.svg" => (ICON, "image/svg+xml"),
        _ => return None,
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Served from the binary: a new version must not be mixed with a cached old one.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(r)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_code_and_no_foreign_address() {
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="));
        assert!(INDEX.contains("src=\"/dashboard/app.js\""));
        for text in [INDEX, SCRIPT, STYLE] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        // The icon's only address is its XML namespace, never fetched.
        assert_eq!(ICON.matches("http").count(), 1);
        assert!(asset("/dashboard/nope.js").is_none());
        let r = asset("/dashboard").unwrap();
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
    }
}
