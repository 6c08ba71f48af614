//! The running gateway: the live snapshot, reload, and shutdown state shared by workers,
//! the admin API and signal handlers.

use crate::compile::{Platform, compile};
use crate::listener_set::ListenerSet;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use gatehouse_config::ConfigErrors;
use gatehouse_config::validate::Issue;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Binds the admin API's socket (non-blocking, for tokio).
pub fn bind_admin(address: &str) -> Result<std::net::TcpListener, String> {
    let l = std::net::TcpListener::bind(address).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            format!("cannot bind {address}: address in use (another process is listening on it)")
        }
        _ => format!("cannot bind {address}: {e}"),
    })?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(l)
}

/// Where reloads read the config: a file, or text handed over by an embedder.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file, read again on every reload.
    File(String),
    /// Text (the in-process facade); `name` labels its errors.
    Text {
        /// Shown as the file in error messages.
        name: String,
        /// The config.
        text: String,
    },
}

impl ConfigSource {
    /// Loads (reads, interpolates, parses, validates) the config; the settings of its
    /// policies are checked by `kinds` at the same time.
    pub fn load(
        &self,
        kinds: &gatehouse_policies::Kinds,
    ) -> Result<gatehouse_config::load::Loaded, ConfigErrors> {
        let check = |c: &gatehouse_config::Config, dir: &std::path::Path| kinds.check(c, dir);
        match self {
            Self::File(path) => gatehouse_config::load::load_file_with(path, &check),
            Self::Text { name, text } => gatehouse_config::load::load_str_with(text, name, &check),
        }
    }
}

/// Shared handle on a running gateway.
#[derive(Debug)]
pub struct Gateway {
    /// Where reloads read the config.
    source: std::sync::Mutex<ConfigSource>,
    /// Policy kinds and the state registry, shared by every config this gateway runs.
    pub platform: Arc<Platform>,
    /// The live snapshot; requests load it once at their start.
    pub live: Arc<ArcSwap<Snapshot>>,
    /// Open downstream connections, all listeners and workers.
    pub connections: Arc<AtomicUsize>,
    shutdown: watch::Sender<bool>,
    reload_lock: std::sync::Mutex<()>,
    listeners: std::sync::Mutex<Option<ListenerSet>>,
    /// The errors of the last reload when it was rejected; cleared by a good one.
    last_rejected: std::sync::Mutex<Option<Vec<String>>>,
    admin: std::sync::Mutex<Option<mpsc::UnboundedSender<Option<std::net::TcpListener>>>>,
    /// Reloads that went live, and that were rejected (metrics).
    pub reloads: [AtomicU64; 2],
    /// When the running config went live (start or reload), Unix seconds.
    pub last_reload: AtomicU64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Gateway {
    /// A gateway serving `snapshot` (compiled on `platform`), reloading from `source`.
    pub fn new(
        source: ConfigSource,
        snapshot: Arc<Snapshot>,
        platform: Arc<Platform>,
    ) -> Arc<Self> {
        gatehouse_observe::metrics::set_enabled(snapshot.config.metrics.enabled);
        gatehouse_observe::stats::set_enabled(snapshot.config.analytics.enabled);
        Arc::new(Self {
            reloads: [AtomicU64::new(0), AtomicU64::new(0)],
            last_reload: AtomicU64::new(unix_now()),
            source: std::sync::Mutex::new(source),
            platform,
            live: Arc::new(ArcSwap::new(snapshot)),
            connections: Arc::new(AtomicUsize::new(0)),
            shutdown: watch::channel(false).0,
            reload_lock: std::sync::Mutex::new(()),
            listeners: std::sync::Mutex::new(None),
            last_rejected: std::sync::Mutex::new(None),
            admin: std::sync::Mutex::new(None),
        })
    }

    /// Where reloads send a new admin socket (or `None` when the admin API was removed).
    pub fn install_admin(&self, to: mpsc::UnboundedSender<Option<std::net::TcpListener>>) {
        *self.admin.lock().unwrap_or_else(|p| p.into_inner()) = Some(to);
    }

    /// Hands the gateway the running listeners, so reloads can change them.
    pub fn install_listeners(&self, set: ListenerSet) {
        *self.listeners.lock().unwrap_or_else(|p| p.into_inner()) = Some(set);
    }

    /// The running listeners with their bound addresses and open connections.
    pub fn listeners(&self) -> Vec<crate::listener_set::ListenerView> {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|s| s.views())
            .unwrap_or_default()
    }

    /// Where reloads read the config.
    pub fn source(&self) -> ConfigSource {
        self.source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the config text reloads read (the in-process facade).
    pub fn set_source(&self, source: ConfigSource) {
        *self.source.lock().unwrap_or_else(|p| p.into_inner()) = source;
    }

    /// The errors of the last reload, when it was rejected and no good one followed.
    pub fn last_rejected(&self) -> Option<Vec<String>> {
        self.last_rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Loads and compiles the config file again and swaps it in; on error the old
    /// snapshot keeps serving (and health reports degraded until a reload succeeds).
    /// Returns the new generation.
    pub fn reload(&self) -> Result<u64, ConfigErrors> {
        // One reload at a time, so state carry-over always starts from the latest snapshot.
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.reload_locked();
        self.reloads[usize::from(result.is_err())].fetch_add(1, Ordering::Relaxed);
        if result.is_ok() {
            self.last_reload.store(unix_now(), Ordering::Relaxed);
        }
        *self.last_rejected.lock().unwrap_or_else(|p| p.into_inner()) = result
            .as_ref()
            .err()
            .map(|e| e.0.iter().map(ToString::to_string).collect());
        result
    }

    fn reload_locked(&self) -> Result<u64, ConfigErrors> {
        let prev = self.live.load_full();
        let loaded = self.source().load(&self.platform.kinds)?;
        // State the new config names is staged; it is committed only once it serves.
        let stage = self.platform.state.stage();
        let kinds = &self.platform.kinds;
        let next = Arc::new(compile(&loaded, Some(&prev), kinds, &stage)?);
        // New hostname targets get addresses before they can be picked.
        next.upstreams.resolve_new();
        // Everything that binds happens before anything changes, so a busy address
        // rejects the whole reload and leaves the running one as it was.
        // Only a new address moves the socket; access settings and TLS are read from the
        // live snapshot by the admin task.
        let address = |s: &Snapshot| s.config.admin.as_ref().map(|a| a.address.clone());
        let admin_move = if address(&next) == address(&prev) {
            None
        } else {
            match &next.config.admin {
                Some(a) => Some(Some(bind_admin(&a.address).map_err(|message| {
                    loaded.errors(vec![Issue {
                        path: "admin.address".into(),
                        message,
                    }])
                })?)),
                None => Some(None),
            }
        };
        if next.config.listeners != prev.config.listeners {
            let mut set = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(set) = set.as_mut() {
                set.apply(&next.config.listeners).map_err(|e| {
                    loaded.errors(vec![Issue {
                        path: format!("listeners[{}].address", e.index),
                        message: e.message,
                    }])
                })?;
            }
        }
        if let Some(socket) = admin_move
            && let Some(to) = self
                .admin
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
        {
            let _ = to.send(socket);
        }
        let generation = next.generation;
        gatehouse_observe::metrics::set_enabled(next.config.metrics.enabled);
        gatehouse_observe::stats::set_enabled(next.config.analytics.enabled);
        self.live.store(next);
        self.platform.state.commit(stage);
        crate::compile::on_serving(&self.platform.state, &self.live.load().config);
        tracing::info!(generation, "config reloaded");
        Ok(generation)
    }

    /// Reloads and logs the outcome (signal and file-watch triggers).
    pub fn reload_logged(&self, trigger: &str) {
        if let Err(errors) = self.reload() {
            for e in &errors.0 {
                tracing::error!(trigger, "{e}");
            }
            tracing::error!(
                trigger,
                count = errors.0.len(),
                "config rejected; the previous config keeps serving"
            );
        }
    }

    /// A receiver that turns true when shutdown begins.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Starts a graceful shutdown: listeners stop accepting, connections finish what they carry.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Waits until every connection closed or `deadline` passed; true when drained.
    pub async fn drained(&self, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        while self.connections.load(Ordering::Relaxed) > 0 {
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}
