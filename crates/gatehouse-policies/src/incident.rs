//! WAF incidents: what the `waf` policy found in one request (the rules that matched,
//! where, what they matched), kept for `GET /admin/protection/incidents/{id}`. The last
//! [`KEPT`] are held in memory, across reloads, whatever policy recorded them; each
//! holds at most 64 bytes of matched data per rule, so the store stays bounded.

use serde::Serialize;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// How many incidents are kept.
pub const KEPT: usize = 10_000;

/// The state kind and name the store is found under (one per process).
pub const STATE: (&str, &str) = ("waf_incidents", "all");

/// One rule that matched.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Match {
    /// Its id.
    pub id: u32,
    /// Its message.
    pub msg: String,
    /// Its attack type (`sqli`, ...), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack: Option<&'static str>,
    /// The variable it matched in (`ARGS:q`, `REQUEST_HEADERS:User-Agent`).
    pub target: String,
    /// What it matched (at most 64 bytes, invalid UTF-8 replaced).
    pub data: String,
}

/// One request the WAF blocked or detected.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Incident {
    /// Its id (shown to the client in the 403).
    pub id: String,
    /// When, in Unix seconds.
    pub time: u64,
    /// The request's id.
    pub request_id: String,
    /// The `waf` policy.
    pub policy: String,
    /// `blocked` or `detected`.
    pub action: &'static str,
    /// The inbound anomaly score.
    pub score: i64,
    /// The client's address.
    pub client: IpAddr,
    /// The route, when one matched.
    pub route: Option<String>,
    /// The method.
    pub method: String,
    /// The path (without the query, which the matches show where they matter).
    pub path: String,
    /// The attack types, sorted.
    pub attacks: Vec<&'static str>,
    /// The rules that matched, in the order they ran.
    pub rules: Vec<Match>,
}

/// The last [`KEPT`] incidents, oldest first.
#[derive(Debug, Default)]
pub struct Incidents {
    kept: Mutex<VecDeque<Arc<Incident>>>,
}

impl Incidents {
    /// Keeps `i`, forgetting the oldest beyond [`KEPT`].
    pub fn record(&self, i: Incident) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= KEPT {
            kept.pop_front();
        }
        kept.push_back(Arc::new(i));
    }

    /// The incident `id`, while it is kept.
    pub fn get(&self, id: &str) -> Option<Arc<Incident>> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().rev().find(|i| i.id == id).cloned()
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn incident(n: usize) -> Incident {
        Incident {
            id: format!("{n:016x}"),
            time: 0,
            request_id: String::new(),
            policy: "waf".into(),
            action: "blocked",
            score: 5,
            client: "127.0.0.1".parse().unwrap(),
            route: None,
            method: "GET".into(),
            path: "/".into(),
            attacks: vec!["sqli"],
            rules: Vec::new(),
        }
    }

    #[test]
    fn the_last_ten_thousand_are_kept() {
        let s = Incidents::default();
        for n in 0..KEPT + 5 {
            s.record(incident(n));
        }
        assert_eq!(s.len(), KEPT);
        assert!(s.get(&format!("{:016x}", 4)).is_none(), "the oldest went");
        assert_eq!(s.get(&format!("{:016x}", 5)).unwrap().score, 5);
        assert!(s.get(&format!("{:016x}", KEPT + 4)).is_some());
    }
}
