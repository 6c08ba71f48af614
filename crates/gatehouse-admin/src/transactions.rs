//! `GET /admin/transactions`: the last requests (analytics.transactions), newest first,
//! filtered by `client_ip`, `consumer`, `route`, `status` (`500` or a class `5xx`),
//! `min_latency` (`250ms`), `device`, `request_id`, and cut to `limit` (default 100).
//! A filter value that cannot mean anything is 400 problem+json, not an empty list.

use crate::{json, problem};
use bytes::Bytes;
use gatehouse_observe::transactions::Transaction;
use http::{Response, StatusCode};
use http_body_util::Full;

const DEVICES: [&str; 6] = ["desktop", "mobile", "tablet", "bot", "library", "unknown"];

/// A status filter: one code or a class.
enum Status {
    Code(u16),
    Class(u16),
}

/// The filters of one query.
#[derive(Default)]
struct Filter {
    client_ip: Option<std::net::IpAddr>,
    consumer: Option<String>,
    route: Option<String>,
    status: Option<Status>,
    min_latency_ms: Option<f64>,
    device: Option<String>,
    request_id: Option<String>,
    limit: Option<usize>,
}

impl Filter {
    fn parse(query: &str) -> Result<Self, String> {
        let mut f = Filter::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, _) = pair.split_once('=').unwrap_or((pair, ""));
            let raw = gatehouse_policies::query_param::value(pair, k).unwrap_or_default();
            let v = String::from_utf8(raw).map_err(|_| format!("{k}: not UTF-8"))?;
            let bad = |what: &str| format!("{k}={v:?}: {what}");
            match k {
                "client_ip" => f.client_ip = Some(v.parse().map_err(|_| bad("not an IP address"))?),
                "consumer" => f.consumer = Some(v),
                "route" => f.route = Some(v),
                "status" => {
                    f.status = Some(match v.as_bytes() {
                        [c @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
                            Status::Class(u16::from(c - b'0'))
                        }
                        _ => match v.parse::<u16>() {
                            Ok(code) if (100..=599).contains(&code) => Status::Code(code),
                            _ => return Err(bad("expected a status (500) or a class (5xx)")),
                        },
                    })
                }
                "min_latency" => {
                    let d = gatehouse_config::units::parse_duration(&v).map_err(|e| bad(&e))?;
                    f.min_latency_ms = Some(d.as_secs_f64() * 1000.0);
                }
                "device" => {
                    if !DEVICES.contains(&v.as_str()) {
                        return Err(bad(
                            "expected desktop, mobile, tablet, bot, library or unknown",
                        ));
                    }
                    f.device = Some(v);
                }
                "request_id" => f.request_id = Some(v),
                "limit" => {
                    f.limit = Some(
                        v.parse::<usize>()
                            .ok()
                            .filter(|n| *n >= 1)
                            .ok_or_else(|| bad("expected a whole number of at least 1"))?,
                    )
                }
                _ => {
                    return Err(format!(
                        "unknown filter {k:?}; expected client_ip, consumer, route, status, min_latency, device, request_id or limit"
                    ));
                }
            }
        }
        Ok(f)
    }

    fn matches(&self, r: &Transaction) -> bool {
        self.client_ip.is_none_or(|ip| r.client_ip == ip)
            && self
                .consumer
                .as_ref()
                .is_none_or(|c| r.consumer_name() == Some(c.as_str()))
            && self
                .route
                .as_ref()
                .is_none_or(|n| r.route.as_deref() == Some(n.as_str()))
            && self.status.as_ref().is_none_or(|s| match s {
                Status::Code(c) => r.status == *c,
                Status::Class(c) => r.status / 100 == *c,
            })
            && self
                .min_latency_ms
                .is_none_or(|m| r.total.as_secs_f64() * 1000.0 >= m)
            && self
                .device
                .as_ref()
                .is_none_or(|d| r.device() == d.as_str())
            && self
                .request_id
                .as_ref()
                .is_none_or(|id| r.request_id == *id)
    }
}

/// Serves `GET /admin/transactions?query`.
pub fn endpoint(query: Option<&str>) -> Response<Full<Bytes>> {
    let filter = match Filter::parse(query.unwrap_or("")) {
        Ok(f) => f,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e, None),
    };
    let limit = filter.limit.unwrap_or(100);
    let found = gatehouse_observe::transactions::search(limit, |r| filter.matches(r));
    let items: Vec<_> = found.iter().map(|t| t.record(None)).collect();
    json(
        StatusCode::OK,
        serde_json::json!({ "items": serde_json::to_value(&items).unwrap_or_default() }),
    )
}
