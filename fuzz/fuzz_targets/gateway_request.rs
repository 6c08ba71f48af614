//! Arbitrary bytes as a client's request (head and body) against the whole gateway,
//! in-process (gatehouse::embed) in front of a local echo upstream: the gateway never
//! panics, never hangs, and every answer it gives starts with a well-formed HTTP/1.x
//! status line and head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

struct World {
    gateway: SocketAddr,
    // Kept alive for the whole run.
    _runtime: tokio::runtime::Runtime,
    _backend: gatehouse_testkit::Backend,
    _gw: gatehouse::embed::Embedded,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let backend = runtime.block_on(gatehouse_testkit::Backend::start(
            "echo",
            gatehouse_testkit::backend::Kind::Echo,
        ));
        let yaml = format!(
            r#"
listeners:
  - name: fuzz
    address: "127.0.0.1:0"
    header_read_timeout: 2s
upstreams:
  echo:
    targets: [{{ address: "{}" }}]
    timeouts: {{ request: 5s }}
policies:
  stamp:
    type: headers
    request: {{ set: {{ x-fuzz: "1" }} }}
    response: {{ remove: [server] }}
routes:
  - name: small
    match: {{ path: {{ type: prefix, value: /small }} }}
    max_body_size: 64
    upstream: echo
  - name: fixed
    match: {{ path: {{ type: exact, value: /fixed }} }}
    respond: {{ status: 200, body: "fixed" }}
  - name: all
    policies: [stamp]
    upstream: echo
access_log: "off"
reload: {{ watch: false }}
"#,
            backend.addr
        );
        let gw = gatehouse::embed::Embedded::start(&yaml).expect("the fuzz config starts");
        let gateway = gw.listener("fuzz").expect("bound");
        World {
            gateway,
            _runtime: runtime,
            _backend: backend,
            _gw: gw,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let Ok(mut s) = TcpStream::connect(w.gateway) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
    // The client sends everything, then says it is done (half-close).
    if s.write_all(data).is_err() {
        return;
    }
    let _ = s.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("the gateway did not finish answering within 15 s");
            }
            // A reset after the answer is a close; nothing more to read.
            Err(_) => break,
        }
        if answer.len() > 1 << 20 {
            break;
        }
    }
    if answer.is_empty() {
        // Closed without a word: allowed for a request that never completed its head.
        return;
    }
    if data.starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") {
        // h2c by prior knowledge: the answer is HTTP/2 frames, starting with SETTINGS
        // (a 9-byte frame header, type 4, on stream 0).
        assert!(answer.len() >= 9, "short HTTP/2 answer: {answer:?}");
        assert_eq!(answer[3], 4, "the first frame is SETTINGS: {answer:?}");
        assert_eq!(&answer[5..9], &[0, 0, 0, 0], "on stream 0: {answer:?}");
        return;
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&answer) {
        Ok(httparse::Status::Complete(_)) => {
            let code = resp.code.expect("a status");
            assert!((100..600).contains(&code), "status {code}");
            // HTTP/1.1, or HTTP/1.0 to a client that spoke 1.0.
            assert!(matches!(resp.version, Some(0 | 1)), "version {:?}", resp.version);
        }
        Ok(httparse::Status::Partial) => panic!("truncated answer head: {:?}", String::from_utf8_lossy(&answer)),
        Err(e) => panic!("malformed answer ({e}): {:?}", String::from_utf8_lossy(&answer)),
    }
});
