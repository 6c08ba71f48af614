//! Cost of one local rate-limit decision per algorithm (the bound: under 100 ns),
//! over 10,000 active keys, with the key hashed from a client IP as the policy does.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_policies::limiter::{Algorithm, Limiter, Rate, now};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

fn bench(c: &mut Criterion) {
    let rate = Rate {
        limit: 1_000_000,
        per_ns: 1_000_000_000,
        burst: 1_000_000,
    };
    for alg in [
        Algorithm::TokenBucket,
        Algorithm::LeakyBucket,
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
    ] {
        let l = Limiter::new(alg, rate, 100_000);
        let ips: Vec<IpAddr> = (0..10_000u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        for ip in &ips {
            l.check(l.key((1u8, ip)), now());
        }
        let mut i = 0usize;
        c.bench_function(&format!("decide {alg:?} (10k keys)"), |b| {
            b.iter(|| {
                i = (i + 1) % ips.len();
                let key = l.key((1u8, black_box(ips[i])));
                black_box(l.check(key, now()))
            })
        });
    }
    // The exact log keeps up to `limit` times per key: a smaller limit, as it is used.
    let l = Limiter::new(
        Algorithm::SlidingLog,
        Rate {
            limit: 100,
            per_ns: 1_000_000_000,
            burst: 0,
        },
        100_000,
    );
    let mut i = 0u32;
    c.bench_function("decide SlidingLog (limit 100, 10k keys)", |b| {
        b.iter(|| {
            i = (i + 1) % 10_000;
            let key = l.key((1u8, black_box(i)));
            black_box(l.check(key, now()))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
