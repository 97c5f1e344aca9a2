//! Exact per-tenant, per-plan rate limits for tower services, shared across instances.
//!
//! - [`Quota`] and the GCRA core: integer microseconds, one number per key, no window edge
//!   that lets twice the limit through.
//! - Backends implementing [`Limiter`]: [`LocalLimiter`] (in process: a sharded map with an
//!   idle sweep and a hard key cap) and, with the `redis` feature, `RedisLimiter` (a Lua
//!   script via `EVALSHA`, at most one call per decision and concurrent decisions for one key
//!   sharing calls, clock from Redis `TIME`, keys hash-tagged by tenant
//!   for Redis Cluster, a per-call timeout, one attempt, a circuit breaker, a fail policy and
//!   a local negative cache).
//! - [`RateLimitLayer`]: key = tenant id + policy; quota from the tenant's limits on every
//!   request; per-request cost; IETF `RateLimit-Policy` / `RateLimit` headers; 429
//!   `rate_limited` problem+json with `Retry-After`.
//! - [`InFlightLimitLayer`]: an optional per-tenant cap on requests in flight, held until the
//!   response body ends.
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod error;
mod future;
mod gcra;
pub mod headers;
mod in_flight;
mod key;
mod layer;
mod local;
#[cfg(feature = "redis")]
mod redis;

pub use error::{ConfigError, ConfigErrorKind, LimiterError, LimiterErrorKind};
pub use future::ResponseFuture;
pub use gcra::{Quota, Verdict, MAX_SPAN_US};
pub use in_flight::{InFlight, InFlightBody, InFlightFuture, InFlightLimitLayer};
pub use key::{Decision, DecisionSource, Limiter, RateKey};
pub use layer::{RateLimit, RateLimitLayer};
pub use local::{LocalLimiter, LocalLimiterBuilder};
#[cfg(feature = "redis")]
pub use redis::{FailPolicy, RedisLimiter, RedisLimiterBuilder, RedisStats};
