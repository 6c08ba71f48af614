//! `run` and `validate`: load, compile, bind, start workers and the control thread.

use gatehouse_proxy::listener_set::ListenerSet;
use gatehouse_proxy::{Gateway, listener};
use std::process::ExitCode;
use std::sync::Arc;

/// `gatehouse validate`: prints `FILE:LINE:COL: path: message` per problem.
pub fn validate(path: &str) -> ExitCode {
    match gatehouse_config::load_file(path).and_then(|mut l| {
        // Compile too (templates, policies), but never open sinks or bind sockets.
        let access_log = std::mem::replace(&mut l.config.access_log, "off".into());
        gatehouse_proxy::compile::compile(&l, None)?;
        l.config.access_log = access_log;
        Ok(l)
    }) {
        Ok(loaded) => {
            for w in gatehouse_proxy::compile::warnings(&loaded) {
                eprintln!("{}", warning_line(&w));
            }
            let c = &loaded.config;
            println!(
                "{path}: ok ({} listeners, {} upstreams, {} policies, {} routes)",
                c.listeners.len(),
                c.upstreams.len(),
                c.policies.len(),
                c.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `FILE:LINE:COL: warning: path: message`.
fn warning_line(w: &gatehouse_config::ConfigError) -> String {
    format!(
        "{}:{}:{}: warning: {}: {}",
        w.file, w.line, w.column, w.path, w.message
    )
}

/// `gatehouse run`.
pub fn run(path: &str, threads: Option<usize>) -> ExitCode {
    let compiled = gatehouse_config::load_file(path).and_then(|loaded| {
        gatehouse_proxy::compile::compile(&loaded, None).map(|s| (loaded, Arc::new(s)))
    });
    let (loaded, snapshot) = match compiled {
        Ok(x) => x,
        Err(errors) => return report(&errors),
    };
    // Names are resolved when a config is about to serve, never by validate.
    snapshot.upstreams.resolve_new();
    for w in gatehouse_proxy::compile::warnings(&loaded) {
        tracing::warn!("{}", warning_line(&w));
    }
    match serve(path, &loaded, snapshot, threads) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(errors)) => report(&errors),
        Err(Failure::Other(e)) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints config errors, one `FILE:LINE:COL: path: message` line each.
fn report(errors: &gatehouse_config::ConfigErrors) -> ExitCode {
    for e in &errors.0 {
        eprintln!("{e}");
    }
    ExitCode::FAILURE
}

/// Why serving stopped with an error: something in the config (an address that cannot
/// be bound, reported with its location), or the process itself.
pub enum Failure {
    /// A config field could not be put into effect.
    Config(gatehouse_config::ConfigErrors),
    /// Anything else.
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::Other(e.into())
    }
}

/// Binds, starts workers and the control plane, and blocks until shutdown completes.
pub fn serve(
    path: &str,
    loaded: &gatehouse_config::load::Loaded,
    snapshot: Arc<gatehouse_proxy::Snapshot>,
    threads: Option<usize>,
) -> Result<(), Failure> {
    let workers = threads.filter(|n| *n > 0).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if snapshot.config.listeners.is_empty() {
        tracing::warn!("no listeners configured: only the admin API (if any) will answer");
    }
    let located = |field: String, message: String| {
        Failure::Config(loaded.errors(vec![gatehouse_config::validate::Issue {
            path: field,
            message,
        }]))
    };
    let reload_cfg = snapshot.config.reload.clone();
    let admin = snapshot.config.admin.clone();
    let listener_specs = snapshot.config.listeners.clone();
    let gw = Gateway::new(path.to_string(), snapshot);

    // Signal handlers and the file watcher come before any socket accepts: a SIGHUP (whose
    // default action ends the process) or a config edit that arrives as soon as a port
    // answers is never missed. Their tasks run once the control loop starts below.
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let entered = control.enter();
    use tokio::signal::unix::{SignalKind, signal};
    let hup = signal(SignalKind::hangup())?;
    let term = signal(SignalKind::terminate())?;
    let int = signal(SignalKind::interrupt())?;
    let _watcher = if reload_cfg.watch {
        match gatehouse_proxy::reload::watch_file(gw.clone(), reload_cfg.debounce.get()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or the admin API");
                None
            }
        }
    } else {
        None
    };
    drop(entered);

    // The admin socket is bound before the listeners, so a busy admin address stops the
    // start before any client port is taken.
    let first_admin = match &admin {
        Some(a) => Some(
            gatehouse_proxy::gateway::bind_admin(&a.address)
                .map_err(|m| located("admin.address".into(), m))?,
        ),
        None => None,
    };
    let (listeners, receivers) = ListenerSet::bind(&listener_specs, workers)
        .map_err(|e| located(format!("listeners[{}].address", e.index), e.message))?;
    gw.install_listeners(listeners);
    let handles = listener::spawn_workers(&gw, receivers)?;

    control.block_on(async {
        // The admin task runs even without an admin listener, so a reload can add one.
        let (admin_moves, moves) = tokio::sync::mpsc::unbounded_channel();
        gw.install_admin(admin_moves);
        tokio::spawn(gatehouse_admin::run(gw.clone(), first_admin, moves));
        tokio::spawn(gatehouse_proxy::reload::on_sighup(gw.clone(), hup));
        let live = gw.live.clone();
        tokio::spawn(gatehouse_upstream::resolve::refresh_loop(move || {
            live.load().upstreams.clone()
        }));
        tokio::spawn(gatehouse_proxy::health_check::supervise(gw.clone()));

        wait_for_stop_signal(term, int).await;
        let deadline = gw.live.load().config.shutdown.drain_timeout.get();
        tracing::info!(?deadline, "shutting down: draining connections");
        gw.begin_shutdown();
        if !gw.drained(deadline).await {
            tracing::warn!("drain deadline passed with connections still open");
        }
        Ok::<_, anyhow::Error>(())
    })?;
    for h in handles {
        let _ = h.join();
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_stop_signal(
    mut term: tokio::signal::unix::Signal,
    mut int: tokio::signal::unix::Signal,
) {
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
