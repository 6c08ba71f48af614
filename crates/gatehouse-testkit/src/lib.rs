//! Test support: real servers on 127.0.0.1 ephemeral ports, a gateway process spawner
//! that stops exactly the PID it started, and a small HTTP client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod backend;
pub mod client;
pub mod gateway;

pub use backend::Backend;
pub use client::{Client, Reply};
pub use gateway::GatewayProcess;

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
