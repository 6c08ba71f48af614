//! `cluster.redis`: the Redis server several gateway processes share state through
//! (docs/traffic.md: cluster scope). One driver thread per configured server owns the
//! connection (the `redis` crate's connection manager, which reconnects by itself); the
//! request path hands it commands through a queue and never waits: the driver sends what
//! has queued up as one pipeline and calls each command's continuation with its answer.
//!
//! Health is one flag the request path reads: a failed pipeline or connection marks the
//! server down (logged once), jobs queued meanwhile fail at once, and the driver tries
//! again every `sync_interval` until a `PING` answers (logged once again).

use gatehouse_config::schema::{OnFailure, RedisConfig};
use gatehouse_core::{Fingerprint, Stage};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Where a config's link to Redis is kept in the state registry (kind, name), so the
/// policies and the admin API of one config share one connection.
pub const STATE: (&str, &str) = ("cluster", "redis");

/// The link a config opened, or why its settings are wrong (the field and the message).
#[derive(Debug)]
pub struct Opened(pub Result<Arc<Cluster>, (&'static str, String)>);

/// Redis did not answer (down, unreachable, too slow) or refused the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// What is called with a command's answer, on the driver's thread.
pub type Done = Box<dyn FnOnce(Result<redis::Value, Unavailable>) + Send>;

/// Commands sent in one pipeline at most.
const MAX_BATCH: usize = 512;
/// Longest wait for a pipeline's answers or a connection before Redis counts as down.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

struct Job {
    cmd: redis::Cmd,
    done: Done,
}

/// The link to one Redis server.
pub struct Cluster {
    /// The URL as configured (a password in it seeds shared key hashes).
    url: String,
    on_failure: OnFailure,
    sync_interval: Duration,
    jobs: mpsc::UnboundedSender<Job>,
    up: Arc<AtomicBool>,
    /// Whether a connection was ever made (until then, a request that would wait for
    /// Redis is decided by `on_failure`).
    connected: Arc<AtomicBool>,
    /// The driver until its thread starts (at the first command or [`Cluster::start`]):
    /// a config that is only checked never connects.
    idle: Mutex<Option<(Driver, mpsc::UnboundedReceiver<Job>)>>,
    started: AtomicBool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("up", &self.is_up())
            .field("on_failure", &self.on_failure)
            .finish()
    }
}

/// The URL without its password, for logs.
fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

impl Cluster {
    /// The link of `cfg` in `stage` (files relative to `dir`): the committed one when the
    /// settings did not change, else a new one (opened, not started). The config's
    /// compile and the policies that use it (in the check pass too) get the same one.
    pub fn staged(stage: &Stage<'_>, cfg: &RedisConfig, dir: &Path) -> Arc<Opened> {
        let (kind, name) = STATE;
        stage.get_or_build(kind, name, Fingerprint::of(&(cfg, dir)), |_| {
            Opened(Self::open(cfg, dir))
        })
    }

    /// Checks the settings; the driver thread starts later (see `idle`), and makes the
    /// first connection (a server that is down is tried again every `sync_interval`).
    pub fn open(cfg: &RedisConfig, dir: &Path) -> Result<Arc<Self>, (&'static str, String)> {
        let url = |m: String| ("url", m);
        let scheme = cfg.url.split("://").next().unwrap_or_default();
        let tls = scheme.starts_with("rediss");
        let certs = certificates(cfg, dir)?;
        if certs.is_some() && !tls {
            return Err(("ca", "TLS files need a rediss:// URL".into()));
        }
        let target = match scheme {
            "redis" | "rediss" => Target::Direct(Box::new(
                match certs {
                    Some(c) => redis::Client::build_with_tls(cfg.url.as_str(), c),
                    None => redis::Client::open(cfg.url.as_str()),
                }
                .map_err(|e| url(format!("not a Redis URL: {e}")))?,
            )),
            "redis+sentinel" | "rediss+sentinel" => {
                Target::Sentinel(Box::new(sentinel(&cfg.url, tls, certs).map_err(url)?))
            }
            "redis+cluster" | "rediss+cluster" => {
                Target::Cluster(Box::new(cluster(&cfg.url, tls, certs).map_err(url)?))
            }
            _ => {
                return Err(url(format!(
                    "{scheme:?} is not a Redis URL; expected redis://, rediss://, redis+sentinel://, redis+cluster:// (or rediss+ with TLS)"
                )));
            }
        };
        let interval = cfg.sync_interval.get();
        if interval.is_zero() {
            return Err(("sync_interval", "must be longer than 0s".into()));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let up = Arc::new(AtomicBool::new(true));
        let connected = Arc::new(AtomicBool::new(false));
        let driver = Driver {
            target,
            connected: connected.clone(),
            shown: shown(&cfg.url),
            on_failure: cfg.on_failure,
            interval,
            up: up.clone(),
            failing: false,
            refusing: false,
        };
        Ok(Arc::new(Self {
            url: cfg.url.clone(),
            on_failure: cfg.on_failure,
            sync_interval: interval,
            jobs: tx,
            up,
            connected,
            idle: Mutex::new(Some((driver, rx))),
            started: AtomicBool::new(false),
        }))
    }

    /// Starts the driver thread (once): it connects and serves commands from then on.
    pub fn start(&self) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.started.store(true, Ordering::Release);
        if let Some((driver, rx)) = idle {
            let spawned = std::thread::Builder::new()
                .name("gatehouse-cluster".into())
                .spawn(move || driver.run(rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the Redis driver thread");
                self.up.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Whether Redis answered the last pipeline (or nothing has failed yet).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Whether the link has connected to Redis at least once.
    pub fn has_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// What limits decide while Redis is down.
    pub fn on_failure(&self) -> OnFailure {
        self.on_failure
    }

    /// `cluster.redis.sync_interval`.
    pub fn sync_interval(&self) -> Duration {
        self.sync_interval
    }

    /// The configured URL, which every gateway of the cluster shares (a seed for key
    /// hashes that must agree across processes).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Queues `cmd`; `done` gets its answer on the driver's thread. Never waits.
    pub fn submit(&self, cmd: redis::Cmd, done: Done) {
        self.start();
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(Job { cmd, done }) {
            (job.done)(Err(Unavailable));
        }
    }

    /// Runs `cmd` and waits for its answer (for the admin API, not the request path).
    pub async fn call(&self, cmd: redis::Cmd) -> Result<redis::Value, Unavailable> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            cmd,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.await.unwrap_or(Err(Unavailable))
    }
}

/// Where the driver connects.
enum Target {
    /// One server.
    Direct(Box<redis::Client>),
    /// The primary the sentinels name, asked again after every failure (a failover
    /// moves it).
    Sentinel(Box<redis::sentinel::SentinelClient>),
    /// A Redis Cluster, its nodes found from the seed addresses (the client follows
    /// MOVED answers and reconnects by itself).
    Cluster(Box<redis::cluster::ClusterClient>),
}

/// A live connection.
enum Conn {
    /// To one server (direct or the Sentinel's primary): commands go as one pipeline.
    Single(ConnectionManager),
    /// To a Redis Cluster: each command goes to its key's node, all at once (a pipeline
    /// would go to one node).
    Cluster(ClusterConnection),
}

impl Conn {
    /// Sends `cmds`; each answer, or the connection's failure.
    async fn run(
        &mut self,
        cmds: Vec<redis::Cmd>,
    ) -> redis::RedisResult<Vec<redis::RedisResult<redis::Value>>> {
        match self {
            Conn::Single(c) => {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                pipe.query_async(c).await
            }
            Conn::Cluster(c) => {
                let sends = cmds.into_iter().map(|cmd| {
                    let mut c = c.clone();
                    async move { cmd.query_async::<redis::Value>(&mut c).await }
                });
                let answers = futures_util::future::join_all(sends).await;
                // A node that cannot be reached fails the batch (Redis counts as down);
                // a command the server refused fails alone.
                if let Some(e) = answers.iter().find_map(|r| {
                    r.as_ref()
                        .err()
                        .filter(|e| e.is_io_error() || e.is_connection_dropped() || e.is_timeout())
                }) {
                    return Err(e.clone());
                }
                Ok(answers)
            }
        }
    }
}

/// The TLS files of `cfg`, read (relative to `dir`); `None` when it names none.
fn certificates(
    cfg: &RedisConfig,
    dir: &Path,
) -> Result<Option<redis::TlsCertificates>, (&'static str, String)> {
    let read = |field: &'static str,
                p: &Option<String>|
     -> Result<Option<Vec<u8>>, (&'static str, String)> {
        p.as_ref()
            .map(|p| {
                std::fs::read(dir.join(p)).map_err(|e| (field, format!("cannot read {p}: {e}")))
            })
            .transpose()
    };
    let (ca, cert, key) = (
        read("ca", &cfg.ca)?,
        read("cert", &cfg.cert)?,
        read("key", &cfg.key)?,
    );
    let client_tls = match (cert, key) {
        (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
            client_cert,
            client_key,
        }),
        (None, None) => None,
        _ => return Err(("cert", "cert and key go together".into())),
    };
    Ok(
        (ca.is_some() || client_tls.is_some()).then_some(redis::TlsCertificates {
            client_tls,
            root_cert: ca,
        }),
    )
}

/// The parts of `SCHEME://[user:password@]h:p[,h:p...][/path]`: credentials
/// (percent-decoded), addresses, path segments.
#[allow(clippy::type_complexity)]
fn split_url(
    url: &str,
) -> Result<(Option<(String, String)>, Vec<(String, u16)>, Vec<&str>), String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let auth = auth.map(|a| {
        let (user, password) = a.split_once(':').unwrap_or(("", a));
        (decode(user), decode(password))
    });
    let mut addrs = Vec::new();
    for h in hosts.split(',') {
        let (host, port) = h
            .rsplit_once(':')
            .and_then(|(host, p)| Some((host, p.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("{h:?} is not host:port"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        addrs.push((host, port));
    }
    Ok((
        auth,
        addrs,
        path.split('/').filter(|s| !s.is_empty()).collect(),
    ))
}

/// A Cluster client from `redis+cluster://[user:password@]h:p[,h:p...]` (seed nodes).
fn cluster(
    url: &str,
    tls: bool,
    certs: Option<redis::TlsCertificates>,
) -> Result<redis::cluster::ClusterClient, String> {
    let (auth, addrs, path) = split_url(url)?;
    if !path.is_empty() {
        return Err("a Redis Cluster has only db 0: no path after the addresses".into());
    }
    let scheme = if tls { "rediss" } else { "redis" };
    let seeds: Vec<String> = addrs
        .iter()
        .map(|(h, p)| format!("{scheme}://{h}:{p}"))
        .collect();
    let mut b = redis::cluster::ClusterClientBuilder::new(seeds)
        .connection_timeout(RESPONSE_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(1);
    if let Some((user, password)) = auth {
        if !user.is_empty() {
            b = b.username(user);
        }
        if !password.is_empty() {
            b = b.password(password);
        }
    }
    if tls {
        b = b.tls(redis::TlsMode::Secure);
        if let Some(c) = certs {
            b = b.certs(c);
        }
    }
    b.build().map_err(|e| e.to_string())
}

/// A Sentinel client from `redis+sentinel://[user:password@]h:p[,h:p...]/PRIMARY[/db]`;
/// the credentials and db are the primary's.
fn sentinel(
    url: &str,
    tls: bool,
    certs: Option<redis::TlsCertificates>,
) -> Result<redis::sentinel::SentinelClient, String> {
    use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
    let (auth, hosts, path) = split_url(url)?;
    let mut segments = path.into_iter();
    let primary = segments
        .next()
        .ok_or("name the primary: redis+sentinel://host:port/PRIMARY_NAME")?;
    let db = match segments.next() {
        Some(d) => d
            .parse::<i64>()
            .map_err(|_| format!("{d:?} is not a db number"))?,
        None => 0,
    };
    let addrs = hosts.into_iter().map(|(host, port)| {
        if tls {
            redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host, port)
        }
    });
    let mut b = SentinelClientBuilder::new(addrs, primary, SentinelServerType::Master)
        .map_err(|e| e.to_string())?
        .set_client_to_redis_db(db);
    if let Some((user, password)) = auth {
        if !user.is_empty() {
            b = b.set_client_to_redis_username(user);
        }
        if !password.is_empty() {
            b = b.set_client_to_redis_password(password);
        }
    }
    if tls {
        b = b
            .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
        if let Some(c) = certs {
            b = b
                .set_client_to_redis_certificates(c.clone())
                .set_client_to_sentinel_certificates(c);
        }
    }
    b.build().map_err(|e| e.to_string())
}

/// The driver thread's state.
struct Driver {
    target: Target,
    connected: Arc<AtomicBool>,
    shown: String,
    on_failure: OnFailure,
    interval: Duration,
    up: Arc<AtomicBool>,
    /// Whether the current failure was logged.
    failing: bool,
    /// Whether Redis refused a command of the last batch (logged once per streak).
    refusing: bool,
}

impl Driver {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the Redis driver's runtime");
                self.up.store(false, Ordering::Relaxed);
                return;
            }
        };
        rt.block_on(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            let mut conn: Option<Conn> = None;
            loop {
                if conn.is_none() {
                    match tokio::time::timeout(RESPONSE_TIMEOUT, self.connect()).await {
                        Ok(Ok(c)) => {
                            conn = Some(c);
                            self.connected.store(true, Ordering::Relaxed);
                            self.mark_up();
                        }
                        Ok(Err(e)) => self.mark_down(&e),
                        Err(_) => self.mark_down("no answer within 1s"),
                    }
                }
                let Some(c) = conn.as_mut() else {
                    if !self.wait_failing(&mut rx, &mut batch).await {
                        return;
                    }
                    continue;
                };
                if !self.up.load(Ordering::Relaxed) {
                    let probe = tokio::time::timeout(RESPONSE_TIMEOUT, c.run(vec![redis::cmd("PING")]));
                    if matches!(probe.await, Ok(Ok(_))) {
                        self.mark_up();
                    } else {
                        self.forget(&mut conn);
                        if !self.wait_failing(&mut rx, &mut batch).await {
                            return;
                        }
                    }
                    continue;
                }
                if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                    return; // the config that opened this link is gone
                }
                let mut cmds = Vec::with_capacity(batch.len());
                let mut dones = Vec::with_capacity(batch.len());
                for job in batch.drain(..) {
                    cmds.push(job.cmd);
                    dones.push(job.done);
                }
                let answer = tokio::time::timeout(RESPONSE_TIMEOUT, c.run(cmds)).await;
                match answer {
                    Ok(Ok(results)) if results.len() == dones.len() => {
                        let mut refused = false;
                        for (done, r) in dones.into_iter().zip(results) {
                            done(r.map_err(|e| {
                                // Once per streak: a key Redis keeps refusing (another
                                // program's value under it) must not flood the log.
                                if !self.refusing {
                                    tracing::warn!(redis = %self.shown, error = %e, "redis refused a command");
                                }
                                refused = true;
                                Unavailable
                            }));
                        }
                        self.refusing = refused;
                    }
                    other => {
                        let why = match other {
                            Ok(Err(e)) => e.to_string(),
                            Err(_) => "no answer within 1s".into(),
                            Ok(Ok(_)) => "answers did not match the commands".into(),
                        };
                        self.mark_down(&why);
                        self.forget(&mut conn);
                        for done in dones {
                            done(Err(Unavailable));
                        }
                    }
                }
            }
        });
    }

    /// A connection to the target: for Sentinel, to the primary the sentinels name now.
    async fn connect(&mut self) -> Result<Conn, String> {
        let client = match &mut self.target {
            Target::Direct(c) => (**c).clone(),
            Target::Sentinel(s) => s.async_get_client().await.map_err(|e| e.to_string())?,
            Target::Cluster(c) => {
                return c
                    .get_async_connection()
                    .await
                    .map(Conn::Cluster)
                    .map_err(|e| e.to_string());
            }
        };
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(self.interval)
            .set_max_delay(self.interval);
        client
            .get_connection_manager_with_config(cfg)
            .await
            .map(Conn::Single)
            .map_err(|e| e.to_string())
    }

    /// After a failure: a Sentinel target asks the sentinels again (the primary may have
    /// moved); a direct one keeps its connection manager, which reconnects by itself.
    fn forget(&self, conn: &mut Option<Conn>) {
        if matches!(self.target, Target::Sentinel(_)) {
            *conn = None;
        }
    }

    /// While Redis is down: fails the jobs that arrive for `sync_interval`. False when
    /// every sender is gone (the driver ends).
    async fn wait_failing(
        &self,
        rx: &mut mpsc::UnboundedReceiver<Job>,
        batch: &mut Vec<Job>,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + self.interval;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return true,
                n = rx.recv_many(batch, MAX_BATCH) => {
                    if n == 0 {
                        return false;
                    }
                    for job in batch.drain(..) {
                        (job.done)(Err(Unavailable));
                    }
                }
            }
        }
    }

    fn mark_down(&mut self, why: &str) {
        self.up.store(false, Ordering::Relaxed);
        if !self.failing {
            self.failing = true;
            let mode = match self.on_failure {
                OnFailure::Allow => "pass unlimited",
                OnFailure::Deny => "are refused (503)",
            };
            tracing::warn!(
                redis = %self.shown,
                error = %why,
                "redis unreachable: requests under cluster-scope limits {mode} until it answers"
            );
        }
    }

    fn mark_up(&mut self) {
        self.up.store(true, Ordering::Relaxed);
        if self.failing {
            self.failing = false;
            tracing::info!(redis = %self.shown, "redis reachable again: cluster-scope limits apply");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            shown("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://***@127.0.0.1:6379/0"
        );
        assert_eq!(shown("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn urls_are_checked_when_the_config_loads() {
        let cfg = |url: &str| RedisConfig {
            url: url.into(),
            on_failure: OnFailure::Allow,
            sync_interval: gatehouse_config::Duration::from_millis(50),
            ca: None,
            cert: None,
            key: None,
        };
        let dir = Path::new(".");
        assert!(Cluster::open(&cfg("http://127.0.0.1:6379"), dir).is_err());
        assert!(Cluster::open(&cfg("redis+sentinel://127.0.0.1:26379/mymaster/0"), dir).is_ok());
        assert!(
            Cluster::open(&cfg("redis+sentinel://127.0.0.1:26379"), dir)
                .unwrap_err()
                .1
                .contains("primary")
        );
        assert!(Cluster::open(&cfg("redis+sentinel://127.0.0.1/m"), dir).is_err());
        let mut tls = cfg("redis://127.0.0.1:6379");
        tls.ca = Some("ca.pem".into());
        assert_eq!(Cluster::open(&tls, dir).unwrap_err().0, "ca");
        let c = Cluster::open(&cfg("redis://127.0.0.1:1/0"), dir).unwrap();
        assert!(c.is_up(), "nothing failed yet: not even started");
    }
}
