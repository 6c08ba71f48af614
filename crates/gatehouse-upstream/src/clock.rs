//! A coarse monotonic clock in milliseconds, shared by health, breaker and budget state
//! so they can keep times in atomics.

use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the first call in this process, plus one (so 0 can mean "never").
pub fn now_ms() -> u64 {
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
}
