//! TenantDb / TenantTx: isolation, pipelining outcomes, drop safety, errors, the layer.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use tenantry_core::Tenant;
use tenantry_rls_pool::{Access, ContextMode, DbError, DbErrorKind, RlsLayer, TenantDb};
use tokio_postgres::types::Type;
use tower::{service_fn, ServiceBuilder, ServiceExt};

use crate::support::*;

#[tokio::test]
async fn interleaved_tenants_on_a_pool_of_one_never_see_a_wrong_row() {
    let (db, a, b) = seeded().await;
    let rls = rls(&db, 1);
    let mut pid = None;
    for i in 0..12 {
        let t = if i % 2 == 0 { &a } else { &b };
        let expected = if i % 2 == 0 { 2 } else { 1 };
        let rows = match i % 3 {
            // begin / query / commit
            0 => visible_tenants(&rls, t).await,
            // one round trip: BEGIN, context, query, COMMIT pipelined
            1 => rls
                .for_tenant(t.clone())
                .query_typed("SELECT tenant_id FROM documents", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect(),
            // the closure form
            _ => rls
                .for_tenant(t.clone())
                .run(|tx| async move {
                    let rows = tx.query("SELECT tenant_id FROM documents", &[]).await?;
                    Ok::<_, DbError>(rows.iter().map(|r| r.get(0)).collect::<Vec<_>>())
                })
                .await
                .unwrap(),
        };
        assert_eq!(rows.len(), expected, "round {i}");
        assert!(
            rows.iter().all(|id| id == t.id().as_uuid()),
            "round {i}: wrong tenant's row"
        );
        let now = assert_next_checkout_is_clean(&rls, db.admin()).await;
        assert_eq!(
            *pid.get_or_insert(now),
            now,
            "one connection served every request"
        );
    }
}

#[tokio::test]
async fn the_plan_sets_statement_timeout_and_a_slow_statement_is_a_retryable_503() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 1);
    let fast = with_statement_timeout(&a, 150);
    let tx = rls.for_tenant(fast.clone()).begin().await.unwrap();
    let shown: String = tx
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(shown, "150ms");
    tx.commit().await.unwrap();

    let err = rls
        .for_tenant(fast)
        .query_typed("SELECT pg_sleep(2)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), DbErrorKind::Timeout, "{err}");
    let problem = err.to_problem();
    assert_eq!(problem.status(), 503);
    assert!(problem.headers().contains_key(http::header::RETRY_AFTER));
    assert_next_checkout_is_clean(&rls, db.admin()).await;
}

#[tokio::test]
async fn dropping_an_open_transaction_rolls_back_before_the_connection_is_reused() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 1);
    let tx = rls.for_tenant(a.clone()).begin().await.unwrap();
    tx.execute(
        "INSERT INTO documents (tenant_id, title) VALUES ($1, 'dropped')",
        &[a.id().as_uuid()],
    )
    .await
    .unwrap();
    drop(tx);
    assert_next_checkout_is_clean(&rls, db.admin()).await;
    assert_eq!(count_documents_as_admin(&db, "dropped").await, 0);
}

#[tokio::test]
async fn a_request_future_dropped_mid_statement_leaves_the_next_checkout_clean() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 1);
    let tenant_db = rls.for_tenant(a.clone());
    // A timeout (or a client disconnect) drops the whole request future while the first
    // statement, pipelined with BEGIN and the context, is still running.
    let request = async {
        let tx = tenant_db.begin().await?;
        tx.execute(
            "INSERT INTO documents (tenant_id, title) SELECT $1, 'mid' FROM pg_sleep(0.3)",
            &[a.id().as_uuid()],
        )
        .await?;
        tx.commit().await
    };
    let outcome = tokio::time::timeout(Duration::from_millis(100), request).await;
    assert!(outcome.is_err(), "the request should have been cut off");
    assert_next_checkout_is_clean(&rls, db.admin()).await;
    assert_eq!(count_documents_as_admin(&db, "mid").await, 0);

    // The same with the one-round-trip form, whose COMMIT was already sent.
    let one_shot = tenant_db.query_typed("SELECT pg_sleep(0.3)", &[]);
    assert!(tokio::time::timeout(Duration::from_millis(100), one_shot)
        .await
        .is_err());
    assert_next_checkout_is_clean(&rls, db.admin()).await;
}

#[tokio::test]
async fn a_handler_error_rolls_back_and_leaves_the_connection_clean() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 1);
    #[derive(Debug)]
    enum HandlerError {
        Db(#[allow(dead_code)] DbError),
        Validation,
    }
    impl From<DbError> for HandlerError {
        fn from(e: DbError) -> Self {
            Self::Db(e)
        }
    }
    let id = a.id();
    let out: Result<(), HandlerError> = rls
        .for_tenant(a.clone())
        .run(|tx| async move {
            tx.execute(
                "INSERT INTO documents (tenant_id, title) VALUES ($1, 'err')",
                &[id.as_uuid()],
            )
            .await?;
            Err(HandlerError::Validation)
        })
        .await;
    assert!(matches!(out, Err(HandlerError::Validation)));
    assert_eq!(count_documents_as_admin(&db, "err").await, 0);
    assert_next_checkout_is_clean(&rls, db.admin()).await;
}

#[tokio::test]
async fn a_handler_panic_rolls_back_and_leaves_the_connection_clean() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 1);
    let tenant_db = rls.for_tenant(a.clone());
    let id = a.id();
    let joined = tokio::spawn(async move {
        let tx = tenant_db.begin().await.unwrap();
        tx.execute(
            "INSERT INTO documents (tenant_id, title) VALUES ($1, 'panic')",
            &[id.as_uuid()],
        )
        .await
        .unwrap();
        panic!("handler bug");
    })
    .await;
    assert!(joined.unwrap_err().is_panic());
    assert_next_checkout_is_clean(&rls, db.admin()).await;
    assert_eq!(count_documents_as_admin(&db, "panic").await, 0);
}

#[tokio::test]
async fn commit_after_a_failed_statement_is_aborted_and_the_connection_is_clean() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 1);
    let tx = rls.for_tenant(a.clone()).begin().await.unwrap();
    tx.execute(
        "INSERT INTO documents (tenant_id, title) VALUES ($1, 'before')",
        &[a.id().as_uuid()],
    )
    .await
    .unwrap();
    let err = tx.execute("SELECT 1/0", &[]).await.unwrap_err();
    assert_eq!(err.kind(), DbErrorKind::InvalidData, "{err}");
    let err = tx.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(err.kind(), DbErrorKind::Aborted);
    assert_eq!(tx.commit().await.unwrap_err().kind(), DbErrorKind::Aborted);
    assert_eq!(count_documents_as_admin(&db, "before").await, 0);
    assert_next_checkout_is_clean(&rls, db.admin()).await;
}

#[tokio::test]
async fn a_handle_used_after_commit_is_refused() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 2);
    let tx = rls.for_tenant(a).begin().await.unwrap();
    let handle = tx.handle();
    tx.query("SELECT 1", &[]).await.unwrap();
    tx.commit().await.unwrap();
    let err = handle.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(err.kind(), DbErrorKind::Closed);
}

#[tokio::test]
async fn writes_are_scoped_and_rls_refusals_are_403_without_details() {
    let (db, a, b) = seeded().await;
    let rls = rls(&db, 2);
    let err = rls
        .for_tenant(a.clone())
        .execute_typed(
            "INSERT INTO documents (tenant_id, title) VALUES ($1, 'smuggled')",
            &[(b.id().as_uuid(), Type::UUID)],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), DbErrorKind::Forbidden, "{err}");
    let body = String::from_utf8(err.to_problem().to_json().to_vec()).unwrap();
    assert_eq!(err.to_problem().status(), 403);
    assert!(
        !body.contains("documents") && !body.contains("policy"),
        "{body}"
    );
    assert_eq!(count_documents_as_admin(&db, "smuggled").await, 0);

    let n = rls
        .for_tenant(a.clone())
        .execute_typed(
            "INSERT INTO documents (tenant_id, title) VALUES ($1, 'mine')",
            &[(a.id().as_uuid(), Type::UUID)],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(count_documents_as_admin(&db, "mine").await, 1);
}

#[tokio::test]
async fn unique_violation_is_409_without_constraint_name_or_value() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 2);
    let url = "https://hooks.example/secret-path";
    let insert = "INSERT INTO webhooks (tenant_id, url) VALUES ($1, $2)";
    let tenant_db = rls.for_tenant(a.clone());
    let id = a.id();
    let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 2] =
        [(id.as_uuid(), Type::UUID), (&url, Type::TEXT)];
    tenant_db.execute_typed(insert, &params).await.unwrap();
    let err = tenant_db.execute_typed(insert, &params).await.unwrap_err();
    assert_eq!(err.kind(), DbErrorKind::Conflict);
    assert_eq!(err.sqlstate(), Some("23505"));
    let problem = err.to_problem();
    assert_eq!(problem.status(), 409);
    let body = String::from_utf8(problem.to_json().to_vec()).unwrap();
    for leak in ["webhooks", "url", "secret-path", "key", "tenant_id"] {
        assert!(!body.contains(leak), "{leak} in {body}");
    }
    assert_next_checkout_is_clean(&rls, db.admin()).await;
}

#[tokio::test]
async fn check_violation_is_422() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 1);
    let err = rls
        .for_tenant(a.clone())
        .execute_typed(
            "INSERT INTO documents (tenant_id, title) VALUES ($1, '')",
            &[(a.id().as_uuid(), Type::UUID)],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), DbErrorKind::InvalidData);
    assert_eq!(err.to_problem().status(), 422);
}

#[tokio::test]
async fn read_only_transactions_refuse_writes() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 1);
    let tenant_db = rls.for_tenant(a.clone());
    let tx = tenant_db.begin_read_only().await.unwrap();
    let err = tx
        .execute(
            "INSERT INTO documents (tenant_id, title) VALUES ($1, 'ro')",
            &[a.id().as_uuid()],
        )
        .await
        .unwrap_err();
    assert_eq!(err.sqlstate(), Some("25006"), "{err}");
    drop(tx);
    let rows = tenant_db
        .with_access(Access::ReadOnly)
        .query_typed("SELECT title FROM documents", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_next_checkout_is_clean(&rls, db.admin()).await;
}

#[tokio::test]
async fn citus_mode_statements_isolate_on_plain_postgres_too() {
    let (db, a, b) = seeded().await;
    let rls = builder(&db, 1).mode(ContextMode::Citus).build().unwrap();
    assert_eq!(visible_tenants(&rls, &a).await, vec![*a.id().as_uuid(); 2]);
    assert_eq!(visible_tenants(&rls, &b).await, vec![*b.id().as_uuid()]);
    let rows = rls
        .for_tenant(b.clone())
        .query_typed("SELECT tenant_id FROM documents", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_next_checkout_is_clean(&rls, db.admin()).await;
}

#[tokio::test]
async fn mode_is_detected_as_postgres_without_the_citus_extension() {
    let db = tenantry_testkit::TestDb::new().await;
    let rls = tenantry_rls_pool::RlsPool::builder(db.app_pool(1))
        .build_detecting()
        .await
        .unwrap();
    assert_eq!(rls.mode(), ContextMode::Postgres);
}

#[tokio::test]
async fn pool_exhaustion_is_a_bounded_wait_then_503() {
    let (db, a, b) = seeded().await;
    let rls = builder(&db, 1)
        .checkout_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let held = rls.for_tenant(a).begin().await.unwrap();
    let start = Instant::now();
    let err = rls.for_tenant(b).begin().await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(err.kind(), DbErrorKind::PoolExhausted);
    let problem = err.to_problem();
    assert_eq!(problem.status(), 503);
    assert_eq!(problem.headers()[http::header::RETRY_AFTER], "1");
    held.rollback().await.unwrap();
}

async fn titles_handler(req: Request<()>) -> Result<Response<String>, Infallible> {
    let Some(db) = req.extensions().get::<TenantDb>().cloned() else {
        return Ok(Response::new("no db".to_owned()));
    };
    if req.uri().path() == "/health" {
        return Ok(Response::new("ok".to_owned()));
    }
    let body = match db
        .query_typed("SELECT title FROM documents ORDER BY title", &[])
        .await
    {
        Ok(rows) => rows
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join(","),
        Err(e) => format!("error: {e}"),
    };
    Ok(Response::new(body))
}

fn request(path: &str, tenant: Option<&Arc<Tenant>>) -> Request<()> {
    let mut req = Request::get(path).body(()).unwrap();
    if let Some(t) = tenant {
        req.extensions_mut().insert(t.clone());
    }
    req
}

#[tokio::test]
async fn the_layer_hands_out_a_lazy_handle_that_takes_no_connection_until_used() {
    let (db, a, b) = seeded().await;
    let rls = rls(&db, 1);
    let svc = ServiceBuilder::new()
        .layer(RlsLayer::new(rls.clone()))
        .service(service_fn(titles_handler));
    // A request that never touches the database opens no connection at all.
    let res = svc
        .clone()
        .oneshot(request("/health", Some(&a)))
        .await
        .unwrap();
    assert_eq!(res.body(), "ok");
    assert_eq!(rls.pool().status().size, 0, "a connection was opened");
    // Even with the only connection held elsewhere, it is served.
    let held = rls.pool().get().await.unwrap();
    let res = svc
        .clone()
        .oneshot(request("/health", Some(&b)))
        .await
        .unwrap();
    assert_eq!(res.body(), "ok");
    drop(held);

    let res = svc
        .clone()
        .oneshot(request("/docs", Some(&a)))
        .await
        .unwrap();
    assert_eq!(res.body(), "a1,a2");
    let res = svc
        .clone()
        .oneshot(request("/docs", Some(&b)))
        .await
        .unwrap();
    assert_eq!(res.body(), "b1");
    let res = svc.oneshot(request("/docs", None)).await.unwrap();
    assert_eq!(res.body(), "no db", "no tenant, no handle");
}

#[tokio::test]
async fn the_layer_can_make_safe_methods_read_only() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 1);
    let svc = ServiceBuilder::new()
        .layer(RlsLayer::new(rls).read_only_for_safe_methods(true))
        .service(service_fn(|req: Request<()>| async move {
            let db = req.extensions().get::<TenantDb>().unwrap();
            let tx = db.begin().await.unwrap();
            let ro: String = tx
                .query_one("SELECT current_setting('transaction_read_only')", &[])
                .await
                .unwrap()
                .get(0);
            tx.commit().await.unwrap();
            Ok::<_, Infallible>(Response::new(ro))
        }));
    let get = svc.clone().oneshot(request("/", Some(&a))).await.unwrap();
    assert_eq!(get.body(), "on");
    let mut post = request("/", Some(&a));
    *post.method_mut() = http::Method::POST;
    let post = svc.oneshot(post).await.unwrap();
    assert_eq!(post.body(), "off");
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_extractor_and_error_response() {
    use axum::routing::get;
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 1);
    async fn handler(db: TenantDb) -> Result<String, DbError> {
        let rows = db
            .query_typed("SELECT count(*) FROM documents", &[])
            .await?;
        Ok(rows[0].get::<_, i64>(0).to_string())
    }
    let app = axum::Router::new()
        .route("/", get(handler))
        .layer(RlsLayer::new(rls));
    let mut req = Request::get("/").body(axum::body::Body::empty()).unwrap();
    req.extensions_mut().insert(a.clone());
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap();
    assert_eq!(&body.to_bytes()[..], b"2");
    // Without a tenant (the resolver missing) the extractor names the missing layer.
    let res = app
        .oneshot(Request::get("/").body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
}

#[tokio::test]
async fn an_abandoned_transaction_whose_rollback_cannot_finish_is_closed_not_reused() {
    let (db, a, _) = seeded().await;
    let rls = builder(&db, 1)
        .rollback_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let first_pid: i32 = {
        let client = rls.pool().get().await.unwrap();
        client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0)
    };
    let tenant_db = rls.for_tenant(a.clone());
    let request = async {
        let tx = tenant_db.begin().await?;
        // Still running when the rollback gives up.
        tx.query("SELECT pg_sleep(2)", &[]).await?;
        tx.commit().await
    };
    assert!(tokio::time::timeout(Duration::from_millis(50), request)
        .await
        .is_err());
    let next_pid = assert_next_checkout_is_clean(&rls, db.admin()).await;
    assert_ne!(
        next_pid, first_pid,
        "the stuck connection was handed out again"
    );
}

#[tokio::test]
async fn a_prepared_context_statement_isolates_tenants_and_leaves_connections_clean() {
    let (db, a, b) = seeded().await;
    let rls = builder(&db, 1).prepared_context(true).build().unwrap();
    for i in 0..6 {
        let (t, expected) = if i % 2 == 0 { (&a, 2) } else { (&b, 1) };
        let rows = if i % 4 < 2 {
            rls.for_tenant(t.clone())
                .query_typed("SELECT tenant_id FROM documents", &[])
                .await
                .unwrap()
        } else {
            let tx = rls.for_tenant(t.clone()).begin().await.unwrap();
            let rows = tx
                .query("SELECT tenant_id FROM documents", &[])
                .await
                .unwrap();
            tx.commit().await.unwrap();
            rows
        };
        assert_eq!(rows.len(), expected);
        assert!(rows
            .iter()
            .all(|r| r.get::<_, uuid::Uuid>(0) == *t.id().as_uuid()));
        assert_next_checkout_is_clean(&rls, db.admin()).await;
    }
}

#[tokio::test]
async fn query_cached_serves_each_tenant_only_its_rows_and_leaves_the_connection_clean() {
    let (db, a, b) = seeded().await;
    let rls = rls(&db, 1);
    let sql = "SELECT tenant_id FROM documents WHERE tenant_id = $1 OR true";
    for i in 0..6 {
        let t = if i % 2 == 0 { &a } else { &b };
        let rows = rls
            .for_tenant(t.clone())
            .query_cached(sql, &[t.id().as_uuid()])
            .await
            .unwrap();
        assert_eq!(rows.len(), if i % 2 == 0 { 2 } else { 1 }, "round {i}");
        assert!(
            rows.iter()
                .all(|r| r.get::<_, uuid::Uuid>(0) == *t.id().as_uuid()),
            "round {i}: wrong tenant's row"
        );
        assert_next_checkout_is_clean(&rls, db.admin()).await;
    }
    // The statement was prepared once on the connection and reused.
    let prepared: i64 = rls
        .pool()
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%OR true%' \
             AND statement NOT LIKE '%pg_prepared_statements%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(prepared, 1);
}

#[tokio::test]
async fn query_cached_with_bad_sql_is_an_error_and_leaves_the_connection_clean() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 1);
    let err = rls
        .for_tenant(a.clone())
        .query_cached("SELEC nonsense", &[])
        .await
        .unwrap_err();
    assert_ne!(err.kind(), DbErrorKind::Closed, "{err}");
    assert_next_checkout_is_clean(&rls, db.admin()).await;
    let failing = rls
        .for_tenant(a.clone())
        .query_cached("SELECT 1 / (count(*) - count(*)) FROM documents", &[])
        .await;
    assert!(failing.is_err());
    assert_next_checkout_is_clean(&rls, db.admin()).await;
}
