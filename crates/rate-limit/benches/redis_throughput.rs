//! Redis decisions per second from one instance, to compare with `redis-benchmark` running
//! the same EVALSHA on the same machine.
//!
//! `cargo bench -p tenantry-rate-limit --bench redis_throughput` (Redis at
//! `TENANTRY_REDIS_URL`, default `redis://127.0.0.1:6379`). Prints the script's SHA and the
//! matching `redis-benchmark` command. `KEYS` (default 10,000) sets how many keys the tasks
//! cycle through; `KEYS=1` is one busy tenant, where coalescing applies; `COALESCE=0` turns
//! coalescing off for comparison.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tenantry_core::TenantId;
use tenantry_rate_limit::{Limiter, Quota, RateKey, RedisLimiter};

fn main() {
    // Only under `cargo bench` (which passes `--bench`), not `cargo test --benches`.
    if std::env::args().all(|a| a != "--bench") {
        return;
    }
    let url =
        std::env::var("TENANTRY_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let concurrency: usize = std::env::var("CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seconds: u64 = std::env::var("SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let key_count: usize = std::env::var("KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(10_000);
    let coalesce = std::env::var("COALESCE").map_or(true, |v| v != "0");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let limiter = RedisLimiter::builder(url)
            .key_prefix("tenantry-bench:rl:")
            .timeout(Duration::from_secs(1))
            .negative_cache(false)
            .coalesce(coalesce)
            .build()
            .await
            .unwrap();
        let quota = Quota::per_minute(60_000_000, 1_000_000).unwrap();
        let policy: Arc<str> = Arc::from("bench");
        let keys: Vec<RateKey> = (0..key_count).map(|_| RateKey::new(TenantId::new_v4(), Arc::clone(&policy))).collect();
        // Warm up (loads the script).
        limiter.check(&keys[0], quota, NonZeroU32::MIN).await.unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..concurrency)
            .map(|t| {
                let limiter = limiter.clone();
                let keys = keys.clone();
                let done = Arc::clone(&done);
                tokio::spawn(async move {
                    let mut i = t;
                    while Instant::now() < deadline {
                        i = (i + concurrency) % keys.len();
                        limiter.check(&keys[i], quota, NonZeroU32::MIN).await.unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let start = Instant::now();
        for t in tasks {
            t.await.unwrap();
        }
        let n = done.load(Ordering::Relaxed);
        let stats = limiter.stats();
        println!(
            "tenantry RedisLimiter: {n} decisions in {:.2?} = {:.0}/s ({concurrency} concurrent, {key_count} keys, coalesce {coalesce}, 1 client connection, {} calls, failures {})",
            start.elapsed(),
            n as f64 / start.elapsed().as_secs_f64(),
            stats.redis_calls,
            stats.redis_failures
        );
        let sha = fred::util::sha1_hash(RedisLimiter::SCRIPT);
        println!(
            "compare: redis-cli SCRIPT LOAD \"$(cat crates/rate-limit/src/gcra.lua)\" && \
             redis-benchmark -c {concurrency} -n 500000 -r 10000 -q EVALSHA {sha} 1 'tenantry-bench:rl:{{__rand_int__}}:bench' '' 1 1 60000000"
        );
    });
}
