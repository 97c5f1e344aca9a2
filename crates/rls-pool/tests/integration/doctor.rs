//! The preflight doctor (DESIGN.md invariant 2).

use tenantry_rls_pool::{ContextMode, DoctorReport, RlsPool};
use tenantry_testkit::TestDb;

async fn doctor(db: &TestDb) -> DoctorReport {
    RlsPool::new(db.app_pool(1)).doctor().await
}

fn only_failure(report: &DoctorReport, name: &str) {
    let failed: Vec<_> = report.failures().map(|c| c.name).collect();
    assert_eq!(failed, [name], "{report}");
}

#[tokio::test]
async fn doctor_passes_on_the_migrated_database() {
    let db = TestDb::new().await;
    let report = doctor(&db).await;
    assert!(report.is_ok(), "{report}");
    assert!(report.checks().len() >= 6);
    assert!(report.into_result().is_ok());
}

#[tokio::test]
async fn doctor_fails_for_a_superuser_role() {
    let db = TestDb::new().await;
    let manager = deadpool_postgres::Manager::new(db.admin_config(), tokio_postgres::NoTls);
    let admin_pool = deadpool_postgres::Pool::builder(manager)
        .max_size(1)
        .build()
        .unwrap();
    let report = RlsPool::new(admin_pool).doctor().await;
    assert!(!report.is_ok());
    assert!(report.failed("role_not_superuser"), "{report}");
    assert!(report.into_result().is_err());
}

#[tokio::test]
async fn doctor_fails_on_a_table_without_force() {
    let db = TestDb::new().await;
    db.admin()
        .batch_execute(
            "CREATE TABLE leaky (tenant_id uuid NOT NULL, body text);
             ALTER TABLE leaky ENABLE ROW LEVEL SECURITY;
             CREATE POLICY p ON leaky USING (tenant_id = current_tenant_id())
                 WITH CHECK (tenant_id = current_tenant_id());",
        )
        .await
        .unwrap();
    let report = doctor(&db).await;
    only_failure(&report, "tenant_tables_force_rls");
    assert!(
        report.to_string().contains("leaky: RLS not forced"),
        "{report}"
    );
}

#[tokio::test]
async fn doctor_fails_on_a_table_without_rls_or_policy() {
    let db = TestDb::new().await;
    db.admin()
        .batch_execute("CREATE TABLE open_table (tenant_id uuid NOT NULL)")
        .await
        .unwrap();
    let report = doctor(&db).await;
    assert!(report.failed("tenant_tables_force_rls"), "{report}");
    assert!(report.failed("tenant_tables_checked_policies"), "{report}");
}

#[tokio::test]
async fn doctor_fails_on_a_policy_without_with_check() {
    let db = TestDb::new().await;
    db.admin()
        .batch_execute(
            "CREATE TABLE unchecked (tenant_id uuid NOT NULL);
             ALTER TABLE unchecked ENABLE ROW LEVEL SECURITY;
             ALTER TABLE unchecked FORCE ROW LEVEL SECURITY;
             CREATE POLICY p ON unchecked USING (tenant_id = current_tenant_id());",
        )
        .await
        .unwrap();
    let report = doctor(&db).await;
    only_failure(&report, "tenant_tables_checked_policies");
    assert!(report.to_string().contains("lacks WITH CHECK"), "{report}");
}

#[tokio::test]
async fn doctor_fails_on_a_view_that_is_not_security_invoker() {
    let db = TestDb::new().await;
    db.admin()
        .batch_execute(
            "CREATE VIEW all_docs AS SELECT * FROM documents;
             CREATE VIEW safe_docs WITH (security_invoker = true) AS SELECT * FROM documents;",
        )
        .await
        .unwrap();
    let report = doctor(&db).await;
    only_failure(&report, "views_security_invoker");
    assert!(report.to_string().contains("all_docs"));
    assert!(!report.to_string().contains("safe_docs"));
}

#[tokio::test]
async fn doctor_fails_on_a_role_level_default_tenant() {
    let db = TestDb::new().await;
    db.admin()
        .batch_execute(&format!(
            "ALTER ROLE tenantry_app IN DATABASE \"{}\" SET app.tenant_id = '{}'",
            db.name(),
            tenantry_core::TenantId::new_v4()
        ))
        .await
        .unwrap();
    let report = doctor(&db).await;
    only_failure(&report, "no_default_tenant");
}

#[tokio::test]
async fn doctor_fails_when_the_app_role_owns_a_table() {
    let db = TestDb::new().await;
    db.admin()
        .batch_execute("CREATE TABLE owned (id int); ALTER TABLE owned OWNER TO tenantry_app;")
        .await
        .unwrap();
    let report = doctor(&db).await;
    only_failure(&report, "role_owns_nothing");
}

#[tokio::test]
async fn doctor_in_citus_mode_requires_local_set_propagation() {
    let db = TestDb::new().await;
    let rls = RlsPool::builder(db.app_pool(1))
        .mode(ContextMode::Citus)
        .build()
        .unwrap();
    let report = rls.doctor().await;
    // Plain PostgreSQL has no citus.propagate_set_commands: Citus mode must not pass here.
    only_failure(&report, "citus_propagate_set_commands");
}
