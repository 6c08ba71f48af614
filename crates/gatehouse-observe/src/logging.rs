//! Process logs: tracing to stderr, as text or JSON lines; the filter comes from
//! `--log-level`, else `RUST_LOG`, else `info`. JSON lines carry their time under
//! `timestamp`, the key the access log uses too.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `json` selects JSON lines, `level` (a level or a
/// `RUST_LOG`-style filter) overrides the environment.
pub fn init(json: bool, level: Option<&str>) {
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, never into files and log collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
