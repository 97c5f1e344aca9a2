//! `TenantDb::query_fused`: a scoped read in one protocol cycle, one statement that sets the
//! tenant context itself. Same isolation and the same clean connections as every other form.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tenantry_core::{LimitOverrides, Placement, Tenant};
use tenantry_rls_pool::{ContextMode, DbErrorKind};

use crate::support::*;

/// Only row-level security can narrow this down to one tenant (`OR true`).
const EVERY_ROW: &str = "SELECT tenant_id, title FROM documents WHERE tenant_id = $1 OR true \
                         ORDER BY title";

#[tokio::test]
async fn each_tenant_sees_only_its_rows_and_the_connection_is_clean_after_every_call() {
    let (db, a, b) = seeded().await;
    let rls = rls(&db, 1);
    let mut pid = None;
    for i in 0..8 {
        let t = if i % 2 == 0 { &a } else { &b };
        let rows = rls
            .for_tenant(t.clone())
            .query_fused(EVERY_ROW, &[t.id().as_uuid()])
            .await
            .unwrap();
        let titles: Vec<String> = rows.iter().map(|r| r.get("title")).collect();
        let expected: &[&str] = if i % 2 == 0 { &["a1", "a2"] } else { &["b1"] };
        assert_eq!(titles, expected, "round {i}");
        assert!(
            rows.iter()
                .all(|r| r.get::<_, uuid::Uuid>("tenant_id") == *t.id().as_uuid()),
            "round {i}: another tenant's row"
        );
        // No tenant, no transaction, no leaked setting; one connection throughout.
        let now = assert_next_checkout_is_clean(&rls, db.admin()).await;
        assert_eq!(*pid.get_or_insert(now), now);
    }
    // Nothing was created on the server: no function, no temporary object.
    let created: i64 = db
        .admin()
        .query_one(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname LIKE 'pg_temp%' OR p.proname LIKE 'tenantry%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, 0);
}

/// Statement shapes whose plans read rows in different places: an aggregate over a scan,
/// scalar subqueries (init plans) in the target list, in `LIMIT` and in a one-time `EXISTS`
/// filter, a materialized CTE, a join, a `UNION ALL`, a set-returning function, a window,
/// row locks. Had any part read before the context was set, it would have seen no row
/// (row-level security with no tenant) and the count would come out short.
#[tokio::test]
async fn the_context_is_set_before_any_part_of_the_statement_reads() {
    let (db, a, b) = seeded().await;
    let rls = rls(&db, 1);
    let shapes = [
        ("SELECT count(*) AS n FROM documents", 1),
        ("SELECT (SELECT count(*) FROM documents) AS n", 1),
        (
            "SELECT count(*) AS n FROM documents WHERE EXISTS (SELECT 1 FROM documents)",
            1,
        ),
        (
            "SELECT id AS n FROM documents WHERE EXISTS (SELECT 1 FROM documents)",
            0,
        ),
        (
            "SELECT count(*) AS n FROM (SELECT title FROM documents ORDER BY title \
             LIMIT (SELECT count(*) FROM documents)) AS l",
            1,
        ),
        (
            "WITH d AS MATERIALIZED (SELECT * FROM documents) SELECT count(*) AS n FROM d",
            1,
        ),
        (
            "SELECT count(*) AS n FROM documents d JOIN documents e \
             ON e.tenant_id = d.tenant_id AND e.id = d.id",
            1,
        ),
        (
            "SELECT count(*) / 2 AS n FROM (SELECT id FROM documents UNION ALL \
             SELECT id FROM documents) AS u",
            1,
        ),
        // A set-returning function whose argument is an init plan, a window over the scan,
        // row locks, and a statement with its own `OFFSET`: each runs below the outer `Limit`.
        (
            "SELECT generate_series(1, (SELECT count(*) FROM documents)) AS n",
            0,
        ),
        ("SELECT count(*) OVER () AS n FROM documents", 0),
        ("SELECT id AS n FROM documents FOR SHARE", 0),
        ("SELECT id AS n FROM documents ORDER BY id OFFSET 0", 0),
    ];
    for (sql, per_document) in shapes {
        for (t, documents) in [(&a, 2_i64), (&b, 1)] {
            let rows = rls
                .for_tenant(t.clone())
                .query_fused(sql, &[])
                .await
                .unwrap();
            if per_document == 1 {
                assert_eq!(rows.len(), 1, "{sql}");
                assert_eq!(rows[0].get::<_, i64>("n"), documents, "{sql}");
            } else {
                // One row per visible document.
                assert_eq!(rows.len() as i64, documents, "{sql}");
            }
        }
    }
    assert_next_checkout_is_clean(&rls, db.admin()).await;
}

#[tokio::test]
async fn a_statement_given_fewer_parameters_than_it_takes_is_an_error() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 1);
    // `$2` must not be bound to the tenant id the call appends.
    let result = rls
        .for_tenant(a.clone())
        .query_fused(
            "SELECT title FROM documents WHERE title = $1 OR $2::text IS NOT NULL",
            &[&"a1"],
        )
        .await;
    assert!(result.is_err(), "{result:?}");
    assert_next_checkout_is_clean(&rls, db.admin()).await;
}

#[tokio::test]
async fn rows_columns_and_types_are_those_of_the_plain_statement() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 2);
    let sql = "SELECT d.id, d.title AS label, d.created_at, ARRAY[d.title, 'x'] AS tags, \
               jsonb_build_object('t', d.title) AS doc, NULL::int AS nothing, $2::text AS echo \
               FROM documents d WHERE d.tenant_id = $1 ORDER BY label DESC -- a trailing comment";
    let tenant_db = rls.for_tenant(a.clone());
    let echo = "it's \"quoted\"; $1 -- not a comment".to_owned();
    let fused = tenant_db
        .query_fused(sql, &[a.id().as_uuid(), &echo])
        .await
        .unwrap();
    let plain = tenant_db
        .query_cached(sql, &[a.id().as_uuid(), &echo])
        .await
        .unwrap();
    assert_eq!(fused.len(), 2);
    assert_eq!(fused.len(), plain.len());
    let names = |rows: &[tokio_postgres::Row]| -> Vec<(String, String)> {
        rows[0]
            .columns()
            .iter()
            .map(|c| (c.name().to_owned(), c.type_().name().to_owned()))
            .collect()
    };
    assert_eq!(names(&fused), names(&plain));
    for (f, p) in fused.iter().zip(&plain) {
        assert_eq!(f.get::<_, uuid::Uuid>("id"), p.get::<_, uuid::Uuid>("id"));
        assert_eq!(f.get::<_, String>("label"), p.get::<_, String>("label"));
        assert_eq!(
            f.get::<_, std::time::SystemTime>("created_at"),
            p.get::<_, std::time::SystemTime>("created_at")
        );
        assert_eq!(
            f.get::<_, Vec<String>>("tags"),
            p.get::<_, Vec<String>>("tags")
        );
        assert_eq!(
            f.get::<_, serde_json::Value>("doc"),
            p.get::<_, serde_json::Value>("doc")
        );
        assert_eq!(f.get::<_, Option<i32>>("nothing"), None);
        assert_eq!(f.get::<_, String>("echo"), echo);
    }
    assert_eq!(
        fused[0].get::<_, String>("label"),
        "a2",
        "ORDER BY an output alias"
    );
}

#[tokio::test]
async fn writes_are_refused_and_nothing_is_written() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 1);
    let err = rls
        .for_tenant(a.clone())
        .query_fused(
            "INSERT INTO documents (tenant_id, title) VALUES ($1, 'fused-write') RETURNING id",
            &[a.id().as_uuid()],
        )
        .await
        .unwrap_err();
    assert_ne!(err.kind(), DbErrorKind::Closed, "{err}");
    assert_eq!(count_documents_as_admin(&db, "fused-write").await, 0);
    let err = rls
        .for_tenant(a.clone())
        .query_fused(
            "WITH gone AS (DELETE FROM documents RETURNING id) SELECT count(*) FROM gone",
            &[],
        )
        .await
        .unwrap_err();
    assert_ne!(err.kind(), DbErrorKind::Closed, "{err}");
    assert_eq!(count_documents_as_admin(&db, "a1").await, 1);
    assert_next_checkout_is_clean(&rls, db.admin()).await;
    // A statement without rows cannot be wrapped at all.
    let err = rls
        .for_tenant(a.clone())
        .query_fused("UPDATE documents SET title = title", &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), DbErrorKind::Internal, "{err}");
    assert_next_checkout_is_clean(&rls, db.admin()).await;
}

#[tokio::test]
async fn the_plan_timeout_is_enforced_and_the_statement_cancelled() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 1);
    let fast = with_statement_timeout(&a, 150);
    let start = Instant::now();
    let err = rls
        .for_tenant(fast.clone())
        .query_fused("SELECT 1 AS one FROM pg_sleep(5)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), DbErrorKind::Timeout, "{err}");
    assert_eq!(err.to_problem().status(), 503);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // The statement stops on the server (cancelled), well before its 5 s.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let running: i64 = db
            .admin()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE query LIKE '%pg_sleep(5)%' AND state = 'active' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if running == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the slow statement still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection was not reused; the pool hands out a clean one, and fast calls work.
    assert_next_checkout_is_clean(&rls, db.admin()).await;
    let rows = rls
        .for_tenant(fast)
        .query_fused("SELECT title FROM documents ORDER BY title", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
}

#[tokio::test]
async fn a_dropped_call_leaves_the_next_checkout_clean() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 1);
    let tenant_db = rls.for_tenant(a.clone());
    let call = tenant_db.query_fused("SELECT title FROM documents, pg_sleep(0.3)", &[]);
    assert!(tokio::time::timeout(Duration::from_millis(100), call)
        .await
        .is_err());
    assert_next_checkout_is_clean(&rls, db.admin()).await;
}

#[tokio::test]
async fn session_state_resets_between_calls_change_nothing() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 1);
    let read = || async {
        rls.for_tenant(a.clone())
            .query_fused(EVERY_ROW, &[a.id().as_uuid()])
            .await
            .unwrap()
            .len()
    };
    assert_eq!(read().await, 2);
    // What `RecyclingMethod::Clean` does between checkouts; the call depends on nothing of
    // the session but its prepared statement.
    rls.pool()
        .get()
        .await
        .unwrap()
        .batch_execute("DISCARD TEMP")
        .await
        .unwrap();
    assert_eq!(read().await, 2);
    assert_next_checkout_is_clean(&rls, db.admin()).await;
}

#[tokio::test]
async fn concurrent_mixed_tenants_never_see_a_wrong_row() {
    let (db, a, b) = seeded().await;
    let rls = rls(&db, 4);
    let tenants: [Arc<Tenant>; 2] = [a, b];
    let results = join_all((0..200).map(|i| {
        let t = tenants[i % 2].clone();
        let rls = rls.clone();
        async move {
            let rows = rls
                .for_tenant(t.clone())
                .query_fused(EVERY_ROW, &[t.id().as_uuid()])
                .await
                .unwrap();
            (t, rows)
        }
    }))
    .await;
    for (t, rows) in results {
        assert_eq!(
            rows.len(),
            if t.slug().as_str() == "tenant-a" {
                2
            } else {
                1
            }
        );
        assert!(rows
            .iter()
            .all(|r| r.get::<_, uuid::Uuid>(0) == *t.id().as_uuid()));
    }
    assert_next_checkout_is_clean(&rls, db.admin()).await;
}

#[tokio::test]
async fn citus_mode_and_schema_placement_use_the_transaction_form() {
    let (db, a, b) = seeded().await;
    let citus = builder(&db, 1).mode(ContextMode::Citus).build().unwrap();
    let rows = citus
        .for_tenant(b.clone())
        .query_fused(EVERY_ROW, &[b.id().as_uuid()])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_next_checkout_is_clean(&citus, db.admin()).await;

    // A schema tenant: its own documents table in its schema, reached through search_path.
    db.admin()
        .batch_execute(
            "CREATE SCHEMA fused_schema; \
             CREATE TABLE fused_schema.documents (LIKE public.documents INCLUDING ALL); \
             ALTER TABLE fused_schema.documents ENABLE ROW LEVEL SECURITY; \
             ALTER TABLE fused_schema.documents FORCE ROW LEVEL SECURITY; \
             CREATE POLICY p ON fused_schema.documents USING (tenant_id = current_tenant_id()) \
               WITH CHECK (tenant_id = current_tenant_id()); \
             GRANT USAGE ON SCHEMA fused_schema TO tenantry_app; \
             GRANT SELECT ON fused_schema.documents TO tenantry_app;",
        )
        .await
        .unwrap();
    db.admin()
        .execute(
            "INSERT INTO fused_schema.documents (tenant_id, title, content) \
             VALUES ($1, 'in-schema', ''), ($2, 'intruder', '')",
            &[a.id().as_uuid(), b.id().as_uuid()],
        )
        .await
        .unwrap();
    let placed = Arc::new(
        Tenant::builder(a.id(), a.slug().clone(), a.plan().clone())
            .placement(Placement::Schema("fused_schema".into()))
            .build(),
    );
    let rls = rls(&db, 1);
    let rows = rls
        .for_tenant(placed)
        .query_fused(EVERY_ROW, &[a.id().as_uuid()])
        .await
        .unwrap();
    let titles: Vec<String> = rows.iter().map(|r| r.get("title")).collect();
    assert_eq!(titles, ["in-schema"]);
    assert_next_checkout_is_clean(&rls, db.admin()).await;
}

/// Holds the only connection of `rls` in an open transaction of tenant `t` for `hold`.
async fn hold_the_connection(
    rls: &tenantry_rls_pool::RlsPool,
    t: &Arc<Tenant>,
    hold: Duration,
) -> tokio::task::JoinHandle<()> {
    let tx = rls.for_tenant(t.clone()).begin().await.unwrap();
    tx.query("SELECT 1", &[]).await.unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        tx.commit().await.unwrap();
    })
}

#[tokio::test]
async fn the_plan_timeout_counts_from_the_statement_not_from_the_wait_for_a_connection() {
    // The wait for a connection and the statement share one timer; the statement's limit
    // starts when the statement does.
    // A 600 ms wait (of 900 allowed), then a 500 ms statement (of 800 allowed): 1.1 s in
    // all, past either limit counted from the start of the call.
    let (db, a, b) = seeded().await;
    let rls = builder(&db, 1)
        .checkout_timeout(Duration::from_millis(900))
        .build()
        .unwrap();
    let limited = with_statement_timeout(&b, 800);
    let holder = hold_the_connection(&rls, &a, Duration::from_millis(600)).await;
    let start = Instant::now();
    let rows = rls
        .for_tenant(limited)
        .query_fused("SELECT 1 AS one FROM pg_sleep(0.5)", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(
        start.elapsed() > Duration::from_millis(1000),
        "{:?}",
        start.elapsed()
    );
    holder.await.unwrap();
    assert_next_checkout_is_clean(&rls, db.admin()).await;
}

#[tokio::test]
async fn after_a_wait_for_a_connection_the_plan_timeout_still_cancels_the_statement() {
    let (db, a, b) = seeded().await;
    let rls = builder(&db, 1)
        .checkout_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let limited = with_statement_timeout(&b, 300);
    let holder = hold_the_connection(&rls, &a, Duration::from_millis(400)).await;
    let start = Instant::now();
    let err = rls
        .for_tenant(limited)
        .query_fused("SELECT 1 AS one FROM pg_sleep(5)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), DbErrorKind::Timeout, "{err}");
    let elapsed = start.elapsed();
    assert!(
        elapsed > Duration::from_millis(650) && elapsed < Duration::from_secs(3),
        "a 400 ms wait, then 300 ms of statement: {elapsed:?}"
    );
    holder.await.unwrap();
    assert_next_checkout_is_clean(&rls, db.admin()).await;
}

#[tokio::test]
async fn a_fused_call_waits_for_a_connection_only_up_to_the_checkout_timeout() {
    let (db, a, b) = seeded().await;
    let rls = builder(&db, 1)
        .checkout_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let holder = hold_the_connection(&rls, &a, Duration::from_secs(2)).await;
    let start = Instant::now();
    let err = rls
        .for_tenant(b.clone())
        .query_fused(EVERY_ROW, &[b.id().as_uuid()])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), DbErrorKind::PoolExhausted, "{err}");
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    holder.await.unwrap();
}

#[tokio::test]
async fn a_fused_call_waits_for_a_tenant_slot_only_up_to_the_tenant_wait() {
    let (db, a, _) = seeded().await;
    let rls = builder(&db, 4)
        .tenant_wait(Duration::from_millis(200))
        .build()
        .unwrap();
    let capped = with_overrides(
        &a,
        LimitOverrides {
            max_concurrent_transactions: std::num::NonZeroU32::new(1),
            ..Default::default()
        },
    );
    let held = rls.for_tenant(capped.clone()).begin().await.unwrap();
    let start = Instant::now();
    let err = rls
        .for_tenant(capped.clone())
        .query_fused(EVERY_ROW, &[capped.id().as_uuid()])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), DbErrorKind::TenantBusy, "{err}");
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    held.rollback().await.unwrap();
    // The slot is free again: the same call goes through.
    let rows = rls
        .for_tenant(capped.clone())
        .query_fused(EVERY_ROW, &[capped.id().as_uuid()])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
}
