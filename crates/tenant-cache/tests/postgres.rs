//! The cache over a real PostgreSQL database (testkit), through a one-query test store.

mod common;

use std::time::Duration;

use common::pg::PgStore;
use futures_util::future::join_all;
use tenantry_cache::CachedStore;
use tenantry_core::{ApiKeyHash, Slug, TenantId, TenantStatus, TenantStore};
use tenantry_testkit::TestDb;

async fn store(db: &TestDb) -> PgStore {
    PgStore::new(db.connect_app().await)
}

#[tokio::test]
async fn cache_over_postgres_answers_hits_without_queries_and_sees_a_suspension_after_invalidate() {
    let db = TestDb::new().await;
    let id = db.create_tenant("acme", "pro").await;
    let key = ApiKeyHash::of("tk_live_acme");
    db.admin()
        .execute(
            "INSERT INTO api_keys (tenant_id, key_hash) VALUES ($1, $2)",
            &[id.as_uuid(), &key.as_bytes().as_slice()],
        )
        .await
        .unwrap();
    let pg = store(&db).await;
    let cache = CachedStore::new(pg.clone());
    let slug = Slug::new("acme").unwrap();

    for _ in 0..3 {
        assert_eq!(cache.by_id(id).await.unwrap().unwrap().plan().name(), "pro");
        assert_eq!(cache.by_slug(&slug).await.unwrap().unwrap().id(), id);
        assert_eq!(cache.by_api_key(&key).await.unwrap().unwrap().id(), id);
    }
    assert_eq!(pg.queries(), 3, "one query per key, then first-level hits");

    db.admin()
        .execute(
            "UPDATE tenants SET status = 'suspended', plan = 'enterprise' WHERE id = $1",
            &[id.as_uuid()],
        )
        .await
        .unwrap();
    assert!(cache.by_id(id).await.unwrap().unwrap().is_active());
    cache.invalidate(id).await.unwrap();
    for t in [
        cache.by_id(id).await.unwrap().unwrap(),
        cache.by_slug(&slug).await.unwrap().unwrap(),
        cache.by_api_key(&key).await.unwrap().unwrap(),
    ] {
        assert_eq!(t.status(), TenantStatus::Suspended);
        assert_eq!(t.plan().name(), "enterprise");
    }

    // A revoked key stops resolving once its tenant is invalidated.
    db.admin()
        .execute("UPDATE api_keys SET revoked_at = now()", &[])
        .await
        .unwrap();
    cache.invalidate(id).await.unwrap();
    assert!(cache.by_api_key(&key).await.unwrap().is_none());
}

#[tokio::test]
async fn unknown_tenants_cost_one_postgres_query_per_negative_ttl() {
    let db = TestDb::new().await;
    let pg = store(&db).await;
    let cache = CachedStore::builder(pg.clone())
        .negative_ttl(Duration::from_millis(300))
        .build()
        .unwrap();
    let ghost = TenantId::new_v4();
    for _ in 0..50 {
        assert!(cache.by_id(ghost).await.unwrap().is_none());
        assert!(cache
            .by_slug(&Slug::new("nobody").unwrap())
            .await
            .unwrap()
            .is_none());
    }
    assert_eq!(pg.queries(), 2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(cache.by_id(ghost).await.unwrap().is_none());
    assert_eq!(pg.queries(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_lookups_make_one_postgres_query() {
    let db = TestDb::new().await;
    let id = db.create_tenant("busy", "free").await;
    let pg = store(&db).await;
    let cache = CachedStore::new(pg.clone());
    let results = join_all((0..100).map(|_| {
        let cache = cache.clone();
        tokio::spawn(async move { cache.by_id(id).await })
    }))
    .await;
    for r in results {
        assert_eq!(r.unwrap().unwrap().unwrap().id(), id);
    }
    assert_eq!(pg.queries(), 1);
    assert_eq!(cache.stats().store_queries, 1);
}
