use std::borrow::Borrow;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;
use tenantry_core::{ApiKeyHash, Slug, StoreError, StoreErrorKind, Tenant, TenantId, TenantStore};

use crate::epoch::Epochs;
use crate::stats::{CacheStats, Counters};
use crate::{ConfigError, ConfigErrorKind};

#[cfg(feature = "redis")]
use crate::redis::{Lookup, RedisLevel, RedisShared};

/// A first-level entry: a tenant, or "no such tenant" (negative), stamped with the epoch at
/// which its load started.
#[derive(Clone)]
pub(crate) struct Entry {
    tenant: Option<Arc<Tenant>>,
    epoch: u64,
}

/// Positive entries live `ttl`, negative ones `negative_ttl`; a replaced entry starts afresh.
struct EntryExpiry {
    ttl: Duration,
    negative_ttl: Duration,
}

impl EntryExpiry {
    fn of(&self, e: &Entry) -> Duration {
        if e.tenant.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        }
    }
}

impl<K> Expiry<K, Entry> for EntryExpiry {
    fn expire_after_create(&self, _: &K, value: &Entry, _: Instant) -> Option<Duration> {
        Some(self.of(value))
    }

    fn expire_after_update(
        &self,
        _: &K,
        value: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.of(value))
    }
}

pub(crate) struct Shared<S> {
    store: S,
    by_id: Cache<TenantId, Entry>,
    by_slug: Cache<Slug, Entry>,
    by_key: Cache<ApiKeyHash, Entry>,
    epochs: Epochs,
    pub(crate) counters: Counters,
    #[cfg(feature = "redis")]
    redis: Option<RedisShared>,
}

/// A [`TenantStore`] in front of another one: an in-process first level, negative caching,
/// single-flight loads, explicit invalidation, and (feature `redis`) a Redis second level
/// shared by every instance, with invalidations announced over pub/sub.
///
/// - **First level**: three bounded [`moka`] caches (by id, by slug, by API-key hash) holding
///   `Arc<Tenant>`; a hit is a hash lookup and an `Arc` clone, no I/O, no allocation.
/// - **Negative caching**: "no such tenant" answers are cached for
///   [`negative_ttl`](CachedStoreBuilder::negative_ttl) (short), so unknown ids, slugs and
///   keys cost one store query per TTL, not one per request.
/// - **Single-flight**: concurrent misses for one key share one load.
/// - **Invalidation**: [`invalidate`](Self::invalidate) makes every entry for a tenant stale on
///   this instance at once (whichever key it was cached under), and with Redis on every
///   instance. A load that raced with an invalidation is not kept.
/// - **Store errors are never cached**: the next lookup asks again.
///
/// Clones share the same cache.
///
/// ```
/// use std::time::Duration;
/// use tenantry_cache::CachedStore;
/// use tenantry_core::{InMemoryStore, Plan, Slug, Tenant, TenantId, TenantStatus, TenantStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let db = InMemoryStore::new();
/// let id = TenantId::new_v4();
/// db.insert(Tenant::builder(id, Slug::new("acme")?, Plan::pro()).build());
///
/// let cache = CachedStore::builder(db.clone())
///     .ttl(Duration::from_secs(60))
///     .negative_ttl(Duration::from_secs(5))
///     .max_capacity(10_000)
///     .build()?;
/// assert!(cache.by_id(id).await?.unwrap().is_active());
///
/// // The tenant is suspended: tell the cache, and the next lookup sees it.
/// db.insert(Tenant::builder(id, Slug::new("acme")?, Plan::pro())
///     .status(TenantStatus::Suspended)
///     .build());
/// cache.invalidate(id).await?;
/// assert_eq!(cache.by_slug(&Slug::new("acme")?).await?.unwrap().status(), TenantStatus::Suspended);
/// assert_eq!(cache.stats().store_queries, 2);
/// # Ok(()) }
/// ```
pub struct CachedStore<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for CachedStore<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> fmt::Debug for CachedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedStore")
            .field("entries_by_id", &self.shared.by_id.entry_count())
            .field("entries_by_slug", &self.shared.by_slug.entry_count())
            .field("entries_by_key", &self.shared.by_key.entry_count())
            .field("stats", &self.shared.counters.snapshot())
            .finish_non_exhaustive()
    }
}

/// Builds a [`CachedStore`]; see [`CachedStore::builder`].
pub struct CachedStoreBuilder<S> {
    store: S,
    ttl: Duration,
    negative_ttl: Duration,
    max_capacity: u64,
    #[cfg(feature = "redis")]
    redis: Option<RedisLevel>,
}

impl<S> fmt::Debug for CachedStoreBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("CachedStoreBuilder");
        d.field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("max_capacity", &self.max_capacity);
        #[cfg(feature = "redis")]
        d.field("redis", &self.redis);
        d.finish_non_exhaustive()
    }
}

impl<S: TenantStore> CachedStoreBuilder<S> {
    /// How long a tenant stays in the first level (default 60 s). Without invalidation, this
    /// bounds how long a change goes unseen.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long "no such tenant" stays in the first level (default 5 s). A tenant created
    /// under a slug or key that was looked up just before is unseen for at most this long,
    /// unless [`CachedStore::invalidate_slug`] / [`CachedStore::invalidate_api_key`] is called.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// At most this many entries in each of the three first-level maps (by id, by slug, by
    /// key hash; default 100 000). Least-recently and least-frequently used entries go first.
    /// Entries for one tenant share one `Arc<Tenant>`.
    pub fn max_capacity(mut self, max_capacity: u64) -> Self {
        self.max_capacity = max_capacity;
        self
    }

    /// Adds a Redis second level and pub/sub invalidation (see [`RedisLevel`]).
    #[cfg(feature = "redis")]
    pub fn redis(mut self, level: RedisLevel) -> Self {
        self.redis = Some(level);
        self
    }

    /// Builds the cache. With a Redis level that has a subscriber, this must run inside a
    /// Tokio runtime: it spawns the task that listens for invalidations.
    pub fn build(self) -> Result<CachedStore<S>, ConfigError> {
        if self.ttl.is_zero() || self.negative_ttl.is_zero() {
            return Err(ConfigError::new(ConfigErrorKind::ZeroTtl));
        }
        if self.max_capacity == 0 {
            return Err(ConfigError::new(ConfigErrorKind::ZeroCapacity));
        }
        #[cfg(feature = "redis")]
        let (redis, listener) = match self.redis {
            Some(level) => {
                let (shared, listener) = level.into_parts()?;
                (Some(shared), listener)
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared::new(
            self.store,
            self.ttl,
            self.negative_ttl,
            self.max_capacity,
            #[cfg(feature = "redis")]
            redis,
        ));
        #[cfg(feature = "redis")]
        if let (Some(listener), Some(redis)) = (listener, &shared.redis) {
            redis.start_listener(listener, Arc::downgrade(&shared))?;
        }
        Ok(CachedStore { shared })
    }
}

fn cache<K>(capacity: u64, ttl: Duration, negative_ttl: Duration) -> Cache<K, Entry>
where
    K: Hash + Eq + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(capacity)
        .expire_after(EntryExpiry { ttl, negative_ttl })
        .build()
}

impl<S: TenantStore> CachedStore<S> {
    /// A cache in front of `store` with the default settings (see [`builder`](Self::builder)).
    pub fn new(store: S) -> Self {
        let b = Self::builder(store);
        Self {
            shared: Arc::new(Shared::new(
                b.store,
                b.ttl,
                b.negative_ttl,
                b.max_capacity,
                #[cfg(feature = "redis")]
                None,
            )),
        }
    }

    /// Starts configuring a cache in front of `store`: TTL 60 s, negative TTL 5 s, at most
    /// 100 000 entries per map, no Redis.
    pub fn builder(store: S) -> CachedStoreBuilder<S> {
        CachedStoreBuilder {
            store,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            max_capacity: 100_000,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// The store behind the cache.
    pub fn store(&self) -> &S {
        &self.shared.store
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        self.shared.counters.snapshot()
    }

    /// How many entries the first level holds (by id, slug and key hash together). The count
    /// is approximate until [`run_pending_tasks`](Self::run_pending_tasks) has run.
    pub fn entry_count(&self) -> u64 {
        let s = &self.shared;
        s.by_id.entry_count() + s.by_slug.entry_count() + s.by_key.entry_count()
    }

    /// Runs the first level's pending maintenance (evictions, expirations) now instead of
    /// piecemeal during later operations: for tests and diagnostics.
    pub async fn run_pending_tasks(&self) {
        let s = &self.shared;
        s.by_id.run_pending_tasks().await;
        s.by_slug.run_pending_tasks().await;
        s.by_key.run_pending_tasks().await;
    }

    /// Forgets everything cached for `tenant` (under its id, its slug and its API keys), on
    /// this instance at once, and with Redis in the second level and on every instance
    /// listening for invalidations. Call it after changing a tenant (plan, status, overrides,
    /// slug, a key revoked) and after creating one whose id was looked up before.
    ///
    /// The first level of this instance is always invalidated; the error reports a Redis
    /// failure (other instances then see the change when their entries expire).
    pub async fn invalidate(&self, tenant: TenantId) -> Result<(), StoreError> {
        self.shared.counters.invalidation();
        self.shared.invalidate_local(tenant).await;
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.shared.redis {
            return redis.invalidate_tenant(tenant, &self.shared.counters).await;
        }
        Ok(())
    }

    /// Forgets what is cached under `slug` (typically a negative entry, after a tenant was
    /// created with that slug), here and, with Redis, everywhere.
    pub async fn invalidate_slug(&self, slug: &Slug) -> Result<(), StoreError> {
        self.shared.counters.invalidation();
        self.shared.by_slug.invalidate(slug).await;
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.shared.redis {
            return redis.invalidate_slug(slug, &self.shared.counters).await;
        }
        Ok(())
    }

    /// Forgets what is cached under an API-key hash (a negative entry after a key was
    /// created), here and, with Redis, everywhere. A revoked key is covered by
    /// [`invalidate`](Self::invalidate) of its tenant.
    pub async fn invalidate_api_key(&self, hash: &ApiKeyHash) -> Result<(), StoreError> {
        self.shared.counters.invalidation();
        self.shared.by_key.invalidate(hash).await;
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.shared.redis {
            return redis.invalidate_key(hash, &self.shared.counters).await;
        }
        Ok(())
    }

    /// Drops this instance's whole first level (the second level is left alone).
    pub fn clear_local(&self) {
        self.shared.clear_local();
    }

    /// Whether the invalidation listener is subscribed (always `false` without a Redis level
    /// with a subscriber).
    pub fn is_subscribed(&self) -> bool {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.shared.redis {
            return redis.is_subscribed();
        }
        false
    }

    /// Waits until the invalidation listener is subscribed, for at most `timeout`; returns
    /// whether it is.
    #[cfg(feature = "redis")]
    pub async fn wait_subscribed(&self, timeout: Duration) -> bool {
        match &self.shared.redis {
            Some(redis) => redis.wait_subscribed(timeout).await,
            None => false,
        }
    }
}

impl<S: TenantStore> Shared<S> {
    fn new(
        store: S,
        ttl: Duration,
        negative_ttl: Duration,
        max_capacity: u64,
        #[cfg(feature = "redis")] redis: Option<RedisShared>,
    ) -> Self {
        Self {
            store,
            by_id: cache(max_capacity, ttl, negative_ttl),
            by_slug: cache(max_capacity, ttl, negative_ttl),
            by_key: cache(max_capacity, ttl, negative_ttl),
            epochs: Epochs::new(ttl.max(negative_ttl)),
            counters: Counters::default(),
            #[cfg(feature = "redis")]
            redis,
        }
    }

    pub(crate) async fn invalidate_local(&self, tenant: TenantId) {
        // Marking first makes entries under every key stale; removing the id entry frees it.
        self.epochs.invalidate(tenant);
        self.by_id.invalidate(&tenant).await;
    }

    #[cfg(feature = "redis")]
    pub(crate) async fn invalidate_local_slug(&self, slug: &Slug) {
        self.by_slug.invalidate(slug).await;
    }

    #[cfg(feature = "redis")]
    pub(crate) async fn invalidate_local_key(&self, hash: &ApiKeyHash) {
        self.by_key.invalidate(hash).await;
    }

    pub(crate) fn clear_local(&self) {
        self.epochs.invalidate_all();
        self.by_id.invalidate_all();
        self.by_slug.invalidate_all();
        self.by_key.invalidate_all();
    }

    /// The first-level part of a lookup: `Some(answer)` on a current entry. Kept apart from
    /// the miss path so the future of a hit stays small (the miss path's future, which holds
    /// the store's and Redis's futures, is boxed only when needed).
    #[inline]
    async fn hit<K, Q>(
        &self,
        cache: &Cache<K, Entry>,
        key: &Q,
        key_tenant: Option<TenantId>,
    ) -> Option<Option<Arc<Tenant>>>
    where
        K: Borrow<Q> + Hash + Eq + Send + Sync + 'static,
        Q: Hash + Eq + ?Sized,
    {
        let entry = cache.get(key).await?;
        if self.is_current(&entry, key_tenant) {
            match &entry.tenant {
                Some(_) => self.counters.hit(),
                None => self.counters.negative_hit(),
            }
            return Some(entry.tenant);
        }
        // Stale after an invalidation: drop it so the load replaces it.
        cache.invalidate(key).await;
        None
    }

    /// The miss path shared by the three keys: one load per key at a time (single-flight).
    /// `key_tenant` is the tenant the key itself names (lookups by id), used to check
    /// negative entries against invalidations.
    async fn miss<K, Q, F, Fut>(
        &self,
        cache: &Cache<K, Entry>,
        key: &Q,
        key_tenant: Option<TenantId>,
        load: F,
    ) -> Result<Option<Arc<Tenant>>, StoreError>
    where
        K: Borrow<Q> + Hash + Eq + Send + Sync + 'static,
        Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Entry, StoreError>>,
    {
        self.counters.miss();
        let entry = cache
            .try_get_with_by_ref(key, load())
            .await
            .map_err(|e| StoreError::new(e.kind(), e))?;
        if !self.is_current(&entry, key_tenant) {
            // An invalidation arrived while this load was running: its answer may predate the
            // change. Answer this (concurrent) request with it, but do not keep it.
            cache.invalidate(key).await;
        }
        Ok(entry.tenant)
    }

    #[inline]
    fn is_current(&self, entry: &Entry, key_tenant: Option<TenantId>) -> bool {
        let tenant = entry.tenant.as_ref().map(|t| t.id()).or(key_tenant);
        self.epochs.is_current(entry.epoch, tenant)
    }

    async fn load_by_id(&self, id: TenantId) -> Result<Entry, StoreError> {
        let epoch = self.epochs.now();
        #[cfg(feature = "redis")]
        let gen = match &self.redis {
            Some(redis) => match redis.by_id(id, &self.counters).await {
                Lookup::Hit(tenant) => return Ok(Entry { tenant, epoch }),
                Lookup::Miss(gen) => gen,
            },
            None => None,
        };
        self.counters.store_query();
        let tenant = self.store.by_id(id).await?;
        if tenant.as_ref().is_some_and(|t| t.id() != id) {
            return Err(StoreError::from_kind(StoreErrorKind::InvalidRecord));
        }
        #[cfg(feature = "redis")]
        if let (Some(redis), Some(gen)) = (&self.redis, gen) {
            redis
                .put_by_id(id, tenant.as_deref(), gen, &self.counters)
                .await;
        }
        Ok(Entry { tenant, epoch })
    }

    async fn load_by_slug(&self, slug: &Slug) -> Result<Entry, StoreError> {
        let epoch = self.epochs.now();
        #[cfg(feature = "redis")]
        let gen = match &self.redis {
            Some(redis) => match redis.by_slug(slug, &self.counters).await {
                Lookup::Hit(tenant) => return Ok(Entry { tenant, epoch }),
                Lookup::Miss(gen) => gen,
            },
            None => None,
        };
        self.counters.store_query();
        let tenant = self.store.by_slug(slug).await?;
        if tenant.as_ref().is_some_and(|t| t.slug() != slug) {
            return Err(StoreError::from_kind(StoreErrorKind::InvalidRecord));
        }
        #[cfg(feature = "redis")]
        if let (Some(redis), Some(gen)) = (&self.redis, gen) {
            redis
                .put_by_slug(slug, tenant.as_deref(), gen, &self.counters)
                .await;
        }
        Ok(Entry { tenant, epoch })
    }

    async fn load_by_key(&self, hash: &ApiKeyHash) -> Result<Entry, StoreError> {
        let epoch = self.epochs.now();
        #[cfg(feature = "redis")]
        let gen = match &self.redis {
            Some(redis) => match redis.by_key(hash, &self.counters).await {
                Lookup::Hit(tenant) => return Ok(Entry { tenant, epoch }),
                Lookup::Miss(gen) => gen,
            },
            None => None,
        };
        self.counters.store_query();
        let tenant = self.store.by_api_key(hash).await?;
        #[cfg(feature = "redis")]
        if let (Some(redis), Some(gen)) = (&self.redis, gen) {
            redis
                .put_by_key(hash, tenant.as_deref(), gen, &self.counters)
                .await;
        }
        Ok(Entry { tenant, epoch })
    }
}

impl<S: TenantStore> TenantStore for CachedStore<S> {
    async fn by_id(&self, id: TenantId) -> Result<Option<Arc<Tenant>>, StoreError> {
        let s = &*self.shared;
        if let Some(found) = s.hit(&s.by_id, &id, Some(id)).await {
            return Ok(found);
        }
        Box::pin(s.miss(&s.by_id, &id, Some(id), || s.load_by_id(id))).await
    }

    async fn by_slug(&self, slug: &Slug) -> Result<Option<Arc<Tenant>>, StoreError> {
        let s = &*self.shared;
        if let Some(found) = s.hit(&s.by_slug, slug, None).await {
            return Ok(found);
        }
        Box::pin(s.miss(&s.by_slug, slug, None, || s.load_by_slug(slug))).await
    }

    async fn by_api_key(&self, hash: &ApiKeyHash) -> Result<Option<Arc<Tenant>>, StoreError> {
        let s = &*self.shared;
        if let Some(found) = s.hit(&s.by_key, hash, None).await {
            return Ok(found);
        }
        Box::pin(s.miss(&s.by_key, hash, None, || s.load_by_key(hash))).await
    }
}
