//! Upstream state by name, carried from one snapshot to the next.

use crate::upstream::UpstreamState;
use gatehouse_config::Upstream;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// All upstreams of one snapshot.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    upstreams: HashMap<String, Arc<UpstreamState>>,
}

impl Registry {
    /// Builds the registry for `configs`: an unchanged upstream keeps its state object as
    /// is (balancer position included); a changed one is rebuilt but keeps the state of
    /// targets whose address stayed; upstreams no longer named are dropped.
    pub fn build(configs: &BTreeMap<String, Upstream>, previous: Option<&Registry>) -> Self {
        let upstreams = configs
            .iter()
            .map(|(name, cfg)| {
                let old = previous.and_then(|p| p.upstreams.get(name));
                let state = match old {
                    Some(o) if o.config == *cfg => o.clone(),
                    _ => {
                        let s = Arc::new(UpstreamState::build(name, cfg, old.map(|o| o.as_ref())));
                        crate::resolve::resolve_new(&s);
                        s
                    }
                };
                (name.clone(), state)
            })
            .collect();
        Self { upstreams }
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
