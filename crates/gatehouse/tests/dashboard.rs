//! The built-in dashboard in a real headless Chromium (ChromeDriver): the page loads
//! from the binary under its CSP, reads the admin API and shows routes with their scores,
//! upstream health, top clients and attackers, recent errors and the latency split; it
//! refreshes itself, breaks no CSP rule and asks nothing of any address but the gateway's.
//! The admin guards cover it: no token is 401 with a Basic challenge a browser answers,
//! an address outside `allow` is 403.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use crate::support::*;
use gatehouse_testkit::browser::Browser;
use std::time::Duration;

fn routes(be: &Backend) -> String {
    format!(
        r#"upstreams:
  shop:
    targets: [{{ address: "{}" }}]
policies:
  closed: {{ type: ip_filter, deny: [127.0.0.0/8] }}
routes:
  - {{ name: storefront, match: {{ path: {{ type: prefix, value: /shop }} }}, upstream: shop }}
  - {{ name: vault, match: {{ path: {{ type: prefix, value: /vault }} }}, policies: [closed], upstream: shop }}
  - {{ name: broken, match: {{ path: {{ type: prefix, value: /status }} }}, upstream: shop }}
"#,
        be.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_state_in_a_real_browser() {
    let be = Backend::start("a", Kind::Echo).await;
    let (_g, url, admin) = gateway(&routes(&be));
    let c = Client::new();
    for _ in 0..6 {
        assert_eq!(
            send(&c, "GET", &format!("{url}/shop/item"), &[])
                .await
                .status,
            200
        );
    }
    assert_eq!(
        send(&c, "GET", &format!("{url}/vault"), &[]).await.status,
        403
    );
    assert_eq!(
        send(&c, "GET", &format!("{url}/status/503"), &[])
            .await
            .status,
        503
    );

    let page = c.get(&format!("{admin}/dashboard")).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-security-policy").as_deref(),
        Some("default-src 'self'")
    );
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );

    let b = Browser::start().await;
    b.goto(&format!("{admin}/dashboard")).await;
    assert!(
        b.wait_for(
            "return Number(document.body.dataset.refreshes) >= 2",
            Duration::from_secs(15)
        )
        .await,
        "the page refreshes itself"
    );
    let text = |id: &str| format!("return document.getElementById('{id}').innerText");
    let status = b.execute(&text("status")).await;
    assert!(status.as_str().unwrap().starts_with("updated"), "{status}");
    let routes = b
        .execute(&text("routes"))
        .await
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        routes.contains("storefront") && routes.contains("100.0"),
        "{routes}"
    );
    assert!(routes.contains("vault"), "{routes}");
    let ups = b
        .execute(&text("upstreams"))
        .await
        .as_str()
        .unwrap()
        .to_string();
    assert!(ups.contains("shop") && ups.contains("1/1 healthy"), "{ups}");
    let clients = b
        .execute(&text("clients"))
        .await
        .as_str()
        .unwrap()
        .to_string();
    assert!(clients.contains("127.0.0.1"), "{clients}");
    let attackers = b
        .execute(&text("attackers"))
        .await
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        attackers.contains("vault") || attackers.contains("closed/ip_denied"),
        "{attackers}"
    );
    let errors = b
        .execute(&text("errors"))
        .await
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        errors.contains("503") && errors.contains("/status/503"),
        "{errors}"
    );
    let latency = b
        .execute(&text("latency"))
        .await
        .as_str()
        .unwrap()
        .to_string();
    assert!(latency.contains("storefront"), "{latency}");
    let bars = b
        .execute("return document.querySelectorAll('#latency .bar span').length")
        .await;
    assert!(bars.as_u64().unwrap() >= 4, "{bars}");

    // New traffic shows up on its own.
    for _ in 0..3 {
        send(&c, "GET", &format!("{url}/status/500"), &[]).await;
    }
    assert!(
        b.wait_for(
            "return document.getElementById('errors').innerText.includes('/status/500')",
            Duration::from_secs(10)
        )
        .await
    );

    let console = b.log("browser").await;
    for entry in &console {
        let m = entry["message"].as_str().unwrap_or("");
        assert!(
            !m.contains("Content Security Policy") && entry["level"] != "SEVERE",
            "{entry}"
        );
    }
    let urls = b.requested_urls().await;
    assert!(urls.len() >= 10, "{urls:?}");
    // Only network requests: the browser's own pages (chrome://) never leave it.
    let own = format!("{admin}/");
    let network = urls.iter().filter(|u| {
        ["http:", "https:", "ws:", "wss:"]
            .iter()
            .any(|s| u.starts_with(s))
    });
    for u in network {
        assert!(u.starts_with(&own), "a request outside the gateway: {u}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_guards_cover_the_dashboard_and_metrics() {
    use base64::Engine;
    let be = Backend::start("a", Kind::Echo).await;
    let (port, admin_port) = (free_port(), free_port());
    let open = format!("admin:\n  address: 127.0.0.1:{admin_port}\n");
    let guarded =
        format!("{open}  tokens:\n    - {{ token: \"scrape-token-0123456789\", role: read }}\n");
    let yaml = support::config(port, admin_port, &routes(&be)).replace(&open, &guarded);
    let _g = GatewayProcess::start(BIN, &yaml, &[port, admin_port]);
    let admin = format!("http://127.0.0.1:{admin_port}");
    let c = Client::new();
    for path in [
        "/dashboard",
        "/dashboard/app.js",
        "/metrics",
        "/admin/quality",
    ] {
        let r = c.get(&format!("{admin}{path}")).await;
        assert_eq!(r.status, 401, "{path}");
        let basic = r
            .headers
            .get_all("www-authenticate")
            .iter()
            .any(|h| h.to_str().unwrap_or("").starts_with("Basic"));
        assert!(basic, "{path}: a challenge browsers answer");
    }
    let basic = base64::engine::general_purpose::STANDARD.encode("anyone:scrape-token-0123456789");
    let auth = format!("Basic {basic}");
    let r = send(
        &c,
        "GET",
        &format!("{admin}/dashboard"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(
        r.status, 200,
        "a browser's Basic answer, the token as password"
    );
    let r = send(
        &c,
        "POST",
        &format!("{admin}/admin/reload"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(r.status, 403, "a read token cannot write");
    let r = send(
        &c,
        "GET",
        &format!("{admin}/dashboard/nothing.js"),
        &[("authorization", &auth)],
    )
    .await;
    assert_problem(&r, 404);
}
