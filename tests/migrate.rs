//! The migration runner: in order, idempotent, and strict about edited migrations.

use tenantry::migrate::{self, MigrateErrorKind, Migration, MIGRATIONS};
use tenantry_testkit::TestDb;

#[tokio::test]
async fn rerunning_the_migrations_is_a_no_op() {
    let db = TestDb::new().await; // already migrated from the template
    let mut admin = db.connect_admin().await;
    let report = migrate::run(&mut admin).await.unwrap();
    assert!(report.applied.is_empty(), "{report:?}");
    assert_eq!(report.already_applied.len(), MIGRATIONS.len());
}

#[tokio::test]
async fn an_edited_applied_migration_is_an_error() {
    let db = TestDb::new().await;
    let mut admin = db.connect_admin().await;
    let mut edited: Vec<Migration> = MIGRATIONS.to_vec();
    edited[2].sql = "SELECT 1; -- edited after it was applied";
    let err = migrate::run_migrations(&mut admin, &edited)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), MigrateErrorKind::Modified);
    assert_eq!(err.version(), Some(3));
}

#[tokio::test]
async fn a_migration_unknown_to_this_build_is_an_error() {
    let db = TestDb::new().await;
    let mut admin = db.connect_admin().await;
    let err = migrate::run_migrations(&mut admin, &MIGRATIONS[..2])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), MigrateErrorKind::Unknown);
}

#[tokio::test]
async fn a_new_migration_is_applied_once_and_a_failing_one_changes_nothing() {
    let db = TestDb::new().await;
    let mut admin = db.connect_admin().await;
    let mut more: Vec<Migration> = MIGRATIONS.to_vec();
    more.push(Migration {
        version: 1000,
        name: "extra",
        sql: "CREATE TABLE extra (x int)",
    });
    assert_eq!(
        migrate::run_migrations(&mut admin, &more)
            .await
            .unwrap()
            .applied,
        [1000]
    );
    assert!(migrate::run_migrations(&mut admin, &more)
        .await
        .unwrap()
        .applied
        .is_empty());

    more.push(Migration {
        version: 1001,
        name: "broken",
        sql: "CREATE TABLE ok (x int); SELEC 1",
    });
    let err = migrate::run_migrations(&mut admin, &more)
        .await
        .unwrap_err();
    assert_eq!(err.version(), Some(1001));
    let exists: bool = admin
        .query_one("SELECT to_regclass('ok') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        !exists,
        "a failed run must not leave part of a migration behind"
    );
}

#[tokio::test]
async fn a_slug_that_reads_as_a_uuid_is_refused_like_in_core() {
    let db = TestDb::new().await;
    for slug in [
        "0d5e1f7a-3b8c-4d2e-9f10-a1b2c3d4e5f6",
        "0d5e1f7a3b8c4d2e9f10a1b2c3d4e5f6",
    ] {
        assert!(tenantry_core::Slug::new(slug).is_err());
        let err = db
            .admin()
            .execute(
                "INSERT INTO tenants (slug, plan) VALUES ($1, 'free')",
                &[&slug],
            )
            .await
            .unwrap_err();
        assert_eq!(err.code().unwrap().code(), "23514", "{slug}: {err}"); // check_violation
    }
    db.create_tenant("acme-2024", "free").await;
}
