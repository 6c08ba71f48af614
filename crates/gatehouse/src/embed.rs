//! The in-process facade: a whole gateway (workers, listeners, admin API, health checks)
//! started from config text inside the calling process, for tests, fuzzing and
//! embedders. Listeners may ask for port 0; [`Embedded::listener`] says what they bound.
//!
//! ```no_run
//! let gw = gatehouse::embed::Embedded::start(r#"
//! listeners:
//!   - { name: public, address: "127.0.0.1:0" }
//! routes:
//!   - name: hello
//!     respond: { status: 200, body: "hi" }
//! "#).expect("starts");
//! let addr = gw.listener("public").expect("bound");
//! # let _ = addr;
//! ```

use crate::server::{self, Failure};
use gatehouse_config::ConfigErrors;
use gatehouse_policies::{Kind, Kinds};
use gatehouse_proxy::Gateway;
use gatehouse_proxy::compile::Platform;
use gatehouse_proxy::gateway::ConfigSource;
use std::net::SocketAddr;
use std::sync::Arc;

/// The name config errors of embedded text are reported against.
const SOURCE_NAME: &str = "inline.yaml";

/// How to start an embedded gateway.
#[derive(Debug, Clone)]
pub struct Builder {
    threads: usize,
    kinds: Kinds,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            threads: 1,
            kinds: Kinds::builtin(),
        }
    }
}

impl Builder {
    /// Worker threads (default 1).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Adds a policy kind (an embedder's own, or a test's) to the built-in ones.
    pub fn policy_kind(mut self, kind: Kind) -> Self {
        self.kinds = self.kinds.with(kind);
        self
    }

    /// Compiles `yaml`, binds its listeners and starts serving.
    pub fn start(self, yaml: &str) -> Result<Embedded, Failure> {
        let platform = Arc::new(Platform {
            kinds: self.kinds,
            state: Default::default(),
        });
        let source = ConfigSource::Text {
            name: SOURCE_NAME.into(),
            text: yaml.to_string(),
        };
        let (loaded, gw) = server::prepare(source, platform).map_err(Failure::Config)?;
        let mut bound = server::bind(gw.clone(), &loaded, Some(self.threads))?;
        let admin_addr = bound.admin_addr;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let control = std::thread::Builder::new()
            .name("gatehouse-control".into())
            .spawn(move || {
                runtime.block_on(async move {
                    bound.spawn_control();
                    let _ = stopped.await;
                    bound.shutdown().await;
                });
            })?;
        Ok(Embedded {
            gw,
            admin_addr,
            stop: Some(stop),
            control: Some(control),
        })
    }
}

/// A gateway running inside this process; dropping it shuts it down, blocking until
/// open connections finish or `shutdown.drain_timeout` passes (so drop it from a
/// multi-threaded runtime, or after closing its clients).
#[derive(Debug)]
pub struct Embedded {
    gw: Arc<Gateway>,
    admin_addr: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    control: Option<std::thread::JoinHandle<()>>,
}

impl Embedded {
    /// Starts a gateway from `yaml` with one worker and the built-in policy kinds.
    pub fn start(yaml: &str) -> Result<Self, Failure> {
        Builder::default().start(yaml)
    }

    /// Options for [`Builder::start`].
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The address listener `name` is bound to.
    pub fn listener(&self, name: &str) -> Option<SocketAddr> {
        self.gw
            .listeners()
            .into_iter()
            .find(|l| l.name == name)
            .and_then(|l| l.bound)
    }

    /// Where the admin API listens, when the config has one.
    pub fn admin(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The running gateway (live snapshot, state registry, reload).
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gw
    }

    /// Replaces the config with `yaml`, as a reload of an edited file would; on error the
    /// running config keeps serving. Returns the new generation.
    pub fn reload(&self, yaml: &str) -> Result<u64, ConfigErrors> {
        self.gw.set_source(ConfigSource::Text {
            name: SOURCE_NAME.into(),
            text: yaml.to_string(),
        });
        self.gw.reload()
    }

    /// Stops accepting, drains and waits for every thread to end.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(h) = self.control.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
