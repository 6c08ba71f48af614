//! One upstream's live state: its targets, balancer and settings.

use crate::balancer::{Balancer, Pick, PickInput};
use crate::hash::hash64;
use crate::target::TargetState;
use gatehouse_config::validate::{HashOn, parse_hash_on};
use gatehouse_config::{BalancerKind, Upstream};
use std::net::IpAddr;
use std::sync::Arc;

/// An upstream as the data plane sees it; shared by workers, rebuilt only when its config changes.
#[derive(Debug)]
pub struct UpstreamState {
    /// Upstream name.
    pub name: String,
    /// The config it was built from (compared on reload).
    pub config: Upstream,
    /// Targets in config order.
    pub targets: Vec<Arc<TargetState>>,
    weights: Vec<u32>,
    balancer: Balancer,
    hash_on: Option<HashOn>,
}

impl UpstreamState {
    /// Builds the state, reusing target state from `previous` by address.
    pub fn build(name: &str, config: &Upstream, previous: Option<&UpstreamState>) -> Self {
        let targets: Vec<Arc<TargetState>> = config
            .targets
            .iter()
            .map(|t| {
                let reuse = previous
                    .and_then(|p| p.targets.iter().find(|old| *old.address == *t.address))
                    .cloned();
                reuse.unwrap_or_else(|| {
                    let (host, port) = gatehouse_config::validate::parse_target(&t.address)
                        .unwrap_or_else(|_| (t.address.clone(), 80));
                    Arc::new(TargetState::new(t.address.clone(), host, port))
                })
            })
            .collect();
        let weights: Vec<u32> = config.targets.iter().map(|t| t.weight).collect();
        let pairs: Vec<(String, u32)> = config
            .targets
            .iter()
            .map(|t| (t.address.clone(), t.weight))
            .collect();
        let hash_on = match (config.balancer, &config.hash_on) {
            (BalancerKind::IpHash, _) => Some(HashOn::Ip),
            (_, Some(h)) => parse_hash_on(h).ok(),
            _ => None,
        };
        Self {
            name: name.to_string(),
            config: config.clone(),
            targets,
            weights,
            balancer: Balancer::new(config.balancer, &pairs),
            hash_on,
        }
    }

    /// Hash of the request's `hash_on` value; `None` falls back to the client IP.
    pub fn hash_key(&self, req: &http::request::Parts, client_ip: IpAddr) -> Option<u64> {
        let key = match self.hash_on.as_ref()? {
            HashOn::Ip => return Some(crate::balancer::ip_hash(client_ip)),
            HashOn::Path => return Some(hash64(req.uri.path().as_bytes())),
            HashOn::Header(name) => req.headers.get(name.as_str())?.as_bytes().to_vec(),
            HashOn::Cookie(name) => cookie(&req.headers, name)?.as_bytes().to_vec(),
            HashOn::Query(name) => {
                let q = req.uri.query()?;
                q.split('&')
                    .find_map(|p| {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        (k == name).then_some(v)
                    })?
                    .as_bytes()
                    .to_vec()
            }
        };
        Some(hash64(&key))
    }

    /// Picks a target for a request.
    pub fn pick(&self, input: &PickInput<'_>) -> Option<(Pick, &Arc<TargetState>)> {
        let p = self.balancer.pick(&self.targets, &self.weights, input)?;
        self.targets.get(p.index).map(|t| (p, t))
    }

    /// The sticky cookie name, when this upstream is sticky.
    pub fn sticky_cookie(&self) -> Option<&str> {
        (self.config.balancer == BalancerKind::Sticky).then_some(self.config.sticky.cookie.as_str())
    }
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}
