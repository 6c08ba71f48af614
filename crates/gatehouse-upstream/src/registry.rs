//! The upstreams of one snapshot. Their state (health, breakers, balancer position,
//! connection counts) lives in the gateway's state registry under kind `upstream`, so a
//! reload keeps it by name.

use crate::upstream::UpstreamState;
use gatehouse_config::Upstream;
use gatehouse_core::{Fingerprint, Stage};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The state-registry kind of upstream state.
pub const STATE_KIND: &str = "upstream";

/// All upstreams of one snapshot.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    upstreams: HashMap<String, Arc<UpstreamState>>,
}

impl Registry {
    /// Builds the registry for `configs`: an unchanged upstream keeps its state object as
    /// is (balancer position included); a changed one is rebuilt but keeps the state of
    /// targets whose address stayed; upstreams no longer named are dropped. No name is
    /// resolved here (`validate` compiles too, and must not touch the network): the
    /// gateway calls [`Registry::resolve_new`] before a registry goes live.
    pub fn build(configs: &BTreeMap<String, Upstream>, state: &Stage<'_>) -> Self {
        let upstreams = configs
            .iter()
            .map(|(name, cfg)| {
                let s = state.get_or_build(STATE_KIND, name, Fingerprint::of(cfg), |old| {
                    UpstreamState::build(name, cfg, old)
                });
                (name.clone(), s)
            })
            .collect();
        Self { upstreams }
    }

    /// Resolves the hostname targets that have no address yet (blocking; control plane
    /// only, before the registry serves).
    pub fn resolve_new(&self) {
        for up in self.upstreams.values() {
            crate::resolve::resolve_new(up);
        }
    }

    /// The upstream named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<UpstreamState>> {
        self.upstreams.get(name)
    }

    /// Every upstream, for background tasks and the admin API.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<UpstreamState>)> {
        self.upstreams.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn building_resolves_nothing_until_asked() {
        let cfg: BTreeMap<String, Upstream> = BTreeMap::from([(
            "u".to_string(),
            Upstream {
                targets: vec![gatehouse_config::Target {
                    address: "localhost:8080".into(),
                    weight: 1,
                }],
                ..gatehouse_config::load_str(
                    "upstreams:\n  x: { targets: [{ address: 127.0.0.1:1 }] }\n",
                    "t.yaml",
                )
                .unwrap()
                .config
                .upstreams["x"]
                    .clone()
            },
        )]);
        let states = gatehouse_core::StateRegistry::new();
        let r = Registry::build(&cfg, &states.stage());
        let t = &r.get("u").unwrap().targets[0];
        assert!(t.socket_addr().is_none(), "compile must not resolve names");
        r.resolve_new();
        assert_eq!(t.socket_addr().map(|a| a.port()), Some(8080));
    }
}
