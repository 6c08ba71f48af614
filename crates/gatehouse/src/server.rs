//! Starting and stopping a gateway, shared by the binary (`run`, `demo`) and the
//! in-process facade ([`crate::embed`]): compile on a platform, bind, start workers and
//! the control tasks, drain on shutdown.

use gatehouse_config::ConfigErrors;
use gatehouse_config::load::Loaded;
use gatehouse_proxy::compile::{Platform, compile, warnings};
use gatehouse_proxy::gateway::{ConfigSource, bind_admin};
use gatehouse_proxy::listener_set::ListenerSet;
use gatehouse_proxy::{Gateway, listener};
use std::net::SocketAddr;
use std::sync::Arc;

/// Why a start failed: something in the config (reported with its location), or the
/// process itself.
#[derive(Debug)]
pub enum Failure {
    /// A config field could not be put into effect.
    Config(ConfigErrors),
    /// Anything else.
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::Other(e.into())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(errors) => {
                for e in &errors.0 {
                    writeln!(f, "{e}")?;
                }
                Ok(())
            }
            Self::Other(e) => write!(f, "{e:#}"),
        }
    }
}

/// Loads and compiles the config of `source` on `platform`, commits the state it names,
/// resolves its hostname targets and logs its warnings: a gateway ready to bind.
pub fn prepare(
    source: ConfigSource,
    platform: Arc<Platform>,
) -> Result<(Loaded, Arc<Gateway>), ConfigErrors> {
    let loaded = source.load(&platform.kinds)?;
    let stage = platform.state.stage();
    let snapshot = Arc::new(compile(&loaded, None, &platform.kinds, &stage)?);
    platform.state.commit(stage);
    gatehouse_proxy::compile::on_serving(&platform.state, &snapshot.config);
    // Names are resolved when a config is about to serve, never by validate.
    snapshot.upstreams.resolve_new();
    for w in warnings(&loaded) {
        tracing::warn!(
            "{}:{}:{}: warning: {}: {}",
            w.file,
            w.line,
            w.column,
            w.path,
            w.message
        );
    }
    let gw = Gateway::new(source, snapshot, platform);
    Ok((loaded, gw))
}

/// A bound gateway: workers accept on its listeners; the admin socket waits for
/// [`Bound::spawn_control`].
pub struct Bound {
    /// The gateway.
    pub gw: Arc<Gateway>,
    workers: Vec<std::thread::JoinHandle<()>>,
    admin: Option<std::net::TcpListener>,
    /// Where the admin API listens (its port when the config asked for port 0).
    pub admin_addr: Option<SocketAddr>,
}

/// Binds the admin socket then the listeners (so a busy admin address stops the start
/// before any client port is taken) and starts `threads` workers (default: one per core).
pub fn bind(gw: Arc<Gateway>, loaded: &Loaded, threads: Option<usize>) -> Result<Bound, Failure> {
    let workers = threads.filter(|n| *n > 0).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let snapshot = gw.live.load_full();
    if snapshot.config.listeners.is_empty() {
        tracing::warn!("no listeners configured: only the admin API (if any) will answer");
    }
    let located = |field: String, message: String| {
        Failure::Config(loaded.errors(vec![gatehouse_config::validate::Issue {
            path: field,
            message,
        }]))
    };
    let admin = match &snapshot.config.admin {
        Some(a) => Some(bind_admin(&a.address).map_err(|m| located("admin.address".into(), m))?),
        None => None,
    };
    let admin_addr = admin.as_ref().and_then(|a| a.local_addr().ok());
    let (listeners, receivers) = ListenerSet::bind(&snapshot.config.listeners, workers)
        .map_err(|e| located(format!("listeners[{}].address", e.index), e.message))?;
    gw.install_listeners(listeners);
    let workers = listener::spawn_workers(&gw, receivers)?;
    Ok(Bound {
        gw,
        workers,
        admin,
        admin_addr,
    })
}

impl Bound {
    /// Spawns the control tasks on the current tokio runtime: the admin API, name
    /// re-resolution, active health checks and the watch of TLS files.
    pub fn spawn_control(&mut self) {
        let gw = &self.gw;
        // The admin task runs even without an admin listener, so a reload can add one.
        let (admin_moves, moves) = tokio::sync::mpsc::unbounded_channel();
        gw.install_admin(admin_moves);
        tokio::spawn(gatehouse_admin::run(gw.clone(), self.admin.take(), moves));
        let live = gw.live.clone();
        tokio::spawn(gatehouse_upstream::resolve::refresh_loop(move || {
            live.load().upstreams.clone()
        }));
        tokio::spawn(gatehouse_proxy::health_check::supervise(gw.clone()));
        tokio::spawn(gatehouse_proxy::reload::watch_tls_files(
            gw.clone(),
            gatehouse_proxy::reload::TLS_FILE_CHECK,
        ));
    }

    /// Stops accepting, waits for open connections up to the config's drain timeout, and
    /// joins the workers.
    pub async fn shutdown(self) {
        let deadline = self.gw.live.load().config.shutdown.drain_timeout.get();
        tracing::info!(?deadline, "shutting down: draining connections");
        self.gw.begin_shutdown();
        if !self.gw.drained(deadline).await {
            tracing::warn!("drain deadline passed with connections still open");
        }
        let workers = self.workers;
        // Joining blocks: off the async thread. Then the spans of the last requests go.
        let _ = tokio::task::spawn_blocking(move || {
            for h in workers {
                let _ = h.join();
            }
            gatehouse_observe::spans::flush_all(std::time::Duration::from_secs(5));
        })
        .await;
        tracing::info!("stopped");
    }
}
