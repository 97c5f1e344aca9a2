//! A 50-row scoped read through a tenant transaction, against the same query on a copy of the
//! table with no RLS and no transaction, over the same pool, in the same run.
//!
//! `cargo bench -p tenantry-rls-pool -- --warm-up-time 1 --measurement-time 3`
//!
//! Each iteration runs 64 concurrent requests over a pool of 8 connections; the throughput
//! ratio is `unscoped time / scoped time`.
#![allow(missing_docs)]

use std::sync::Arc;

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
    let (db, rls, tenants) = rt.block_on(async {
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
        (db, rls, tenants)
    });

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

criterion_group!(benches, bench);
criterion_main!(benches);
