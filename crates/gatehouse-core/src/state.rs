//! Process-wide state that outlives snapshots: limiter counters, caches, upstream
//! health, policy-private tables. Owned by the gateway, found by (kind, name) and kept
//! while the config that shapes it (its fingerprint) stays the same.
//!
//! A config being compiled works on a [`Stage`]: every `get_or_build` either lends the
//! committed value or builds a new one into the stage. Nothing committed changes until
//! [`StateRegistry::commit`], called once the new snapshot goes live; a rejected config
//! simply drops its stage. State whose name the committed config no longer uses is
//! dropped at commit (requests still running on the old snapshot keep their `Arc`).

use std::any::Any;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

/// A digest of the config that shapes a piece of state. In-process only (never
/// persisted), so the std hasher over the config's `Debug` text is enough and every
/// config type can have one without deriving `Hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    /// The fingerprint of `config`.
    pub fn of(config: &impl std::fmt::Debug) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{config:?}").hash(&mut h);
        Self(h.finish())
    }
}

type Value = Arc<dyn Any + Send + Sync>;

#[derive(Clone)]
struct Entry {
    fingerprint: Fingerprint,
    value: Value,
}

type Key = (&'static str, String);

/// The committed state of the running config.
#[derive(Default)]
pub struct StateRegistry {
    live: Mutex<HashMap<Key, Entry>>,
}

impl std::fmt::Debug for StateRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateRegistry")
            .field("entries", &self.lock().len())
            .finish()
    }
}

impl StateRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A stage for compiling a new config against this registry.
    pub fn stage(&self) -> Stage<'_> {
        Stage {
            registry: self,
            staged: Mutex::new(HashMap::new()),
        }
    }

    /// Makes `stage` the committed state: what it holds stays, everything else goes.
    pub fn commit(&self, stage: Stage<'_>) {
        let staged = stage.staged.into_inner().unwrap_or_else(|p| p.into_inner());
        *self.lock() = staged;
    }

    /// The committed (kind, name) pairs, sorted (admin and tests).
    pub fn names(&self) -> Vec<(&'static str, String)> {
        let mut v: Vec<_> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// The committed value of (kind, name), if it has type `T`.
    pub fn get<T: Any + Send + Sync>(&self, kind: &'static str, name: &str) -> Option<Arc<T>> {
        let e = self.lock().get(&(kind, name.to_string()))?.clone();
        e.value.downcast::<T>().ok()
    }
}

/// The state of a config being compiled; see the module docs.
pub struct Stage<'r> {
    registry: &'r StateRegistry,
    staged: Mutex<HashMap<Key, Entry>>,
}

impl std::fmt::Debug for Stage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stage")
    }
}

impl Stage<'_> {
    /// The value this stage already holds for (kind, name), if it has type `T`; never
    /// builds. For state one part of a config creates and others only use (the store a
    /// config opens, which policies read when it is there).
    pub fn staged<T: Any + Send + Sync>(&self, kind: &'static str, name: &str) -> Option<Arc<T>> {
        let staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        let e = staged.get(&(kind, name.to_string()))?;
        e.value.clone().downcast::<T>().ok()
    }

    /// The state of (kind, name): the committed value when its fingerprint and type
    /// match, else a new one from `build`, which is lent the committed value of the same
    /// name and type when there is one (to carry what still applies, such as the health
    /// of targets that stayed). Asking twice in one stage yields the same value.
    pub fn get_or_build<T: Any + Send + Sync>(
        &self,
        kind: &'static str,
        name: &str,
        fingerprint: Fingerprint,
        build: impl FnOnce(Option<&T>) -> T,
    ) -> Arc<T> {
        let key = (kind, name.to_string());
        let mut staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = staged.get(&key)
            && e.fingerprint == fingerprint
            && let Ok(v) = e.value.clone().downcast::<T>()
        {
            return v;
        }
        let committed = self
            .registry
            .lock()
            .get(&key)
            .cloned()
            .and_then(|e| Some((e.fingerprint, e.value.downcast::<T>().ok()?)));
        let value = match committed {
            Some((f, v)) if f == fingerprint => v,
            Some((_, old)) => Arc::new(build(Some(&old))),
            None => Arc::new(build(None)),
        };
        staged.insert(
            key,
            Entry {
                fingerprint,
                value: value.clone(),
            },
        );
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn state_is_kept_by_name_and_fingerprint_and_committed_only_on_commit() {
        let reg = StateRegistry::new();
        let fp = Fingerprint::of(&"limit: 10");
        let s = reg.stage();
        let a = s.get_or_build("counter", "a", fp, |_| AtomicU64::new(0));
        a.fetch_add(5, Ordering::Relaxed);
        s.get_or_build("counter", "b", fp, |_| AtomicU64::new(0));
        assert!(reg.names().is_empty(), "nothing is visible before commit");
        reg.commit(s);
        assert_eq!(reg.names().len(), 2);

        // A rejected config: its stage is dropped, the registry is as it was.
        let s = reg.stage();
        s.get_or_build("counter", "c", fp, |_| AtomicU64::new(0));
        drop(s);
        assert_eq!(
            reg.names(),
            vec![("counter", "a".into()), ("counter", "b".into())]
        );

        // Same name and fingerprint: the same value; `b` no longer named: dropped.
        let s = reg.stage();
        let a2 = s.get_or_build("counter", "a", fp, |_| AtomicU64::new(0));
        assert_eq!(a2.load(Ordering::Relaxed), 5);
        reg.commit(s);
        assert_eq!(reg.names(), vec![("counter", "a".into())]);

        // A new fingerprint builds again, lent the old value.
        let s = reg.stage();
        let a3 = s.get_or_build("counter", "a", Fingerprint::of(&"limit: 20"), |old| {
            AtomicU64::new(old.map_or(0, |o: &AtomicU64| o.load(Ordering::Relaxed) * 10))
        });
        assert_eq!(a3.load(Ordering::Relaxed), 50);
        assert_eq!(
            reg.get::<AtomicU64>("counter", "a")
                .map(|v| v.load(Ordering::Relaxed)),
            Some(5),
            "the committed value is untouched until commit"
        );
    }
}
