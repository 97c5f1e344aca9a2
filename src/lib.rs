#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

/// Core types: `Tenant`, `TenantId`, `Slug`, `Plan`, the `TenantStore` trait, `Problem`.
pub use tenantry_core as core;

/// Identify the tenant and bind it to a verified credential (`TenantResolveLayer`).
#[cfg(feature = "resolve")]
pub use tenantry_resolve as resolve;

/// Cached tenant lookups (`CachedStore`).
#[cfg(feature = "cache")]
pub use tenantry_cache as cache;

/// Row-level security on deadpool-postgres (`RlsPool`, `RlsLayer`, `TenantDb`).
#[cfg(feature = "rls-pool")]
pub use tenantry_rls_pool as rls_pool;

/// Per-tenant, per-plan rate limits (`RateLimitLayer`).
#[cfg(feature = "rate-limit")]
pub use tenantry_rate_limit as rate_limit;

/// Plan-based features (`RequireFeature`).
#[cfg(feature = "feature-gate")]
pub use tenantry_feature_gate as feature_gate;

// Documented by its own inner comment: an outer one here would make rustdoc resolve the
// module's links from this scope.
#[cfg(feature = "migrate")]
pub mod migrate;
