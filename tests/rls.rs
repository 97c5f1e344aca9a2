//! Row-level security at the SQL level, as the application role, on real PostgreSQL.
//!
//! These tests guard DESIGN.md invariants 1 to 4 in the migrations themselves: each fails if
//! FORCE, the NULLIF in `current_tenant_id()`, a policy's WITH CHECK or a composite key is
//! removed.

use tenantry_core::TenantId;
use tenantry_testkit::{TestDb, APP_ROLE, OWNER_ROLE};
use tokio_postgres::{Client, GenericClient};

/// Starts a transaction on `client` with the tenant context set the way rls-pool sets it.
async fn begin_as(client: &Client, tenant: &str) {
    client.batch_execute("BEGIN").await.unwrap();
    client
        .query("SELECT set_config('app.tenant_id', $1, true)", &[&tenant])
        .await
        .unwrap();
}

async fn count_documents(client: &impl GenericClient) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT count(*) FROM documents", &[])
        .await?
        .get(0))
}

async fn seeded() -> (TestDb, TenantId, TenantId) {
    let db = TestDb::new().await;
    let (a, b) = db.two_tenants().await;
    db.insert_document(a, "a1").await;
    db.insert_document(a, "a2").await;
    db.insert_document(b, "b1").await;
    (db, a, b)
}

#[tokio::test]
async fn without_context_select_returns_no_rows() {
    let (db, _, _) = seeded().await;
    assert_eq!(count_documents(db.app()).await.unwrap(), 0);
    assert_eq!(
        count_documents(db.admin()).await.unwrap(),
        3,
        "fixture seeded 3 rows"
    );
}

#[tokio::test]
async fn without_context_insert_is_refused() {
    let (db, a, _) = seeded().await;
    let err = db
        .app()
        .execute(
            "INSERT INTO documents (tenant_id, title) VALUES ($1, 'x')",
            &[a.as_uuid()],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501", "{err}"); // insufficient_privilege (RLS)
}

#[tokio::test]
async fn empty_context_returns_no_rows_and_no_error() {
    let (db, _, _) = seeded().await;
    begin_as(db.app(), "").await;
    assert_eq!(count_documents(db.app()).await.unwrap(), 0);
    db.app().batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn context_from_a_finished_transaction_reads_as_empty_and_shows_no_rows() {
    let (db, a, _) = seeded().await;
    begin_as(db.app(), &a.to_string()).await;
    assert_eq!(count_documents(db.app()).await.unwrap(), 2);
    db.app().batch_execute("COMMIT").await.unwrap();
    // The setting now reads '' (not NULL) on this connection: NULLIF must turn it into NULL.
    let setting: Option<String> = db
        .app()
        .query_one("SELECT current_setting('app.tenant_id', true)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(setting.as_deref(), Some(""));
    assert_eq!(count_documents(db.app()).await.unwrap(), 0);
}

#[tokio::test]
async fn non_uuid_context_is_a_clean_error_not_rows() {
    let (db, _, _) = seeded().await;
    for bad in ["null", "not-a-uuid", "' OR true --"] {
        begin_as(db.app(), bad).await;
        let err = count_documents(db.app()).await.unwrap_err();
        assert_eq!(err.code().unwrap().code(), "22P02", "{bad}: {err}"); // invalid_text_representation
        db.app().batch_execute("ROLLBACK").await.unwrap();
    }
}

#[tokio::test]
async fn tenant_a_reads_only_its_own_rows() {
    let (db, a, b) = seeded().await;
    begin_as(db.app(), &a.to_string()).await;
    let rows = db
        .app()
        .query("SELECT tenant_id, title FROM documents", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|r| r.get::<_, uuid::Uuid>(0) == *a.as_uuid()));
    // Even naming tenant B explicitly finds nothing.
    let n: i64 = db
        .app()
        .query_one(
            "SELECT count(*) FROM documents WHERE tenant_id = $1",
            &[b.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    db.app().batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn tenant_a_cannot_insert_a_row_for_tenant_b() {
    let (db, a, b) = seeded().await;
    begin_as(db.app(), &a.to_string()).await;
    let err = db
        .app()
        .execute(
            "INSERT INTO documents (tenant_id, title) VALUES ($1, 'planted')",
            &[b.as_uuid()],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501", "{err}");
    db.app().batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn tenant_a_cannot_move_its_row_to_tenant_b() {
    let (db, a, b) = seeded().await;
    begin_as(db.app(), &a.to_string()).await;
    let err = db
        .app()
        .execute("UPDATE documents SET tenant_id = $1", &[b.as_uuid()])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501", "{err}");
    db.app().batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn tenant_a_cannot_update_or_delete_tenant_b_rows() {
    let (db, a, b) = seeded().await;
    begin_as(db.app(), &a.to_string()).await;
    let updated = db
        .app()
        .execute(
            "UPDATE documents SET title = 'pwned' WHERE tenant_id = $1",
            &[b.as_uuid()],
        )
        .await
        .unwrap();
    let deleted = db
        .app()
        .execute("DELETE FROM documents WHERE tenant_id = $1", &[b.as_uuid()])
        .await
        .unwrap();
    db.app().batch_execute("COMMIT").await.unwrap();
    assert_eq!((updated, deleted), (0, 0));
    let titles: Vec<String> = db
        .admin()
        .query(
            "SELECT title FROM documents WHERE tenant_id = $1",
            &[b.as_uuid()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(titles, ["b1"]);
}

#[tokio::test]
async fn composite_foreign_key_refuses_another_tenants_row() {
    let (db, a, b) = seeded().await;
    let b_doc = db.insert_document(b, "b-secret").await;
    begin_as(db.app(), &a.to_string()).await;
    let err = db
        .app()
        .execute(
            "INSERT INTO document_revisions (tenant_id, document_id, title, content) \
             VALUES ($1, $2, 't', 'c')",
            &[a.as_uuid(), &b_doc],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "23503", "{err}"); // foreign_key_violation
    db.app().batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn table_owner_is_subject_to_rls_because_it_is_forced() {
    let (db, _, _) = seeded().await;
    let admin = db.connect_admin().await;
    admin
        .batch_execute(&format!("SET ROLE {OWNER_ROLE}"))
        .await
        .unwrap();
    assert_eq!(count_documents(&admin).await.unwrap(), 0);
}

#[tokio::test]
async fn app_role_is_not_superuser_nor_bypassrls_and_owns_nothing() {
    let db = TestDb::new().await;
    let row = db
        .app()
        .query_one(
            "SELECT current_user::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), APP_ROLE);
    assert!(!row.get::<_, bool>(1), "app role is superuser");
    assert!(!row.get::<_, bool>(2), "app role has BYPASSRLS");
    let owned: i64 = db
        .admin()
        .query_one(
            "SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid) \
                  + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid) \
                  + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid) \
             FROM pg_roles r WHERE rolname = $1",
            &[&APP_ROLE],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owned, 0, "app role owns objects");
}

#[tokio::test]
async fn app_role_has_only_dml_privileges_and_an_idle_transaction_timeout() {
    let db = TestDb::new().await;
    let extra: Vec<String> = db
        .admin()
        .query(
            "SELECT table_name || ':' || privilege_type FROM information_schema.role_table_grants \
             WHERE grantee = $1 AND privilege_type NOT IN ('SELECT','INSERT','UPDATE','DELETE')",
            &[&APP_ROLE],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(extra.is_empty(), "unexpected privileges: {extra:?}");
    let err = db
        .app()
        .batch_execute("TRUNCATE documents")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");
    let timeout: String = db
        .app()
        .query_one("SHOW idle_in_transaction_session_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(
        timeout, "0",
        "idle_in_transaction_session_timeout not set for the app role"
    );
}

#[tokio::test]
async fn every_tenant_scoped_table_has_forced_rls_and_a_checked_policy() {
    let db = TestDb::new().await;
    let rows = db
        .admin()
        .query(
            "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity, \
                    (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid), \
                    (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid \
                       AND p.polqual IS NOT NULL AND p.polwithcheck IS NOT NULL \
                       AND pg_get_expr(p.polqual, p.polrelid) LIKE '%current_tenant_id()%' \
                       AND pg_get_expr(p.polwithcheck, p.polrelid) LIKE '%current_tenant_id()%') \
             FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' \
             WHERE c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace \
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        names,
        ["api_keys", "document_revisions", "documents", "webhooks"]
    );
    for r in &rows {
        let name: String = r.get(0);
        assert!(r.get::<_, bool>(1), "{name}: RLS not enabled");
        assert!(r.get::<_, bool>(2), "{name}: RLS not forced");
        assert_eq!(r.get::<_, i64>(3), 1, "{name}: expected exactly one policy");
        assert_eq!(
            r.get::<_, i64>(4),
            1,
            "{name}: policy lacks USING/WITH CHECK on current_tenant_id()"
        );
    }
}

#[tokio::test]
async fn api_key_lookup_returns_only_the_tenant_of_a_live_key() {
    let (db, a, _) = seeded().await;
    let hash = tenantry_core::ApiKeyHash::of("tk_live_example");
    let revoked = tenantry_core::ApiKeyHash::of("tk_revoked");
    db.admin()
        .execute(
            "INSERT INTO api_keys (tenant_id, key_hash) VALUES ($1, $2)",
            &[a.as_uuid(), &hash.as_bytes().as_slice()],
        )
        .await
        .unwrap();
    db.admin()
        .execute(
            "INSERT INTO api_keys (tenant_id, key_hash, revoked_at) VALUES ($1, $2, now())",
            &[a.as_uuid(), &revoked.as_bytes().as_slice()],
        )
        .await
        .unwrap();
    let db = &db;
    let lookup = |h: tenantry_core::ApiKeyHash| async move {
        db.app()
            .query_one("SELECT tenant_for_api_key($1)", &[&h.as_bytes().as_slice()])
            .await
            .unwrap()
            .get::<_, Option<uuid::Uuid>>(0)
    };
    assert_eq!(lookup(hash).await, Some(*a.as_uuid()));
    assert_eq!(lookup(revoked).await, None);
    assert_eq!(lookup(tenantry_core::ApiKeyHash::of("unknown")).await, None);
    // The table itself stays invisible without context.
    let n: i64 = db
        .app()
        .query_one("SELECT count(*) FROM api_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}
