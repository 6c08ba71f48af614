//! Reload triggers besides the admin API: SIGHUP, a debounced watch of the config file,
//! and a poll of the TLS files the config names.

use crate::gateway::Gateway;
use notify::{RecursiveMode, Watcher};
use std::path::Path;
use std::sync::Arc;

/// Reloads on every SIGHUP received by `hup`, forever. The caller installs the handler
/// before anything else starts, so an early SIGHUP can never kill the process.
pub async fn on_sighup(gw: Arc<Gateway>, mut hup: tokio::signal::unix::Signal) {
    while hup.recv().await.is_some() {
        let gw = gw.clone();
        // Compiling may resolve names and open files: keep it off the async thread.
        let _ = tokio::task::spawn_blocking(move || gw.reload_logged("SIGHUP")).await;
    }
}

/// Watches the config file's directory (editors replace files by rename) and reloads
/// after `debounce` of quiet. Returns the watcher, which must be kept alive.
pub fn watch_file(
    gw: Arc<Gateway>,
    debounce: std::time::Duration,
) -> notify::Result<notify::RecommendedWatcher> {
    let crate::gateway::ConfigSource::File(file) = gw.source() else {
        return Err(notify::Error::generic("the config is not a file"));
    };
    let path = std::fs::canonicalize(file)?;
    let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let target = path.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && ev.paths.iter().any(|p| p == &target)
            && !ev.kind.is_access()
        {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: wait for a quiet period, swallowing the burst of events a save makes.
            loop {
                match tokio::time::timeout(debounce, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let gw = gw.clone();
            let _ = tokio::task::spawn_blocking(move || gw.reload_logged("file watch")).await;
        }
    });
    Ok(watcher)
}

/// How often the TLS files are checked for a change.
pub const TLS_FILE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// What identifies a file's content cheaply: modification time, size and inode.
type Stamp = Option<(std::time::SystemTime, u64, u64)>;

fn stamps(gw: &Gateway) -> Vec<(std::path::PathBuf, Stamp)> {
    use std::os::unix::fs::MetadataExt;
    let snap = gw.live.load();
    let mut files: Vec<_> = snap
        .tls
        .values()
        .flat_map(|t| t.files.iter().cloned())
        .chain(
            snap.upstream_tls
                .values()
                .flat_map(|t| t.files.iter().cloned()),
        )
        .chain(snap.admin_tls.iter().flat_map(|t| t.files.iter().cloned()))
        .collect();
    files.sort();
    files.dedup();
    files
        .into_iter()
        .map(|f| {
            // Followed through symlinks: a Kubernetes secret swaps a link, not the file.
            let stamp = std::fs::metadata(&f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())));
            (f, stamp)
        })
        .collect()
}

/// Reloads when a certificate, key or CA file of a TLS listener or upstream changes (renewal by
/// certbot, cert-manager or a secret mount), while `reload.watch` is on. Polled every
/// `every` rather than watched, since secret mounts change by swapping symlinks that
/// file events miss; a change is acted on once the files were the same for one more
/// check, so a certificate and its key written one after the other reload once, together.
pub async fn watch_tls_files(gw: Arc<Gateway>, every: std::time::Duration) {
    let mut stop = gw.shutdown_signal();
    let mut seen = stamps(&gw);
    let mut pending: Option<Vec<(std::path::PathBuf, Stamp)>> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if !gw.live.load().config.reload.watch {
            continue;
        }
        let now = stamps(&gw);
        if now == seen {
            pending = None;
            continue;
        }
        if pending.as_ref() != Some(&now) {
            pending = Some(now);
            continue;
        }
        pending = None;
        let gw2 = gw.clone();
        let _ = tokio::task::spawn_blocking(move || gw2.reload_logged("TLS file change")).await;
        // The new config may name other files; either way this is the new baseline, so a
        // rejected change is not retried until the files change again.
        seen = stamps(&gw);
    }
}
