//! Test support: real servers on 127.0.0.1 ephemeral ports, a gateway process spawner
//! that stops exactly the PID it started, and a small HTTP client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod backend;
pub mod browser;
pub mod client;
pub mod gateway;
pub mod nginx;
pub mod otlp;
pub mod redis;

pub use backend::Backend;
pub use client::{Client, Reply};
pub use gateway::GatewayProcess;
pub use otlp::OtlpReceiver;
pub use redis::RedisServer;

/// A scratch directory of this test process for a `kind` of server on `port`, created.
pub fn scratch_dir(kind: &str, port: u16) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gatehouse-{kind}-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A free TCP port on 127.0.0.1 for a gateway to bind later.
///
/// Picked at random below the kernel's ephemeral range (Linux: 32768-60999) and checked
/// free: a port the kernel handed out and took back is soon handed out again (to a test
/// backend or client), and the gateway refuses a port anyone else holds. Tests run as
/// separate processes, so the random pick is what keeps two of them apart.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let state = RandomState::new();
    for attempt in 0u64..200 {
        let port = 20_000
            + (state.hash_one((std::process::id(), attempt, std::time::Instant::now())) % 12_000)
                as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
