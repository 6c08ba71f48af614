//! Upkeep each runtime thread does on a timer, supplied by the binary: its allocator
//! gives back the memory that thread freed (a library embedding the gateway sets none).

use std::sync::OnceLock;
use std::time::Duration;

/// How often each thread runs the upkeep: memory freed after a burst is back with the
/// OS within this long, at a cost too small to measure under load.
pub const PERIOD: Duration = Duration::from_millis(250);

static UPKEEP: OnceLock<fn()> = OnceLock::new();

/// Sets what every runtime thread runs each [`PERIOD`]; the first call wins.
pub fn set(upkeep: fn()) {
    let _ = UPKEEP.set(upkeep);
}

/// Runs the upkeep on the current runtime's thread each [`PERIOD`], until the runtime
/// stops (a current_thread runtime: the task never leaves this thread).
pub fn spawn() {
    if let Some(&upkeep) = UPKEEP.get() {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PERIOD);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                upkeep();
            }
        });
    }
}
