//! First-level hit latency and 2-thread throughput of `CachedStore`, against a plain
//! `RwLock<HashMap>`, the in-memory store and a real PostgreSQL store, in one run; then the
//! memory per cached tenant at 1M entries (printed, measured from RSS).
//!
//! `cargo bench -p tenantry-cache --bench lookup -- --warm-up-time 1 --measurement-time 3`

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::sync::{Arc, Barrier, RwLock};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use futures_util::FutureExt;
use tenantry_cache::CachedStore;
use tenantry_core::{InMemoryStore, Plan, Slug, Tenant, TenantId, TenantStore};
use tokio::runtime::Runtime;

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/common/pg.rs"]
mod pg;

const TENANTS: usize = 1_000;

/// Runs a future that is normally ready at once (a first-level hit) without a runtime's
/// overhead; falls back to the runtime if it is not.
fn run<F: Future>(rt: &Runtime, f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().now_or_never() {
        Some(v) => v,
        None => rt.block_on(f),
    }
}

fn tenant(i: usize) -> Tenant {
    Tenant::builder(
        TenantId::new_v4(),
        Slug::new(&format!("tenant-{i}")).expect("valid slug"),
        Plan::pro(),
    )
    .build()
}

/// `iters` operations on each of two threads; wall time.
fn two_threads(iters: u64, op: &(dyn Fn(usize, u64) + Sync)) -> Duration {
    let barrier = Barrier::new(3);
    std::thread::scope(|s| {
        for t in 0..2 {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for i in 0..iters {
                    op(t, i);
                }
            });
        }
        barrier.wait();
        let start = Instant::now();
        // The scope joins both threads before returning.
        start
    })
    .elapsed()
}

struct Fixture {
    rt: Runtime,
    ids: Vec<TenantId>,
    cache: CachedStore<InMemoryStore>,
    map: RwLock<HashMap<TenantId, Arc<Tenant>>>,
    store: InMemoryStore,
    pg: Option<PgFixture>,
}

struct PgFixture {
    ids: Vec<TenantId>,
    /// One runtime and connection per thread.
    stores: Vec<(Runtime, pg::PgStore)>,
    _db: tenantry_testkit::TestDb,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = InMemoryStore::new();
    let mut map = HashMap::new();
    let mut ids = Vec::new();
    for i in 0..TENANTS {
        let t = tenant(i);
        ids.push(t.id());
        map.insert(t.id(), Arc::new(t.clone()));
        store.insert(t);
    }
    let cache = CachedStore::new(store.clone());
    for id in &ids {
        rt.block_on(cache.by_id(*id)).expect("warm");
    }
    let pg = if std::env::var_os("TENANTRY_BENCH_NO_PG").is_some() {
        None
    } else {
        let db = rt.block_on(tenantry_testkit::TestDb::new());
        let mut pg_ids = Vec::new();
        for i in 0..100 {
            pg_ids.push(rt.block_on(db.create_tenant(&format!("bench-{i}"), "pro")));
        }
        // One runtime and connection per thread.
        let stores = (0..2)
            .map(|_| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let store = pg::PgStore::new(rt.block_on(db.connect_app()));
                (rt, store)
            })
            .collect();
        Some(PgFixture {
            ids: pg_ids,
            stores,
            _db: db,
        })
    };
    Fixture {
        rt,
        ids,
        cache,
        map: RwLock::new(map),
        store,
        pg,
    }
}

fn hit_latency(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("hit_latency");
    let mut i = 0usize;
    let mut next = || {
        i = (i + 1) % TENANTS;
        f.ids[i]
    };
    g.bench_function("cached_store", |b| {
        b.iter(|| run(&f.rt, f.cache.by_id(black_box(next()))).expect("hit"))
    });
    g.bench_function("rwlock_hashmap", |b| {
        b.iter(|| f.map.read().expect("lock").get(&black_box(next())).cloned())
    });
    g.bench_function("raw_in_memory_store", |b| {
        b.iter(|| run(&f.rt, f.store.by_id(black_box(next()))).expect("found"))
    });
    if let Some(PgFixture { ids, stores, .. }) = &f.pg {
        let (rt, store) = &stores[0];
        let mut j = 0usize;
        g.bench_function("raw_postgres_store", |b| {
            b.iter(|| {
                j = (j + 1) % ids.len();
                rt.block_on(store.by_id(ids[j])).expect("found")
            })
        });
    }
    g.finish();
}

fn throughput(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("throughput_2_threads");
    g.throughput(Throughput::Elements(2));
    let at = |t: usize, i: u64| f.ids[(i as usize * 7 + t * 501) % TENANTS];
    g.bench_function(BenchmarkId::new("cached_store", 2), |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, i| {
                let found = f.cache.by_id(at(t, i)).now_or_never();
                black_box(found);
            })
        })
    });
    g.bench_function(BenchmarkId::new("rwlock_hashmap", 2), |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, i| {
                black_box(f.map.read().expect("lock").get(&at(t, i)).cloned());
            })
        })
    });
    g.bench_function(BenchmarkId::new("raw_in_memory_store", 2), |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|t, i| {
                black_box(f.store.by_id(at(t, i)).now_or_never());
            })
        })
    });
    if let Some(PgFixture { ids, stores, .. }) = &f.pg {
        g.bench_function(BenchmarkId::new("raw_postgres_store", 2), |b| {
            b.iter_custom(|iters| {
                two_threads(iters, &|t, i| {
                    let (rt, store) = &stores[t];
                    let id = ids[(i as usize + t * 50) % ids.len()];
                    black_box(rt.block_on(store.by_id(id)).expect("found"));
                })
            })
        });
    }
    g.finish();
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Memory per cached tenant at 1M entries: the record itself (shared by the store and the
/// cache) and what the cache adds per entry, next to what a `HashMap<TenantId, Arc<Tenant>>`
/// adds per entry.
fn memory_per_entry() {
    const N: usize = 1_000_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let before = rss_bytes();
    let tenants: Vec<Arc<Tenant>> = (0..N).map(|i| Arc::new(tenant(i))).collect();
    let records = rss_bytes();
    let store = InMemoryStore::new();
    for t in &tenants {
        store.insert((**t).clone());
    }
    let ids: Vec<TenantId> = tenants.iter().map(|t| t.id()).collect();
    let with_store = rss_bytes();
    let cache = CachedStore::builder(store.clone())
        .max_capacity(2 * N as u64)
        .ttl(Duration::from_secs(3600))
        .build()
        .expect("cache");
    rt.block_on(async {
        for id in &ids {
            cache.by_id(*id).await.expect("ok");
        }
        cache.run_pending_tasks().await;
    });
    let with_cache = rss_bytes();
    let mut map: HashMap<TenantId, Arc<Tenant>> = HashMap::new();
    rt.block_on(async {
        for id in &ids {
            map.insert(*id, store.by_id(*id).await.expect("ok").expect("found"));
        }
    });
    let with_map = rss_bytes();
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / N as f64;
    println!(
        "memory at {N} entries (RSS deltas): tenant record (Arc<Tenant>, pro plan) {:.0} B; \
         CachedStore first level adds {:.0} B per entry ({} entries); \
         HashMap<TenantId, Arc<Tenant>> adds {:.0} B per entry; store+ids {:.0} B per tenant",
        per(before, records),
        per(with_store, with_cache),
        cache.entry_count(),
        per(with_cache, with_map),
        per(records, with_store),
    );
    // Everything stays alive until here, so no measured allocation reuses freed memory.
    black_box((&tenants, &cache, &map));
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let f = fixture();
    hit_latency(&mut c, &f);
    throughput(&mut c, &f);
    c.final_summary();
    drop(f);
    if std::env::args().any(|a| a == "--bench") {
        memory_per_entry();
    }
}
