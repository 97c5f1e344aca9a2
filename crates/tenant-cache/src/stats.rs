use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of a [`CachedStore`](crate::CachedStore)'s counters since it was built.
///
/// The same events are emitted through the `metrics` facade with the `metrics` feature
/// (`tenantry_cache_hits_total`, `tenantry_cache_misses_total`, ...), and failures of the
/// Redis level are logged through `tracing`.
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

#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    negative_hits: AtomicU64,
    misses: AtomicU64,
    redis_hits: AtomicU64,
    redis_errors: AtomicU64,
    store_queries: AtomicU64,
    invalidations: AtomicU64,
    remote_invalidations: AtomicU64,
}

macro_rules! event {
    ($fn:ident, $field:ident, $metric:literal) => {
        #[inline]
        pub(crate) fn $fn(&self) {
            self.$field.fetch_add(1, Relaxed);
            #[cfg(feature = "metrics")]
            metrics::counter!($metric).increment(1);
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
            hits: self.hits.load(Relaxed),
            negative_hits: self.negative_hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            redis_hits: self.redis_hits.load(Relaxed),
            redis_errors: self.redis_errors.load(Relaxed),
            store_queries: self.store_queries.load(Relaxed),
            invalidations: self.invalidations.load(Relaxed),
            remote_invalidations: self.remote_invalidations.load(Relaxed),
        }
    }
}
