//! Shared fixtures.

use std::sync::Arc;
use std::time::Duration;

use tenantry_core::{LimitOverrides, Plan, Slug, Tenant, TenantId};
use tenantry_rls_pool::{RlsPool, RlsPoolBuilder};
use tenantry_testkit::TestDb;
use tokio_postgres::Client;

/// A fresh database with tenants `tenant-a` (2 documents) and `tenant-b` (1 document).
pub(crate) async fn seeded() -> (TestDb, Arc<Tenant>, Arc<Tenant>) {
    let db = TestDb::new().await;
    let (a, b) = db.two_tenants().await;
    db.insert_document(a, "a1").await;
    db.insert_document(a, "a2").await;
    db.insert_document(b, "b1").await;
    (
        db,
        tenant(a, "tenant-a", Plan::pro()),
        tenant(b, "tenant-b", Plan::free()),
    )
}

pub(crate) fn tenant(id: TenantId, slug: &str, plan: Plan) -> Arc<Tenant> {
    Arc::new(Tenant::builder(id, Slug::new(slug).unwrap(), plan).build())
}

pub(crate) fn with_overrides(t: &Tenant, overrides: LimitOverrides) -> Arc<Tenant> {
    Arc::new(
        Tenant::builder(t.id(), t.slug().clone(), t.plan().clone())
            .placement(t.placement().clone())
            .limit_overrides(overrides)
            .build(),
    )
}

/// `t` with its plan's statement timeout overridden to `ms`.
pub(crate) fn with_statement_timeout(t: &Tenant, ms: u64) -> Arc<Tenant> {
    with_overrides(
        t,
        LimitOverrides {
            statement_timeout_ms: Some(ms),
            ..Default::default()
        },
    )
}

pub(crate) fn builder(db: &TestDb, size: usize) -> RlsPoolBuilder {
    RlsPool::builder(db.app_pool(size))
        .checkout_timeout(Duration::from_secs(5))
        .tenant_wait(Duration::from_secs(5))
}

pub(crate) fn rls(db: &TestDb, size: usize) -> RlsPool {
    builder(db, size).build().unwrap()
}

/// The tenant ids of the documents a tenant transaction can read.
pub(crate) async fn visible_tenants(rls: &RlsPool, t: &Arc<Tenant>) -> Vec<uuid::Uuid> {
    let tx = rls.for_tenant(t.clone()).begin().await.unwrap();
    let rows = tx
        .query("SELECT tenant_id FROM documents", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// Checks out the next connection of `rls` and asserts that it carries no tenant, no
/// transaction, and the server defaults: seen from the connection itself and from
/// `pg_stat_activity` on a second (administrative) connection. Returns its backend pid.
pub(crate) async fn assert_next_checkout_is_clean(rls: &RlsPool, admin: &Client) -> i32 {
    let client = tokio::time::timeout(Duration::from_secs(10), rls.pool().get())
        .await
        .expect("checkout in time")
        .expect("checkout");
    let row = client
        .query_one(
            "SELECT pg_backend_pid(), COALESCE(current_setting('app.tenant_id', true), ''), \
                    current_setting('statement_timeout'), current_setting('search_path'), \
                    current_setting('transaction_read_only')",
            &[],
        )
        .await
        .unwrap();
    let pid: i32 = row.get(0);
    assert_eq!(row.get::<_, String>(1), "", "a tenant is still set");
    assert_eq!(row.get::<_, String>(2), "0", "statement_timeout leaked");
    assert_eq!(
        row.get::<_, String>(3),
        "\"$user\", public",
        "search_path leaked"
    );
    assert_eq!(row.get::<_, String>(4), "off", "read-only leaked");
    // Had the connection been left inside a transaction, the query above would have run in it
    // and the backend would now be 'idle in transaction'.
    let state: String = admin
        .query_one("SELECT state FROM pg_stat_activity WHERE pid = $1", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "idle", "connection left in a transaction");
    pid
}

pub(crate) async fn count_documents_as_admin(db: &TestDb, title: &str) -> i64 {
    db.admin()
        .query_one("SELECT count(*) FROM documents WHERE title = $1", &[&title])
        .await
        .unwrap()
        .get(0)
}
