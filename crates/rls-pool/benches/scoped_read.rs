//! A 50-row scoped read through a tenant transaction, against the same query on a copy of the
//! table with no RLS and no transaction, over the same pool, in the same run.
//!
//! `cargo bench -p tenantry-rls-pool -- --warm-up-time 1 --measurement-time 3`
//!
//! Each iteration runs 64 concurrent requests over a pool of 8 connections; the throughput
//! ratio is `unscoped time / scoped time`, against the unscoped query prepared once per
//! connection (the fastest plain form). The interleaved ratios print before criterion runs
//! (`cargo bench -p tenantry-rls-pool --bench scoped_read -- nomatch` prints only them).
//!
//! `RlsSessionContext` is a floor, not a way to run: the plain statement under row-level
//! security on connections whose tenant was set once, at connection start, for the session (a
//! pool per tenant, half the connections each). No statement sets anything, so it is what
//! PostgreSQL's row-level security costs by itself. `RawFused` sends `Fused`'s statement on a
//! bare pool client, without `RlsPool`: the gap between `RlsSessionContext` and it is what
//! setting the context in every statement costs the server, the gap between it and `Fused` what
//! the wrapper costs in the client. `RawFusedTimers` is `RawFused` with a `tokio::time::timeout`
//! around each of its two waits (for a connection and for the statement), as `Fused` armed them
//! before its waits shared one timer.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::future::join_all;
use tenantry_core::{Plan, Slug, Tenant};
use tenantry_rls_pool::RlsPool;
use tenantry_testkit::TestDb;
use tokio_postgres::types::Type;

const CONCURRENT: usize = 64;
const POOL: usize = 8;
const SCOPED: &str = "SELECT id, title, created_at FROM documents WHERE tenant_id = $1 \
                      ORDER BY created_at DESC, id DESC LIMIT 50";
const PLAIN: &str = "SELECT id, title, created_at FROM bench_plain WHERE tenant_id = $1 \
                     ORDER BY created_at DESC, id DESC LIMIT 50";

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (db, rls, tenants, session) = rt.block_on(async {
        let db = TestDb::new().await;
        let (a, b) = db.two_tenants().await;
        db.admin()
            .batch_execute(&format!(
                "INSERT INTO documents (tenant_id, title, content)
                     SELECT t, 'doc ' || i, repeat('x', 200)
                     FROM unnest(ARRAY['{a}'::uuid, '{b}'::uuid]) t, generate_series(1, 200) i;
                 CREATE TABLE bench_plain AS SELECT * FROM documents;
                 CREATE INDEX ON bench_plain (tenant_id, created_at DESC, id DESC);
                 GRANT SELECT ON bench_plain TO tenantry_app;
                 ANALYZE documents; ANALYZE bench_plain;"
            ))
            .await
            .unwrap();
        let rls = RlsPool::builder(db.app_pool(POOL))
            .per_tenant_caps(false)
            .build()
            .unwrap();
        let tenants = [
            Arc::new(Tenant::builder(a, Slug::new("tenant-a").unwrap(), Plan::pro()).build()),
            Arc::new(Tenant::builder(b, Slug::new("tenant-b").unwrap(), Plan::free()).build()),
        ];
        // The floor: a pool per tenant, its tenant set for the whole session at connect.
        let session = tenants.clone().map(|t| {
            let mut config = db.app_config();
            config.options(format!("-c app.tenant_id={}", t.id()));
            tenantry_testkit::pool(config, POOL / 2)
        });
        (db, rls, tenants, session)
    });

    rt.block_on(interleaved_ratios(&rls, &tenants, &session));

    let mut group = c.benchmark_group("scoped_read_50_rows");
    group.throughput(Throughput::Elements(CONCURRENT as u64));
    group.bench_function("unscoped_no_rls_no_tx", |bench| {
        bench.to_async(&rt).iter(|| {
            join_all((0..CONCURRENT).map(|i| {
                let pool = rls.pool().clone();
                let id = *tenants[i % 2].id().as_uuid();
                async move {
                    let client = pool.get().await.unwrap();
                    let rows = client
                        .query_typed(PLAIN, &[(&id, Type::UUID)])
                        .await
                        .unwrap();
                    assert_eq!(rows.len(), 50);
                }
            }))
        })
    });
    group.bench_function("unscoped_prepared", |bench| {
        bench.to_async(&rt).iter(|| {
            join_all((0..CONCURRENT).map(|i| {
                let pool = rls.pool().clone();
                let id = *tenants[i % 2].id().as_uuid();
                async move {
                    let client = pool.get().await.unwrap();
                    let statement = client.prepare_cached(PLAIN).await.unwrap();
                    let rows = client.query(&statement, &[&id]).await.unwrap();
                    assert_eq!(rows.len(), 50);
                }
            }))
        })
    });
    group.bench_function("tenant_tx_one_round_trip", |bench| {
        bench.to_async(&rt).iter(|| {
            join_all((0..CONCURRENT).map(|i| {
                let db = rls.for_tenant(tenants[i % 2].clone());
                async move {
                    let id = *db.tenant().id().as_uuid();
                    let rows = db.query_typed(SCOPED, &[(&id, Type::UUID)]).await.unwrap();
                    assert_eq!(rows.len(), 50);
                }
            }))
        })
    });
    let prepared = RlsPool::builder(rls.pool().clone())
        .per_tenant_caps(false)
        .prepared_context(true)
        .build()
        .unwrap();
    group.bench_function("tenant_tx_one_round_trip_prepared_context", |bench| {
        bench.to_async(&rt).iter(|| {
            join_all((0..CONCURRENT).map(|i| {
                let db = prepared.for_tenant(tenants[i % 2].clone());
                async move {
                    let id = *db.tenant().id().as_uuid();
                    let rows = db.query_typed(SCOPED, &[(&id, Type::UUID)]).await.unwrap();
                    assert_eq!(rows.len(), 50);
                }
            }))
        })
    });
    group.bench_function("tenant_fused_one_cycle", |bench| {
        bench.to_async(&rt).iter(|| {
            join_all((0..CONCURRENT).map(|i| {
                let db = rls.for_tenant(tenants[i % 2].clone());
                async move {
                    let id = *db.tenant().id().as_uuid();
                    let rows = db.query_fused(SCOPED, &[&id]).await.unwrap();
                    assert_eq!(rows.len(), 50);
                }
            }))
        })
    });
    group.bench_function("tenant_tx_begin_query_commit", |bench| {
        bench.to_async(&rt).iter(|| {
            join_all((0..CONCURRENT).map(|i| {
                let db = rls.for_tenant(tenants[i % 2].clone());
                async move {
                    let id = *db.tenant().id().as_uuid();
                    let tx = db.begin().await.unwrap();
                    let rows = tx.query_typed(SCOPED, &[(&id, Type::UUID)]).await.unwrap();
                    tx.commit().await.unwrap();
                    assert_eq!(rows.len(), 50);
                }
            }))
        })
    });
    group.finish();
    drop(rls);
    drop(db);
}

#[derive(Clone, Copy, Debug)]
enum Variant {
    UnscopedPrepared,
    Unscoped,
    OneShot,
    OneShotPreparedContext,
    BeginQueryCommit,
    RawPipelined,
    RawPreparedContext,
    RawInlinePrologue,
    Fused,
    RawFused,
    RawFusedTimers,
    RlsSessionContext,
}

/// One batch of `CONCURRENT` requests of `variant`; returns its duration.
async fn batch(
    rls: &RlsPool,
    tenants: &[Arc<Tenant>; 2],
    session: &[deadpool_postgres::Pool; 2],
    variant: Variant,
) -> Duration {
    // The same deadpool pool, with the context statement prepared per connection.
    let prepared = RlsPool::builder(rls.pool().clone())
        .per_tenant_caps(false)
        .prepared_context(true)
        .build()
        .unwrap();
    // `SCOPED` as `query_fused` sends it, for the raw variants.
    let fused = Arc::new(tenantry_rls_pool::fused_statement(SCOPED, 1));
    let start = Instant::now();
    join_all((0..CONCURRENT).map(|i| {
        let tenant = tenants[i % 2].clone();
        let rls = rls.clone();
        let prepared = prepared.clone();
        let session = session[i % 2].clone();
        let fused = fused.clone();
        async move {
            let id = *tenant.id().as_uuid();
            let rows = match variant {
                // The baseline: the plain query, prepared once per connection.
                Variant::UnscopedPrepared => {
                    let client = rls.pool().get().await.unwrap();
                    let statement = client.prepare_cached(PLAIN).await.unwrap();
                    client.query(&statement, &[&id]).await.unwrap()
                }
                Variant::Unscoped => {
                    let client = rls.pool().get().await.unwrap();
                    client
                        .query_typed(PLAIN, &[(&id, Type::UUID)])
                        .await
                        .unwrap()
                }
                Variant::OneShot => rls
                    .for_tenant(tenant)
                    .query_typed(SCOPED, &[(&id, Type::UUID)])
                    .await
                    .unwrap(),
                Variant::Fused => rls
                    .for_tenant(tenant)
                    .query_fused(SCOPED, &[&id])
                    .await
                    .unwrap(),
                Variant::RawFused => {
                    let client = rls.pool().get().await.unwrap();
                    let statement = client.prepare_cached(&fused).await.unwrap();
                    client
                        .query(&statement, &[&id, &id.to_string()])
                        .await
                        .unwrap()
                }
                Variant::RawFusedTimers => {
                    let client = tokio::time::timeout(Duration::from_secs(30), rls.pool().get())
                        .await
                        .unwrap()
                        .unwrap();
                    let statement = client.prepare_cached(&fused).await.unwrap();
                    tokio::time::timeout(
                        Duration::from_secs(5),
                        client.query(&statement, &[&id, &id.to_string()]),
                    )
                    .await
                    .unwrap()
                    .unwrap()
                }
                Variant::RlsSessionContext => {
                    let client = session.get().await.unwrap();
                    let statement = client.prepare_cached(SCOPED).await.unwrap();
                    client.query(&statement, &[&id]).await.unwrap()
                }
                Variant::OneShotPreparedContext => prepared
                    .for_tenant(tenant)
                    .query_typed(SCOPED, &[(&id, Type::UUID)])
                    .await
                    .unwrap(),
                Variant::BeginQueryCommit => {
                    let tx = rls.for_tenant(tenant).begin().await.unwrap();
                    let rows = tx.query_typed(SCOPED, &[(&id, Type::UUID)]).await.unwrap();
                    tx.commit().await.unwrap();
                    rows
                }
                // The floor: the same four statements joined on a bare client, no wrapper.
                Variant::RawPipelined => {
                    let client = rls.pool().get().await.unwrap();
                    let text = id.to_string();
                    let (b, c, q, e) = futures_util::future::join4(
                        client.batch_execute("BEGIN"),
                        client.query_typed(
                            "SELECT set_config('app.tenant_id', $1, true), \
                             set_config('statement_timeout', $2, true)",
                            &[(&text, Type::TEXT), (&"5000", Type::TEXT)],
                        ),
                        client.query_typed(SCOPED, &[(&id, Type::UUID)]),
                        client.batch_execute("COMMIT"),
                    )
                    .await;
                    b.unwrap();
                    c.unwrap();
                    e.unwrap();
                    q.unwrap()
                }
                // The floor with the context statement prepared once per connection.
                Variant::RawPreparedContext => {
                    let client = rls.pool().get().await.unwrap();
                    let ctx = client
                        .prepare_typed_cached(
                            "SELECT set_config('app.tenant_id', $1, true), \
                             set_config('statement_timeout', $2, true)",
                            &[Type::TEXT, Type::TEXT],
                        )
                        .await
                        .unwrap();
                    let text = id.to_string();
                    let (b, c, q, e) = futures_util::future::join4(
                        client.batch_execute("BEGIN"),
                        client.query(&ctx, &[&text, &"5000"]),
                        client.query_typed(SCOPED, &[(&id, Type::UUID)]),
                        client.batch_execute("COMMIT"),
                    )
                    .await;
                    b.unwrap();
                    c.unwrap();
                    e.unwrap();
                    q.unwrap()
                }
                // BEGIN and the context in one simple-protocol message: three cycles.
                Variant::RawInlinePrologue => {
                    let client = rls.pool().get().await.unwrap();
                    let prologue = format!(
                        "BEGIN; SELECT set_config('app.tenant_id', '{id}', true), \
                         set_config('statement_timeout', '5000', true)"
                    );
                    let (b, q, e) = futures_util::future::join3(
                        client.batch_execute(&prologue),
                        client.query_typed(SCOPED, &[(&id, Type::UUID)]),
                        client.batch_execute("COMMIT"),
                    )
                    .await;
                    b.unwrap();
                    e.unwrap();
                    q.unwrap()
                }
            };
            assert_eq!(rows.len(), 50);
        }
    }))
    .await;
    start.elapsed()
}

/// The machine this runs on is shared and noisy: alternate the variants round by round (each
/// round runs `BATCHES` batches of one variant), then compare the fastest rounds (least
/// disturbed by other processes) and the median rounds.
async fn interleaved_ratios(
    rls: &RlsPool,
    tenants: &[Arc<Tenant>; 2],
    session: &[deadpool_postgres::Pool; 2],
) {
    const BATCHES: usize = 8;
    const ROUNDS: usize = 25;
    let variants = [
        Variant::UnscopedPrepared,
        Variant::Unscoped,
        Variant::OneShot,
        Variant::OneShotPreparedContext,
        Variant::BeginQueryCommit,
        Variant::RawPipelined,
        Variant::RawPreparedContext,
        Variant::RawInlinePrologue,
        Variant::Fused,
        Variant::RawFused,
        Variant::RawFusedTimers,
        Variant::RlsSessionContext,
    ];
    for v in variants {
        batch(rls, tenants, session, v).await; // warm up: connections, caches
    }
    let mut rounds = vec![Vec::with_capacity(ROUNDS); variants.len()];
    for _ in 0..ROUNDS {
        for (i, v) in variants.iter().enumerate() {
            let mut total = Duration::ZERO;
            for _ in 0..BATCHES {
                total += batch(rls, tenants, session, *v).await;
            }
            rounds[i].push(total.as_secs_f64());
        }
    }
    for r in &mut rounds {
        r.sort_by(f64::total_cmp);
    }
    let (best, median) = (rounds[0][0], rounds[0][ROUNDS / 2]);
    for (v, r) in variants.iter().zip(&rounds) {
        eprintln!(
            "throughput vs unscoped (prepared), {v:?}: fastest rounds {:.2}x, median rounds {:.2}x",
            best / r[0],
            median / r[ROUNDS / 2],
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
