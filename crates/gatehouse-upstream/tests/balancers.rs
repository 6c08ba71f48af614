//! Balancer distribution and consistent-hash remapping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_config::{BalancerKind, Target, Upstream};
use gatehouse_upstream::balancer::{Balancer, PickInput, sticky_id};
use gatehouse_upstream::hash::{Ring, hash64};
use gatehouse_upstream::{TargetState, UpstreamState};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

fn targets(n: usize) -> Vec<Arc<TargetState>> {
    (0..n)
        .map(|i| {
            Arc::new(TargetState::new(
                format!("127.0.0.1:{}", 9000 + i),
                "127.0.0.1".into(),
                9000 + i as u16,
            ))
        })
        .collect()
}

fn input() -> PickInput<'static> {
    PickInput {
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        hash_key: None,
        sticky: None,
    }
}

fn pairs(ts: &[Arc<TargetState>], w: &[u32]) -> Vec<(String, u32)> {
    ts.iter()
        .zip(w)
        .map(|(t, w)| (t.address.to_string(), *w))
        .collect()
}

proptest! {
    #[test]
    fn round_robin_is_exactly_proportional_over_a_period(weights in prop::collection::vec(0u32..6, 1..6)) {
        prop_assume!(weights.iter().any(|w| *w > 0));
        let ts = targets(weights.len());
        let b = Balancer::new(BalancerKind::RoundRobin, &pairs(&ts, &weights));
        let total: u32 = weights.iter().sum();
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..total * 10 {
            counts[b.pick(&ts, &weights, &input(), &|_| true).unwrap().index] += 1;
        }
        for (c, w) in counts.iter().zip(&weights) {
            prop_assert_eq!(*c, w * 10);
        }
    }

    #[test]
    fn random_roughly_proportional(weights in prop::collection::vec(1u32..5, 2..5)) {
        let ts = targets(weights.len());
        let b = Balancer::new(BalancerKind::Random, &pairs(&ts, &weights));
        let total: u32 = weights.iter().sum();
        let n = 20_000u32;
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..n {
            counts[b.pick(&ts, &weights, &input(), &|_| true).unwrap().index] += 1;
        }
        for (c, w) in counts.iter().zip(&weights) {
            let expect = f64::from(n) * f64::from(*w) / f64::from(total);
            prop_assert!((f64::from(*c) - expect).abs() < expect * 0.15, "{counts:?} {weights:?}");
        }
    }
}

#[test]
fn least_connections_prefers_the_idle_target() {
    let ts = targets(3);
    let w = [1, 1, 1];
    let b = Balancer::new(BalancerKind::LeastConnections, &pairs(&ts, &w));
    let _g0 = (ts[0].begin(), ts[0].begin());
    let _g2 = ts[2].begin();
    for _ in 0..50 {
        assert_eq!(b.pick(&ts, &w, &input(), &|_| true).unwrap().index, 1);
    }
}

#[test]
fn least_latency_avoids_the_slow_target() {
    let ts = targets(2);
    let w = [1, 1];
    ts[0].record_latency(std::time::Duration::from_millis(50));
    ts[1].record_latency(std::time::Duration::from_millis(1));
    let b = Balancer::new(BalancerKind::LeastLatency, &pairs(&ts, &w));
    for _ in 0..50 {
        assert_eq!(b.pick(&ts, &w, &input(), &|_| true).unwrap().index, 1);
    }
}

#[test]
fn consistent_hash_remaps_only_to_the_new_target() {
    let addrs: Vec<String> = (0..5).map(|i| format!("10.0.0.{i}:80")).collect();
    let before = Ring::build(addrs.iter().map(|a| (a.as_str(), 1)));
    let mut more = addrs.clone();
    more.push("10.0.0.99:80".into());
    let after = Ring::build(more.iter().map(|a| (a.as_str(), 1)));
    let n = 20_000;
    let mut moved = 0;
    for k in 0..n {
        let key = hash64(format!("user-{k}").as_bytes());
        let (a, b) = (before.lookup(key).unwrap(), after.lookup(key).unwrap());
        if a != b {
            moved += 1;
            assert_eq!(b, 5, "a key moved between two old targets");
        }
    }
    // Ideal is 1/6 of the keys; allow some slack for ring variance.
    let frac = f64::from(moved) / f64::from(n);
    assert!(frac > 0.10 && frac < 0.24, "moved {frac}");

    // Removing a target only moves the keys it owned.
    let fewer = Ring::build(addrs[..4].iter().map(|a| (a.as_str(), 1)));
    for k in 0..n {
        let key = hash64(format!("user-{k}").as_bytes());
        let a = before.lookup(key).unwrap();
        if a != 4 {
            assert_eq!(fewer.lookup(key).unwrap(), a);
        }
    }
}

#[test]
fn hash_on_header_is_stable() {
    let up = Upstream {
        targets: (0..4)
            .map(|i| Target {
                address: format!("127.0.0.1:{}", 9100 + i),
                weight: 1,
            })
            .collect(),
        balancer: BalancerKind::ConsistentHash,
        hash_on: Some("header:x-user-id".into()),
        sticky: Default::default(),
        protocol: Default::default(),
        timeouts: Default::default(),
        pool: Default::default(),
        resolve_interval: gatehouse_config::Duration::from_secs(30),
        health_check: Default::default(),
        slow_start: None,
        retries: None,
        circuit_breaker: None,
        tls: None,
    };
    let s = UpstreamState::build("u", &up, None);
    let req = |id: &str| {
        let (parts, ()) = http::Request::builder()
            .header("x-user-id", id)
            .body(())
            .unwrap()
            .into_parts();
        parts
    };
    let pick = |id: &str| {
        let key = s.hash_key(&req(id), IpAddr::V4(Ipv4Addr::LOCALHOST));
        s.pick(
            &PickInput {
                client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                hash_key: key,
                sticky: None,
            },
            &[],
        )
        .unwrap()
        .0
        .index
    };
    let mut seen = std::collections::HashSet::new();
    for i in 0..100 {
        let id = format!("u{i}");
        assert_eq!(pick(&id), pick(&id));
        seen.insert(pick(&id));
    }
    assert_eq!(seen.len(), 4, "keys should spread over all targets");
}

#[test]
fn sticky_honours_cookie_and_issues_one_otherwise() {
    let ts = targets(3);
    let w = [1, 1, 1];
    let b = Balancer::new(BalancerKind::Sticky, &pairs(&ts, &w));
    let id = sticky_id(&ts[2].address);
    for _ in 0..10 {
        let p = b
            .pick(
                &ts,
                &w,
                &PickInput {
                    sticky: Some(&id),
                    ..input()
                },
                &|_| true,
            )
            .unwrap();
        assert_eq!((p.index, p.set_cookie), (2, false));
    }
    let p = b
        .pick(
            &ts,
            &w,
            &PickInput {
                sticky: Some("stale"),
                ..input()
            },
            &|_| true,
        )
        .unwrap();
    assert!(p.set_cookie);
}

fn upstream_with(balancer: BalancerKind, n: usize, extra: &str) -> UpstreamState {
    let targets: String = (0..n)
        .map(|i| format!("{{ address: \"127.0.0.1:{}\" }}, ", 9200 + i))
        .collect();
    let yaml = format!(
        "upstreams:\n  u:\n    targets: [{targets}]\n    balancer: {}\n    hash_on: path\n    health_check: {{ passive: {{ consecutive_failures: 1, max_ejected_percent: 100 }} }}\n{extra}",
        match balancer {
            BalancerKind::ConsistentHash => "consistent_hash",
            BalancerKind::LeastConnections => "least_connections",
            _ => "round_robin",
        }
    );
    let loaded = gatehouse_config::load_str(&yaml, "t.yaml").unwrap();
    UpstreamState::build("u", &loaded.config.upstreams["u"], None)
}

fn keyed(key: &str) -> PickInput<'static> {
    PickInput {
        hash_key: Some(hash64(key.as_bytes())),
        ..input()
    }
}

#[test]
fn an_ejected_target_only_moves_its_own_keys() {
    let up = upstream_with(BalancerKind::ConsistentHash, 5, "");
    let keys: Vec<String> = (0..2000).map(|i| format!("/k{i}")).collect();
    let before: Vec<usize> = keys
        .iter()
        .map(|k| up.pick(&keyed(k), &[]).unwrap().0.index)
        .collect();
    up.record_outcome(2, true); // one failure ejects at consecutive_failures: 1
    assert!(
        !up.targets[2]
            .health
            .usable(gatehouse_upstream::clock::now_ms())
    );
    for (k, was) in keys.iter().zip(&before) {
        let now = up.pick(&keyed(k), &[]).unwrap().0.index;
        assert_ne!(now, 2, "no key goes to the ejected target");
        if *was != 2 {
            assert_eq!(now, *was, "key {k} moved although its target is healthy");
        }
    }
}

#[test]
fn every_balancer_skips_unhealthy_and_tried_targets() {
    for kind in [
        BalancerKind::RoundRobin,
        BalancerKind::LeastConnections,
        BalancerKind::ConsistentHash,
    ] {
        let up = upstream_with(kind, 3, "");
        up.record_outcome(0, true);
        for i in 0..200 {
            let k = format!("/x{i}");
            let (p, _) = up.pick(&keyed(&k), &[1]).unwrap();
            assert_eq!(p.index, 2, "{kind:?}: 0 is ejected and 1 was tried");
        }
        // With every healthy target tried, a tried one is reused rather than failing.
        assert_ne!(up.pick(&keyed("/y"), &[1, 2]).unwrap().0.index, 0);
        up.record_outcome(1, true);
        up.record_outcome(2, true);
        assert!(
            up.pick(&keyed("/z"), &[]).is_none(),
            "{kind:?}: none healthy"
        );
        assert!(!up.any_healthy());
    }
}

#[test]
fn slow_start_ramps_a_readmitted_targets_share() {
    let up = upstream_with(BalancerKind::RoundRobin, 2, "    slow_start: 100s\n");
    // Target 1 comes back from an active-check failure: its ramp starts at 10%.
    up.targets[1].health.set_active(false);
    up.targets[1].health.set_active(true);
    let n = 20_000;
    let to_new = (0..n)
        .filter(|_| up.pick(&input(), &[]).unwrap().0.index == 1)
        .count();
    // Round robin offers it half the picks; at a 10% ramp it takes about 5% overall.
    let share = to_new as f64 / n as f64;
    assert!((0.03..0.08).contains(&share), "share {share}");
}
