//! Cost of the protection checks on the request path, and the client table's memory
//! (the bounds: one per-IP limiter decision under 100 ns; the table keeps its
//! size under 10 million distinct addresses at no more than 160 bytes per address).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_core::Offence;
use gatehouse_proxy::client_rate::ClientRates;
use gatehouse_proxy::client_table::{BanPolicy, ClientTable};
use gatehouse_proxy::protection::counted_as;
use std::hint::black_box;
use std::net::IpAddr;

/// Resident memory of this process, in bytes (Linux): the table's footprint as the OS
/// sees it, allocator overhead and fragmentation included.
fn rss() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn v4(i: u32) -> IpAddr {
    IpAddr::from((0x0a00_0000u32.wrapping_add(i)).to_be_bytes())
}

fn policy() -> BanPolicy {
    BanPolicy {
        after: 10,
        within_ms: 60_000,
        duration_ms: 600_000,
        max_ms: 86_400_000,
        triggers: u8::MAX,
    }
}

/// 10 million distinct addresses through a table of 100,000: its size holds, and the
/// bytes it holds per address are printed.
fn memory() {
    let before = rss();
    let t = ClientTable::new(100_000, 100_000, None);
    let p = policy();
    let start = std::time::Instant::now();
    for i in 0..10_000_000u32 {
        t.offend(v4(i), Offence::BadRequest, Some(&p), 1);
    }
    let took = start.elapsed();
    let s = t.stats(1);
    let held = rss() - before;
    assert!(s.clients_tracked <= 100_000 + 16);
    println!(
        "client table: 10,000,000 addresses in {:.2} s ({:.0} ns each); {} tracked, {} evicted; {} bytes resident more, {:.1} bytes per address",
        took.as_secs_f64(),
        took.as_nanos() as f64 / 1e7,
        s.clients_tracked,
        s.clients_evicted,
        held,
        held as f64 / s.clients_tracked as f64
    );
    drop(t);
}

fn bench(c: &mut Criterion) {
    memory();
    let rates = ClientRates::default();
    let cfg = gatehouse_config::RequestRate {
        limit: 1_000_000,
        per: gatehouse_config::Duration(std::time::Duration::from_secs(1)),
        burst: None,
    };
    let limiter = rates.limiter(Some(&cfg)).unwrap();
    let now = gatehouse_policies::limiter::now();
    let mut i = 0u32;
    c.bench_function("request_rate_per_ip decision (10k addresses)", |b| {
        b.iter(|| {
            i = (i + 1) % 10_000;
            black_box(limiter.check(counted_as(v4(i), 64), now).allowed)
        })
    });
    let t = ClientTable::new(100_000, 100_000, None);
    c.bench_function("ban check, no ban held", |b| {
        b.iter(|| black_box(t.banned(v4(7), 1)))
    });
    for n in 0..1000 {
        t.ban(v4(n * 3), 600_000, "bench", 1);
    }
    let mut j = 0u32;
    c.bench_function("ban check, 1,000 bans held", |b| {
        b.iter(|| {
            j = (j + 1) % 3000;
            black_box(t.banned(v4(j), 2))
        })
    });
    let p = policy();
    let mut k = 0u32;
    c.bench_function("offence recorded (100k addresses)", |b| {
        b.iter(|| {
            k = (k + 1) % 100_000;
            black_box(t.offend(v4(0x0100_0000 + k), Offence::RateLimit, Some(&p), 3))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
