//! The Redis second level and pub/sub invalidation, against real Redis (and PostgreSQL).

mod common;

use std::time::{Duration, Instant};

use common::pg::PgStore;
use common::{add_tenant, tenant, CountingStore};
use fred::clients::SubscriberClient;
use fred::prelude::*;
use tenantry_cache::{CachedStore, ConfigErrorKind, RedisLevel};
use tenantry_core::{
    ApiKeyHash, InMemoryStore, Plan, Slug, StoreErrorKind, Tenant, TenantId, TenantStatus,
    TenantStore,
};
use tenantry_testkit::{OwnedRedis, RedisCluster, TestDb, TestRedis};

const TIMEOUT: Duration = Duration::from_millis(100);

async fn clients(url: &str) -> (Client, SubscriberClient) {
    let mut builder = Builder::from_config(Config::from_url(url).unwrap());
    builder.set_policy(ReconnectPolicy::new_constant(0, 100));
    builder.with_connection_config(|c| c.connection_timeout = Duration::from_secs(2));
    let client = builder.build().unwrap();
    let subscriber = builder.build_subscriber_client().unwrap();
    client.init().await.unwrap();
    subscriber.init().await.unwrap();
    (client, subscriber)
}

/// One application instance: its own first level, the shared Redis level, a long TTL (so
/// only an invalidation explains a change being seen).
async fn instance<S: TenantStore>(url: &str, prefix: &str, store: S) -> CachedStore<S> {
    let (client, subscriber) = clients(url).await;
    let cache = CachedStore::builder(store)
        .ttl(Duration::from_secs(60))
        .negative_ttl(Duration::from_secs(60))
        .redis(
            RedisLevel::new(client, prefix)
                .subscriber(subscriber)
                .ttl(Duration::from_secs(60))
                .negative_ttl(Duration::from_secs(60))
                .command_timeout(TIMEOUT),
        )
        .build()
        .unwrap();
    assert!(
        cache.wait_subscribed(Duration::from_secs(10)).await,
        "invalidation listener subscribed"
    );
    cache
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_level_answers_another_instance_without_a_store_query() {
    let redis = TestRedis::new().await;
    let backing = InMemoryStore::new();
    let (id, slug, key) = add_tenant(&backing, "shared");
    let (store_a, store_b) = (CountingStore::over(&backing), CountingStore::over(&backing));
    let a = instance(redis.url(), redis.prefix(), store_a.clone()).await;
    let b = instance(redis.url(), redis.prefix(), store_b.clone()).await;
    let ghost_id = TenantId::new_v4();
    let ghost_slug = Slug::new("nobody-here").unwrap();
    let ghost_key = ApiKeyHash::of("tk_nobody");

    for cache in [&a, &b] {
        assert_eq!(cache.by_id(id).await.unwrap().unwrap().id(), id);
        assert_eq!(cache.by_slug(&slug).await.unwrap().unwrap().id(), id);
        assert_eq!(cache.by_api_key(&key).await.unwrap().unwrap().id(), id);
        assert!(cache.by_id(ghost_id).await.unwrap().is_none());
        assert!(cache.by_slug(&ghost_slug).await.unwrap().is_none());
        assert!(cache.by_api_key(&ghost_key).await.unwrap().is_none());
    }
    assert_eq!(store_a.queries(), 6);
    assert_eq!(store_b.queries(), 0, "b was served by Redis");
    assert_eq!(b.stats().redis_hits, 6);
    assert_eq!(b.stats().misses, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_record_under_another_tenants_key_is_rejected() {
    let redis = TestRedis::new().await;
    let backing = InMemoryStore::new();
    let (id, slug, _) = add_tenant(&backing, "victim");
    let intruder = Tenant::builder(
        TenantId::new_v4(),
        Slug::new("intruder").unwrap(),
        Plan::enterprise(),
    )
    .build();
    let json = serde_json::to_string(&intruder).unwrap();
    // A record of `intruder` planted under the victim's id key, and a valid-looking record of
    // `intruder` that the victim's slug maps to.
    let planted: Vec<(String, String)> = vec![
        (
            format!("{}:{{{id}}}:rec", redis.prefix()),
            format!("0|{json}"),
        ),
        (
            format!("{}:{{{}}}:rec", redis.prefix(), intruder.id()),
            format!("0|{json}"),
        ),
        (
            format!("{}:slug:{{{slug}}}", redis.prefix()),
            format!("0|{}", intruder.id()),
        ),
    ];
    for (k, v) in planted {
        let _: () = redis
            .client()
            .set(k, v, Some(Expiration::EX(60)), None, false)
            .await
            .unwrap();
    }
    let store = CountingStore::over(&backing);
    let cache = instance(redis.url(), redis.prefix(), store.clone()).await;
    assert_eq!(cache.by_id(id).await.unwrap().unwrap().id(), id);
    assert_eq!(cache.by_slug(&slug).await.unwrap().unwrap().id(), id);
    assert_eq!(
        store.queries(),
        2,
        "both planted records were treated as misses"
    );
    assert_eq!(cache.stats().redis_hits, 0);
}

/// Suspends tenants through instance `a` and measures how long until instance `b` (which had
/// them cached for another 60 s) answers with the suspension. Over real PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspension_through_one_instance_is_seen_by_the_other_within_the_bound() {
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let a = instance(
        redis.url(),
        redis.prefix(),
        PgStore::new(db.connect_app().await),
    )
    .await;
    let b = instance(
        redis.url(),
        redis.prefix(),
        PgStore::new(db.connect_app().await),
    )
    .await;

    let mut samples = Vec::new();
    for i in 0..10 {
        let slug = Slug::new(&format!("tenant-{i}")).unwrap();
        let id = db.create_tenant(slug.as_str(), "pro").await;
        assert!(b.by_id(id).await.unwrap().unwrap().is_active());
        assert!(b.by_slug(&slug).await.unwrap().unwrap().is_active());
        assert!(a.by_id(id).await.unwrap().unwrap().is_active());

        db.admin()
            .execute(
                "UPDATE tenants SET status = 'suspended' WHERE id = $1",
                &[id.as_uuid()],
            )
            .await
            .unwrap();
        let start = Instant::now();
        a.invalidate(id).await.unwrap();
        loop {
            if b.by_id(id).await.unwrap().unwrap().status() == TenantStatus::Suspended {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "b did not see the suspension within 2 s"
            );
            tokio::task::yield_now().await;
        }
        samples.push(start.elapsed());
        assert_eq!(
            b.by_slug(&slug).await.unwrap().unwrap().status(),
            TenantStatus::Suspended,
            "b's slug entry went too"
        );
    }
    samples.sort();
    println!(
        "invalidation seen by the other instance: median {:?}, max {:?} (10 samples, includes the invalidate call)",
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    );
    assert!(b.stats().remote_invalidations >= 10);
}

/// A process that serves nothing (an admin CLI) announces a change with an `Invalidator`;
/// both serving instances drop the tenant under its id and its slug, and the Redis record
/// goes too. Their TTLs are 60 s, so only the announcement explains the change being seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidator_reaches_every_instance_without_a_cache_of_its_own() {
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let a = instance(
        redis.url(),
        redis.prefix(),
        PgStore::new(db.connect_app().await),
    )
    .await;
    let b = instance(
        redis.url(),
        redis.prefix(),
        PgStore::new(db.connect_app().await),
    )
    .await;
    let (client, _) = clients(redis.url()).await;
    let invalidator = RedisLevel::new(client, redis.prefix())
        .command_timeout(TIMEOUT)
        .invalidator()
        .unwrap();

    let slug = Slug::new("announced").unwrap();
    let id = db.create_tenant(slug.as_str(), "free").await;
    for cache in [&a, &b] {
        assert_eq!(
            cache.by_id(id).await.unwrap().unwrap().plan().name(),
            "free"
        );
        assert_eq!(
            cache.by_slug(&slug).await.unwrap().unwrap().plan().name(),
            "free"
        );
    }
    db.admin()
        .execute(
            "UPDATE tenants SET plan = 'enterprise' WHERE id = $1",
            &[id.as_uuid()],
        )
        .await
        .unwrap();
    // Not announced yet: both still answer from their caches.
    assert_eq!(b.by_id(id).await.unwrap().unwrap().plan().name(), "free");

    invalidator.invalidate(id).await.unwrap();
    let start = Instant::now();
    for cache in [&a, &b] {
        loop {
            if cache.by_id(id).await.unwrap().unwrap().plan().name() == "enterprise" {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "not seen within 2 s"
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(
            cache.by_slug(&slug).await.unwrap().unwrap().plan().name(),
            "enterprise"
        );
    }
    assert!(a.stats().remote_invalidations >= 1 && b.stats().remote_invalidations >= 1);

    // The same prefix rules as the level it is built from.
    let (client, _) = clients(redis.url()).await;
    assert_eq!(
        RedisLevel::new(client, "bad{prefix}")
            .invalidator()
            .unwrap_err()
            .kind(),
        ConfigErrorKind::InvalidPrefix
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_falls_through_to_the_store_within_the_timeout() {
    let mut server = OwnedRedis::start();
    let backing = InMemoryStore::new();
    let tenants: Vec<_> = (0..6).map(|_| add_tenant(&backing, "t")).collect();
    let store = CountingStore::over(&backing);
    let cache = instance(&server.url(), "outage", store.clone()).await;
    let (warm, warm_slug, _) = &tenants[0];
    assert!(cache.by_id(*warm).await.unwrap().is_some());

    server.stop();
    // First-level hits do not touch Redis at all.
    assert!(cache.by_id(*warm).await.unwrap().is_some());
    // Misses go to the store, each within a bound set by the per-command timeout (at most
    // three Redis commands per miss, each failing fast or after 100 ms).
    let queries = store.queries();
    for (id, slug, key) in &tenants[1..] {
        for lookup in 0..3 {
            let start = Instant::now();
            let found = match lookup {
                0 => cache.by_id(*id).await,
                1 => cache.by_slug(slug).await,
                _ => cache.by_api_key(key).await,
            };
            let took = start.elapsed();
            assert_eq!(found.unwrap().unwrap().id(), *id);
            assert!(took < Duration::from_millis(1000), "lookup took {took:?}");
        }
    }
    assert_eq!(store.queries() - queries, 15);
    assert!(cache.stats().redis_errors > 0, "the outage is counted");

    // Invalidation reports the failure but still invalidates this instance.
    backing.insert(tenant(*warm, warm_slug, TenantStatus::Suspended));
    let err = cache.invalidate(*warm).await.unwrap_err();
    assert!(matches!(
        err.kind(),
        StoreErrorKind::Unavailable | StoreErrorKind::Timeout
    ));
    assert_eq!(
        cache.by_id(*warm).await.unwrap().unwrap().status(),
        TenantStatus::Suspended
    );

    // Redis comes back: the listener resubscribes and the second level is used again.
    server.restart();
    let start = Instant::now();
    let other = instance(&server.url(), "outage", CountingStore::over(&backing)).await;
    let (id, _, _) = add_tenant(&backing, "after");
    loop {
        cache.clear_local();
        let _ = cache.by_id(id).await.unwrap();
        if other.by_id(id).await.unwrap().is_some() && other.stats().redis_hits > 0 {
            break;
        }
        other.clear_local();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "Redis level not used again after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And invalidations reach `cache` again.
    assert!(cache.wait_subscribed(Duration::from_secs(10)).await);
    let before = cache.stats().remote_invalidations;
    let start = Instant::now();
    while cache.stats().remote_invalidations == before {
        let _ = other.invalidate(id).await;
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "invalidations not received after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_a_three_node_redis_cluster() {
    let cluster = RedisCluster::start(3);
    let backing = InMemoryStore::new();
    let (store_a, store_b) = (CountingStore::over(&backing), CountingStore::over(&backing));
    let a = instance(&cluster.url(), "cluster", store_a.clone()).await;
    let b = instance(&cluster.url(), "cluster", store_b.clone()).await;

    // Enough tenants that their keys land on every node.
    let tenants: Vec<_> = (0..20).map(|_| add_tenant(&backing, "c")).collect();
    for (id, slug, key) in &tenants {
        assert_eq!(a.by_id(*id).await.unwrap().unwrap().id(), *id);
        assert_eq!(a.by_slug(slug).await.unwrap().unwrap().id(), *id);
        assert_eq!(a.by_api_key(key).await.unwrap().unwrap().id(), *id);
    }
    for (id, slug, key) in &tenants {
        assert_eq!(b.by_id(*id).await.unwrap().unwrap().id(), *id);
        assert_eq!(b.by_slug(slug).await.unwrap().unwrap().id(), *id);
        assert_eq!(b.by_api_key(key).await.unwrap().unwrap().id(), *id);
    }
    assert_eq!(store_b.queries(), 0, "b was served by the cluster");
    assert_eq!(a.stats().redis_errors + b.stats().redis_errors, 0);

    let (id, slug, _) = &tenants[0];
    backing.insert(tenant(*id, slug, TenantStatus::Suspended));
    a.invalidate(*id).await.unwrap();
    let start = Instant::now();
    while b.by_id(*id).await.unwrap().unwrap().is_active() {
        assert!(start.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        b.by_slug(slug).await.unwrap().unwrap().status(),
        TenantStatus::Suspended
    );
}

/// A load that read the store before an invalidation and writes to Redis after it must not
/// be served from Redis afterwards (its write is stamped with the generation it started at).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_write_that_raced_with_an_invalidation_is_not_served() {
    let redis = TestRedis::new().await;
    let backing = InMemoryStore::new();
    let (id, slug, _) = add_tenant(&backing, "raced");
    let slow = CountingStore::over(&backing);
    slow.set_delay(Duration::from_millis(300));
    let a = instance(redis.url(), redis.prefix(), slow.clone()).await;
    let b = instance(redis.url(), redis.prefix(), CountingStore::over(&backing)).await;

    // `a` reads the active record now and writes it to Redis in 300 ms.
    let in_flight = tokio::spawn({
        let a = a.clone();
        async move { a.by_id(id).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    backing.insert(tenant(id, &slug, TenantStatus::Suspended));
    b.invalidate(id).await.unwrap();
    assert!(in_flight.await.unwrap().unwrap().unwrap().is_active());

    // A fresh instance must not take the raced record from Redis.
    let c_store = CountingStore::over(&backing);
    let c = instance(redis.url(), redis.prefix(), c_store.clone()).await;
    assert_eq!(
        c.by_id(id).await.unwrap().unwrap().status(),
        TenantStatus::Suspended
    );
    assert_eq!(c_store.queries(), 1, "the raced Redis record was ignored");
    // And `a` itself does not keep it either.
    slow.set_delay(Duration::ZERO);
    assert_eq!(
        a.by_id(id).await.unwrap().unwrap().status(),
        TenantStatus::Suspended
    );
}
