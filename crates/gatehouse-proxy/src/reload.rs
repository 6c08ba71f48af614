//! Reload triggers besides the admin API: SIGHUP and a debounced watch of the config file.

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
