//! The in-process first level: hits, misses, expiry, eviction, negative caching, single-flight,
//! invalidation.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{add_tenant, tenant, unique_slug, CountingStore};
use futures_util::future::join_all;
use tenantry_cache::{CachedStore, ConfigErrorKind};
use tenantry_core::{
    ApiKeyHash, Plan, Slug, StoreError, StoreErrorKind, Tenant, TenantId, TenantStatus, TenantStore,
};

fn cache(store: &CountingStore) -> CachedStore<CountingStore> {
    CachedStore::builder(store.clone())
        .ttl(Duration::from_secs(60))
        .negative_ttl(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[tokio::test]
async fn second_lookup_is_a_hit_without_a_store_query() {
    let store = CountingStore::new();
    let (id, slug, key) = add_tenant(&store.inner, "acme");
    let cache = cache(&store);

    for _ in 0..3 {
        assert_eq!(cache.by_id(id).await.unwrap().unwrap().id(), id);
        assert_eq!(cache.by_slug(&slug).await.unwrap().unwrap().id(), id);
        assert_eq!(cache.by_api_key(&key).await.unwrap().unwrap().id(), id);
    }
    assert_eq!(store.queries(), 3, "one query per key, then hits");
    let stats = cache.stats();
    assert_eq!(stats.misses, 3);
    assert_eq!(stats.hits, 6);
    assert_eq!(stats.store_queries, 3);
}

#[tokio::test]
async fn hit_returns_the_same_shared_record() {
    let store = CountingStore::new();
    let (id, _, _) = add_tenant(&store.inner, "acme");
    let cache = cache(&store);
    let a = cache.by_id(id).await.unwrap().unwrap();
    let b = cache.by_id(id).await.unwrap().unwrap();
    assert!(Arc::ptr_eq(&a, &b), "a hit clones the Arc, not the tenant");
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let store = CountingStore::new();
    let (id, _, _) = add_tenant(&store.inner, "acme");
    let cache = CachedStore::builder(store.clone())
        .ttl(Duration::from_millis(150))
        .build()
        .unwrap();
    cache.by_id(id).await.unwrap();
    cache.by_id(id).await.unwrap();
    assert_eq!(store.queries(), 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    cache.by_id(id).await.unwrap();
    assert_eq!(store.queries(), 2, "expired entry is loaded again");
}

#[tokio::test]
async fn capacity_bound_evicts_entries() {
    let store = CountingStore::new();
    let ids: Vec<TenantId> = (0..200).map(|_| add_tenant(&store.inner, "t").0).collect();
    let cache = CachedStore::builder(store.clone())
        .max_capacity(20)
        .build()
        .unwrap();
    for id in &ids {
        cache.by_id(*id).await.unwrap();
    }
    cache.run_pending_tasks().await;
    assert!(
        cache.entry_count() <= 20,
        "at most the capacity stays cached, got {}",
        cache.entry_count()
    );
    let before = store.queries();
    for id in &ids {
        assert_eq!(cache.by_id(*id).await.unwrap().unwrap().id(), *id);
    }
    assert!(
        store.queries() - before >= 180,
        "evicted entries are loaded again ({} queries)",
        store.queries() - before
    );
}

#[tokio::test]
async fn unknown_ids_slugs_and_keys_are_cached_negatively() {
    let store = CountingStore::new();
    let cache = CachedStore::builder(store.clone())
        .ttl(Duration::from_secs(60))
        .negative_ttl(Duration::from_millis(200))
        .build()
        .unwrap();
    let id = TenantId::new_v4();
    let slug = unique_slug("ghost");
    let key = ApiKeyHash::of("tk_unknown");
    for _ in 0..5 {
        assert!(cache.by_id(id).await.unwrap().is_none());
        assert!(cache.by_slug(&slug).await.unwrap().is_none());
        assert!(cache.by_api_key(&key).await.unwrap().is_none());
    }
    assert_eq!(store.queries(), 3, "one query per unknown key");
    assert_eq!(cache.stats().negative_hits, 12);

    // The negative TTL is its own, shorter one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(cache.by_id(id).await.unwrap().is_none());
    assert_eq!(
        store.queries(),
        4,
        "negative entry expired after the negative TTL"
    );
}

#[tokio::test]
async fn negative_ttl_does_not_shorten_positive_entries() {
    let store = CountingStore::new();
    let (id, _, _) = add_tenant(&store.inner, "acme");
    let cache = CachedStore::builder(store.clone())
        .ttl(Duration::from_secs(60))
        .negative_ttl(Duration::from_millis(50))
        .build()
        .unwrap();
    cache.by_id(id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    cache.by_id(id).await.unwrap();
    assert_eq!(store.queries(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_for_one_tenant_make_one_store_query() {
    let store = CountingStore::new();
    let (id, slug, _) = add_tenant(&store.inner, "acme");
    store.set_delay(Duration::from_millis(100));
    let cache = cache(&store);

    let results = join_all((0..100).map(|_| {
        let cache = cache.clone();
        tokio::spawn(async move { cache.by_id(id).await })
    }))
    .await;
    for r in results {
        assert_eq!(r.unwrap().unwrap().unwrap().id(), id);
    }
    assert_eq!(
        store.queries(),
        1,
        "100 concurrent lookups, one store query"
    );

    let results = join_all((0..100).map(|_| cache.by_slug(&slug))).await;
    assert!(results.iter().all(|r| r.as_ref().unwrap().is_some()));
    assert_eq!(store.queries(), 2);

    let ghost = TenantId::new_v4();
    let results = join_all((0..100).map(|_| cache.by_id(ghost))).await;
    assert!(results.iter().all(|r| r.as_ref().unwrap().is_none()));
    assert_eq!(store.queries(), 3, "unknown tenants are single-flight too");
}

#[tokio::test]
async fn invalidate_drops_the_tenant_under_its_id_slug_and_keys() {
    let store = CountingStore::new();
    let (id, slug, key) = add_tenant(&store.inner, "acme");
    let cache = cache(&store);
    cache.by_id(id).await.unwrap();
    cache.by_slug(&slug).await.unwrap();
    cache.by_api_key(&key).await.unwrap();

    store
        .inner
        .insert(tenant(id, &slug, TenantStatus::Suspended));
    // Without invalidation, the cache still answers with what it has.
    assert!(cache.by_id(id).await.unwrap().unwrap().is_active());

    cache.invalidate(id).await.unwrap();
    assert_eq!(
        cache.by_id(id).await.unwrap().unwrap().status(),
        TenantStatus::Suspended
    );
    assert_eq!(
        cache.by_slug(&slug).await.unwrap().unwrap().status(),
        TenantStatus::Suspended
    );
    assert_eq!(
        cache.by_api_key(&key).await.unwrap().unwrap().status(),
        TenantStatus::Suspended
    );
    assert_eq!(store.queries(), 6);
    assert_eq!(cache.stats().invalidations, 1);
}

#[tokio::test]
async fn invalidate_covers_a_slug_rename_and_a_revoked_key() {
    let store = CountingStore::new();
    let (id, old, key) = add_tenant(&store.inner, "old");
    let cache = cache(&store);
    cache.by_slug(&old).await.unwrap().unwrap();
    cache.by_api_key(&key).await.unwrap().unwrap();

    let new = unique_slug("new");
    store.inner.remove(id);
    store.inner.insert(tenant(id, &new, TenantStatus::Active));
    cache.invalidate(id).await.unwrap();

    assert!(
        cache.by_slug(&old).await.unwrap().is_none(),
        "the old slug no longer resolves"
    );
    assert_eq!(cache.by_slug(&new).await.unwrap().unwrap().id(), id);
    assert!(
        cache.by_api_key(&key).await.unwrap().is_none(),
        "the revoked key no longer resolves"
    );
}

#[tokio::test]
async fn invalidate_slug_and_key_drop_negative_entries() {
    let store = CountingStore::new();
    let cache = cache(&store);
    let slug = unique_slug("later");
    let key = ApiKeyHash::of("tk_later");
    assert!(cache.by_slug(&slug).await.unwrap().is_none());
    assert!(cache.by_api_key(&key).await.unwrap().is_none());

    let id = TenantId::new_v4();
    store.inner.insert(tenant(id, &slug, TenantStatus::Active));
    store.inner.insert_api_key(key, id);
    assert!(
        cache.by_slug(&slug).await.unwrap().is_none(),
        "still negative"
    );

    cache.invalidate_slug(&slug).await.unwrap();
    cache.invalidate_api_key(&key).await.unwrap();
    assert_eq!(cache.by_slug(&slug).await.unwrap().unwrap().id(), id);
    assert_eq!(cache.by_api_key(&key).await.unwrap().unwrap().id(), id);
}

#[tokio::test]
async fn invalidating_a_created_tenant_drops_its_negative_id_entry() {
    let store = CountingStore::new();
    let cache = cache(&store);
    let id = TenantId::new_v4();
    assert!(cache.by_id(id).await.unwrap().is_none());
    store
        .inner
        .insert(tenant(id, &unique_slug("new"), TenantStatus::Active));
    cache.invalidate(id).await.unwrap();
    assert!(cache.by_id(id).await.unwrap().is_some());
}

#[tokio::test]
async fn invalidating_one_tenant_keeps_the_others_cached() {
    let store = CountingStore::new();
    let (a, a_slug, _) = add_tenant(&store.inner, "a");
    let (b, b_slug, _) = add_tenant(&store.inner, "b");
    let cache = cache(&store);
    for (id, s) in [(a, &a_slug), (b, &b_slug)] {
        cache.by_id(id).await.unwrap();
        cache.by_slug(s).await.unwrap();
    }
    assert_eq!(store.queries(), 4);
    cache.invalidate(a).await.unwrap();
    cache.by_id(b).await.unwrap();
    cache.by_slug(&b_slug).await.unwrap();
    assert_eq!(store.queries(), 4, "b is still cached");
    cache.by_slug(&a_slug).await.unwrap();
    assert_eq!(store.queries(), 5, "a is loaded again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_raced_with_an_invalidation_is_not_kept() {
    let store = CountingStore::new();
    let (id, slug, _) = add_tenant(&store.inner, "acme");
    // The store reads the record now and delivers it 300 ms later.
    store.set_delay(Duration::from_millis(300));
    let cache = cache(&store);

    let current = slug.clone();
    let in_flight = tokio::spawn({
        let cache = cache.clone();
        async move { cache.by_slug(&slug).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    store
        .inner
        .insert(tenant(id, &current, TenantStatus::Suspended));
    cache.invalidate(id).await.unwrap();

    let raced = in_flight.await.unwrap().unwrap().unwrap();
    assert!(
        raced.is_active(),
        "the in-flight answer predates the change"
    );
    store.set_delay(Duration::ZERO);
    assert_eq!(
        cache.by_slug(&current).await.unwrap().unwrap().status(),
        TenantStatus::Suspended,
        "the raced answer was not kept"
    );
    assert_eq!(
        cache.by_id(id).await.unwrap().unwrap().status(),
        TenantStatus::Suspended
    );
}

#[tokio::test]
async fn store_errors_are_returned_and_not_cached() {
    let store = CountingStore::new();
    let (id, _, _) = add_tenant(&store.inner, "acme");
    let cache = cache(&store);
    store.set_failing(true);
    let err = cache.by_id(id).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unavailable);
    assert!(
        std::error::Error::source(&err).is_some(),
        "the store's error is kept as the source"
    );
    store.set_failing(false);
    assert!(cache.by_id(id).await.unwrap().is_some());
    assert_eq!(store.queries(), 2, "the failure was not cached");
}

/// A broken store that answers with another tenant than the one asked for.
struct WrongTenantStore(Arc<Tenant>);

impl TenantStore for WrongTenantStore {
    async fn by_id(&self, _: TenantId) -> Result<Option<Arc<Tenant>>, StoreError> {
        Ok(Some(self.0.clone()))
    }
    async fn by_slug(&self, _: &Slug) -> Result<Option<Arc<Tenant>>, StoreError> {
        Ok(Some(self.0.clone()))
    }
    async fn by_api_key(&self, _: &ApiKeyHash) -> Result<Option<Arc<Tenant>>, StoreError> {
        Ok(Some(self.0.clone()))
    }
}

#[tokio::test]
async fn a_record_for_another_tenant_is_rejected_not_cached() {
    let other = Tenant::builder(
        TenantId::new_v4(),
        Slug::new("other").unwrap(),
        Plan::free(),
    )
    .build();
    let cache = CachedStore::new(WrongTenantStore(Arc::new(other)));
    let err = cache.by_id(TenantId::new_v4()).await.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::InvalidRecord);
    let err = cache
        .by_slug(&Slug::new("asked").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::InvalidRecord);
}

#[tokio::test]
async fn clear_local_drops_everything() {
    let store = CountingStore::new();
    let (id, _, _) = add_tenant(&store.inner, "acme");
    let cache = cache(&store);
    cache.by_id(id).await.unwrap();
    cache.clear_local();
    cache.by_id(id).await.unwrap();
    assert_eq!(store.queries(), 2);
}

#[test]
fn zero_ttl_or_capacity_is_a_config_error() {
    let b = || CachedStore::builder(CountingStore::new());
    assert_eq!(
        b().ttl(Duration::ZERO).build().unwrap_err().kind(),
        ConfigErrorKind::ZeroTtl
    );
    assert_eq!(
        b().negative_ttl(Duration::ZERO).build().unwrap_err().kind(),
        ConfigErrorKind::ZeroTtl
    );
    assert_eq!(
        b().max_capacity(0).build().unwrap_err().kind(),
        ConfigErrorKind::ZeroCapacity
    );
}
