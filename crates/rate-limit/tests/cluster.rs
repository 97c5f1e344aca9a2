//! A 3-node Redis Cluster started by the test: decisions stay exact, keys stay in their
//! tenant's slot and expire.

mod common;

use std::time::Duration;

use common::*;
use fred::prelude::*;
use fred::util::redis_keyslot;
use tenantry_rate_limit::{RateKey, RateLimitLayer, RedisLimiter};
use tenantry_testkit::RedisCluster;
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_stay_exact_on_a_three_node_redis_cluster() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap();
    let build = || async {
        RedisLimiter::builder(cluster.url())
            .timeout(Duration::from_secs(2))
            .build()
            .await
            .unwrap()
    };
    let (one, two) = (build().await, build().await);
    let a = service(RateLimitLayer::new(one.clone()));
    let b = service(RateLimitLayer::new(two.clone()));

    let tenants: Vec<_> = (0..6).map(|_| tenant(6, 20)).collect();
    let slots: std::collections::BTreeSet<u16> = tenants
        .iter()
        .map(|t| {
            redis_keyslot(
                one.redis_key(&RateKey::new(t.id(), "default".into()))
                    .as_bytes(),
            )
        })
        .collect();
    assert!(slots.len() > 1, "the tenants should spread over slots");

    let tasks: Vec<_> = (0..360)
        .map(|i| {
            let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
            let t = tenants[i % tenants.len()].clone();
            tokio::spawn(async move { (t.id(), svc.oneshot(request(&t)).await.unwrap().status()) })
        })
        .collect();
    let mut allowed = std::collections::HashMap::new();
    for task in tasks {
        let (id, status) = task.await.unwrap();
        assert!(status == 200 || status == 429, "{status}");
        *allowed.entry(id).or_insert(0) += u32::from(status == 200);
    }
    assert_eq!(one.stats().redis_failures + two.stats().redis_failures, 0);
    for t in &tenants {
        assert_eq!(allowed[&t.id()], 20, "tenant {}", t.id());
        let key = one.redis_key(&RateKey::new(t.id(), "default".into()));
        let pttl: i64 = one.client().pttl(&key).await.unwrap();
        assert!(pttl > 0, "{key}: PTTL {pttl}");
    }
}
