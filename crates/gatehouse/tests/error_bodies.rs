//! The gateway's own error bodies carry no internals: no upstream address or name, no
//! library wording, no policy name; the cause goes to the log under the same request id.
//! A `status: 404` ip_filter answer reads exactly like a missing route. `errors.verbose`
//! and `errors.type_base` change the rendering.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;

fn rest(extra: &str) -> String {
    let dead = free_port();
    format!(
        r#"upstreams:
  secret-backend: {{ targets: [{{ address: "127.0.0.1:{dead}" }}] }}
policies:
  hide-admin:
    type: ip_filter
    allow: [10.255.255.255/32]
    status: 404
routes:
  - name: hidden
    match: {{ path: {{ type: prefix, value: /admin }} }}
    policies: [hide-admin]
    respond: {{ status: 200 }}
  - name: broken
    match: {{ path: {{ type: prefix, value: /broken }} }}
    upstream: secret-backend
{extra}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_bodies_have_no_internals() {
    let (g, url, _) = gateway(&rest(""));
    let c = Client::new();

    let r = c.get(&format!("{url}/broken/x")).await;
    assert_problem(&r, 502);
    let body = r.body_text();
    for leak in [
        "127.0.0.1",
        "secret-backend",
        "refused",
        "os error",
        "target",
    ] {
        assert!(!body.contains(leak), "{leak} leaked: {body}");
    }
    let v = r.json();
    assert_eq!(v["type"], "about:blank");
    assert_eq!(v["title"], "Bad Gateway");
    // The cause is in the log under the same request id.
    let id = r.header("x-request-id").unwrap();
    let line = g.access_line(&id).unwrap_or_default().to_string();
    assert!(line.contains("secret-backend"), "{line}");

    // A hidden route and a missing one are indistinguishable.
    let hidden = c.get(&format!("{url}/admin/users")).await;
    let missing = c.get(&format!("{url}/nothing-here")).await;
    assert_problem(&hidden, 404);
    assert_problem(&missing, 404);
    let strip = |r: &Reply| {
        let mut v = r.json();
        v.as_object_mut().unwrap().remove("request_id");
        v
    };
    assert_eq!(strip(&hidden), strip(&missing));
    let names = |r: &Reply| {
        let mut n: Vec<_> = r.headers.keys().map(|k| k.to_string()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&hidden), names(&missing));
    assert!(!hidden.body_text().contains("hide-admin"));
    // ... while the log names the policy that answered and why.
    let id = hidden.header("x-request-id").unwrap();
    let rec = g.access_line(&id).unwrap_or_default();
    assert_eq!(rec["short_circuit"]["policy"], "hide-admin", "{rec}");
    assert_eq!(rec["short_circuit"]["reason"], "ip_denied", "{rec}");
    assert_eq!(rec["status"], 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_and_type_base() {
    let (_g, url, _) = embedded(&rest(
        r#"
errors: { verbose: true, type_base: "https://errors.example.com/problems/" }
"#,
    ));
    let r = Client::new().get(&format!("{url}/broken/x")).await;
    assert_problem(&r, 502);
    let v = r.json();
    assert_eq!(v["type"], "https://errors.example.com/problems/502");
    assert!(
        v["detail"].as_str().unwrap().contains("secret-backend"),
        "{v}"
    );
}
