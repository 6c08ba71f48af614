//! Name resolution of hostname targets: once when a target is created, then again every
//! `resolve_interval` in the background. A failed lookup keeps the last good addresses.

use crate::registry::Registry;
use crate::upstream::UpstreamState;
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

/// Resolves hostname targets that have no address yet (blocking; control plane only).
pub fn resolve_new(up: &UpstreamState) {
    for t in &up.targets {
        if t.is_hostname() && t.socket_addr().is_none() {
            match (t.host.as_str(), t.port).to_socket_addrs() {
                Ok(addrs) => t.set_resolved(addrs.collect()),
                Err(e) => {
                    tracing::warn!(upstream = %up.name, target = %t.address, error = %e, "cannot resolve target")
                }
            }
        }
    }
}

/// Re-resolves hostname targets of the current registry forever; `current` yields the
/// registry of the live snapshot each time it is called.
pub async fn refresh_loop(current: impl Fn() -> Registry) {
    let mut last: std::collections::HashMap<String, Instant> = Default::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let registry = current();
        for (name, up) in registry.iter() {
            let every = up.config.resolve_interval.get().max(Duration::from_secs(1));
            for t in up.targets.iter().filter(|t| t.is_hostname()) {
                let key = format!("{name}/{}", t.address);
                if last.get(&key).is_some_and(|at| at.elapsed() < every) {
                    continue;
                }
                last.insert(key, Instant::now());
                match tokio::net::lookup_host((t.host.as_str(), t.port)).await {
                    Ok(addrs) => {
                        let addrs: Vec<_> = addrs.collect();
                        if !addrs.is_empty() {
                            t.set_resolved(addrs);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(upstream = %name, target = %t.address, error = %e, "re-resolving target failed; keeping last addresses")
                    }
                }
            }
        }
    }
}
