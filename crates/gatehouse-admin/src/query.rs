//! The query strings of the analytics endpoints: known parameters only (anything else,
//! or a value that cannot mean anything, is a 400 problem), and the `window` they share.

use std::collections::HashMap;
use std::time::Duration;

/// The shortest window: one sample.
const MIN_WINDOW: Duration = Duration::from_secs(5);
/// The window when none is asked for.
const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

/// The parameters of `query`, each one of `known` (values percent-decoded).
pub fn params(query: Option<&str>, known: &[&str]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, _) = pair.split_once('=').unwrap_or((pair, ""));
        if !known.contains(&k) {
            return Err(format!(
                "unknown parameter {k:?}; expected {}",
                known.join(", ")
            ));
        }
        let raw = gatehouse_policies::query_param::value(pair, k).unwrap_or_default();
        let v = String::from_utf8(raw).map_err(|_| format!("{k}: not UTF-8"))?;
        out.insert(k.to_string(), v);
    }
    Ok(out)
}

/// `window=` (5s to `max`, default 5m).
pub fn window(params: &HashMap<String, String>, max: Duration) -> Result<Duration, String> {
    let Some(v) = params.get("window") else {
        return Ok(DEFAULT_WINDOW.min(max));
    };
    let w = gatehouse_config::units::parse_duration(v).map_err(|e| format!("window={v:?}: {e}"))?;
    if w < MIN_WINDOW || w > max {
        return Err(format!(
            "window={v:?}: must be between 5s and {}s",
            max.as_secs()
        ));
    }
    Ok(w)
}
