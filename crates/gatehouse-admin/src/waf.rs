//! `GET /admin/protection/waf` (each `waf` policy's counts) and
//! `GET /admin/protection/incidents/{id}` (one incident the WAF recorded),
//! docs/protection.md.

use crate::{json, problem};
use bytes::Bytes;
use gatehouse_policies::incident::Incidents;
use gatehouse_policies::waf_tally::WafTally;
use gatehouse_proxy::Gateway;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Map, Value, json};

/// `GET /admin/protection/waf`: `{"policies": {NAME: {mode, inspected, blocked,
/// detected, rules: {ID: {hits, attack}}}}}`.
pub fn overview(gw: &Gateway) -> Response<Full<Bytes>> {
    let snap = gw.live.load();
    let mut policies = Map::new();
    for (name, p) in &snap.config.policies {
        if p.kind != "waf" {
            continue;
        }
        if let Some(t) = gw
            .platform
            .state
            .get::<WafTally>(gatehouse_policies::waf_tally::STATE, name)
        {
            policies.insert(
                name.clone(),
                serde_json::to_value(t.view()).unwrap_or_default(),
            );
        }
    }
    json(
        StatusCode::OK,
        json!({ "policies": Value::Object(policies) }),
    )
}

/// `GET /admin/protection/incidents/{id}`.
pub fn incident(gw: &Gateway, id: &str) -> Response<Full<Bytes>> {
    let (kind, name) = gatehouse_policies::incident::STATE;
    let found = gw
        .platform
        .state
        .get::<Incidents>(kind, name)
        .and_then(|s| s.get(id));
    match found {
        Some(i) => json(
            StatusCode::OK,
            serde_json::to_value(&*i).unwrap_or_default(),
        ),
        None => problem(
            StatusCode::NOT_FOUND,
            format!(
                "no incident {id:?} is kept (the last {} are)",
                gatehouse_policies::incident::KEPT
            ),
            None,
        ),
    }
}
