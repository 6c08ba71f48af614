//! `run` and `validate`: load, compile, bind, start workers and the control thread.

use crate::server::{self, Failure};
use gatehouse_proxy::compile::Platform;
use gatehouse_proxy::gateway::ConfigSource;
use std::process::ExitCode;
use std::sync::Arc;

/// `gatehouse validate`: prints `FILE:LINE:COL: path: message` per problem.
pub fn validate(path: &str) -> ExitCode {
    let platform = Platform::default();
    let check = |c: &gatehouse_config::Config, dir: &std::path::Path| platform.kinds.check(c, dir);
    match gatehouse_config::load::load_file_with(path, &check).and_then(|mut l| {
        // Compile too (templates, policies), but never open sinks or the store file, bind
        // sockets or resolve names; the stage is dropped, never committed. An in-memory
        // store stands in for the file, so what needs a store compiles as it would.
        let access_log = std::mem::replace(&mut l.config.access_log.output, "off".into());
        let stage = platform.state.stage();
        gatehouse_proxy::compile::stand_in_store(&l, &stage);
        gatehouse_proxy::compile::compile(&l, None, &platform.kinds, &stage)?;
        l.config.access_log.output = access_log;
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
        Err(errors) => report(&errors),
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
    let platform = Arc::new(Platform::default());
    let (loaded, gw) = match server::prepare(ConfigSource::File(path.to_string()), platform) {
        Ok(x) => x,
        Err(errors) => return report(&errors),
    };
    match serve(&loaded, gw, threads) {
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

/// Binds, starts workers and the control plane, and blocks until a stop signal and the
/// drain that follows it complete.
fn serve(
    loaded: &gatehouse_config::load::Loaded,
    gw: Arc<gatehouse_proxy::Gateway>,
    threads: Option<usize>,
) -> Result<(), Failure> {
    let reload_cfg = gw.live.load().config.reload.clone();
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

    let mut bound = server::bind(gw.clone(), loaded, threads)?;
    control.block_on(async {
        gatehouse_proxy::housekeeping::spawn();
        bound.spawn_control();
        tokio::spawn(gatehouse_proxy::reload::on_sighup(gw.clone(), hup));
        wait_for_stop_signal(term, int).await;
        bound.shutdown().await;
    });
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
