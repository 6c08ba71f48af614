//! `/admin/protection`: the client table's counts, and the bans (`GET` the list, `POST`
//! one by hand, `DELETE /admin/protection/bans/{ip}` to lift one), docs/protection.md.

use crate::{json, problem};
use bytes::Bytes;
use gatehouse_proxy::Gateway;
use gatehouse_proxy::client_table::Ban;
use gatehouse_proxy::protection::{Protection, key_text};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Value, json};
use std::net::IpAddr;

/// Largest `POST /admin/protection/bans` body.
const MAX_BODY: usize = 4096;

/// The longest ban the admin API sets (a year): longer is a `protection.deny` entry.
const MAX_BAN: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

/// `GET /admin/protection`.
pub fn overview(gw: &Gateway) -> Response<Full<Bytes>> {
    let snap = gw.live.load();
    let p = &snap.protection;
    let s = p.clients.stats(p.clients.now());
    let refusals: serde_json::Map<String, Value> = s
        .refusals
        .iter()
        .map(|(name, n)| ((*name).to_string(), json!(n)))
        .collect();
    json(
        StatusCode::OK,
        json!({
            "clients_tracked": s.clients_tracked,
            "client_table_size": s.client_table_size,
            "clients_evicted": s.clients_evicted,
            "bans_active": s.bans_active,
            "max_bans": s.max_bans,
            "ipv6_prefix": p.ipv6_prefix,
            "ban": p.ban.map(|b| json!({
                "after": b.after,
                "within_seconds": b.within_ms as f64 / 1000.0,
                "duration_seconds": b.duration_ms as f64 / 1000.0,
                "max_duration_seconds": b.max_ms as f64 / 1000.0,
            })),
            "refusals": refusals,
        }),
    )
}

/// `/admin/protection/bans` and `/admin/protection/bans/{ip}`.
pub async fn bans(gw: &Gateway, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let snap = gw.live.load();
    let p = &snap.protection;
    let path = req.uri().path();
    let one = path
        .strip_prefix("/admin/protection/bans/")
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    match (req.method().clone(), one) {
        (Method::GET, None) => {
            let now = p.clients.now();
            let list: Vec<Value> = p
                .clients
                .bans(now)
                .iter()
                .map(|(ip, b)| record(p, *ip, b, now))
                .collect();
            json(StatusCode::OK, json!({ "bans": list }))
        }
        (Method::POST, None) => create(p, req).await,
        (Method::GET, Some(ip)) => match address(p, &ip) {
            Err(r) => *r,
            Ok(key) => {
                let now = p.clients.now();
                match p.clients.bans(now).into_iter().find(|(k, _)| *k == key) {
                    Some((k, b)) => json(StatusCode::OK, record(p, k, &b, now)),
                    None => not_banned(&ip),
                }
            }
        },
        (Method::DELETE, Some(ip)) => match address(p, &ip) {
            Err(r) => *r,
            Ok(key) => {
                if p.clients.unban(key, p.clients.now()) {
                    tracing::info!(client = %ip, "ban lifted through the admin API");
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = StatusCode::NO_CONTENT;
                    r
                } else {
                    not_banned(&ip)
                }
            }
        },
        (m, _) => problem(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{m} is not allowed here"),
            None,
        ),
    }
}

/// `POST {ip, duration, reason}`: 201 with the ban.
async fn create(p: &Protection, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match crate::json_body(req, MAX_BODY).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let bad = |detail: String| problem(StatusCode::BAD_REQUEST, detail, None);
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return bad(
                "expected {\"ip\": \"203.0.113.7\", \"duration\": \"10m\", \"reason\": \"...\"}"
                    .into(),
            );
        }
    };
    let Some(ip) = v["ip"].as_str() else {
        return bad("\"ip\" is required: an IP address".into());
    };
    let key = match address(p, ip) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let length = match &v["duration"] {
        Value::String(s) => gatehouse_config::units::parse_duration(s),
        Value::Number(n) => n
            .as_f64()
            .filter(|x| x.is_finite() && *x >= 0.0 && *x <= MAX_BAN.as_secs_f64())
            .map(std::time::Duration::from_secs_f64)
            .ok_or_else(|| "a number of seconds".to_string()),
        Value::Null => p
            .ban
            .map(|b| std::time::Duration::from_millis(b.duration_ms))
            .ok_or_else(|| "required (no protection.ban.duration to default to)".into()),
        _ => Err("a duration such as \"10m\", or seconds".into()),
    };
    let length = match length {
        Ok(d) if !d.is_zero() && d <= MAX_BAN => d,
        Ok(_) => return bad("\"duration\" must be more than 0s and at most 366 days".into()),
        Err(e) => return bad(format!("\"duration\": {e}")),
    };
    let reason = match &v["reason"] {
        Value::Null => "manual",
        Value::String(s) if !s.is_empty() && s.len() <= 200 => s.as_str(),
        _ => return bad("\"reason\" must be text of 1 to 200 characters".into()),
    };
    if p.exempt.contains(key) {
        return problem(
            StatusCode::CONFLICT,
            format!("{ip} is in protection.exempt and cannot be banned"),
            None,
        );
    }
    let now = p.clients.now();
    let ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
    let ban = p.clients.ban(key, ms, reason, now);
    tracing::warn!(client = %ip, reason, seconds = length.as_secs(), "client banned through the admin API");
    json(StatusCode::CREATED, record(p, key, &ban, now))
}

/// The address in a request, as the table counts it (`2001:db8::/64` is accepted for
/// an IPv6 network).
fn address(p: &Protection, text: &str) -> Result<IpAddr, Box<Response<Full<Bytes>>>> {
    let decoded = percent_decode(text);
    let addr = decoded.split_once('/').map_or(decoded.as_str(), |(a, _)| a);
    addr.parse::<IpAddr>().map(|ip| p.key(ip)).map_err(|_| {
        Box::new(problem(
            StatusCode::BAD_REQUEST,
            format!("{text:?} is not an IP address"),
            None,
        ))
    })
}

/// `%3A` and `%2F` as an IPv6 address may arrive in a path.
fn percent_decode(s: &str) -> String {
    s.replace("%3A", ":")
        .replace("%3a", ":")
        .replace("%2F", "/")
        .replace("%2f", "/")
}

fn not_banned(ip: &str) -> Response<Full<Bytes>> {
    problem(StatusCode::NOT_FOUND, format!("{ip} is not banned"), None)
}

/// A ban as the API shows it: times in Unix seconds.
fn record(p: &Protection, key: IpAddr, b: &Ban, now: u64) -> Value {
    let t = &p.clients;
    json!({
        "ip": key_text(key, p.ipv6_prefix),
        "reason": &*b.reason,
        "since": t.unix_secs(b.since),
        "until": t.unix_secs(b.until),
        "remaining_seconds": b.until.saturating_sub(now).div_ceil(1000),
        "count": b.count,
    })
}
