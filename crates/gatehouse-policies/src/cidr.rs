//! CIDR tables: compiled once, checked per request without allocation.

use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A set of networks, IPv4 and IPv6.
#[derive(Debug, Clone, Default)]
pub struct CidrSet {
    nets: Vec<IpNet>,
}

impl CidrSet {
    /// Builds the set from CIDRs, bare IPs or names of `groups`.
    pub fn build(
        entries: &[String],
        groups: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, String> {
        let mut nets = Vec::new();
        for e in entries {
            if let Some(group) = groups.get(e) {
                for g in group {
                    nets.push(parse(g)?);
                }
            } else {
                nets.push(parse(e)?);
            }
        }
        Ok(Self { nets })
    }

    /// Whether no network is listed.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is inside any network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

fn parse(s: &str) -> Result<IpNet, String> {
    gatehouse_config::validate::parse_cidr(s).ok_or_else(|| format!("invalid CIDR {s:?}"))
}
