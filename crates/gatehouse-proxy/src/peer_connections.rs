//! `max_connections_per_ip`: open connections counted per peer address across a
//! listener's workers, so one address cannot hold every connection slot. IPv6 peers
//! are counted per /64, the block one subscriber usually gets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections per peer address (or IPv6 /64) on one listener.
#[derive(Debug, Default)]
pub struct PeerConnections {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PeerConnections {
    /// Counts a new connection from `peer` unless that address already holds `cap`;
    /// the slot is given back when the returned guard drops.
    pub fn admit(self: &Arc<Self>, peer: IpAddr, cap: usize) -> Option<PeerSlot> {
        let key = counted_as(peer);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            table: Arc::clone(self),
            key,
        })
    }

    /// Addresses with a connection open now.
    pub fn peers(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// One counted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct PeerSlot {
    table: Arc<PeerConnections>,
    key: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            // Gone when the last connection closes: the table holds only open peers.
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The address a client is counted as: IPv4 as it is (an IPv4-mapped IPv6 address as
/// IPv4), IPv6 by its /64.
pub fn counted_as(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !(u128::MAX >> 64);
                IpAddr::V6(bits.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_at_most_its_cap_and_slots_come_back() {
        let t = Arc::new(PeerConnections::default());
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let s1 = t.admit(a, 2).unwrap();
        let _s2 = t.admit(a, 2).unwrap();
        assert!(t.admit(a, 2).is_none());
        assert!(t.admit(b, 2).is_some());
        drop(s1);
        assert!(t.admit(a, 2).is_some());
    }

    #[test]
    fn ipv6_peers_count_per_64_and_the_table_forgets_closed_peers() {
        let t = Arc::new(PeerConnections::default());
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let s = t.admit(one, 1).unwrap();
        assert!(t.admit(same_64, 1).is_none());
        let o = t.admit(other_64, 1).unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        let m = t.admit(mapped, 1).unwrap();
        assert!(t.admit("127.0.0.2".parse().unwrap(), 1).is_none());
        assert_eq!(t.peers(), 3);
        drop((s, o, m));
        assert_eq!(t.peers(), 0);
    }
}
