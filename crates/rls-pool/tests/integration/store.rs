//! PgTenantStore.

use std::num::NonZeroU32;
use std::time::Duration;

use tenantry_core::{
    ApiKeyHash, Placement, Slug, StoreErrorKind, TenantId, TenantStatus, TenantStore,
};
use tenantry_rls_pool::PgTenantStore;
use tenantry_testkit::TestDb;

#[tokio::test]
async fn finds_a_tenant_by_id_slug_and_api_key_with_its_plan_and_overrides() {
    let db = TestDb::new().await;
    let id = db.create_tenant("acme", "pro").await;
    db.admin()
        .batch_execute(&format!(
            "UPDATE tenants SET feature_grants = '{{beta}}', feature_revocations = '{{analytics}}', \
             limit_overrides = '{{\"statement_timeout_ms\": 750, \"max_concurrent_transactions\": 3}}', \
             status = 'suspended', placement = 'schema', placement_target = 'tenant_acme' \
             WHERE id = '{id}'"
        ))
        .await
        .unwrap();
    let key = ApiKeyHash::of("sk_live_acme");
    db.admin()
        .execute(
            "INSERT INTO api_keys (tenant_id, key_hash) VALUES ($1, $2)",
            &[id.as_uuid(), &&key.as_bytes()[..]],
        )
        .await
        .unwrap();
    let store = PgTenantStore::new(db.app_pool(2));

    let t = store.by_id(id).await.unwrap().expect("found by id");
    assert_eq!(t.id(), id);
    assert_eq!(t.slug().as_str(), "acme");
    assert_eq!(t.plan().name(), "pro");
    assert_eq!(t.plan().limits().requests_per_minute, 1000);
    assert_eq!(t.status(), TenantStatus::Suspended);
    assert_eq!(t.placement(), &Placement::Schema("tenant_acme".into()));
    assert!(t.features().contains("beta"));
    assert!(!t.features().contains("analytics"));
    assert_eq!(t.limits().statement_timeout, Duration::from_millis(750));
    assert_eq!(t.limits().max_concurrent_transactions, NonZeroU32::new(3));

    let by_slug = store.by_slug(&Slug::new("acme").unwrap()).await.unwrap();
    assert_eq!(by_slug.as_deref(), Some(&*t));
    let by_key = store.by_api_key(&key).await.unwrap();
    assert_eq!(by_key.as_deref(), Some(&*t));

    assert!(store.by_id(TenantId::new_v4()).await.unwrap().is_none());
    assert!(store
        .by_slug(&Slug::new("nope").unwrap())
        .await
        .unwrap()
        .is_none());
    assert!(store
        .by_api_key(&ApiKeyHash::of("other"))
        .await
        .unwrap()
        .is_none());

    db.admin()
        .execute(
            "UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1",
            &[id.as_uuid()],
        )
        .await
        .unwrap();
    assert!(
        store.by_api_key(&key).await.unwrap().is_none(),
        "revoked key"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_a_store_error_not_a_panic() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("tenantry_app")
        .dbname("x");
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(1)
        .build()
        .unwrap();
    let store = PgTenantStore::new(pool).timeout(Duration::from_secs(2));
    let err = store.by_id(TenantId::new_v4()).await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            StoreErrorKind::Unavailable | StoreErrorKind::Timeout
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_slow_database_is_a_timeout() {
    let db = TestDb::new().await;
    let pool = db.app_pool(1);
    // The only connection is busy: the lookup cannot get one in time.
    let _held = pool.get().await.unwrap();
    let store = PgTenantStore::new(pool).timeout(Duration::from_millis(100));
    let err = store.by_id(TenantId::new_v4()).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Timeout);
}
