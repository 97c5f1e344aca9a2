//! Tenant lookups that cost nothing on the hot path and are never stale for long.
//!
//! [`CachedStore`] wraps any [`TenantStore`](tenantry_core::TenantStore) (a database, usually)
//! and is one itself, so every layer that looks tenants up can use it unchanged:
//!
//! - an in-process first level ([`moka`]) with a TTL and a capacity bound: a hit costs a hash
//!   lookup and an `Arc` clone;
//! - negative caching of unknown ids, slugs and API-key hashes with their own short TTL, so
//!   enumeration and bots cannot turn into a database query per request;
//! - single-flight: concurrent misses for one key make one store query;
//! - explicit invalidation of a tenant, which drops it under every key it is cached under;
//! - with the `redis` feature, a shared second level in Redis ([`RedisLevel`]), and
//!   invalidations announced on a pub/sub channel so every instance drops its first-level
//!   entry at once; Redis failures fall through to the store, bounded by a per-command timeout;
//! - counters ([`CachedStore::stats`], and the `metrics` facade with the `metrics` feature).
//!
//! The seed cached tenants in Redis for 60 s with no invalidation and no negative caching: a
//! plan change or suspension went unseen for a minute, and every unknown tenant hit the
//! database.
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod cached;
mod epoch;
mod error;
#[cfg(feature = "redis")]
mod redis;
mod stats;

pub use cached::{CachedStore, CachedStoreBuilder};
pub use error::{ConfigError, ConfigErrorKind};
#[cfg(feature = "redis")]
pub use redis::{Invalidator, RedisLevel};
pub use stats::CacheStats;
