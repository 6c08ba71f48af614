//! `max_connections_per_ip`: open connections counted per peer address across a
//! listener's workers, so one address cannot hold every connection slot. Peers come
//! keyed as `protection` counts them (IPv6 per network, see protection.rs).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections per peer address (or IPv6 /64) on one listener.
#[derive(Debug, Default)]
pub struct PeerConnections {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PeerConnections {
    /// Counts a new connection from `key` (a peer as counted) unless it already holds
    /// `cap`; the slot is given back when the returned guard drops.
    pub fn admit(self: &Arc<Self>, key: IpAddr, cap: usize) -> Option<PeerSlot> {
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
    fn the_table_forgets_closed_peers() {
        let t = Arc::new(PeerConnections::default());
        let a: IpAddr = "2001:db8:1:2::".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s = t.admit(a, 1).unwrap();
        let o = t.admit(b, 1).unwrap();
        assert_eq!(t.peers(), 2);
        drop((s, o));
        assert_eq!(t.peers(), 0);
    }
}
