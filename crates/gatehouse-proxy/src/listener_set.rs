//! The listeners a gateway runs, and how a reload changes them without dropping a
//! connection: a listener whose settings changed keeps its sockets and picks up the new
//! settings for its next connections; a new listener (or a new address) is bound on every
//! worker before anything stops, so a bind failure rejects the reload and changes nothing;
//! a removed listener stops accepting while its open connections finish.

use arc_swap::ArcSwap;
use gatehouse_config::Listener;
use socket2::{Domain, Socket, Type};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use tokio::sync::{mpsc, watch};

/// A listener socket handed to one worker, with what its accept loop needs.
#[derive(Debug)]
pub struct Started {
    /// The worker's own SO_REUSEPORT socket.
    pub socket: std::net::TcpListener,
    /// The listener's settings; replaced in place when a reload changes them.
    pub spec: Arc<ArcSwap<Listener>>,
    /// Open connections on this listener (all workers).
    pub open: Arc<AtomicUsize>,
    /// Open connections per peer address on this listener (all workers).
    pub per_peer: Arc<crate::peer_connections::PeerConnections>,
    /// The listener's `request_rate_per_ip` counters (all workers).
    pub rates: Arc<crate::client_rate::ClientRates>,
    /// Turns true when the listener is removed (or moved to another address).
    pub stop: watch::Receiver<bool>,
}

#[derive(Debug)]
struct Running {
    address: String,
    /// What the sockets are bound to (the port the kernel chose for port 0).
    bound: Option<SocketAddr>,
    spec: Arc<ArcSwap<Listener>>,
    open: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
}

/// A running listener as the admin API and the in-process facade report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerView {
    /// Configured name.
    pub name: String,
    /// Configured address.
    pub address: String,
    /// Bound address (differs for port 0).
    pub bound: Option<SocketAddr>,
    /// Open connections, all workers.
    pub open_connections: usize,
}

/// The running listeners and the channels to hand new sockets to the workers.
#[derive(Debug)]
pub struct ListenerSet {
    workers: Vec<mpsc::UnboundedSender<Started>>,
    running: HashMap<String, Running>,
}

/// Why a listener could not be started: its index in the config and the cause.
#[derive(Debug)]
pub struct BindError {
    /// Index in `listeners`.
    pub index: usize,
    /// What failed.
    pub message: String,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "listeners[{}]: {}", self.index, self.message)
    }
}

impl std::error::Error for BindError {}

impl ListenerSet {
    /// Binds `listeners` on `workers` workers; each worker's receiver yields its sockets.
    pub fn bind(
        listeners: &[Listener],
        workers: usize,
    ) -> Result<(Self, Vec<mpsc::UnboundedReceiver<Started>>), BindError> {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..workers.max(1))
            .map(|_| mpsc::unbounded_channel())
            .unzip();
        let mut set = Self {
            workers: senders,
            running: HashMap::new(),
        };
        set.apply(listeners)?;
        Ok((set, receivers))
    }

    /// The running listeners, by name.
    pub fn views(&self) -> Vec<ListenerView> {
        let mut v: Vec<_> = self
            .running
            .iter()
            .map(|(name, r)| ListenerView {
                name: name.clone(),
                address: r.address.clone(),
                bound: r.bound,
                open_connections: r.open.load(std::sync::atomic::Ordering::Relaxed),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Brings the running listeners in line with `listeners`.
    pub fn apply(&mut self, listeners: &[Listener]) -> Result<(), BindError> {
        // Bind everything new first: an error here leaves the running set untouched.
        let mut fresh = Vec::new();
        for (index, l) in listeners.iter().enumerate() {
            match self.running.get(&l.name) {
                Some(r) if r.address == l.address => {}
                _ => {
                    // Our own sockets on this address (a renamed listener) may be joined;
                    // anyone else's may not.
                    let ours = self.running.values().any(|r| r.address == l.address);
                    let sockets = bind_per_worker(l, self.workers.len(), !ours)
                        .map_err(|message| BindError { index, message })?;
                    fresh.push((l.clone(), sockets));
                }
            }
        }
        // Settings changes on a kept address apply to the next connections.
        for l in listeners {
            if let Some(r) = self.running.get(&l.name)
                && r.address == l.address
                && **r.spec.load() != *l
            {
                r.spec.store(Arc::new(l.clone()));
                tracing::info!(listener = %l.name, "listener settings updated");
            }
        }
        // Stop what is gone or moved, then start what is new.
        let keep: HashMap<&str, &str> = listeners
            .iter()
            .map(|l| (l.name.as_str(), l.address.as_str()))
            .collect();
        self.running.retain(|name, r| {
            let stays = keep.get(name.as_str()) == Some(&r.address.as_str());
            if !stays {
                r.stop.send_replace(true);
                tracing::info!(listener = %name, address = %r.address, "listener stopped; open connections finish");
            }
            stays
        });
        for (l, sockets) in fresh {
            let bound = sockets.first().and_then(|s| s.local_addr().ok());
            let spec = Arc::new(ArcSwap::from_pointee(l.clone()));
            let (stop, stop_rx) = watch::channel(false);
            let open = Arc::new(AtomicUsize::new(0));
            let per_peer = Arc::new(crate::peer_connections::PeerConnections::default());
            let rates = Arc::new(crate::client_rate::ClientRates::default());
            for (worker, socket) in self.workers.iter().zip(sockets) {
                // A worker that already exited (shutdown) simply drops its socket.
                let _ = worker.send(Started {
                    socket,
                    spec: spec.clone(),
                    open: open.clone(),
                    per_peer: per_peer.clone(),
                    rates: rates.clone(),
                    stop: stop_rx.clone(),
                });
            }
            let shown = bound.map_or_else(|| l.address.clone(), |b| b.to_string());
            tracing::info!(listener = %l.name, address = %shown, workers = self.workers.len(), "listening");
            self.running.insert(
                l.name.clone(),
                Running {
                    address: l.address.clone(),
                    bound,
                    spec,
                    open,
                    stop,
                },
            );
        }
        Ok(())
    }
}

fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.set_tcp_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// Fails when another socket already holds `addr`. SO_REUSEPORT would otherwise let a
/// second process (of the same user) join the port silently and the kernel would split
/// traffic between two configs; a probe bound without it gets EADDRINUSE instead, as
/// nginx and HAProxy report.
fn ensure_free(addr: SocketAddr) -> Result<(), String> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .map_err(|e| format!("cannot bind {addr}: {e}"))?;
    // SO_REUSEADDR only so a port in TIME_WAIT after a restart does not count as taken.
    let _ = probe.set_reuse_address(true);
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "cannot bind {addr}: address in use (another process is listening on it)"
        )),
        Err(e) => Err(format!("cannot bind {addr}: {e}")),
    }
}

/// One SO_REUSEPORT socket per worker, after checking (when `exclusive`) that nobody
/// else holds the address; with port 0 every worker joins the port the first socket got.
fn bind_per_worker(
    l: &Listener,
    workers: usize,
    exclusive: bool,
) -> Result<Vec<std::net::TcpListener>, String> {
    let mut addr: SocketAddr = l
        .address
        .parse()
        .map_err(|_| format!("invalid address {}", l.address))?;
    if exclusive && addr.port() != 0 {
        ensure_free(addr)?;
    }
    let mut sockets = Vec::with_capacity(workers);
    for _ in 0..workers {
        let socket = reuseport_socket(addr).map_err(|e| format!("cannot bind {addr}: {e}"))?;
        addr = socket.local_addr().map_err(|e| e.to_string())?;
        sockets.push(socket);
    }
    Ok(sockets)
}
