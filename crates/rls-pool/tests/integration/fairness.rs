//! Per-tenant concurrency caps.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use tenantry_core::LimitOverrides;
use tenantry_rls_pool::DbErrorKind;

use crate::support::*;

#[tokio::test]
async fn one_tenant_cannot_hold_more_than_its_cap_and_others_still_get_in() {
    let (db, a, b) = seeded().await;
    let rls = builder(&db, 4)
        .tenant_wait(Duration::from_millis(200))
        .build()
        .unwrap();
    let capped = with_overrides(
        &a,
        LimitOverrides {
            max_concurrent_transactions: NonZeroU32::new(2),
            ..Default::default()
        },
    );
    let first = rls.for_tenant(capped.clone()).begin().await.unwrap();
    let second = rls.for_tenant(capped.clone()).begin().await.unwrap();
    let start = Instant::now();
    let err = rls.for_tenant(capped.clone()).begin().await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the wait is bounded"
    );
    assert_eq!(err.kind(), DbErrorKind::TenantBusy);
    let problem = err.to_problem();
    assert_eq!(problem.status(), 503);
    assert_eq!(problem.code(), "tenant_busy");
    assert!(problem.headers().contains_key(http::header::RETRY_AFTER));

    // Another tenant is not affected by tenant A's exhaustion.
    let other = rls.for_tenant(b.clone()).begin().await.unwrap();
    other.commit().await.unwrap();

    // A slot freed by commit, or by dropping an open transaction, is usable again.
    first.commit().await.unwrap();
    let third = rls.for_tenant(capped.clone()).begin().await.unwrap();
    third.query("SELECT 1", &[]).await.unwrap();
    drop(third);
    drop(second);
    let again = rls.for_tenant(capped.clone()).begin().await.unwrap();
    let again2 = rls.for_tenant(capped).begin().await.unwrap();
    drop((again, again2));
}

#[tokio::test]
async fn a_waiting_transaction_gets_the_slot_freed_within_the_wait() {
    let (db, a, _) = seeded().await;
    let rls = rls(&db, 4);
    let capped = with_overrides(
        &a,
        LimitOverrides {
            max_concurrent_transactions: NonZeroU32::new(1),
            ..Default::default()
        },
    );
    let held = rls.for_tenant(capped.clone()).begin().await.unwrap();
    let waiter = tokio::spawn({
        let db = rls.for_tenant(capped);
        async move { db.query_typed("SELECT 1", &[]).await.map(|r| r.len()) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "the cap let a second transaction in");
    held.commit().await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), 1);
}

#[tokio::test]
async fn caps_can_be_turned_off() {
    let (db, a, _) = seeded().await;
    let rls = builder(&db, 3)
        .per_tenant_caps(false)
        .tenant_wait(Duration::from_millis(100))
        .build()
        .unwrap();
    let capped = with_overrides(
        &a,
        LimitOverrides {
            max_concurrent_transactions: NonZeroU32::new(1),
            ..Default::default()
        },
    );
    let one = rls.for_tenant(capped.clone()).begin().await.unwrap();
    let two = rls.for_tenant(capped).begin().await.unwrap();
    drop((one, two));
}
