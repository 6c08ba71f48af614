//! The gateway's own error bodies carry no internals: no upstream address or name, no
//! library wording, no policy name; the cause goes to the log under the same request id.
//! A `status: 404` ip_filter answer reads exactly like a missing route. `errors.verbose`
//! and `errors.type_base` change the rendering.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::*;

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
    // The access log is written by its own thread: wait for the line.
    let mut line = String::new();
    for _ in 0..100 {
        if let Some(l) = g.stdout_text().lines().find(|l| l.contains(&id)) {
            line = l.to_string();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_and_type_base() {
    let (_g, url, _) = gateway(&rest(
        "errors: { verbose: true, type_base: \"https://errors.example.com/problems/\" }\n",
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
