//! Picking a target: the algorithms of `balancer:` in the config. Each is lock-free on the
//! request path: round robin walks a precomputed smooth-weighted sequence with an atomic
//! cursor, the others read atomics of the targets.

use crate::hash::{Ring, hash64};
use crate::target::TargetState;
use gatehouse_config::BalancerKind;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a balancer may look at besides the targets.
#[derive(Debug, Clone, Copy)]
pub struct PickInput<'a> {
    /// Client IP (ip_hash, and the fallback key of consistent_hash).
    pub client_ip: IpAddr,
    /// Hash of the configured `hash_on` value, when present in the request.
    pub hash_key: Option<u64>,
    /// Value of the sticky cookie, when the client sent one.
    pub sticky: Option<&'a str>,
}

/// The outcome of a pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Index of the target.
    pub index: usize,
    /// The sticky cookie must be (re)issued for this target.
    pub set_cookie: bool,
}

/// A compiled balancer for one upstream.
#[derive(Debug)]
pub enum Balancer {
    /// Smooth weighted round robin (nginx's sequence), precomputed.
    RoundRobin(Sequence),
    /// Fewest in-flight requests relative to weight.
    LeastConnections,
    /// Power of two random choices on EWMA latency times load.
    LeastLatency,
    /// Weighted random over cumulative weights.
    Random(Vec<u64>),
    /// Consistent-hash ring (ip_hash and consistent_hash).
    Hash(Ring),
    /// Cookie pins the client; new clients go round robin.
    Sticky(Sequence),
}

/// The smooth weighted round-robin order, walked by an atomic cursor.
#[derive(Debug)]
pub struct Sequence {
    order: Vec<u32>,
    cursor: AtomicUsize,
}

impl Sequence {
    /// nginx's smooth weighted round robin, unrolled over one period (weights reduced by gcd).
    pub fn new(weights: &[u32]) -> Self {
        let g = weights
            .iter()
            .copied()
            .filter(|w| *w > 0)
            .fold(0, gcd)
            .max(1);
        let w: Vec<i64> = weights.iter().map(|x| i64::from(x / g)).collect();
        let total: i64 = w.iter().sum();
        // Cap the period so huge weights cannot blow up memory; the order stays smooth.
        let period = usize::try_from(total).unwrap_or(0).min(1 << 20);
        let mut current = vec![0i64; w.len()];
        let mut order = Vec::with_capacity(period);
        for _ in 0..period {
            let mut best = 0;
            for i in 0..w.len() {
                current[i] += w[i];
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            order.push(u32::try_from(best).unwrap_or(0));
        }
        Self {
            order,
            cursor: AtomicUsize::new(fastrand::usize(..period.max(1))),
        }
    }

    fn next(&self) -> Option<usize> {
        if self.order.is_empty() {
            return None;
        }
        let n = self.cursor.fetch_add(1, Ordering::Relaxed);
        Some(self.order[n % self.order.len()] as usize)
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The sticky cookie value naming a target: a stable hash of its address.
pub fn sticky_id(address: &str) -> String {
    format!("{:016x}", hash64(address.as_bytes()))
}

impl Balancer {
    /// Compiles the balancer for targets with these addresses and weights.
    pub fn new(kind: BalancerKind, targets: &[(String, u32)]) -> Self {
        let weights: Vec<u32> = targets.iter().map(|t| t.1).collect();
        match kind {
            BalancerKind::RoundRobin => Self::RoundRobin(Sequence::new(&weights)),
            BalancerKind::LeastConnections => Self::LeastConnections,
            BalancerKind::LeastLatency => Self::LeastLatency,
            BalancerKind::Random => Self::Random(
                weights
                    .iter()
                    .scan(0u64, |acc, w| {
                        *acc += u64::from(*w);
                        Some(*acc)
                    })
                    .collect(),
            ),
            BalancerKind::IpHash | BalancerKind::ConsistentHash => {
                Self::Hash(Ring::build(targets.iter().map(|(a, w)| (a.as_str(), *w))))
            }
            BalancerKind::Sticky => Self::Sticky(Sequence::new(&weights)),
        }
    }

    /// Picks a target among `targets` (with their `weights`) that `usable` accepts, or
    /// `None` when the algorithm found none. Each algorithm skips rejected targets in
    /// its own way, so the traffic of an ejected target spreads the way the algorithm
    /// spreads load (the ring moves on to the next target, round robin to the next turn).
    pub fn pick(
        &self,
        targets: &[Arc<TargetState>],
        weights: &[u32],
        input: &PickInput<'_>,
        usable: &dyn Fn(usize) -> bool,
    ) -> Option<Pick> {
        let plain = |index| Pick {
            index,
            set_cookie: false,
        };
        let n = targets.len();
        if n == 0 {
            return None;
        }
        // Sampling algorithms give up after this many rejected draws.
        let draws = 2 * n + 2;
        match self {
            Self::RoundRobin(seq) => (0..draws)
                .filter_map(|_| seq.next())
                .find(|&i| usable(i))
                .map(plain),
            Self::LeastConnections => {
                // Scan from a random start so ties spread instead of piling on target 0.
                let start = fastrand::usize(..n);
                (0..n)
                    .map(|k| (start + k) % n)
                    .filter(|&i| weights[i] > 0 && usable(i))
                    .min_by(|&a, &b| {
                        // in_flight / weight, compared without division.
                        let la = u128::from(targets[a].in_flight()) * u128::from(weights[b]);
                        let lb = u128::from(targets[b].in_flight()) * u128::from(weights[a]);
                        la.cmp(&lb)
                    })
                    .map(plain)
            }
            Self::LeastLatency => {
                let a = (0..draws)
                    .map(|_| fastrand::usize(..n))
                    .find(|&i| usable(i))?;
                // The second choice is always another target than the first.
                let other = (n > 1)
                    .then(|| {
                        (0..draws)
                            .map(|_| (a + 1 + fastrand::usize(..n - 1)) % n)
                            .find(|&i| usable(i))
                    })
                    .flatten();
                let Some(b) = other else {
                    return Some(plain(a));
                };
                let score = |i: usize| {
                    let t = &targets[i];
                    // Unsampled targets look fast so they get tried; load multiplies latency.
                    (u128::from(t.ewma_ns().max(1)) * u128::from(t.in_flight() + 1))
                        / u128::from(weights[i].max(1))
                };
                Some(plain(if score(b) < score(a) { b } else { a }))
            }
            Self::Random(cumulative) => {
                let total = *cumulative.last()?;
                if total == 0 {
                    return None;
                }
                (0..draws)
                    .map(|_| {
                        let r = fastrand::u64(..total);
                        cumulative.partition_point(|c| *c <= r)
                    })
                    .find(|&i| usable(i))
                    .map(plain)
            }
            Self::Hash(ring) => {
                let key = input.hash_key.unwrap_or_else(|| ip_hash(input.client_ip));
                ring.lookup_usable(key, usable).map(plain)
            }
            Self::Sticky(seq) => {
                if let Some(id) = input.sticky
                    && let Some(i) = targets.iter().position(|t| sticky_id(&t.address) == id)
                    && usable(i)
                {
                    return Some(plain(i));
                }
                (0..draws)
                    .filter_map(|_| seq.next())
                    .find(|&i| usable(i))
                    .map(|index| Pick {
                        index,
                        set_cookie: true,
                    })
            }
        }
    }
}

/// Hash of a client IP for ip_hash.
pub fn ip_hash(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => hash64(&v4.octets()),
        IpAddr::V6(v6) => hash64(&v6.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_weighted_sequence_matches_nginx() {
        // nginx's documented order for weights 5, 1, 1: a a b a c a a
        let s = Sequence::new(&[5, 1, 1]);
        assert_eq!(s.order, vec![0, 0, 1, 0, 2, 0, 0]);
        let s = Sequence::new(&[2, 4]);
        assert_eq!(s.order, vec![1, 0, 1]);
        let s = Sequence::new(&[0, 3]);
        assert_eq!(s.order, vec![1]);
    }
}
