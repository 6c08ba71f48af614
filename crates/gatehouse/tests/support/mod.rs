//! Shared test helpers: start backends and the real gateway binary on free ports.
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod idp;

pub use gatehouse_testkit::backend::Kind;
pub use gatehouse_testkit::{Backend, Client, GatewayProcess, Reply, free_port};

/// Path of the built binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// A gateway with a listener on `port` (and admin on `admin`) plus the given YAML body.
pub fn config(port: u16, admin: u16, rest: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    address: 127.0.0.1:{port}\nadmin:\n  address: 127.0.0.1:{admin}\nreload: {{ watch: false }}\nshutdown: {{ drain_timeout: 5s }}\n{rest}"
    )
}

/// Starts a gateway for `rest` and returns it with its base URL and admin URL.
pub fn gateway(rest: &str) -> (GatewayProcess, String, String) {
    let (port, admin) = (free_port(), free_port());
    let g = GatewayProcess::start(BIN, &config(port, admin, rest), &[port, admin]);
    (
        g,
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{admin}"),
    )
}

/// Runs `gatehouse validate` on `yaml` written to a fresh `gw.yaml`: its exit code and
/// standard error.
pub fn validate(yaml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("gw.yaml");
    std::fs::write(&f, yaml).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["validate", "-c", f.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a problem+json response with this status.
pub fn assert_problem(r: &Reply, status: u16) {
    assert_eq!(r.status, status, "body: {:?}", r.body);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    let v = r.json();
    assert_eq!(v["status"], status);
    for k in ["type", "title", "detail", "request_id"] {
        assert!(v.get(k).is_some(), "problem lacks {k}: {v}");
    }
    assert_eq!(
        v["request_id"].as_str(),
        r.header("x-request-id").as_deref()
    );
}

/// The in-process gateway (gatehouse::embed) for `rest`, with a listener and the admin
/// API on ports the kernel picks; returns it with its base URL and admin URL. For tests
/// that only speak HTTP; the CLI, signals and reload-by-file keep the real binary.
pub fn embedded(rest: &str) -> (gatehouse::embed::Embedded, String, String) {
    let yaml = format!(
        "listeners:\n  - name: public\n    address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nreload: {{ watch: false }}\nshutdown: {{ drain_timeout: 5s }}\n{rest}"
    );
    let g = gatehouse::embed::Embedded::builder()
        .threads(2)
        .start(&yaml)
        .unwrap_or_else(|e| panic!("gateway did not start:\n{e}"));
    let url = format!("http://{}", g.listener("public").unwrap());
    let admin = format!("http://{}", g.admin().unwrap());
    (g, url, admin)
}

/// Sends `method url` with `headers` and `body`.
pub async fn send_body(
    c: &Client,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    c.send(
        b.body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap(),
    )
    .await
    .unwrap()
}

/// Sends `method url` with `headers` and an empty body.
pub async fn send(c: &Client, method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    c.send(
        b.body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap()
}

/// Reads from `s` until `end` has been seen (or 5 s pass).
pub async fn read_until(s: &mut tokio::net::TcpStream, end: &[u8]) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !out.windows(end.len()).any(|w| w == end) && std::time::Instant::now() < deadline {
        match tokio::time::timeout(
            std::time::Duration::from_millis(200),
            tokio::io::AsyncReadExt::read(s, &mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `request` on `s` and reads the answer, up to the end of its JSON body.
pub async fn ask(s: &mut tokio::net::TcpStream, request: &[u8]) -> String {
    tokio::io::AsyncWriteExt::write_all(s, request)
        .await
        .unwrap();
    read_until(s, b"}").await
}

/// A connection from a chosen loopback address (127.0.0.2, 127.0.0.3, ...).
pub async fn connect_from(from: &str, to: &str) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    sock.connect(to.parse().unwrap()).await.unwrap()
}

/// One HTTP/2 frame: its type, flags, stream and payload.
pub struct Frame {
    pub kind: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// Writes one HTTP/2 frame.
pub async fn write_frame(
    s: &mut tokio::net::TcpStream,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    tokio::io::AsyncWriteExt::write_all(s, &f).await.unwrap();
}

/// Reads one HTTP/2 frame (`None` at the end or after 5 s).
pub async fn read_frame(s: &mut tokio::net::TcpStream) -> Option<Frame> {
    let mut head = [0u8; 9];
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_exact(s, &mut head),
    )
    .await
    .ok()?
    .ok()?;
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    tokio::io::AsyncReadExt::read_exact(s, &mut payload)
        .await
        .ok()?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some(Frame {
        kind: head[3],
        stream,
        payload,
    })
}
