use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of a [`CachedStore`](crate::CachedStore)'s counters since it was built.
///
/// The same events are emitted through the `metrics` facade with the `metrics` feature
/// (`tenantry_cache_hits_total`, `tenantry_cache_misses_total`, ...), and failures of the
/// Redis level are logged through `tracing`. Each facade counter is registered once per
/// store, with the recorder in effect at its first event, and reused: install the recorder
/// before the store serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups answered by the first level with a tenant.
    pub hits: u64,
    /// Lookups answered by the first level with "no such tenant" (negative cache).
    pub negative_hits: u64,
    /// Lookups the first level could not answer (each waits for a load, possibly shared).
    pub misses: u64,
    /// Loads answered by the Redis level (positive or negative).
    pub redis_hits: u64,
    /// Redis commands that failed or timed out (the lookup then went to the store).
    pub redis_errors: u64,
    /// Queries sent to the underlying store.
    pub store_queries: u64,
    /// Invalidations made through this instance.
    pub invalidations: u64,
    /// Invalidations received from other instances over pub/sub.
    pub remote_invalidations: u64,
}

/// One counted event: a plain atomic for [`CacheStats`], and with the `metrics` feature the
/// facade's counter handle, registered at the event's first occurrence and then reused.
/// (Registering on every event costs a registry lookup, a lock, an allocation and two
/// shared reference-count updates per cache hit, that is per request.)
#[derive(Default)]
struct Event {
    count: AtomicU64,
    #[cfg(feature = "metrics")]
    handle: std::sync::OnceLock<metrics::Counter>,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.count.load(Relaxed).fmt(f)
    }
}

impl Event {
    fn get(&self) -> u64 {
        self.count.load(Relaxed)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: Event,
    negative_hits: Event,
    misses: Event,
    redis_hits: Event,
    redis_errors: Event,
    store_queries: Event,
    invalidations: Event,
    remote_invalidations: Event,
}

macro_rules! event {
    ($fn:ident, $field:ident, $metric:literal) => {
        #[inline]
        pub(crate) fn $fn(&self) {
            self.$field.count.fetch_add(1, Relaxed);
            #[cfg(feature = "metrics")]
            self.$field
                .handle
                .get_or_init(|| metrics::counter!($metric))
                .increment(1);
        }
    };
}

impl Counters {
    event!(hit, hits, "tenantry_cache_hits_total");
    event!(
        negative_hit,
        negative_hits,
        "tenantry_cache_negative_hits_total"
    );
    event!(miss, misses, "tenantry_cache_misses_total");
    event!(
        store_query,
        store_queries,
        "tenantry_cache_store_queries_total"
    );
    event!(
        invalidation,
        invalidations,
        "tenantry_cache_invalidations_total"
    );
    #[cfg(feature = "redis")]
    event!(redis_hit, redis_hits, "tenantry_cache_redis_hits_total");
    #[cfg(feature = "redis")]
    event!(
        redis_error,
        redis_errors,
        "tenantry_cache_redis_errors_total"
    );
    #[cfg(feature = "redis")]
    event!(
        remote_invalidation,
        remote_invalidations,
        "tenantry_cache_remote_invalidations_total"
    );

    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.get(),
            negative_hits: self.negative_hits.get(),
            misses: self.misses.get(),
            redis_hits: self.redis_hits.get(),
            redis_errors: self.redis_errors.get(),
            store_queries: self.store_queries.get(),
            invalidations: self.invalidations.get(),
            remote_invalidations: self.remote_invalidations.get(),
        }
    }
}
