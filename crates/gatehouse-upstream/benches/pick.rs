//! Balancer pick cost per algorithm.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_config::BalancerKind;
use gatehouse_upstream::TargetState;
use gatehouse_upstream::balancer::{Balancer, PickInput};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

fn bench(c: &mut Criterion) {
    let ts: Vec<Arc<TargetState>> = (0..8)
        .map(|i| {
            Arc::new(TargetState::new(
                format!("127.0.0.1:{}", 9000 + i),
                "127.0.0.1".into(),
                9000 + i,
            ))
        })
        .collect();
    let weights = vec![1u32; 8];
    let pairs: Vec<(String, u32)> = ts.iter().map(|t| (t.address.to_string(), 1)).collect();
    let input = PickInput {
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        hash_key: Some(42),
        sticky: None,
    };
    for kind in [
        BalancerKind::RoundRobin,
        BalancerKind::LeastConnections,
        BalancerKind::LeastLatency,
        BalancerKind::Random,
        BalancerKind::ConsistentHash,
    ] {
        let b = Balancer::new(kind, &pairs);
        c.bench_function(&format!("pick {kind:?} x8"), |bn| {
            bn.iter(|| b.pick(black_box(&ts), &weights, black_box(&input), &|_| true))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
