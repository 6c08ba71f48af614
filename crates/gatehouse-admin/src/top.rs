//! `GET /admin/top/clients` and `GET /admin/top/attackers`: the heaviest clients over a
//! window (docs/operations.md, "Top clients and attackers").

use crate::{json, problem};
use bytes::Bytes;
use gatehouse_observe::space_saving::Entry;
use gatehouse_observe::top::{self, By, Client, Ranking};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// Longest window (the slices kept).
const MAX_WINDOW: Duration = Duration::from_secs(3600);
/// Most items one answer lists.
const MAX_LIMIT: usize = 1000;

struct Ask {
    window: Duration,
    consumers: bool,
    limit: usize,
}

fn ask(p: &HashMap<String, String>) -> Result<Ask, String> {
    let window = crate::query::window(p, MAX_WINDOW)?;
    let consumers = match p.get("key").map(String::as_str) {
        None | Some("client_ip") => false,
        Some("consumer") => true,
        Some(v) => return Err(format!("key={v:?}: expected client_ip or consumer")),
    };
    let limit = match p.get("limit") {
        None => 10,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(format!("limit={v:?}: expected 1 to {MAX_LIMIT}")),
        },
    };
    Ok(Ask {
        window,
        consumers,
        limit,
    })
}

fn who(e: &Entry<Client>) -> (&'static str, Value) {
    match &e.key {
        Client::Ip(ip) => ("client_ip", json!(ip.to_string())),
        Client::Consumer(n) => ("consumer", json!(&**n)),
    }
}

fn answer(
    r: Ranking,
    item: impl Fn(&Entry<Client>) -> Map<String, Value>,
) -> Response<Full<Bytes>> {
    let items: Vec<Value> = r.items.iter().map(|e| Value::Object(item(e))).collect();
    json(
        StatusCode::OK,
        json!({"capacity": r.capacity, "tracked": r.tracked, "items": items}),
    )
}

/// Serves `GET /admin/top/clients?by=&key=&limit=&window=`.
pub fn clients(query: Option<&str>) -> Response<Full<Bytes>> {
    let parsed = crate::query::params(query, &["by", "key", "limit", "window"]).and_then(|p| {
        let by = match p.get("by").map(String::as_str) {
            None | Some("requests") => By::Requests,
            Some("errors") => By::Errors,
            Some("blocked") => By::Blocked,
            Some("bytes") => By::Bytes,
            Some(v) => {
                return Err(format!(
                    "by={v:?}: expected requests, errors, blocked or bytes"
                ));
            }
        };
        Ok((by, ask(&p)?))
    });
    let (by, a) = match parsed {
        Ok(x) => x,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e, None),
    };
    let r = top::top(a.window, by, a.consumers, a.limit);
    answer(r, |e| {
        let c = &e.counts;
        // The ranked value is the summary's (never under); the others count from when
        // the client entered it.
        let ranked = |b: By, v: u64| if b == by { e.weight } else { v };
        let (k, v) = who(e);
        let mut m = Map::new();
        m.insert(k.into(), v);
        m.insert("requests".into(), json!(ranked(By::Requests, c.requests)));
        m.insert("errors".into(), json!(ranked(By::Errors, c.errors)));
        m.insert("blocked".into(), json!(ranked(By::Blocked, c.blocked)));
        m.insert("bytes".into(), json!(ranked(By::Bytes, c.bytes)));
        m.insert("error_bound".into(), json!(e.error));
        m
    })
}

/// Serves `GET /admin/top/attackers?key=&limit=&window=`: ranked by blocked requests,
/// then by 4xx answers, with the refusals' `policy/reason` counts and, for an address,
/// when its ban ends (Unix seconds; `null` when not banned).
pub fn attackers(
    protection: &gatehouse_proxy::protection::Protection,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let a = match crate::query::params(query, &["key", "limit", "window"]).and_then(|p| ask(&p)) {
        Ok(a) => a,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e, None),
    };
    let r = top::attackers(a.window, a.consumers, a.limit);
    answer(r, |e| {
        let c = &e.counts;
        let (k, v) = who(e);
        let reasons: Map<String, Value> = c
            .reasons
            .iter()
            .map(|(r, n)| (r.to_string(), json!(n)))
            .collect();
        let mut m = Map::new();
        m.insert(k.into(), v);
        m.insert("blocked".into(), json!(e.weight));
        m.insert("client_errors".into(), json!(c.client_errors));
        m.insert("requests".into(), json!(c.requests));
        m.insert("reasons".into(), Value::Object(reasons));
        let attacks: Map<String, Value> = c
            .attacks
            .iter()
            .map(|(a, n)| ((*a).to_string(), json!(n)))
            .collect();
        m.insert("attacks".into(), Value::Object(attacks));
        let rules: Map<String, Value> = c
            .rules
            .iter()
            .map(|(r, n)| (r.to_string(), json!(n)))
            .collect();
        m.insert("rules".into(), Value::Object(rules));
        let banned_until = match &e.key {
            Client::Ip(ip) => {
                let t = &protection.clients;
                let now = t.now();
                t.banned(protection.key(*ip), now)
                    .map(|left| t.unix_secs(now + left))
            }
            Client::Consumer(_) => None,
        };
        m.insert("banned_until".into(), json!(banned_until));
        m.insert("error_bound".into(), json!(e.error));
        m
    })
}
