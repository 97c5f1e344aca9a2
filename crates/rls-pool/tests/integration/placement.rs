//! Shared, schema and database placement behind one API.

use std::sync::Arc;

use tenantry_core::{Placement, Plan, Slug, Tenant};
use tenantry_rls_pool::{DbError, TenantDb};
use tenantry_testkit::TestDb;

use crate::support::*;

/// A handler that does not know where its tenant's rows live.
async fn titles(db: TenantDb) -> Result<Vec<String>, DbError> {
    let id = db.tenant().id();
    let tx = db.begin().await?;
    let rows = tx
        .query(
            "SELECT title FROM documents WHERE tenant_id = $1 ORDER BY title",
            &[id.as_uuid()],
        )
        .await?;
    let all = tx.query("SELECT count(*) FROM documents", &[]).await?;
    tx.commit().await?;
    assert_eq!(
        all[0].get::<_, i64>(0),
        rows.len() as i64,
        "RLS shows only own rows"
    );
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

fn dsn(config: &tokio_postgres::Config) -> String {
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        #[allow(unreachable_patterns)]
        other => panic!("unsupported host {other:?}"),
    };
    let mut dsn = format!(
        "host={host} port={} user={} dbname={}",
        config.get_ports()[0],
        config.get_user().unwrap(),
        config.get_dbname().unwrap()
    );
    if let Some(p) = config.get_password() {
        dsn.push_str(&format!(" password={}", String::from_utf8_lossy(p)));
    }
    dsn
}

#[tokio::test]
async fn the_same_handler_serves_a_shared_a_schema_and_a_database_tenant() {
    let (db, shared, _) = seeded().await;

    // Schema placement: the same tables in the tenant's own schema, RLS still on.
    let schema_id = db.create_tenant("schema-t", "pro").await;
    db.admin()
        .batch_execute(&format!(
            "CREATE SCHEMA \"tenant schema\";
             CREATE TABLE \"tenant schema\".documents (LIKE public.documents INCLUDING ALL);
             ALTER TABLE \"tenant schema\".documents ENABLE ROW LEVEL SECURITY;
             ALTER TABLE \"tenant schema\".documents FORCE ROW LEVEL SECURITY;
             CREATE POLICY tenant_isolation ON \"tenant schema\".documents
                 USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());
             GRANT USAGE ON SCHEMA \"tenant schema\" TO tenantry_app;
             GRANT SELECT, INSERT, UPDATE, DELETE ON \"tenant schema\".documents TO tenantry_app;
             INSERT INTO \"tenant schema\".documents (tenant_id, title) VALUES ('{schema_id}', 's1');
             INSERT INTO \"tenant schema\".documents (tenant_id, title) VALUES ('{}', 'intruder');",
            shared.id()
        ))
        .await
        .unwrap();
    let schema_tenant = Arc::new(
        Tenant::builder(schema_id, Slug::new("schema-t").unwrap(), Plan::pro())
            .placement(Placement::Schema("tenant schema".into()))
            .build(),
    );

    // Database placement: its own database.
    let other = TestDb::new().await;
    let db_id = other.create_tenant("db-t", "pro").await;
    other.insert_document(db_id, "d1").await;
    other.insert_document(db_id, "d2").await;
    let database_tenant = Arc::new(
        Tenant::builder(db_id, Slug::new("db-t").unwrap(), Plan::pro())
            .placement(Placement::Database(dsn(&other.app_config()).into()))
            .build(),
    );

    let rls = rls(&db, 1);
    for _ in 0..2 {
        assert_eq!(
            titles(rls.for_tenant(shared.clone())).await.unwrap(),
            ["a1", "a2"]
        );
        assert_eq!(
            titles(rls.for_tenant(schema_tenant.clone())).await.unwrap(),
            ["s1"]
        );
        assert_eq!(
            titles(rls.for_tenant(database_tenant.clone()))
                .await
                .unwrap(),
            ["d1", "d2"]
        );
    }
    assert_eq!(
        rls.database_pool_count(),
        1,
        "one pool per database, reused"
    );
    // The schema tenant's search_path did not stay on the shared connection.
    assert_next_checkout_is_clean(&rls, db.admin()).await;
}

#[tokio::test]
async fn database_pools_are_bounded() {
    let (db, _, _) = seeded().await;
    let rls = builder(&db, 1).max_database_pools(1).build().unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let other = TestDb::new().await;
        let id = other.create_tenant("db-t", "pro").await;
        other.insert_document(id, "mine").await;
        let t = Arc::new(
            Tenant::builder(id, Slug::new("db-t").unwrap(), Plan::pro())
                .placement(Placement::Database(dsn(&other.app_config()).into()))
                .build(),
        );
        assert_eq!(titles(rls.for_tenant(t)).await.unwrap(), ["mine"]);
        assert_eq!(rls.database_pool_count(), 1);
        seen.push(other);
    }
}

#[tokio::test]
async fn an_invalid_database_dsn_is_an_error_not_a_panic() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 1);
    let broken = Arc::new(
        Tenant::builder(a.id(), a.slug().clone(), Plan::pro())
            .placement(Placement::Database(
                "host=127.0.0.1 port=notaport password=hunter2".into(),
            ))
            .build(),
    );
    let err = titles(rls.for_tenant(broken)).await.unwrap_err();
    assert!(!err.to_string().contains("hunter2"));
    assert!(!format!("{:?}", err.to_problem()).contains("hunter2"));
}

#[tokio::test]
async fn idle_database_pools_are_evicted() {
    let (db, _, _) = seeded().await;
    let rls = builder(&db, 1)
        .database_pool_idle(std::time::Duration::from_millis(100))
        .build()
        .unwrap();
    let mut keep = Vec::new();
    for i in 0..2 {
        let other = TestDb::new().await;
        let id = other.create_tenant("db-t", "pro").await;
        other.insert_document(id, "mine").await;
        let t = Arc::new(
            Tenant::builder(id, Slug::new("db-t").unwrap(), Plan::pro())
                .placement(Placement::Database(dsn(&other.app_config()).into()))
                .build(),
        );
        assert_eq!(titles(rls.for_tenant(t)).await.unwrap(), ["mine"]);
        // Well under the bound of 32 pools: only idleness can have removed the first.
        assert_eq!(rls.database_pool_count(), 1, "round {i}");
        keep.push(other);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
