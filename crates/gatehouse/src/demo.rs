//! `gatehouse demo`: two tiny backends and a gateway running examples/demo.yaml.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::process::ExitCode;

const DEMO_CONFIG: &str = include_str!("../../../examples/demo.yaml");

/// Removes the demo's temporary config when the demo ends, however it ends.
struct TempConfig(std::path::PathBuf);

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Fails with a hint when `port` on 127.0.0.1 is taken, before anything is printed.
fn check_port(port: u16, what: &str, flag: &str) -> Result<(), String> {
    std::net::TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "the demo's {what} port 127.0.0.1:{port} is in use; choose another with {flag} PORT"
            ),
            _ => format!("cannot use 127.0.0.1:{port} for the demo's {what}: {e}"),
        })
}

/// Starts the demo and serves until interrupted.
pub fn demo(port: u16, admin_port: u16) -> ExitCode {
    if port == admin_port {
        eprintln!("--port and --admin-port must differ");
        return ExitCode::FAILURE;
    }
    for (p, what, flag) in [
        (port, "gateway", "--port"),
        (admin_port, "admin API", "--admin-port"),
    ] {
        if let Err(e) = check_port(p, what, flag) {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the demo backends: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut addrs = Vec::new();
    for name in ["demo-a", "demo-b"] {
        match rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")) {
            Ok(l) => {
                addrs.push(l.local_addr().map(|a| a.to_string()).unwrap_or_default());
                rt.spawn(backend(name, l));
            }
            Err(e) => {
                eprintln!("cannot bind a demo backend: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let backend_thread = std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    drop(backend_thread);
    let config = DEMO_CONFIG
        .replace("${DEMO_BACKEND_A:-127.0.0.1:9101}", &addrs[0])
        .replace("${DEMO_BACKEND_B:-127.0.0.1:9102}", &addrs[1])
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9901", &format!("127.0.0.1:{admin_port}"));
    let path = std::env::temp_dir().join(format!("gatehouse-demo-{}.yaml", std::process::id()));
    if let Err(e) = std::fs::write(&path, config) {
        eprintln!("cannot write the demo config: {e}");
        return ExitCode::FAILURE;
    }
    let _cleanup = TempConfig(path.clone());
    let path = path.to_string_lossy().to_string();
    println!(
        "Gatehouse demo: gateway on http://127.0.0.1:{port}, backends on {} and {}",
        addrs[0], addrs[1]
    );
    println!("Try:");
    println!(
        "  curl -i http://127.0.0.1:{port}/api/hello            # round robin over both backends"
    );
    println!(
        "  curl -i http://127.0.0.1:{port}/users/42             # path template, rewritten upstream"
    );
    println!("  curl -i http://127.0.0.1:{port}/old/page             # redirect");
    println!("  curl -i http://127.0.0.1:{port}/status               # fixed response");
    println!("  curl -i http://127.0.0.1:{port}/nowhere              # 404 problem+json");
    println!(
        "  curl -s http://127.0.0.1:{admin_port}/admin/upstreams        # admin API: health, breaker, retries"
    );
    println!("Config: {path} (edit it: the gateway reloads on save). Ctrl-C stops.");
    crate::run::run(&path, Some(1))
}

async fn backend(name: &'static str, l: tokio::net::TcpListener) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let svc = service_fn(
                move |req: http::Request<hyper::body::Incoming>| async move {
                    let body = serde_json::json!({
                        "backend": name,
                        "method": req.method().as_str(),
                        "path": req.uri().path(),
                        "query": req.uri().query(),
                        "x_forwarded_for": req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()),
                        "x_request_id": req.headers().get("x-request-id").and_then(|v| v.to_str().ok()),
                    });
                    let mut r =
                        http::Response::new(Full::new(Bytes::from(body.to_string() + "\n")));
                    r.headers_mut().insert(
                        "content-type",
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(r)
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}
