//! Property: under random interleavings of tenants, operations and failure points, every row
//! returned belongs to the requesting tenant, and connections come back clean.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tenantry_core::Tenant;
use tenantry_rls_pool::{DbError, RlsPool};
use tokio_postgres::types::Type;

use crate::support::*;

#[derive(Debug, Clone, Copy)]
enum Op {
    OneShot,
    Tx,
    InsertThenSelect,
    Closure,
    Fused,
}

#[derive(Debug, Clone, Copy)]
enum Failure {
    None,
    HandlerError,
    DropBeforeCommit,
    DropMidStatement,
    Panic,
}

#[derive(Debug, Clone, Copy)]
struct Step {
    tenant: usize,
    op: Op,
    failure: Failure,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0..3usize,
        prop_oneof![
            Just(Op::OneShot),
            Just(Op::Tx),
            Just(Op::InsertThenSelect),
            Just(Op::Closure),
            Just(Op::Fused)
        ],
        prop_oneof![
            4 => Just(Failure::None),
            1 => Just(Failure::HandlerError),
            1 => Just(Failure::DropBeforeCommit),
            1 => Just(Failure::DropMidStatement),
            1 => Just(Failure::Panic),
        ],
    )
        .prop_map(|(tenant, op, failure)| Step {
            tenant,
            op,
            failure,
        })
}

/// Runs one step; returns the tenant ids of every row it saw.
async fn run_step(rls: RlsPool, tenant: Arc<Tenant>, step: Step) -> Vec<uuid::Uuid> {
    let db = rls.for_tenant(tenant.clone());
    let own = *tenant.id().as_uuid();
    let work = async move {
        let mut seen: Vec<uuid::Uuid> = Vec::new();
        match step.op {
            Op::OneShot => {
                let rows = db
                    .query_typed("SELECT tenant_id FROM documents", &[])
                    .await?;
                seen.extend(rows.iter().map(|r| r.get::<_, uuid::Uuid>(0)));
            }
            Op::Fused => {
                if matches!(step.failure, Failure::DropMidStatement) {
                    let slow =
                        db.query_fused("SELECT tenant_id FROM documents, pg_sleep(0.05)", &[]);
                    let _ = tokio::time::timeout(Duration::from_millis(5), slow).await;
                    return Ok(seen);
                }
                let rows = db
                    .query_fused("SELECT tenant_id FROM documents", &[])
                    .await?;
                seen.extend(rows.iter().map(|r| r.get::<_, uuid::Uuid>(0)));
                match step.failure {
                    Failure::HandlerError => {
                        return Err(DbError::from_kind(
                            tenantry_rls_pool::DbErrorKind::InvalidData,
                        ))
                    }
                    Failure::Panic => panic!("injected"),
                    _ => {}
                }
            }
            Op::Closure => {
                let rows = db
                    .run(|tx| async move {
                        let rows = tx.query("SELECT tenant_id FROM documents", &[]).await?;
                        Ok::<_, DbError>(rows)
                    })
                    .await?;
                seen.extend(rows.iter().map(|r| r.get::<_, uuid::Uuid>(0)));
            }
            Op::Tx | Op::InsertThenSelect => {
                let tx = db.begin().await?;
                if matches!(step.op, Op::InsertThenSelect) {
                    tx.execute_typed(
                        "INSERT INTO documents (tenant_id, title) VALUES ($1, 'prop')",
                        &[(&own, Type::UUID)],
                    )
                    .await?;
                }
                if matches!(step.failure, Failure::DropMidStatement) {
                    let slow = tx.query("SELECT tenant_id FROM documents, pg_sleep(0.05)", &[]);
                    let _ = tokio::time::timeout(Duration::from_millis(5), slow).await;
                    return Ok(seen);
                }
                let rows = tx.query("SELECT tenant_id FROM documents", &[]).await?;
                seen.extend(rows.iter().map(|r| r.get::<_, uuid::Uuid>(0)));
                match step.failure {
                    Failure::HandlerError => {
                        return Err(DbError::from_kind(
                            tenantry_rls_pool::DbErrorKind::InvalidData,
                        ))
                    }
                    Failure::DropBeforeCommit => return Ok(seen),
                    Failure::Panic => panic!("injected"),
                    _ => tx.commit().await?,
                }
            }
        }
        Ok::<_, DbError>(seen)
    };
    // A panic is isolated in its own task, as a server would.
    match tokio::spawn(work).await {
        Ok(Ok(seen)) => seen,
        Ok(Err(e)) => {
            assert!(
                matches!(step.failure, Failure::HandlerError),
                "unexpected error {e} in {step:?}"
            );
            Vec::new()
        }
        Err(join) => {
            assert!(join.is_panic() && matches!(step.failure, Failure::Panic));
            Vec::new()
        }
    }
}

#[test]
fn random_interleavings_only_ever_return_the_requesting_tenants_rows() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (db, tenants) = rt.block_on(async {
        let (db, a, b) = seeded().await;
        let c_id = db.create_tenant("tenant-c", "enterprise").await;
        db.insert_document(c_id, "c1").await;
        let c = tenant(c_id, "tenant-c", tenantry_core::Plan::enterprise());
        (db, vec![a, b, c])
    });
    let rls = rls(&db, 2);
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(proptest::collection::vec(step(), 1..4), 1..5);
    let result = runner.run(&strategy, |groups| {
        rt.block_on(async {
            for group in &groups {
                // Each group runs concurrently on a pool of two connections.
                let outcomes = join_all(group.iter().map(|s| {
                    let t = tenants[s.tenant].clone();
                    let rls = rls.clone();
                    let s = *s;
                    async move { (t.id(), run_step(rls, t, s).await) }
                }))
                .await;
                for (tenant, seen) in outcomes {
                    assert!(
                        seen.iter().all(|id| id == tenant.as_uuid()),
                        "tenant {tenant:?} saw another tenant's row in {groups:?}"
                    );
                }
            }
            assert_next_checkout_is_clean(&rls, db.admin()).await;
        });
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
