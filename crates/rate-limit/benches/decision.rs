//! In-process decision cost against governor's keyed limiter, and memory per key at 1M keys.
//!
//! `cargo bench -p tenantry-rate-limit --bench decision -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput};
use governor::{Quota as GQuota, RateLimiter};
use tenantry_core::TenantId;
use tenantry_rate_limit::{LocalLimiter, Quota, RateKey};

fn keys(n: usize) -> Vec<RateKey> {
    let policy: Arc<str> = Arc::from("default");
    (0..n)
        .map(|_| RateKey::new(TenantId::new_v4(), Arc::clone(&policy)))
        .collect()
}

fn decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision");
    group.throughput(Throughput::Elements(1));
    for n in [1usize, 10_000] {
        let keys = keys(n);
        // A quota high enough that every decision is an allow that updates state, on both sides.
        let ours = LocalLimiter::new();
        let quota = Quota::per_minute(60_000_000, 1_000_000).unwrap();
        let one = NonZeroU32::MIN;
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::new("tenantry_local", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                black_box(ours.decide(&keys[i], quota, one).unwrap().is_allowed())
            })
        });
        let theirs = RateLimiter::keyed(
            GQuota::per_minute(NonZeroU32::new(60_000_000).unwrap())
                .allow_burst(NonZeroU32::new(1_000_000).unwrap()),
        );
        let mut j = 0usize;
        group.bench_with_input(BenchmarkId::new("governor_keyed", n), &n, |b, _| {
            b.iter(|| {
                j = (j + 1) % keys.len();
                black_box(theirs.check_key(&keys[j]).is_ok())
            })
        });
    }
    group.finish();
}

/// Resident set size in bytes, from /proc/self/statm (Linux).
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn memory_per_key() {
    const N: usize = 1_000_000;
    let keys = keys(N);
    let quota = Quota::per_minute(1, 1).unwrap(); // every key stays limited: nothing is swept
    let Some(before) = rss() else {
        println!("memory: /proc/self/statm unavailable");
        return;
    };
    let ours = LocalLimiter::builder().max_keys(N + N / 2).build().unwrap();
    for k in &keys {
        ours.decide(k, quota, NonZeroU32::MIN).unwrap();
    }
    let after_ours = rss().unwrap_or(before);
    assert_eq!(ours.len(), N);
    drop(ours);
    let before_g = rss().unwrap_or(before);
    let theirs = RateLimiter::keyed(GQuota::per_minute(NonZeroU32::MIN));
    for k in &keys {
        let _ = theirs.check_key(k);
    }
    let after_g = rss().unwrap_or(before_g);
    println!(
        "memory per key at {N} keys (RSS delta, keys' own 32 B shared): tenantry_local {:.1} B, governor_keyed {:.1} B",
        after_ours.saturating_sub(before) as f64 / N as f64,
        after_g.saturating_sub(before_g) as f64 / N as f64,
    );
    drop(theirs);
}

/// The criterion benchmarks.
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    decisions(&mut c);
}

fn main() {
    benches();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: skip the 1M-key run there.
    if std::env::args().any(|a| a == "--bench") {
        memory_per_key();
    }
    Criterion::default().configure_from_args().final_summary();
}
