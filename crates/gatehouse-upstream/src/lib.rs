//! Upstreams: which targets exist (targets and name resolution), and which one to pick
//! (balancers). State that must survive reloads (in-flight counts, latency averages,
//! balancer positions) lives in [`registry::Registry`], keyed by upstream name and target
//! address. Knows nothing about the HTTP engine; the proxy owns connections.

pub mod balancer;
pub mod breaker;
pub mod budget;
pub mod clock;
pub mod hash;
pub mod health;
pub mod registry;
pub mod resolve;
pub mod target;
pub mod upstream;
pub mod window;

pub use balancer::{Balancer, PickInput};
pub use registry::Registry;
pub use target::{InFlight, TargetState};
pub use upstream::{Slot, UpstreamState};
