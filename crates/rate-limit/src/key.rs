//! What a decision is about: a key, a decision, and the trait every backend implements.

use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tenantry_core::TenantId;

use crate::error::LimiterError;
use crate::gcra::{Quota, Verdict};

/// The counter a decision is about: one tenant and one policy (for example `"api"` and
/// `"uploads"` limited separately). Built only from a parsed [`TenantId`], so a key never
/// contains request text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RateKey {
    tenant: TenantId,
    policy: Arc<str>,
}

impl RateKey {
    /// The key of `tenant` under `policy`.
    pub fn new(tenant: TenantId, policy: Arc<str>) -> Self {
        Self { tenant, policy }
    }

    /// The tenant.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The policy.
    pub fn policy(&self) -> &str {
        &self.policy
    }
}

impl fmt::Debug for RateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RateKey({}:{})", self.tenant, self.policy)
    }
}

/// Where a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecisionSource {
    /// The limiter's own state (in-process map or Redis).
    Primary,
    /// The local negative cache: the shared backend had said "denied until t", and t has not
    /// passed yet.
    NegativeCache,
    /// The in-process fallback limiter, because the shared backend failed
    /// ([`FailPolicy::Local`](crate::FailPolicy::Local)).
    Fallback,
    /// Allowed without a check because the shared backend failed
    /// ([`FailPolicy::Open`](crate::FailPolicy::Open)).
    FailOpen,
}

/// A rate-limit decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    verdict: Verdict,
    quota: Quota,
    source: DecisionSource,
}

impl Decision {
    pub(crate) fn new(verdict: Verdict, quota: Quota, source: DecisionSource) -> Self {
        Self {
            verdict,
            quota,
            source,
        }
    }

    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        self.verdict.allowed
    }

    /// The raw GCRA outcome.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// The quota the decision was taken against (for fallback decisions, the reduced one).
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Where the decision came from.
    pub fn source(&self) -> DecisionSource {
        self.source
    }

    /// Whole requests of cost 1 still allowed right now.
    pub fn remaining(&self) -> u64 {
        self.quota.remaining(self.verdict.reset_after_us)
    }

    /// Time until the key is fully replenished.
    pub fn reset_after(&self) -> Duration {
        Duration::from_micros(self.verdict.reset_after_us)
    }

    /// When denied, the time until the same request would be allowed.
    pub fn retry_after(&self) -> Option<Duration> {
        (!self.verdict.allowed).then(|| Duration::from_micros(self.verdict.retry_after_us))
    }
}

/// A rate limiter backend: takes one decision per call.
///
/// Implemented by [`LocalLimiter`](crate::LocalLimiter) and, with the `redis` feature,
/// `RedisLimiter`. The quota is passed on every call, so a plan change applies on the next
/// request.
pub trait Limiter: Clone + Send + Sync + 'static {
    /// The future of one decision.
    type Future: Future<Output = Result<Decision, LimiterError>> + Send + Unpin + 'static;

    /// Decides whether a request of `cost` units may pass for `key` under `quota`.
    fn check(&self, key: &RateKey, quota: Quota, cost: NonZeroU32) -> Self::Future;
}
