//! The compiled `protection` section (docs/protection.md): who is exempt and who is
//! denied, how clients are counted (IPv6 per network), when offences ban, and the
//! process's client table, which outlives the snapshot.

use crate::client_table::{Ban, BanPolicy, ClientTable, Refusal};
use gatehouse_config::ProtectionConfig;
use gatehouse_core::{Fingerprint, Offence, Stage};
use gatehouse_policies::cidr::CidrSet;
use std::net::IpAddr;
use std::sync::Arc;

/// The state registry's name for the client table.
const STATE: (&str, &str) = ("protection", "clients");

/// `protection`, compiled.
#[derive(Debug)]
pub struct Protection {
    /// Never limited per address nor banned.
    pub exempt: CidrSet,
    /// Refused: closed at accept, 403 as a client IP.
    pub deny: CidrSet,
    /// IPv6 clients are counted per network of this many bits.
    pub ipv6_prefix: u8,
    /// When offences ban; `None`: counted only.
    pub ban: Option<BanPolicy>,
    /// Offences, bans and refusal counts of the whole process.
    pub clients: Arc<ClientTable>,
}

impl Default for Protection {
    fn default() -> Self {
        let d = ProtectionConfig::default();
        Self {
            exempt: CidrSet::default(),
            deny: CidrSet::default(),
            ipv6_prefix: d.ipv6_prefix,
            ban: None,
            clients: Arc::new(ClientTable::new(d.client_table_size, d.max_bans, None)),
        }
    }
}

impl Protection {
    /// Compiles `c` with its exempt and deny lists already built; the client table is
    /// the running one while its sizes stay the same.
    pub fn compile(
        c: &ProtectionConfig,
        exempt: CidrSet,
        deny: CidrSet,
        stage: &Stage<'_>,
    ) -> Self {
        let sizes = (c.client_table_size, c.max_bans);
        let clients = stage.get_or_build(STATE.0, STATE.1, Fingerprint::of(&sizes), |old| {
            ClientTable::new(sizes.0, sizes.1, old)
        });
        let ban = c.ban.as_ref().map(|b| BanPolicy {
            after: b.after,
            within_ms: ms(b.within.get()),
            duration_ms: ms(b.duration.get()),
            max_ms: ms(b.max_duration.get()),
            triggers: b
                .triggers
                .iter()
                .filter_map(|t| Offence::parse(t))
                .fold(0, |bits, o| bits | 1 << o.index()),
        });
        Self {
            exempt,
            deny,
            ipv6_prefix: c.ipv6_prefix,
            ban,
            clients,
        }
    }

    /// The address `ip` is counted as.
    pub fn key(&self, ip: IpAddr) -> IpAddr {
        counted_as(ip, self.ipv6_prefix)
    }

    /// Whether `ip` is in `deny` (counted as a refusal when it is).
    pub fn denies(&self, ip: IpAddr) -> bool {
        let hit = self.deny.contains(ip);
        if hit {
            self.clients.refused(Refusal::Denied);
        }
        hit
    }

    /// Milliseconds left of `ip`'s ban, if it is banned (exempt addresses never are).
    pub fn banned(&self, ip: IpAddr) -> Option<u64> {
        let t = &self.clients;
        if !t.holds_bans() {
            return None;
        }
        let left = t.banned(self.key(ip), t.now())?;
        if self.exempt.contains(ip) {
            return None;
        }
        t.refused(Refusal::Banned);
        Some(left)
    }

    /// Counts offence `o` against `ip` (never an exempt address), banning it when that
    /// tips it over.
    pub fn offend(&self, ip: IpAddr, o: Offence) {
        if self.exempt.contains(ip) {
            return;
        }
        let t = &self.clients;
        if let Some(ban) = t.offend(self.key(ip), o, self.ban.as_ref(), t.now()) {
            log_ban(ip, &ban);
        }
    }
}

fn log_ban(ip: IpAddr, ban: &Ban) {
    tracing::warn!(
        client = %ip,
        reason = %ban.reason,
        seconds = (ban.until - ban.since) / 1000,
        count = ban.count,
        "client banned"
    );
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The address a client is counted as: IPv4 as it is (an IPv4-mapped IPv6 address as
/// IPv4), IPv6 by its network of `prefix` bits (a /64 is what one subscriber usually
/// gets).
pub fn counted_as(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix.min(128)))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        },
    }
}

/// `key` as the admin API writes it: an IPv6 network with its prefix.
pub fn key_text(key: IpAddr, prefix: u8) -> String {
    match key {
        IpAddr::V6(_) if prefix < 128 => format!("{key}/{prefix}"),
        _ => key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_per_network_and_mapped_ones_as_ipv4() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            counted_as(ip("2001:db8:1:2:ffff::9"), 64),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            counted_as(ip("2001:db8:1:2:ffff::9"), 48),
            ip("2001:db8:1::")
        );
        assert_eq!(counted_as(ip("2001:db8::9"), 128), ip("2001:db8::9"));
        assert_eq!(counted_as(ip("::ffff:127.0.0.2"), 64), ip("127.0.0.2"));
        assert_eq!(counted_as(ip("127.0.0.2"), 1), ip("127.0.0.2"));
        assert_eq!(key_text(ip("2001:db8::"), 64), "2001:db8::/64");
        assert_eq!(key_text(ip("127.0.0.2"), 64), "127.0.0.2");
    }
}
