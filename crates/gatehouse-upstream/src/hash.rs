//! Stable hashing and the consistent-hash ring (minimal remapping on target changes).

/// FNV-1a followed by a splitmix64 finalizer: stable across runs and well mixed.
pub fn hash64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Virtual nodes per unit of weight: enough for an even spread, small enough to build fast.
const VNODES_PER_WEIGHT: u32 = 160;

/// A hash ring over targets; each target owns `weight * 160` points derived from its address.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    points: Vec<(u64, usize)>,
}

impl Ring {
    /// Builds the ring for targets given as (address, weight); the index is the position.
    pub fn build<'a>(targets: impl Iterator<Item = (&'a str, u32)>) -> Self {
        let mut points = Vec::new();
        for (i, (addr, weight)) in targets.enumerate() {
            for v in 0..weight.saturating_mul(VNODES_PER_WEIGHT).min(16_000) {
                points.push((hash64(format!("{addr}#{v}").as_bytes()), i));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// The target owning `key`: the first point at or after its hash, wrapping around.
    pub fn lookup(&self, key: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let i = self.points.partition_point(|(h, _)| *h < key);
        Some(self.points[i % self.points.len()].1)
    }

    /// Like [`Ring::lookup`], but walks on past targets that `usable` rejects.
    pub fn lookup_usable(&self, key: u64, usable: impl Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let start = self.points.partition_point(|(h, _)| *h < key);
        (0..self.points.len())
            .map(|k| self.points[(start + k) % self.points.len()].1)
            .find(|&t| usable(t))
    }
}
