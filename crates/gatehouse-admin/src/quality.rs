//! The quality score (docs/operations.md, "Quality score"): per route, upstream and
//! consumer over a window, 100 x apdex (a 5xx is frustrated) minus a saturation penalty
//! (up to 25) minus a security penalty (up to 15), between 0 and 100; `null` without
//! traffic. `GET /admin/quality?window=5m` shows it with its components, and
//! `gatehouse_quality_score{kind,name}` exposes it over 5 minutes.

use crate::{json, problem};
use bytes::Bytes;
use gatehouse_observe::stats::{self, Subject, Tallies, Tally};
use gatehouse_proxy::Gateway;
use gatehouse_proxy::snapshot::Snapshot;
use gatehouse_upstream::UpstreamState;
use gatehouse_upstream::breaker::State;
use gatehouse_upstream::health::Verdict;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Most the saturation penalty takes off.
const SATURATION_MAX: f64 = 25.0;
/// Most the security penalty takes off.
const SECURITY_MAX: f64 = 15.0;
/// In-flight share of the cap from which the upstream counts as saturated.
const INFLIGHT_FROM: f64 = 0.8;

/// Serves `GET /admin/quality?window=...`.
pub fn endpoint(gw: &Gateway, query: Option<&str>) -> Response<Full<Bytes>> {
    let window = match crate::query::params(query, &["window"])
        .and_then(|p| crate::query::window(&p, stats::MAX_WINDOW))
    {
        Ok(w) => w,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e, None),
    };
    let r = report(gw, window);
    let section = |kind: Subject| -> BTreeMap<String, Value> {
        r.iter()
            .filter(|q| q.kind == kind)
            .map(|q| (q.name.to_string(), q.json()))
            .collect()
    };
    json(
        StatusCode::OK,
        json!({
            "window_seconds": window.as_secs(),
            "routes": section(Subject::Route),
            "upstreams": section(Subject::Upstream),
            "consumers": section(Subject::Consumer),
        }),
    )
}

/// One subject's score and what it is made of.
#[derive(Debug)]
pub struct Quality {
    /// Route, upstream or consumer.
    pub kind: Subject,
    /// Its name.
    pub name: Arc<str>,
    /// 0 to 100, `None` without traffic.
    pub score: Option<f64>,
    tally: Tally,
    target: Duration,
    saturation: f64,
    security: f64,
    reasons: Vec<String>,
}

impl Quality {
    fn json(&self) -> Value {
        let c = &self.tally.counts;
        let n = c[stats::REQUESTS];
        let ratio = |x: u64| {
            if n == 0 {
                0.0
            } else {
                round(x as f64 / n as f64, 4)
            }
        };
        json!({
            "score": self.score,
            "requests": n,
            "latency": {
                "target_ms": self.target.as_millis() as u64,
                "satisfied": c[stats::SATISFIED],
                "tolerated": c[stats::TOLERATED],
                "frustrated": c[stats::FRUSTRATED],
                "apdex": (n > 0).then(|| round(apdex(&self.tally), 4)),
            },
            "errors": {"count": c[stats::ERRORS], "ratio": ratio(c[stats::ERRORS])},
            "saturation": {"penalty": round(self.saturation, 2)},
            "security": {"penalty": round(self.security, 2), "blocked": c[stats::BLOCKED]},
            "reasons": self.reasons,
        })
    }
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// (satisfied + tolerated / 2) / requests.
fn apdex(t: &Tally) -> f64 {
    let c = &t.counts;
    let n = c[stats::REQUESTS].max(1) as f64;
    (c[stats::SATISFIED] as f64 + c[stats::TOLERATED] as f64 / 2.0) / n
}

/// How saturated an upstream is now (0 to 1) and why: its share of targets out of
/// rotation, an open (1) or half-open (0.5) breaker, in-flight requests above 80% of
/// their cap, retries denied in the window.
fn pressure(up: &UpstreamState, tally: Option<&Tally>, now_ms: u64) -> (f64, Vec<String>) {
    let mut parts: Vec<(f64, String)> = Vec::new();
    let total = up.targets.len();
    let out = up
        .targets
        .iter()
        .filter(|t| !matches!(t.health.verdict(now_ms), Verdict::Healthy))
        .count();
    if out > 0 {
        parts.push((
            out as f64 / total.max(1) as f64,
            format!(
                "upstream {}: {out} of {total} targets out of rotation",
                up.name
            ),
        ));
    }
    match up.breaker.as_ref().map(|b| b.state(now_ms)) {
        Some(State::Open) => {
            parts.push((1.0, format!("upstream {}: circuit breaker open", up.name)))
        }
        Some(State::HalfOpen) => parts.push((
            0.5,
            format!("upstream {}: circuit breaker half open", up.name),
        )),
        _ => {}
    }
    if let Some(cap) = up
        .config
        .circuit_breaker
        .and_then(|c| c.max_concurrent_requests)
    {
        let share = up.in_flight() as f64 / cap.max(1) as f64;
        if share > INFLIGHT_FROM {
            parts.push((
                ((share - INFLIGHT_FROM) / (1.0 - INFLIGHT_FROM)).min(1.0),
                format!(
                    "upstream {}: {} of {cap} concurrent requests in flight",
                    up.name,
                    up.in_flight()
                ),
            ));
        }
    }
    if let Some(t) = tally {
        let denied = t.counts[stats::RETRIES_DENIED];
        if denied > 0 {
            let share = denied as f64 / t.counts[stats::REQUESTS].max(1) as f64;
            parts.push((
                share.min(1.0),
                format!("upstream {}: {denied} retries denied", up.name),
            ));
        }
    }
    let worst = parts.iter().map(|p| p.0).fold(0.0, f64::max);
    (worst, parts.into_iter().map(|p| p.1).collect())
}

/// The upstreams a route sends to.
fn upstreams_of(snap: &Snapshot, route: usize) -> Vec<Arc<UpstreamState>> {
    snap.routes
        .get(route)
        .map(|r| r.upstreams())
        .unwrap_or_default()
}

fn score(
    kind: Subject,
    name: Arc<str>,
    tally: Tally,
    target: Duration,
    saturation: (f64, Vec<String>),
) -> Quality {
    let c = &tally.counts;
    let n = c[stats::REQUESTS];
    let mut reasons = Vec::new();
    let (pressure, why) = saturation;
    let saturation = SATURATION_MAX * pressure.clamp(0.0, 1.0);
    let blocked_share = c[stats::BLOCKED] as f64 / n.max(1) as f64;
    let security = SECURITY_MAX * blocked_share.min(1.0);
    let score = (n > 0).then(|| {
        let a = apdex(&tally);
        if a < 1.0 {
            let slow = c[stats::FRUSTRATED] - c[stats::ERRORS];
            reasons.push(format!(
                "apdex {:.2} against {} ms: {} tolerated, {slow} too slow, {} server errors",
                a,
                target.as_millis(),
                c[stats::TOLERATED],
                c[stats::ERRORS]
            ));
        }
        round((100.0 * a - saturation - security).clamp(0.0, 100.0), 1)
    });
    if saturation > 0.0 {
        reasons.extend(why);
    }
    if c[stats::BLOCKED] > 0 {
        reasons.push(format!(
            "{:.1}% of requests blocked by security policies",
            100.0 * blocked_share
        ));
    }
    Quality {
        kind,
        name,
        score,
        tally,
        target,
        saturation,
        security,
        reasons,
    }
}

/// Every route and upstream of the running config (with or without traffic) and every
/// consumer with traffic, scored over `window`.
pub fn report(gw: &Gateway, window: Duration) -> Vec<Quality> {
    let snap = gw.live.load();
    let mut tallies: Tallies = stats::window(window);
    let now = gatehouse_upstream::clock::now_ms();
    let default_target = snap.config.analytics.latency_target.get();
    let mut take = |kind: Subject, name: &Arc<str>| {
        tallies
            .remove(&(kind, Arc::clone(name)))
            .unwrap_or_default()
    };
    let mut ups: Vec<(&String, &Arc<UpstreamState>)> = snap.upstreams.iter().collect();
    ups.sort_by(|a, b| a.0.cmp(b.0));
    let mut pressures: BTreeMap<String, (f64, Vec<String>)> = BTreeMap::new();
    let mut out = Vec::new();
    for (name, up) in ups {
        let tally = take(Subject::Upstream, &up.name);
        let p = pressure(up, Some(&tally), now);
        pressures.insert(name.clone(), p.clone());
        out.push(score(
            Subject::Upstream,
            Arc::clone(&up.name),
            tally,
            default_target,
            p,
        ));
    }
    for (i, r) in snap.routes.iter().enumerate() {
        let tally = take(Subject::Route, &r.name);
        let mut worst = (0.0, Vec::new());
        for up in upstreams_of(&snap, i) {
            if let Some(p) = pressures.get(&*up.name)
                && p.0 > worst.0
            {
                worst = p.clone();
            }
        }
        out.push(score(
            Subject::Route,
            Arc::clone(&r.name),
            tally,
            r.latency_target,
            worst,
        ));
    }
    let mut consumers: Vec<((Subject, Arc<str>), Tally)> = tallies
        .into_iter()
        .filter(|((k, _), _)| *k == Subject::Consumer)
        .collect();
    consumers.sort_by(|a, b| a.0.1.cmp(&b.0.1));
    for ((_, name), tally) in consumers {
        out.push(score(
            Subject::Consumer,
            name,
            tally,
            default_target,
            (0.0, Vec::new()),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(satisfied: u64, tolerated: u64, slow: u64, errors: u64, blocked: u64) -> Tally {
        let mut t = Tally::default();
        t.counts[stats::SATISFIED] = satisfied;
        t.counts[stats::TOLERATED] = tolerated;
        t.counts[stats::FRUSTRATED] = slow + errors;
        t.counts[stats::ERRORS] = errors;
        t.counts[stats::BLOCKED] = blocked;
        t.counts[stats::REQUESTS] = satisfied + tolerated + slow + errors;
        t
    }

    fn q(t: Tally, pressure: f64) -> Quality {
        let ms = Duration::from_millis(100);
        score(
            Subject::Route,
            "r".into(),
            t,
            ms,
            (pressure, vec!["why".into()]),
        )
    }

    #[test]
    fn the_score_is_apdex_less_the_penalties_within_0_and_100() {
        assert_eq!(q(tally(10, 0, 0, 0, 0), 0.0).score, Some(100.0));
        assert_eq!(q(tally(5, 5, 0, 0, 0), 0.0).score, Some(75.0));
        assert_eq!(
            q(tally(5, 0, 0, 5, 0), 0.0).score,
            Some(50.0),
            "a 5xx frustrates"
        );
        assert_eq!(q(tally(10, 0, 0, 0, 0), 0.4).score, Some(90.0));
        assert_eq!(q(tally(10, 0, 0, 0, 10), 1.0).score, Some(60.0), "-25 -15");
        assert_eq!(
            q(tally(0, 0, 10, 0, 10), 1.0).score,
            Some(0.0),
            "never below 0"
        );
        assert_eq!(q(tally(0, 0, 0, 0, 0), 1.0).score, None, "no traffic");
        let worse = q(tally(3, 3, 3, 1, 0), 0.0);
        assert!(worse.reasons[0].contains("apdex"), "{:?}", worse.reasons);
        assert!(q(tally(10, 0, 0, 0, 0), 0.0).reasons.is_empty());
    }
}
